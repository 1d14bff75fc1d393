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


class EffectError(SerinError):
    """Base of the side-effect ledger's errors. ``key`` is the effect's idempotency key and
    ``effect`` the ledger's record (a dict) when they are known."""

    code = "effect_error"

    def __init__(self, message: str, key: "str | None" = None, effect: "dict | None" = None) -> None:
        super().__init__(message)
        self.key = key
        self.effect = effect


class InvalidEffectError(EffectError, ValueError):
    """The effect's key parts are not a valid intent; nothing was recorded, nothing ran."""

    code = "invalid_effect"


class EffectNotRecordedError(EffectError):
    """A ledger post did not succeed (server away through every retry, or refused, e.g. a
    key that records another call). Raised by the intent: the call did not run."""

    code = "effect_not_recorded"


class EffectUnknownError(EffectError):
    """Whether the effect happened cannot be told: an earlier attempt recorded its intent and
    no result, the call outlived its timeout, or it raised one of ``unknown_on``. Do not act
    again before reconciling."""

    code = "effect_unknown"


class EffectFailedError(EffectError):
    """The effect did not happen: the call raised a permanent error, or transient ones until
    the attempts or the time ran out (``__cause__`` is the last one), or an earlier attempt
    under this key failed (``previously`` is True; ``failed`` is final, a new try needs a new
    key). ``recorded`` says whether the ``failed`` result reached the ledger."""

    code = "effect_failed"

    def __init__(
        self,
        message: str,
        key: "str | None" = None,
        effect: "dict | None" = None,
        attempts: int = 0,
        previously: bool = False,
        recorded: bool = True,
    ) -> None:
        super().__init__(message, key, effect)
        self.attempts = attempts
        self.previously = previously
        self.recorded = recorded


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
    "EffectError",
    "InvalidEffectError",
    "EffectNotRecordedError",
    "EffectUnknownError",
    "EffectFailedError",
]
