"""Applications that drive corpusmill from outside: the `corpusmill` CLI, ingest runs
through Dagster, and the retrieval eval. They read the configuration once and pass it down."""
