"""An agent process for test_effects.py: decides a request, then runs a refund under the
side-effect ledger whose call blocks until the test SIGKILLs this process.

Usage: effect_agent.py SERVER_URL SDK_TOKEN REQUEST_ID
"""

from __future__ import annotations

import sys
import time

import serin


def main() -> None:
    url, token, request_id = sys.argv[1:4]
    with serin.Client(url, token, "dev", backoff_min=0.05, backoff_max=0.25) as client:
        d = client.decide("support", request_id=request_id)

        def refund() -> str:
            # The intent is recorded by now; the test kills us while we are in here.
            print(f"inside {d.bundle_id}", flush=True)
            time.sleep(600)
            return "re_never"

        client.effect(refund, decision=d, tool="refund", args={"order": "o-9", "amount_cents": 1200}, timeout=1.0)
    print("the call returned: it should have been killed", flush=True)


if __name__ == "__main__":
    main()
