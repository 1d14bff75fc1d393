"""A small simulated agent, instrumented with the OpenTelemetry GenAI conventions.

It routes each request with the OpenFeature OFREP provider (flag serin.agent.support),
then exports one invoke_agent span per request, with a chat span and a tool span below it,
through the stock OTLP/HTTP exporter. Tools fail on the canary when asked to.

Usage: otlp_agent.py URL TOKEN ENV REQUESTS CANARY_TOOL_FAILURE_EVERY COMPRESSION
(COMPRESSION: gzip or none; the exporter sends protobuf). Prints a JSON summary.
"""

import json
import sys
import time

from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.http import Compression
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.trace import Status, StatusCode

from openfeature import api
from openfeature.contrib.provider.ofrep import OFREPProvider
from openfeature.evaluation_context import EvaluationContext

url, token, env, requests, fail_every, compression = sys.argv[1:7]
requests, fail_every = int(requests), int(fail_every)

api.set_provider(
    OFREPProvider(
        url,
        headers_factory=lambda: {"Authorization": f"Bearer {token}", "Serin-Env": env},
    )
)
flags = api.get_client()

provider = TracerProvider(
    resource=Resource.create({"service.name": "support-agent", "serin.env": env})
)
exporter = OTLPSpanExporter(
    endpoint=f"{url}/v1/traces",
    headers={"Authorization": f"Bearer {token}"},
    compression=Compression.Gzip if compression == "gzip" else Compression.NoCompression,
)
processor = BatchSpanProcessor(exporter)
provider.add_span_processor(processor)
tracer = provider.get_tracer("simulated-agent")

arms = {}
for i in range(requests):
    route = flags.get_string_details(
        "serin.agent.support", "", EvaluationContext(targeting_key=f"user-{i}")
    )
    arm = route.variant
    arms[arm] = arms.get(arm, 0) + 1
    attributes = {
        "gen_ai.operation.name": "invoke_agent",
        "gen_ai.agent.name": "support",
        "serin.bundle": route.value,
        "serin.arm": arm,
        "serin.snapshot_version": int(route.flag_metadata["snapshotVersion"]),
        "serin.request_id": f"otlp-{i}",
        "serin.user": f"user-{i}",
    }
    with tracer.start_as_current_span("invoke_agent support", attributes=attributes):
        with tracer.start_as_current_span(
            "chat claude",
            attributes={
                "gen_ai.operation.name": "chat",
                "gen_ai.request.model": "claude-opus-4-7-20260108",
                "gen_ai.usage.input_tokens": 1200,
                "gen_ai.usage.output_tokens": 300,
            },
        ):
            time.sleep(0.0005)
        with tracer.start_as_current_span(
            "execute_tool create_support_ticket",
            attributes={"gen_ai.operation.name": "execute_tool"},
        ) as tool:
            if arm == "canary" and fail_every > 0 and i % fail_every == 0:
                tool.set_attribute("error.type", "tool_error")
                tool.set_status(Status(StatusCode.ERROR, "ticket system refused"))
    # Every trace's spans end together; flushing between requests keeps each trace in
    # one export, as docs/otlp.md asks.
    if i % 100 == 99:
        provider.force_flush()

provider.force_flush()
provider.shutdown()
print(json.dumps({"arms": arms}))
