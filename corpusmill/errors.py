"""Errors a user can act on. Each message names the setting to change."""


class CorpusmillError(Exception):
    """Base class for errors corpusmill raises on purpose."""


class ConfigError(CorpusmillError, ValueError):
    """A setting is missing or invalid; the message says which and what is allowed."""


class ModelMismatchError(CorpusmillError):
    """A table written by one model was asked to take vectors or queries from another."""
