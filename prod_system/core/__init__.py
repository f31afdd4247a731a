"""Pure core of prod_system: clock, market data, model DAG, sizing, broker, portfolio.

Nothing in this package imports Dagster; the Dagster layer (``prod_system.assets``,
``prod_system.resources``...) only wires these pieces together.
"""
