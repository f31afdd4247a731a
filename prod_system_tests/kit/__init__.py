"""Shared test helpers (the test kit): imported by tests, never by pytest's collection hooks."""
