"""What corpusmill plugs into a Dagster instance (dagster.yaml), as Dagster's own
integrations do (dagster_docker, dagster_k8s): the warm run launcher (`launcher`) and
the event log that keeps its SQLite connections open (`event_log`).

An installed package beside `corpusmill`, not part of it: dagster.yaml names these classes
by module, and the daemon and the webserver import them from their own sys.path, on which
only installed packages are; the core (`corpusmill`) stays free of Dagster.
"""
