"""Which environment variables are a user's corpusmill settings, for tests that run the CLI
as a user would, with none but their own: every `CORPUSMILL_` variable except the test
session's cache folder (tests/conftest.py), which keeps the probe's results and the kernel
shapes runs record out of the user's ~/.cache."""

SESSION_SETTINGS = frozenset({"CORPUSMILL_CACHE_DIR"})


def is_user_setting(name: str) -> bool:
    return name.startswith("CORPUSMILL_") and name not in SESSION_SETTINGS
