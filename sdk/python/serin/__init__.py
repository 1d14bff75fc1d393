"""Serin's Python SDK: which bundle serves this request, decided locally by the same Rust
engine every Serin SDK embeds, from a snapshot the server pushes.

    import serin

    with serin.Client("http://127.0.0.1:7070", token, "prod", cache_dir="/var/cache/agent") as client:
        d = client.decide("support", request_id=rid, user=user, tenant=tenant)
        if d.bundle is not None:
            ...  # d.bundle.prompt, d.bundle.model, d.bundle.tools, d.flags
        client.record(serin.Outcome.of(d, latency_ms=812.0))

        # A side-effecting tool call under the ledger: recorded before, run once, settled after.
        r = client.effect(lambda: payments.refund(order, 1200), decision=d, tool="refund",
                          args={"order": order, "amount_cents": 1200}, retry_on=(ConnectionError,))
        r.value if r.ran else r.effect["detail"]
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import json
import os
import random
import time
import weakref
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable, Dict, Generic, Optional, Tuple, Type, TypeVar, Union

from . import _serin
from ._errors import (
    ClosedError,
    ConfigError,
    EffectError,
    EffectFailedError,
    EffectNotRecordedError,
    EffectUnknownError,
    InvalidEffectError,
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


T = TypeVar("T")
ExceptionTypes = Tuple[Type[BaseException], ...]


def args_digest(args: Any) -> str:
    """``xxh3-128:<32 hex>`` of ``args`` as canonical JSON (sorted keys, no spaces): a stable
    arguments digest for an effect's key. ``args`` must be JSON-serializable."""
    try:
        text = json.dumps(args, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    except (TypeError, ValueError) as e:
        raise InvalidEffectError(f"args: {e}") from None
    return _serin.args_digest_text(text)


_digest = args_digest


@dataclass(frozen=True)
class EffectResult(Generic[T]):
    """What :meth:`Client.effect` did. ``ran``: the call ran now and ``value`` is what it
    returned; otherwise an earlier attempt already committed it, the call did not run again,
    ``value`` is ``None`` and ``effect["detail"]`` is what that attempt recorded.
    ``recorded`` is False when the ``committed`` result could not be delivered (the ledger
    will call the effect ``unknown`` after its timeout; ``effect`` is then None)."""

    key: str
    ran: bool
    value: Optional[T]
    effect: Optional[Dict[str, Any]]
    attempts: int = 0
    recorded: bool = True


class _EffectRun:
    """One effect's bookkeeping, shared by the sync and async loops. The decisions about
    the ledger's answers are the Rust SDK's (``_effect_begin``); this class only adds the
    call loop, which must run in the caller's thread or event loop."""

    def __init__(self, client: "Client", *, tool: str, decision: Optional[Decision], agent: Optional[str],
                 bundle: Optional[int], request_id: Optional[str], args: Any, args_digest: Optional[str],
                 key: Optional[str], timeout: float, attempts: int, backoff_base: float, backoff_cap: float,
                 retry_on: ExceptionTypes, unknown_on: ExceptionTypes, detail: Optional[Callable[[Any], str]],
                 ledger_attempts: int) -> None:
        if decision is not None:
            if decision.bundle is None:
                raise InvalidEffectError("a killed request runs no bundle and no tool")
            agent = agent or decision.agent
            bundle = bundle or decision.bundle.number
            request_id = request_id or decision.request_id
        if agent is None or bundle is None or request_id is None:
            raise InvalidEffectError("an effect needs decision= or agent=, bundle= and request_id=")
        if args_digest is None:
            args_digest = _digest(args)
        if timeout <= 0:
            raise InvalidEffectError(f"timeout must be a positive number of seconds, not {timeout}")
        self.client = client
        self.parts = (agent, int(bundle), request_id, tool, args_digest, key, float(timeout))
        self.deadline = time.monotonic() + timeout
        self.timeout = timeout
        self.attempts = max(1, attempts)
        self.base, self.cap = backoff_base, max(backoff_cap, backoff_base)
        self.retry_on, self.unknown_on = tuple(retry_on), tuple(unknown_on)
        self.detail = detail
        self.ledger_attempts = ledger_attempts
        self.key = key or ""
        self.attempt = 0

    def begin(self) -> Optional[EffectResult[Any]]:
        """Records the intent; ``None`` means run the call."""
        what, record = self.client._effect_begin(*self.parts, ledger_attempts=self.ledger_attempts)
        self.key = record["key"]
        if what == "run":
            return None
        if what == "committed":
            return EffectResult(key=self.key, ran=False, value=None, effect=record)
        if what == "failed":
            raise EffectFailedError(
                f"effect {self.key} already failed ({record.get('detail')}); a new try needs a new key",
                self.key, record, previously=True)
        raise EffectUnknownError(
            f"effect {self.key} is {record['status']}: an earlier attempt recorded its intent and no result; "
            "reconcile before acting again", self.key, record)

    def _settle(self, status: str, detail: Optional[str]) -> Optional[Dict[str, Any]]:
        try:
            return self.client._effect_result(self.key, status, detail, ledger_attempts=self.ledger_attempts)
        except EffectNotRecordedError:
            return None

    def committed(self, value: Any) -> EffectResult[Any]:
        detail = self.detail(value)[:4096] if self.detail is not None else None
        record = self._settle("committed", detail)
        return EffectResult(key=self.key, ran=True, value=value, effect=record,
                            attempts=self.attempt, recorded=record is not None)

    def timed_out(self) -> EffectUnknownError:
        record = self._settle("unknown", f"attempt {self.attempt} still running at the timeout ({self.timeout} s)")
        return EffectUnknownError(f"effect {self.key} did not finish within {self.timeout} s; reconcile before acting again",
                                  self.key, record)

    def failed(self, e: BaseException) -> Union[float, BaseException]:
        """A delay before the next attempt, or the exception to raise (from ``e``)."""
        if isinstance(e, self.unknown_on) or not isinstance(e, Exception):
            # An interrupt (KeyboardInterrupt, a cancelled task) may land anywhere in the call.
            record = self._settle("unknown", f"attempt {self.attempt}: {type(e).__name__}: {e}"[:4096])
            if not isinstance(e, Exception):
                return e
            return EffectUnknownError(f"effect {self.key} is unknown: {e}", self.key, record)
        if isinstance(e, self.retry_on):
            delay = random.uniform(0, min(self.cap, self.base * 2 ** (self.attempt - 1)))
            if self.attempt < self.attempts and time.monotonic() + delay < self.deadline:
                return delay
            what = "transient error, no attempt left"
        else:
            what = "permanent error"
        record = self._settle("failed", f"attempt {self.attempt}: {what}: {type(e).__name__}: {e}"[:4096])
        return EffectFailedError(f"effect {self.key} failed after {self.attempt} attempt(s): {e}", self.key,
                                 record, attempts=self.attempt, recorded=record is not None)


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

    def effect(
        self,
        fn: Callable[[], T],
        *,
        tool: str,
        decision: Optional[Decision] = None,
        agent: Optional[str] = None,
        bundle: Optional[int] = None,
        request_id: Optional[str] = None,
        args: Any = None,
        args_digest: Optional[str] = None,
        key: Optional[str] = None,
        timeout: float = 60.0,
        attempts: int = 3,
        backoff_base: float = 0.2,
        backoff_cap: float = 5.0,
        retry_on: ExceptionTypes = (),
        unknown_on: ExceptionTypes = (),
        detail: Optional[Callable[[T], str]] = None,
        ledger_attempts: int = 6,
    ) -> EffectResult[T]:
        """Runs ``fn()``, a call that changes the world, under the side-effect ledger.

        The idempotency key is derived from agent, bundle, request id, tool and the arguments'
        digest (``args`` digested by :func:`args_digest`, or ``args_digest``), taken from
        ``decision`` or given; ``key`` overrides it. The intent is recorded before the call;
        if it cannot be, ``EffectNotRecordedError`` is raised and ``fn`` never runs. If an
        earlier attempt already committed this call, ``fn`` does not run and the result has
        ``ran=False``; if an earlier attempt failed, ``EffectFailedError(previously=True)``;
        if one recorded its intent and no result, ``EffectUnknownError``.

        ``fn``'s exceptions: ``retry_on`` types are transient (retried under the same key with
        jittered exponential backoff, up to ``attempts`` within ``timeout``), ``unknown_on``
        types mean nobody can tell whether it happened (recorded ``unknown``,
        ``EffectUnknownError``), any other ``Exception`` is permanent (recorded ``failed``,
        ``EffectFailedError`` from it). A ``KeyboardInterrupt`` or other ``BaseException`` is
        recorded ``unknown`` and re-raised.

        ``timeout`` (seconds) is sent with the intent: the server marks an intent with no
        result after it ``unknown`` (a killed process). A synchronous ``fn`` cannot be
        interrupted, so one that returns late still records its real result; use
        :meth:`aeffect` to cancel a coroutine at the timeout.
        """
        run = _EffectRun(self, tool=tool, decision=decision, agent=agent, bundle=bundle, request_id=request_id,
                         args=args, args_digest=args_digest, key=key, timeout=timeout, attempts=attempts,
                         backoff_base=backoff_base, backoff_cap=backoff_cap, retry_on=retry_on,
                         unknown_on=unknown_on, detail=detail, ledger_attempts=ledger_attempts)
        done = run.begin()
        if done is not None:
            return done
        while True:
            run.attempt += 1
            try:
                value = fn()
            except BaseException as e:
                step = run.failed(e)
                if isinstance(step, float):
                    time.sleep(step)
                    continue
                if step is e:
                    raise
                raise step from e
            return run.committed(value)

    async def aeffect(
        self,
        fn: Callable[[], Awaitable[T]],
        *,
        tool: str,
        decision: Optional[Decision] = None,
        agent: Optional[str] = None,
        bundle: Optional[int] = None,
        request_id: Optional[str] = None,
        args: Any = None,
        args_digest: Optional[str] = None,
        key: Optional[str] = None,
        timeout: float = 60.0,
        attempts: int = 3,
        backoff_base: float = 0.2,
        backoff_cap: float = 5.0,
        retry_on: ExceptionTypes = (),
        unknown_on: ExceptionTypes = (),
        detail: Optional[Callable[[T], str]] = None,
        ledger_attempts: int = 6,
    ) -> EffectResult[T]:
        """:meth:`effect` for a coroutine function: the ledger posts run off the event loop,
        and an attempt still running at ``timeout`` is cancelled and recorded ``unknown``
        (``EffectUnknownError``)."""
        loop = asyncio.get_running_loop()
        run = _EffectRun(self, tool=tool, decision=decision, agent=agent, bundle=bundle, request_id=request_id,
                         args=args, args_digest=args_digest, key=key, timeout=timeout, attempts=attempts,
                         backoff_base=backoff_base, backoff_cap=backoff_cap, retry_on=retry_on,
                         unknown_on=unknown_on, detail=detail, ledger_attempts=ledger_attempts)
        done = await loop.run_in_executor(None, run.begin)
        if done is not None:
            return done
        while True:
            run.attempt += 1
            task = asyncio.ensure_future(fn())
            try:
                await asyncio.wait({task}, timeout=max(0.0, run.deadline - time.monotonic()))
            except BaseException as e:
                # This coroutine was cancelled inside the call: nobody can tell.
                task.cancel()
                await loop.run_in_executor(None, run.failed, e)
                raise
            if not task.done():
                task.cancel()
                try:
                    # It may have finished as it was cancelled: then its value stands.
                    late = await task
                except BaseException:
                    raise (await loop.run_in_executor(None, run.timed_out)) from None
                return await loop.run_in_executor(None, run.committed, late)
            try:
                value = task.result()
            except BaseException as e:
                step = await loop.run_in_executor(None, run.failed, e)
                if isinstance(step, float):
                    await asyncio.sleep(step)
                    continue
                if step is e:
                    raise
                raise step from e
            return await loop.run_in_executor(None, run.committed, value)

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
    "EffectResult",
    "args_digest",
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
    "EffectError",
    "InvalidEffectError",
    "EffectNotRecordedError",
    "EffectUnknownError",
    "EffectFailedError",
]
