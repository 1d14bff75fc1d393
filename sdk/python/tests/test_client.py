"""The live client against a real `serin` server: deploy, kill, flags, release and
rollback, the server killed (stale decisions) and back, outcomes reaching the guardrails,
threads, asyncio, fork and bad input."""

from __future__ import annotations

import asyncio
import json
import os
import pathlib
import threading
import time
from typing import Any, Iterator, Tuple

import pytest

import serin
from conftest import Server, push_two_bundles, wait_for

PLAN = "steps:\n  - canary: {weight: 50%, min_duration: 1h, min_requests: 100000}\n"


@pytest.fixture
def deployed(server: Server, tmp_path: pathlib.Path) -> Tuple[Server, str]:
    """support@1 deployed in dev (lenient), support@2 pushed; returns an sdk token."""
    push_two_bundles(server, tmp_path)
    server.cli("deploy", "support", "--env", "dev", "--bundle", "1")
    return server, server.token("sdk")


@pytest.fixture
def client(deployed: Tuple[Server, str], tmp_path: pathlib.Path) -> Iterator[serin.Client]:
    server, token = deployed
    c = serin.Client(server.url, token, "dev", cache_dir=str(tmp_path / "cache"),
                     backoff_min=0.05, backoff_max=0.25, outcome_flush=0.1)
    try:
        yield c
    finally:
        c.close()


def decide(c: serin.Client, rid: str = "r-1", **ctx: Any) -> serin.Decision:
    return c.decide("support", request_id=rid, **ctx)


def test_lifecycle_against_a_real_server(deployed: Tuple[Server, str], tmp_path: pathlib.Path) -> None:
    server, token = deployed
    cache = tmp_path / "cache"
    with serin.Client(server.url, token, "dev", cache_dir=str(cache), backoff_min=0.05, backoff_max=0.25) as c:
        d = decide(c, user="u-1", tenant="acme")
        assert (d.arm, d.bundle_id, d.reason, d.stale) == ("stable", "support@1", "no_release", False)
        assert d.bundle is not None and "support assistant" in d.bundle.prompt
        assert d.bundle.model["provider"] and isinstance(d.bundle.tools, list)
        assert d.snapshot_version == c.snapshot_version
        assert c.health()["connected"] is True

        server.cli("kill", "support", "--env", "dev", "--reason", "pytest")
        d = wait_for("killed", lambda: (x := decide(c)).arm == "killed" and x)
        assert (d.bundle, d.reason) == (None, "kill_switch")
        server.cli("unkill", "support", "--env", "dev", "--reason", "pytest")
        wait_for("unkilled", lambda: decide(c).arm == "stable")

        flag = {"key": "support.tone", "on": "warm", "off": "plain", "rollout": "100%"}
        status, body = server.http("PUT", "/v1/envs/dev/flags/support.tone", {"flag": flag})
        assert status == 200, body
        d = wait_for("flag", lambda: (x := decide(c)).flags and x)
        assert d.flags == {"support.tone": "warm"} and d.flag("support.tone") == "warm"
        assert d.flag("support.missing", "dflt") == "dflt"

        # A release splits traffic; outcomes recorded from Python reach its guardrails.
        plan = tmp_path / "plan.yaml"
        plan.write_text(PLAN)
        server.cli("release", "start", "support", "--env", "dev", "--bundle", "2", "--plan", str(plan))
        wait_for("release", lambda: decide(c).release is not None)
        arms = {"stable": 0, "canary": 0}
        for i in range(200):
            d = decide(c, f"req-{i}", user=f"user-{i}")
            arms[d.arm] += 1
            assert c.record(serin.Outcome.of(d, latency_ms=100.0 + i % 7, cost_usd=0.001, tokens_in=10, tokens_out=5))
        assert arms["canary"] > 40 and arms["stable"] > 40, arms

        def counted() -> Any:
            status, body = server.http("GET", "/v1/envs/dev/agents/support/guardrails")
            assert status == 200, body
            comps = body["comparisons"]
            return comps and comps[0]["canary"]["requests"] == arms["canary"] \
                and comps[0]["control"]["requests"] == arms["stable"] and comps[0]
        comp = wait_for("outcomes in the guardrails", counted)
        assert comp["candidate"] == "support@2"
        assert c.health()["outcomes"]["sent"] >= 200

        server.cli("release", "abort", "support", "--env", "dev", "--reason", "pytest")
        wait_for("release over", lambda: decide(c).release is None)
        server.cli("deploy", "support", "--env", "dev", "--bundle", "2")
        wait_for("support@2", lambda: decide(c).bundle_id == "support@2")
        server.cli("rollback", "support", "--env", "dev", "--reason", "pytest")
        wait_for("rolled back", lambda: decide(c).bundle_id == "support@1")

        # The server dies: decisions keep serving, marked stale.
        version = c.snapshot_version
        server.kill()
        wait_for("stale", lambda: c.health()["stale"])
        d = decide(c, user="u-1")
        assert (d.stale, d.bundle_id, d.snapshot_version) == (True, "support@1", version)
        assert "stale" in d.reason_text
        t0 = time.monotonic()
        for _ in range(1000):
            decide(c)
        assert time.monotonic() - t0 < 1.0, "decide() must never wait for the network"

        # Back on the same port and store: fresh again, and following changes.
        server.restart()
        wait_for("fresh again", lambda: not decide(c).stale)
        server.cli("kill", "support", "--env", "dev", "--reason", "after restart")
        wait_for("killed after restart", lambda: decide(c).arm == "killed")

    with pytest.raises(serin.ClosedError) as e:
        decide(c)
    assert e.value.code == "closed"

    # Fail-static start: server down, the disk cache serves, stale.
    server.kill()
    with serin.Client(server.url, token, "dev", cache_dir=str(cache), backoff_min=0.05, backoff_max=0.25) as c2:
        d = decide(c2)
        assert (d.arm, d.stale) == ("killed", True)


def test_start_without_server_or_cache_times_out(tmp_path: pathlib.Path) -> None:
    t0 = time.monotonic()
    with pytest.raises(serin.StartTimeoutError) as e:
        serin.Client("http://127.0.0.1:9", "serin_x_y", "dev", cache_dir=str(tmp_path), start_timeout=0.3)
    assert e.value.code == "start_timeout" and time.monotonic() - t0 < 5


def test_bad_config() -> None:
    with pytest.raises(serin.ConfigError):
        serin.Client("ftp://nope", "t", "dev")
    with pytest.raises(serin.ConfigError):
        serin.Client("http://127.0.0.1:9", "t", "Not An Env!")
    with pytest.raises(serin.ConfigError):
        serin.Client("http://127.0.0.1:9", "t", "dev", start_timeout=-1)


def test_bad_input_is_a_clear_exception(client: serin.Client) -> None:
    for ctx in [dict(user=42), dict(tenant=b"acme"), dict(workload=["x"]), dict(user="u" * 1_000_000)]:
        with pytest.raises(serin.InvalidContextError) as e:
            client.decide("support", request_id="r", **ctx)
        assert e.value.code == "invalid_context" and isinstance(e.value, TypeError)
    for rid in ["", None, 7, "r" * 257]:
        with pytest.raises(serin.InvalidContextError):
            client.decide("support", request_id=rid)
    with pytest.raises(TypeError):
        client.decide("support")  # type: ignore[call-arg]
    with pytest.raises(serin.UnknownAgentError) as u:
        client.decide("nope", request_id="r")
    assert u.value.code == "unknown_agent"
    with pytest.raises(serin.InvalidOutcomeError):
        client.record({"request_id": "r"})  # type: ignore[arg-type]
    d = client.decide("support", request_id="r")
    with pytest.raises(serin.InvalidOutcomeError):
        client.record(serin.Outcome.of(d, latency_ms=float("nan")))
    with pytest.raises(serin.InvalidOutcomeError):
        client.record(serin.Outcome.of(d, latency_ms=1.0, error_class="weird"))
    # Still serving after all that.
    assert client.decide("support", request_id="r").arm == "stable"


def test_corrupted_cache_falls_back_to_the_server(deployed: Tuple[Server, str], tmp_path: pathlib.Path) -> None:
    server, token = deployed
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / "serin-snapshot-dev.json").write_bytes(b"\x00{not json" * 1000)
    with serin.Client(server.url, token, "dev", cache_dir=str(cache)) as c:
        assert decide(c).arm == "stable"
    server.kill()
    (cache / "serin-snapshot-dev.json").write_text('{"env": "dev", "version": "garbage"}')
    with pytest.raises(serin.StartTimeoutError):
        serin.Client(server.url, token, "dev", cache_dir=str(cache), start_timeout=0.3)


def test_garbage_server_keeps_decide_alive(tmp_path: pathlib.Path, deployed: Tuple[Server, str]) -> None:
    """A server answering 500s or garbage: the client serves its cache, stale, and never hangs."""
    import http.server

    server, token = deployed
    cache = tmp_path / "cache"
    with serin.Client(server.url, token, "dev", cache_dir=str(cache)):
        pass
    server.kill()

    class Garbage(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if "stream" in self.path:
                self.send_response(200)
                self.send_header("Content-Type", "text/event-stream")
                self.end_headers()
                self.wfile.write(b"event: snapshot\ndata: {\"garbage\n\n")
            else:
                self.send_response(500)
                self.end_headers()
                self.wfile.write(b"oops")

        def do_POST(self) -> None:
            self.do_GET()

        def log_message(self, *args: Any) -> None:
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Garbage)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{httpd.server_address[1]}"
        with serin.Client(url, token, "dev", cache_dir=str(cache), backoff_min=0.05, backoff_max=0.1) as c:
            time.sleep(0.3)
            d = decide(c)
            assert (d.arm, d.stale) == ("stable", True)
            assert c.health()["stale"]
    finally:
        httpd.shutdown()


def test_threads_and_asyncio(client: serin.Client, deployed: Tuple[Server, str], tmp_path: pathlib.Path) -> None:
    errors = []

    def worker(n: int) -> None:
        try:
            for i in range(2000):
                assert client.decide("support", request_id=f"{n}-{i}", user=f"u{i}").arm == "stable"
        except Exception as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors

    server, token = deployed

    async def main() -> None:
        ticks = 0

        async def ticker() -> None:
            nonlocal ticks
            while True:
                ticks += 1
                await asyncio.sleep(0.005)

        tick = asyncio.ensure_future(ticker())
        async with await serin.Client.connect(server.url, token, "dev", cache_dir=str(tmp_path / "c2")) as c:
            for i in range(100):
                assert c.decide("support", request_id=f"a-{i}").arm == "stable"
                await asyncio.sleep(0)
        tick.cancel()
        assert ticks > 0

    asyncio.run(main())


@pytest.mark.skipif(not hasattr(os, "fork"), reason="no fork on this platform")
def test_fork_restarts_background_work(client: serin.Client, deployed: Tuple[Server, str]) -> None:
    server, _ = deployed
    assert decide(client).arm == "stable"
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: must follow changes through its own, restarted stream
        code = 1
        try:
            os.close(r)
            os.read(os.open(os.devnull, os.O_RDONLY), 0)
            deadline = time.monotonic() + 15
            seen = "none"
            while time.monotonic() < deadline:
                seen = decide(client).arm
                if seen == "killed":
                    code = 0
                    break
                time.sleep(0.02)
            os.write(w, json.dumps({"arm": seen, "health": client.health()}).encode())
        finally:
            os._exit(code)
    os.close(w)
    time.sleep(0.5)
    server.cli("kill", "support", "--env", "dev", "--reason", "fork")
    _, status = os.waitpid(pid, 0)
    report = os.read(r, 65536).decode()
    os.close(r)
    assert os.waitstatus_to_exitcode(status) == 0, report
    wait_for("parent killed too", lambda: decide(client).arm == "killed")


def test_example_agent_loop_runs(deployed: Tuple[Server, str], tmp_path: pathlib.Path) -> None:
    import subprocess
    import sys

    from conftest import REPO

    server, token = deployed
    env = dict(os.environ, SERIN_SERVER=server.url, SERIN_TOKEN=token, SERIN_ENV="dev", HOME=str(tmp_path))
    out = subprocess.run([sys.executable, str(REPO / "examples/python/agent_loop.py")], env=env,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "support@1" in out.stdout and "outcomes:" in out.stdout


def test_outcome_windows_reach_the_guardrails(deployed: Tuple[Server, str], tmp_path: pathlib.Path) -> None:
    """With outcome_windows=True the same outcomes travel as windows and are all counted."""
    server, token = deployed
    plan = tmp_path / "plan.yaml"
    plan.write_text(PLAN)
    server.cli("release", "start", "support", "--env", "dev", "--bundle", "2", "--plan", str(plan))
    with serin.Client(server.url, token, "dev", backoff_min=0.05, backoff_max=0.25,
                      outcome_flush=0.1, outcome_windows=True) as c:
        wait_for("release", lambda: decide(c).release is not None)
        arms = {"stable": 0, "canary": 0}
        for i in range(300):
            d = decide(c, f"win-{i}", user=f"user-{i}")
            arms[d.arm] += 1
            assert c.record(serin.Outcome.of(d, latency_ms=100.0 + i % 7, cost_usd=0.001))
        assert arms["canary"] > 40 and arms["stable"] > 40, arms

        def counted() -> Any:
            status, body = server.http("GET", "/v1/envs/dev/agents/support/guardrails")
            assert status == 200, body
            comps = body["comparisons"]
            return comps and comps[0]["canary"]["requests"] == arms["canary"] \
                and comps[0]["control"]["requests"] == arms["stable"] and comps[0]
        wait_for("windows in the guardrails", counted)
        assert c.health()["outcomes"]["sent"] == 300
    server.cli("release", "abort", "support", "--env", "dev", "--reason", "pytest")
