"""Fixtures: the conformance vectors, the golden bucketing file and a real `serin`
server (the binary named by $SERIN_BIN, on port 0, over a temporary data dir)."""

from __future__ import annotations

import json
import os
import pathlib
import queue
import shutil
import subprocess
import threading
import time
import urllib.error
import urllib.request
from typing import Any, Dict, Iterator, List, Optional, Tuple

import pytest

REPO = pathlib.Path(__file__).resolve().parents[3]
VECTORS = REPO / "crates" / "serin-engine" / "testdata" / "conformance"
GOLDEN_BUCKETING = REPO / "crates" / "serin-core" / "testdata" / "bucketing-v1.json"
SAMPLE_BUNDLE = REPO / "examples" / "bundles" / "support"


def vector_files() -> List[pathlib.Path]:
    return sorted(VECTORS.glob("*.json"))


class Server:
    """One `serin server` process; `restart()` brings it back on the same port and data."""

    def __init__(self, binary: str, data: pathlib.Path, extra: Tuple[str, ...] = ()) -> None:
        self.binary = binary
        self.data = data
        self.extra = extra
        self.port = 0
        self.url = ""
        self.admin: Optional[str] = None
        self.proc: Optional[subprocess.Popen[str]] = None
        self.start()

    def start(self) -> None:
        proc = subprocess.Popen(
            [self.binary, "server", "--data", str(self.data), "--listen", f"127.0.0.1:{self.port}", "--refresh-ms", "200", *self.extra],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            env={k: v for k, v in os.environ.items() if not k.startswith("SERIN_")} | {"SERIN_LOG": "warn"},
        )
        self.proc = proc
        lines: "queue.Queue[str]" = queue.Queue()

        def drain() -> None:
            assert proc.stdout is not None
            for line in proc.stdout:
                lines.put(line)

        threading.Thread(target=drain, daemon=True).start()
        deadline = time.monotonic() + 60
        while True:
            line = lines.get(timeout=max(0.1, deadline - time.monotonic())).strip()
            if line.startswith("SERIN_TOKEN="):
                self.admin = line.split("=", 1)[1]
            if line.startswith("serin listening on "):
                self.url = line.removeprefix("serin listening on ").strip()
                self.port = int(self.url.rsplit(":", 1)[1])
                return

    def kill(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()
            self.proc = None

    def restart(self) -> None:
        self.kill()
        # The port was ours a moment ago; retry briefly in case it lingers.
        for _ in range(50):
            try:
                self.start()
                return
            except Exception:
                time.sleep(0.1)
        self.start()

    def cli(self, *args: str) -> str:
        env = {k: v for k, v in os.environ.items() if not k.startswith("SERIN_")}
        env |= {"SERIN_SERVER": self.url, "SERIN_TOKEN": self.admin or ""}
        out = subprocess.run([self.binary, *args], env=env, capture_output=True, text=True, stdin=subprocess.DEVNULL)
        assert out.returncode == 0, f"serin {' '.join(args)}: {out.stdout}{out.stderr}"
        return out.stdout

    def http(self, method: str, path: str, body: Any = None, token: Optional[str] = None) -> Tuple[int, Any]:
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.url + path, data=data, method=method)
        req.add_header("Authorization", f"Bearer {token or self.admin}")
        if data is not None:
            req.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(req, timeout=10) as r:
                return r.status, json.loads(r.read() or b"null")
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read() or b"null")

    def token(self, role: str) -> str:
        status, body = self.http("POST", "/v1/tokens", {"role": role, "name": f"pytest-{role}"})
        assert status == 201, body
        return str(body["token"])


def serin_bin() -> str:
    binary = os.environ.get("SERIN_BIN")
    if not binary:
        pytest.fail("SERIN_BIN must name the serin binary (the Rust test python_sdk sets it)")
    return binary


@pytest.fixture
def server(tmp_path: pathlib.Path) -> Iterator[Server]:
    s = Server(serin_bin(), tmp_path / "data")
    try:
        yield s
    finally:
        s.kill()


@pytest.fixture
def ticking_server(tmp_path: pathlib.Path) -> Iterator[Server]:
    """A server whose leader jobs (the ledger's sweep of overdue intents) run every 100 ms."""
    s = Server(serin_bin(), tmp_path / "data", ("--tick-ms", "100"))
    try:
        yield s
    finally:
        s.kill()


def push_two_bundles(server: Server, work: pathlib.Path) -> None:
    """support@1 is the sample bundle, support@2 the same with another prompt."""
    server.cli("bundle", "push", str(SAMPLE_BUNDLE))
    variant = work / "support"
    shutil.copytree(SAMPLE_BUNDLE, variant)
    (variant / "prompt.md").write_text("You help with access requests via `create_support_ticket(`. Be brief.\n")
    assert "support@2" in server.cli("bundle", "push", str(variant))


def wait_for(what: str, check: Any, timeout: float = 10.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


def load_json(path: pathlib.Path) -> Dict[str, Any]:
    return json.loads(path.read_text())
