"""Dagster assets: thin wrappers that call the pure core on a partition range."""
