"""Evaluates Serin flags and an agent's routing through the stock OpenFeature OFREP provider.

Usage: ofrep_client.py URL TOKEN ENV. Prints one JSON object of evaluation details.
"""

import json
import sys

from openfeature import api
from openfeature.contrib.provider.ofrep import OFREPProvider
from openfeature.evaluation_context import EvaluationContext


def plain(x):
    return getattr(x, "value", x)


def details(d):
    return {
        "value": d.value,
        "variant": d.variant,
        "reason": plain(d.reason),
        "error_code": plain(d.error_code),
        "metadata": dict(d.flag_metadata or {}),
    }


url, token, env = sys.argv[1:4]
api.set_provider(
    OFREPProvider(
        url,
        headers_factory=lambda: {"Authorization": f"Bearer {token}", "Serin-Env": env},
    )
)
client = api.get_client()
ctx = EvaluationContext(targeting_key="user-7", attributes={"tenant": "acme"})
out = {
    "bool": details(client.get_boolean_details("support.beta", False, ctx)),
    "string": details(client.get_string_details("support.tone", "none", ctx)),
    "integer": details(client.get_integer_details("support.max-tokens", 0, ctx)),
    "float": details(client.get_float_details("support.threshold", 0.0, ctx)),
    "object": details(client.get_object_details("support.params", {}, ctx)),
    "agent": details(client.get_string_details("serin.agent.support", "fallback", ctx)),
    "missing": details(client.get_boolean_details("support.ghost", False, ctx)),
    "no_key": details(client.get_boolean_details("support.beta", False, EvaluationContext())),
}
print(json.dumps(out))
