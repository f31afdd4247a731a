"""The Dagster layer, and the only one that imports Dagster: metadata builders, resources, and per concern
(simulation, live, reconciliation, publishing) a factory returning its Definitions, every name from
``prod_system.naming``. ``prod_system.definitions`` merges them."""
