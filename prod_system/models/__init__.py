"""Models: the DAG engine (nodes, streaming and batch runs, profiling), the features, and the
built-in models C1b and C3a."""
