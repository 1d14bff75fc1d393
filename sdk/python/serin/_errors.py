"""Serin's exceptions. Each class has a stable ``code``; match on the class or the code,
never on the message."""

from __future__ import annotations


class SerinError(Exception):
    """Base of every error the SDK raises."""

    code: str = "serin_error"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class ConfigError(SerinError, ValueError):
    """The client's settings cannot work (bad server URL, env name, instance id...)."""

    code = "invalid_config"


class StartTimeoutError(SerinError, TimeoutError):
    """No cache file and the server gave no snapshot within ``start_timeout``."""

    code = "start_timeout"


class NoSnapshotError(SerinError):
    """No snapshot has been loaded yet."""

    code = "no_snapshot"


class UnknownAgentError(SerinError, LookupError):
    """The snapshot does not list this agent."""

    code = "unknown_agent"


class NoStableError(SerinError, LookupError):
    """The agent has nothing deployed in this env."""

    code = "no_stable"


class SnapshotError(SerinError, ValueError):
    """A snapshot document could not be read or compiled."""

    code = "invalid_snapshot"


class InvalidContextError(SerinError, TypeError):
    """A context value is not a ``str`` (or ``None``), or is too long."""

    code = "invalid_context"


class InvalidOutcomeError(SerinError, ValueError):
    """An outcome does not have the outcome event's shape."""

    code = "invalid_outcome"


class ClosedError(SerinError):
    """The client was closed."""

    code = "closed"


__all__ = [
    "SerinError",
    "ConfigError",
    "StartTimeoutError",
    "NoSnapshotError",
    "UnknownAgentError",
    "NoStableError",
    "SnapshotError",
    "InvalidContextError",
    "InvalidOutcomeError",
    "ClosedError",
]
