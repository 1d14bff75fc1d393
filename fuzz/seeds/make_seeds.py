#!/usr/bin/env python3
"""Writes the hand-made seed inputs of each fuzz target into fuzz/corpus/<target>/.

Seeds come from the repository's own examples (examples/bundles/support, the plan and outcome
examples of SPEC/docs, the readiness seed template) plus a few variants that reach the
refusal paths. `cargo fuzz cmin` then keeps what adds coverage.
Run from the repository root: python3 fuzz/seeds/make_seeds.py
"""
import hashlib
import json
import os
import pathlib
import re
import sys

ROOT = pathlib.Path(__file__).resolve().parents[2]
CORPUS = ROOT / "fuzz" / "corpus"


def write(target, data):
    if isinstance(data, str):
        data = data.encode()
    d = CORPUS / target
    d.mkdir(parents=True, exist_ok=True)
    (d / hashlib.sha1(data).hexdigest()).write_bytes(data)


def archive(files):
    return b"\0".join(p.encode() + b"\1" + c for p, c in files)


# --- bundle: the example bundle and variants -------------------------------------------------
support = ROOT / "examples" / "bundles" / "support"
files = sorted(
    (str(p.relative_to(support)), p.read_bytes()) for p in support.rglob("*") if p.is_file()
)
write("bundle", archive(files))
manifest = dict(files)["bundle.yaml"]
variants = [
    manifest.replace(b"prompt: prompt.md", b"prompt: ../prompt.md"),
    manifest.replace(b"prompt: prompt.md", b"prompt: /etc/passwd"),
    manifest.replace(b"tools: tools/", b"tools: ./tools//"),
    manifest.replace(b"agent: support", b"agent: Support!"),
    manifest + b"surprise: 1\n",
    b"agent: support\nmodel: {provider: anthropic, snapshot: latest}\nprompt: p.md\n",
    b"agent: [\n",
    b"- a\n- b\n",
    b"",
]
for v in variants:
    write("bundle", archive([(p, v if p == "bundle.yaml" else c) for p, c in files]))
write("bundle", archive([("bundle.yaml", files[0][1] if files[0][0] == "bundle.yaml" else manifest)]))
tools = [(p, c) for p, c in files if p.startswith("tools/")]
bad_tool = json.dumps({"name": "lookup_account", "description": "x",
                       "input_schema": {"type": "object", "properties": {"id": {"type": 12}}}})
write("bundle", archive([(p, c) for p, c in files if not p.startswith("tools/")]
                         + [("tools/a.json", bad_tool.encode())] + tools[1:]))
write("bundle", archive([(p, c) for p, c in files if not p.startswith("examples/")]
                         + [("examples/x.yaml", b"messages:\n  - role: assistant\n    tool_calls:\n      - {name: nope, arguments: {a: 1}}\n")]))

# --- plan: SPEC and docs examples, variants ---------------------------------------------------
def yaml_blocks(path):
    text = path.read_text()
    return re.findall(r"```yaml\n(.*?)```", text, re.S)

plans = []
for path in [pathlib.Path("/work/shared/SPEC.md"), ROOT / "docs" / "api.md", ROOT / "README.md"]:
    if path.exists():
        for block in yaml_blocks(path):
            if block.lstrip().startswith("steps:"):
                plans.append(block)
for p in plans:
    write("plan", p)
write("plan", "steps:\n  - canary: {weight: 5%, min_requests: 100}\n  - canary: {weight: 100%, min_duration: 1h30m, min_requests: 1}\npromotion: auto\nstickiness: tenant\non_failure: halt\n")
write("plan", "steps:\n  - canary: {weight: 50%, min_duration: 30s}\n  - canary: {weight: 10%, min_duration: 1d}\n")
write("plan", "steps: []\n")
write("plan", "steps:\n  - canary: {weight: 0.5%, min_duration: 0s, min_requests: 0}\nguardrails:\n  error_rate: {max_ratio: 2}\n  settings: {alpha: 0.05, min_requests: 200}\nnotify: [{webhook: 'https://hooks.example/x y'}]\nexclude_tenants: [' a']\n")
write("plan", json.dumps({"steps": [{"canary": {"weight": 0.01, "min_duration": "5m", "min_requests": 5}}]}))

# --- policy: the seed template (written by `serin readiness init`) and variants ---------------
template = ROOT / "fuzz" / "seeds" / "seed-checklist.yaml"
if template.exists():
    write("policy", template.read_text())
write("policy", "")
write("policy", "require: [model_pinned, rollback_target_warm]\nwarn: [trace_coverage]\n")
write("policy", """require: [model_pinned, oncall_owner]
block_if:
  - {computed: model_pinned, status: fail}
  - {evidence_missing: oncall_owner}
rollout_mode: {initial: shadow, max_exposure: 2.5%, shadow_required: true, high_value_tenants: [bigcorp]}
settings: {drill_max_age_days: 30, trace_coverage_min: 0.5, trace_coverage_env: staging, eval_required: true}
items:
  oncall_owner: {title: "Someone is on call", category: operations, owner_hint: sre}
""")
write("policy", "require: [nope]\n")
write("policy", "rollout_mode: {max_exposure: 150%}\n")
write("policy", "settings: {drill_max_age_days: 9999, trace_coverage_min: 1.5}\n")
write("policy", "items:\n  Bad Key: {title: '', category: x}\n")

# --- outcome_batch: the SPEC event and variants -----------------------------------------------
event = {"request_id": "r-1", "trace_id": "t-1", "agent": "support", "env": "prod",
         "snapshot_version": 42, "bundle": "support@5", "arm": "canary",
         "user": "u1", "tenant": "acme", "workload": "create_ticket", "instance": "i-7",
         "region": "us-east", "latency_ms": 1234.5,
         "stages": {"retrieve": 120.0, "llm": 900.0, "tools": 200.0},
         "cost_usd": 0.0123, "tokens": {"input": 1200, "output": 300},
         "error": None, "tool_calls": {"ok": 3, "failed": 0}, "refused": False,
         "eval": {"score": 0.92, "passed": True}}
stable = dict(event, request_id="r-2", arm="stable", bundle="support@4",
              error={"class": "transient", "code": "timeout"}, at_ms=1767225590000)
minimal = {"request_id": "r-3", "agent": "support", "env": "dev", "snapshot_version": 1,
           "bundle": "support@1", "arm": "stable", "latency_ms": 0}
write("outcome_batch", json.dumps({"events": [event, stable, minimal]}))
write("outcome_batch", json.dumps({"events": [event]}))
write("outcome_batch", json.dumps({"events": [dict(event, arm="killed"), dict(event, latency_ms=-1),
                                              dict(event, bundle="billing@5"), dict(event, at_ms=0),
                                              dict(event, stages={"": 1.0}), dict(event, surprise=1),
                                              dict(event, tokens={"input": -1})]}))
write("outcome_batch", json.dumps({"events": []}))
write("outcome_batch", json.dumps({"events": {}, "extra": 1}))

# --- snapshot: full snapshots, and (served NUL delta event) pairs -----------------------------
def bundle(n, snapshot="claude-opus-4-7-20260108"):
    return {"agent": "support",
            "model": {"provider": "anthropic", "snapshot": snapshot,
                      "params": {"temperature": 0.2, "max_tokens": 1024}},
            "prompt": f"You are support v{n}. Use lookup_account( first.\n",
            "examples": [{"name": "locked-account.yaml", "messages": [
                {"role": "user", "content": "My account is locked."},
                {"role": "assistant", "tool_calls": [
                    {"name": "lookup_account", "arguments": {"email": "a@b.c"}}]}]}],
            "tools": [{"name": "lookup_account", "description": "Finds an account.",
                       "input_schema": {"type": "object", "required": ["email"],
                                        "properties": {"email": {"type": "string"}}}}],
            "eval_set": "golden-v3",
            "metadata": {"author": "alex", "reviewer": "jordan", "commit": "9af3c21"}}


def ref(agent, n):
    return {"id": f"{agent}@{n}", "number": n,
            "digest": "sha256:" + hashlib.sha256(f"{agent}{n}".encode()).hexdigest()}


flags = {
    "support.fast-path": {"key": "support.fast-path", "enabled": True, "on": {"model": "fast", "n": 3},
                          "off": False, "stickiness": "user",
                          "allow": {"users": ["u-1"]}, "deny": {"tenants": ["bigcorp"]},
                          "rules": [{"attribute": "tenant", "op": "in", "values": ["acme", "globex"],
                                     "rollout": "50%"},
                                    {"attribute": "region", "op": "not_in", "values": ["eu"]}],
                          "rollout": "25%", "description": "Skip retrieval"},
    "global": {"key": "global", "enabled": False, "on": 1.5, "off": None, "stickiness": "request"},
}
full = {"env": "prod", "version": 7, "published_at_ms": 1767225600000,
        "agents": {
            "support": {"stable": ref("support", 2), "previous": ref("support", 1),
                        "release": {"id": "r-12", "candidate": ref("support", 3), "weight": "5%",
                                    "stickiness": "tenant", "exclude_tenants": ["bigcorp"]},
                        "killed": False, "killed_tenants": ["evil"]},
            "billing": {"stable": ref("billing", 1), "previous": None, "killed": True}},
        "flags": flags,
        "bundles": {"support@1": bundle(1), "support@2": bundle(2), "support@3": bundle(3),
                    "billing@1": dict(bundle(1), agent="billing")}}
write("snapshot", json.dumps(full))
empty = {"env": "dev", "version": 1, "published_at_ms": 0}
write("snapshot", json.dumps(empty))
delta = json.loads(json.dumps(full))
delta["version"] = 8
delta["agents"]["support"]["release"]["weight"] = "25%"
delta["bundles"] = {}
write("snapshot", json.dumps(full).encode() + b"\0" + json.dumps(delta).encode())
promoted = json.loads(json.dumps(full))
promoted["version"] = 9
promoted["agents"]["support"] = {"stable": ref("support", 3), "previous": ref("support", 2)}
promoted["bundles"] = {"support@3": bundle(3)}
write("snapshot", json.dumps(full).encode() + b"\0" + json.dumps(promoted).encode())
missing = json.loads(json.dumps(promoted))
missing["agents"]["support"]["stable"] = ref("support", 4)
write("snapshot", json.dumps(full).encode() + b"\0" + json.dumps(missing).encode())
bad = json.loads(json.dumps(full))
bad["flags"]["support.fast-path"]["rules"][0]["values"] = []
write("snapshot", json.dumps(bad))
