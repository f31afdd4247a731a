"""Dagster instance storage tuned for this project (referenced from dagster.yaml)."""
