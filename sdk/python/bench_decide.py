"""Times Client.decide() per call against a plain dict lookup in the same run (the
baseline: the cheapest thing a Python agent could do per request instead).

    SERIN_SERVER=... SERIN_TOKEN=<sdk token> python bench_decide.py   # a live client
    python bench_decide.py                                           # a static snapshot

Without a server it decides on a static snapshot (serin.StaticRouter): the same native
decide path, minus the client's closed check.
"""

from __future__ import annotations

import json
import os
import pathlib
import timeit

import serin

N = 200_000
REPEAT = 5


def static_router() -> serin.StaticRouter:
    vectors = pathlib.Path(__file__).resolve().parents[2] / "crates/serin-engine/testdata/conformance"
    doc = json.loads((vectors / "stickiness.json").read_text())
    return serin.StaticRouter.from_json(json.dumps(doc["snapshot"]))


def main() -> None:
    server, token = os.environ.get("SERIN_SERVER"), os.environ.get("SERIN_TOKEN")
    if server and token:
        target = serin.Client(server, token, os.environ.get("SERIN_ENV", "dev"))
        agent = os.environ.get("SERIN_AGENT", "support")
    else:
        target, agent = static_router(), "by-user"
    table = {"u-42": "support@1"}

    def per_call(stmt, **g) -> float:
        return min(timeit.repeat(stmt, globals=g, number=N, repeat=REPEAT)) / N * 1e9

    baseline = per_call("table['u-42']", table=table)
    decide = per_call(
        "d(agent, request_id='r-1', user='u-42', tenant='acme')", d=target.decide, agent=agent
    )
    with_bundle = per_call(
        "d(agent, request_id='r-1', user='u-42', tenant='acme').bundle_id", d=target.decide, agent=agent
    )
    print(f"dict lookup (baseline):       {baseline:8.1f} ns/call")
    print(f"decide():                     {decide:8.1f} ns/call")
    print(f"decide() + .bundle_id:        {with_bundle:8.1f} ns/call")
    print(f"decide() / baseline:          {decide / baseline:8.1f}x")


if __name__ == "__main__":
    main()
