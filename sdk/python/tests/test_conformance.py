"""The conformance vectors and the golden bucketing file, through the Python package."""

from __future__ import annotations

import json
import pathlib
from typing import Any, Dict

import pytest

import serin
from conftest import GOLDEN_BUCKETING, load_json, vector_files

ERRORS = {"unknown_agent": serin.UnknownAgentError, "no_stable": serin.NoStableError}


def observe(router: serin.StaticRouter, agent: str, context: Dict[str, str]) -> Dict[str, Any]:
    try:
        d = router.decide(agent, **context)
    except serin.SerinError as e:
        assert isinstance(e, ERRORS[e.code]), e
        return {"error": e.code}
    return {
        "arm": d.arm,
        "bundle": d.bundle_id,
        "reason": d.reason,
        "sticky_by": d.sticky_by,
        "fell_back_to_request": d.fell_back_to_request,
        "flags": d.flags,
        "flag_reasons": d.flag_reasons,
        **({"wave": d.wave} if d.wave is not None else {}),
    }


def test_every_topic_is_there() -> None:
    names = {p.stem for p in vector_files()}
    for topic in ["kills", "exclusions", "stickiness", "ramp", "flags", "unknown-agent", "no-stable", "waves"]:
        assert topic in names


@pytest.mark.parametrize("path", vector_files(), ids=lambda p: p.stem)
def test_vector_file(path: pathlib.Path) -> None:
    doc = load_json(path)
    router = serin.StaticRouter.from_json(json.dumps(doc["snapshot"]))
    assert router.snapshot_version == doc["snapshot"]["version"]
    for case in doc["cases"]:
        got = observe(router, case["agent"], case["context"])
        assert got == case["expect"], case["name"]
    chain = doc.get("monotonic", [])
    for case in doc["cases"] if chain else []:
        arms = [router.decide(agent, **case["context"]).arm for agent in chain]
        if "canary" in arms:
            assert all(a == "canary" for a in arms[arms.index("canary"):]), (case["name"], arms)


def test_bundle_contents_match_the_snapshot() -> None:
    doc = load_json(next(p for p in vector_files() if p.stem == "kills"))
    router = serin.StaticRouter.from_json(json.dumps(doc["snapshot"]))
    d = router.decide("search", request_id="r-1", tenant="globex")
    b = d.bundle
    assert b is not None
    want = doc["snapshot"]["bundles"]["search@2"]
    assert (b.id, b.number, b.agent) == ("search@2", 2, "search")
    assert b.digest == doc["snapshot"]["agents"]["search"]["stable"]["digest"]
    assert (b.prompt, b.model, b.examples, b.tools) == (want["prompt"], want["model"], want["examples"], want["tools"])
    killed = router.decide("support", request_id="r-1")
    assert killed.bundle is None and killed.arm == "killed" and killed.reason == "kill_switch"
    assert "kill switch" in killed.reason_text
    assert not killed.stale
    assert killed.to_dict() == {"agent": "support", "arm": "killed", "bundle": None, "reason": "kill_switch",
                                "release": None, "snapshot_version": 7, "stale": False, "flags": {},
                                "context": {"request_id": "r-1"}}
    assert repr(killed).startswith('Decision(agent="support", arm="killed", bundle=None')


def test_golden_bucketing() -> None:
    doc = load_json(GOLDEN_BUCKETING)
    assert len(doc["vectors"]) > 10
    for v in doc["vectors"]:
        assert serin.bucket(v["salt"], v["key"]) == v["bucket"], v


def test_bad_snapshots_are_clear_errors() -> None:
    for bad in ["", "{", "[]", '{"env": 1}', json.dumps({"env": "x", "version": 1, "published_at_ms": 0,
                "agents": {"a": {"stable": {"id": "a@1", "number": 1, "digest": "sha256:00"}, "previous": None}}})]:
        with pytest.raises(serin.SnapshotError) as e:
            serin.StaticRouter.from_json(bad)
        assert e.value.code == "invalid_snapshot"
