"""The Dagster layer, and the only one that imports Dagster: naming, metadata, resources, and per concern
a factory returning its Definitions. ``prod_system.definitions`` merges them."""
