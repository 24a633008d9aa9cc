"""The application layer: what drives corpusmill from outside (the query service)."""
