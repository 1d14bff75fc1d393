"""Serin's Python SDK: which bundle serves this request, decided locally by the same Rust
engine every Serin SDK embeds, from a snapshot the server pushes.

    import serin

    with serin.Client("http://127.0.0.1:7070", token, "prod", cache_dir="/var/cache/agent") as client:
        d = client.decide("support", request_id=rid, user=user, tenant=tenant)
        if d.bundle is not None:
            ...  # d.bundle.prompt, d.bundle.model, d.bundle.tools, d.flags
        client.record(serin.Outcome.of(d, latency_ms=812.0))
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import weakref
from dataclasses import dataclass, field
from typing import Any, Dict, Optional, Union

from . import _serin
from ._errors import (
    ClosedError,
    ConfigError,
    InvalidContextError,
    InvalidOutcomeError,
    NoSnapshotError,
    NoStableError,
    SerinError,
    SnapshotError,
    StartTimeoutError,
    UnknownAgentError,
)

Decision = _serin.Decision
Bundle = _serin.Bundle
StaticRouter = _serin.StaticRouter
bucket = _serin.bucket

PathLike = Union[str, "os.PathLike[str]"]


@dataclass(frozen=True)
class Outcome:
    """What happened to one request (the outcome event of the API). Build one with
    :meth:`Outcome.of` from the decision that routed the request."""

    request_id: str
    agent: str
    env: str
    snapshot_version: int
    bundle: str
    arm: str
    latency_ms: float
    user: Optional[str] = None
    tenant: Optional[str] = None
    workload: Optional[str] = None
    instance: Optional[str] = None
    region: Optional[str] = None
    trace_id: Optional[str] = None
    at_ms: Optional[int] = None
    stages: Dict[str, float] = field(default_factory=dict)
    cost_usd: float = 0.0
    tokens_in: int = 0
    tokens_out: int = 0
    tool_calls_ok: int = 0
    tool_calls_failed: int = 0
    #: ``"transient"``, ``"permanent"`` or ``"external"`` when the request failed.
    error_class: Optional[str] = None
    error_code: Optional[str] = None
    refused: bool = False
    eval_score: Optional[float] = None
    eval_passed: Optional[bool] = None

    @classmethod
    def of(cls, decision: "_serin.Decision", latency_ms: float, **fields: Any) -> "Outcome":
        """The outcome of the request ``decision`` routed: its agent, env, version, bundle,
        arm and context are copied from it."""
        if decision.bundle_id is None:
            raise InvalidOutcomeError("a killed request served no bundle; there is no outcome to record")
        ctx = decision.context
        return cls(
            request_id=decision.request_id,
            agent=decision.agent,
            env=decision.env,
            snapshot_version=decision.snapshot_version,
            bundle=decision.bundle_id,
            arm=decision.arm,
            latency_ms=latency_ms,
            user=ctx.get("user"),
            tenant=ctx.get("tenant"),
            workload=ctx.get("workload"),
            instance=ctx.get("instance"),
            region=ctx.get("region"),
            **fields,
        )

    def to_json(self) -> str:
        """The event's wire form (``POST /v1/outcomes``)."""
        d = dataclasses.asdict(self)
        wire: Dict[str, Any] = {
            k: d[k]
            for k in (
                "request_id", "agent", "env", "snapshot_version", "bundle", "arm", "latency_ms",
                "user", "tenant", "workload", "instance", "region", "trace_id", "at_ms",
            )
            if d[k] is not None
        }
        if self.stages:
            wire["stages"] = dict(self.stages)
        wire["cost_usd"] = self.cost_usd
        wire["tokens"] = {"input": self.tokens_in, "output": self.tokens_out}
        wire["tool_calls"] = {"ok": self.tool_calls_ok, "failed": self.tool_calls_failed}
        wire["refused"] = self.refused
        if self.error_class is not None:
            wire["error"] = {"class": self.error_class}
            if self.error_code is not None:
                wire["error"]["code"] = self.error_code
        if self.eval_score is not None or self.eval_passed is not None:
            wire["eval"] = {"score": self.eval_score, "passed": self.eval_passed}
        try:
            return json.dumps(wire, allow_nan=False)
        except (TypeError, ValueError) as e:
            raise InvalidOutcomeError(f"outcome: {e}") from None


# Clients alive in this process, restarted in a forked child (gunicorn/uvicorn workers).
_clients: "weakref.WeakSet[Client]" = weakref.WeakSet()


def _after_fork_in_child() -> None:
    for client in list(_clients):
        try:
            client._after_fork_in_child()
        except Exception:  # a child must come up even if one client cannot
            pass


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


class Client(_serin.NativeClient):
    """The live SDK. Starting it serves the disk cache at once if there is one (marked
    stale until the server confirms it), otherwise waits up to ``start_timeout`` seconds
    for the server's first snapshot. Then a background thread follows the server's stream,
    reconnecting forever with jittered backoff, and sends recorded outcomes in batches.

    ``decide`` takes about a microsecond and never waits for the network, so it is safe
    to call from any thread and straight from ``async`` code. Only starting and closing
    wait: from asyncio use ``await Client.connect(...)`` and ``await client.aclose()``.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        _clients.add(self)

    @classmethod
    async def connect(cls, server: str, token: str, env: str, cache_dir: Optional[PathLike] = None, **kwargs: Any) -> "Client":
        """Starts a client without blocking the event loop."""
        return await asyncio.get_running_loop().run_in_executor(
            None, lambda: cls(server, token, env, cache_dir, **kwargs)
        )

    def record(self, outcome: Outcome) -> bool:
        """Queues ``outcome`` for the background sender; never blocks. ``False`` when the
        queue is full (the outcome is dropped and counted in ``health()["outcomes"]``)."""
        if not isinstance(outcome, Outcome):
            raise InvalidOutcomeError(f"record() takes a serin.Outcome, not {type(outcome).__name__}")
        return self._record_json(outcome.to_json())

    async def aclose(self, timeout: float = 2.0) -> None:
        await asyncio.get_running_loop().run_in_executor(None, self.close, timeout)

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    async def __aenter__(self) -> "Client":
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.aclose()


__all__ = [
    "Client",
    "Decision",
    "Bundle",
    "Outcome",
    "StaticRouter",
    "bucket",
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
