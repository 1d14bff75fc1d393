"""A small agent loop on the Python SDK: decide per request, run the chosen bundle on a
fake model, record the outcome. Run it against a server where `support` is deployed:

    SERIN_SERVER=http://127.0.0.1:7070 SERIN_TOKEN=<an sdk token> python agent_loop.py

The fake model stands in for a provider call; swap `fake_model` for yours.
"""

from __future__ import annotations

import os
import random
import time
import uuid
from typing import Any, Dict

import serin


def fake_model(model: Dict[str, Any], prompt: str, question: str, tone: str) -> str:
    """Pretends to call `model` with the bundle's prompt; fails now and then."""
    time.sleep(random.uniform(0.01, 0.05))
    if random.random() < 0.02:
        raise TimeoutError("the model did not answer in time")
    return f"[{model['snapshot']}, {tone}] {question} -> answered"


def main() -> None:
    server = os.environ.get("SERIN_SERVER", "http://127.0.0.1:7070")
    token = os.environ["SERIN_TOKEN"]
    env = os.environ.get("SERIN_ENV", "dev")
    cache = os.path.join(os.path.expanduser("~"), ".cache", "serin-agent-loop")

    # The cache lets the agent start, and keep deciding, while the server is away.
    with serin.Client(server, token, env, cache_dir=cache) as client:
        for i in range(20):
            user, tenant = f"user-{i % 7}", random.choice(["acme", "globex"])
            d = client.decide("support", request_id=str(uuid.uuid4()), user=user, tenant=tenant)
            if d.bundle is None:  # killed: do not call the model at all
                print(f"{d.request_id}: switched off ({d.reason_text})")
                continue
            started = time.monotonic()
            error = None
            try:
                answer = fake_model(d.bundle.model, d.bundle.prompt, "reset my VPN token", d.flag("support.tone", "plain"))
            except TimeoutError:
                answer, error = None, "transient"
            latency_ms = (time.monotonic() - started) * 1000
            client.record(serin.Outcome.of(d, latency_ms=latency_ms, error_class=error, cost_usd=0.002))
            print(f"{d.request_id[:8]} {d.arm:6} {d.bundle.id:10} stale={d.stale} {answer}")
        print("outcomes:", client.health()["outcomes"])


if __name__ == "__main__":
    main()
