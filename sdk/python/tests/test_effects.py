"""The side-effect ledger from Python against a real `serin` server: a retried effect acts
once, failures and unknowns are recorded as such and never re-run under the same key, no
intent means no call, and an agent process SIGKILLed inside its call is reported `unknown`."""

from __future__ import annotations

import asyncio
import os
import pathlib
import signal
import subprocess
import sys
import threading
from typing import Any, Dict, List, Tuple

import pytest

import serin
from conftest import Server, push_two_bundles, wait_for

AGENT = pathlib.Path(__file__).resolve().parent / "effect_agent.py"
ARGS = {"order": "o-17", "amount_cents": 1200}


def ledger(server: Server, token: str, status: str = "") -> List[Dict[str, Any]]:
    query = f"&status={status}" if status else ""
    code, body = server.http("GET", f"/v1/agents/support/effects?bundle=2{query}", token=token)
    assert code == 200, body
    return list(body)


def status_of(server: Server, token: str, key: str) -> str:
    return next(e["status"] for e in ledger(server, token) if e["key"] == key)


def setup(server: Server, tmp_path: pathlib.Path) -> Tuple[str, str]:
    """support@2 stable in dev; returns (sdk token, viewer token)."""
    push_two_bundles(server, tmp_path)
    server.cli("deploy", "support", "--env", "dev", "--bundle", "2")
    return server.token("sdk"), server.token("viewer")


@pytest.fixture
def env(server: Server, tmp_path: pathlib.Path) -> Any:
    sdk, viewer = setup(server, tmp_path)
    with serin.Client(server.url, sdk, "dev", backoff_min=0.05, backoff_max=0.25) as c:
        yield server, c, viewer


def effect(c: serin.Client, fn: Any, rid: str, **kw: Any) -> "serin.EffectResult[Any]":
    d = c.decide("support", request_id=rid)
    kw.setdefault("backoff_base", 0.01)
    kw.setdefault("backoff_cap", 0.05)
    return c.effect(fn, decision=d, tool="refund", args=ARGS, **kw)


def test_a_retried_effect_runs_once(env: Any) -> None:
    server, c, viewer = env
    calls: List[int] = []

    def refund() -> str:
        calls.append(1)
        if len(calls) < 3:
            raise ConnectionError("payments unreachable")
        return "re_1"

    r = effect(c, refund, "req-1", retry_on=(ConnectionError,), detail=lambda v: f"refund {v}")
    assert (r.ran, r.value, r.attempts, r.recorded) == (True, "re_1", 3, True)
    assert r.effect is not None and (r.effect["status"], r.effect["detail"]) == ("committed", "refund re_1")
    assert r.key.startswith("support/2/") and r.effect["bundle"] == 2 and r.effect["request_id"] == "req-1"

    # The same call again (the request retried, or another worker): recorded, not called.
    again = effect(c, refund, "req-1", retry_on=(ConnectionError,))
    assert (again.ran, again.value, again.key) == (False, None, r.key)
    assert again.effect is not None and again.effect["detail"] == "refund re_1"
    assert len(calls) == 3
    # The digest does not depend on key order; another request is another effect.
    assert serin.args_digest({"b": 1, "a": [1, 2]}) == serin.args_digest({"a": [1, 2], "b": 1})
    assert effect(c, lambda: "re_2", "req-2").key != r.key


def test_failures_and_unknowns_are_recorded_and_never_rerun(env: Any) -> None:
    server, c, viewer = env
    calls: List[str] = []

    def declined() -> str:
        calls.append("declined")
        raise ValueError("card declined")

    with pytest.raises(serin.EffectFailedError) as failed:
        effect(c, declined, "req-f", retry_on=(ConnectionError,))
    assert isinstance(failed.value.__cause__, ValueError)
    assert (failed.value.attempts, failed.value.recorded, failed.value.previously) == (1, True, False)
    assert status_of(server, viewer, failed.value.key or "") == "failed"
    with pytest.raises(serin.EffectFailedError) as again:
        effect(c, lambda: calls.append("again"), "req-f")
    assert again.value.previously and calls == ["declined"]

    # Transient errors until the attempts run out: failed, each attempt counted.
    def flaky() -> None:
        calls.append("flaky")
        raise ConnectionError("payments unreachable")

    with pytest.raises(serin.EffectFailedError) as exhausted:
        effect(c, flaky, "req-t", retry_on=(ConnectionError,), attempts=4)
    assert exhausted.value.attempts == 4 and calls.count("flaky") == 4

    # The call cannot tell whether it acted: unknown, and a retry refuses to act.
    def ambiguous() -> None:
        calls.append("ambiguous")
        raise TimeoutError("read timed out after the request was sent")

    with pytest.raises(serin.EffectUnknownError) as unknown:
        effect(c, ambiguous, "req-u", retry_on=(ConnectionError,), unknown_on=(TimeoutError,))
    assert status_of(server, viewer, unknown.value.key or "") == "unknown"
    with pytest.raises(serin.EffectUnknownError):
        effect(c, lambda: calls.append("retry"), "req-u")
    assert calls.count("ambiguous") == 1 and "retry" not in calls

    # A coroutine still running at the timeout is cancelled and recorded unknown.
    cancelled = threading.Event()

    async def slow() -> str:
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            cancelled.set()
            raise
        return "never"

    async def run() -> None:
        d = c.decide("support", request_id="req-slow")
        await c.aeffect(slow, decision=d, tool="refund", args=ARGS, timeout=0.3)

    with pytest.raises(serin.EffectUnknownError) as timed_out:
        asyncio.run(run())
    assert cancelled.is_set()
    assert status_of(server, viewer, timed_out.value.key or "") == "unknown"

    async def arun() -> "serin.EffectResult[str]":
        d = c.decide("support", request_id="req-async")

        async def ok() -> str:
            return "re_async"

        return await c.aeffect(ok, decision=d, tool="refund", args=ARGS)

    assert asyncio.run(arun()).value == "re_async"


def test_no_intent_no_call(env: Any) -> None:
    server, c, viewer = env
    calls: List[int] = []
    with pytest.raises(serin.InvalidEffectError):
        c.effect(lambda: calls.append(1), agent="support", bundle=0, request_id="r", tool="refund", args=ARGS)
    with pytest.raises(serin.EffectNotRecordedError):
        c.effect(lambda: calls.append(1), agent="support", bundle=9, request_id="r", tool="refund", args=ARGS)
    server.kill()
    with pytest.raises(serin.EffectNotRecordedError):
        effect(c, lambda: calls.append(1), "req-down", ledger_attempts=2)
    assert calls == []


def test_an_agent_killed_inside_its_call_is_reported_unknown(ticking_server: Server, tmp_path: pathlib.Path) -> None:
    server = ticking_server
    sdk, viewer = setup(server, tmp_path)
    env = {k: v for k, v in os.environ.items() if not k.startswith("SERIN_")}
    agent = subprocess.Popen([sys.executable, str(AGENT), server.url, sdk, "req-kill"],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        assert agent.stdout is not None
        line = agent.stdout.readline()
        assert line.strip() == "inside support@2", (line, agent.stderr.read() if agent.poll() is not None else "")
        # Inside the call: the intent is recorded, with the agent's 1 s timeout.
        [open_effect] = ledger(server, viewer)
        assert (open_effect["status"], open_effect["timeout_ms"], open_effect["request_id"]) == ("intent", 1000, "req-kill")
        os.kill(agent.pid, signal.SIGKILL)
        assert agent.wait(timeout=10) == -signal.SIGKILL
    finally:
        if agent.poll() is None:
            agent.kill()
        agent.wait()
    key = open_effect["key"]

    # The process never posts a result; after the timeout the server's sweep says unknown.
    unknown = wait_for("the sweep", lambda: ledger(server, viewer, "unknown"), timeout=20)
    assert [e["key"] for e in unknown] == [key]
    assert "no result within 1000 ms" in (unknown[0]["detail"] or "")
    out = server.cli("effects", "support", "--bundle", "2", "--status", "unknown")
    assert key in out and "1 unknown; WARNING" in out, out
    code, audit = server.http("GET", "/v1/audit?limit=100")
    assert code == 200, audit
    expired = [e for e in audit if e["action"] == "effect.expire"]
    assert [e["subject"] for e in expired] == [key], audit

    # The restarted agent retries the request: the SDK refuses to act on an unknown effect.
    calls: List[int] = []
    with serin.Client(server.url, sdk, "dev") as c:
        d = c.decide("support", request_id="req-kill")
        with pytest.raises(serin.EffectUnknownError) as e:
            c.effect(lambda: calls.append(1), decision=d, tool="refund",
                     args={"order": "o-9", "amount_cents": 1200}, timeout=1.0)
        assert e.value.key == key and (e.value.effect or {})["status"] == "unknown"
    assert calls == []
