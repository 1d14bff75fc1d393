// The properties the serin-core fuzz targets check. This file depends on serin-core,
// serde_json, serde_path_to_error and jsonschema only, so serin-core's test suite can compile it
// as a module (`crates/serin-core/tests/it/fuzz_corpus.rs`) and replay the committed corpora.
//
// Each function returns `Err(description)` when a property is broken; a panic inside the code
// under test is a failure too.

use std::collections::BTreeMap;
use std::sync::OnceLock;

use serde_json::Value;
use serin_core::bundle::{
    Bundle, BundleFiles, Limits, MANIFEST_FILE, PinPolicy, ValidateOptions, Validation,
    manifest_paths, partial_manifest_paths, validate,
};
use serin_core::catalog::ModelCatalog;
use serin_core::decision::{Arm, CompiledSnapshot, Context, Snapshot};
use serin_core::guardrails::{ArmAggregate, GuardrailConfig, Monitor};
use serin_core::outcome::{EventLimits, OutcomeEvent};
use serin_core::readiness::{Policy, policy_json_schema};
use serin_core::release::Plan;

/// The receive time every outcome is validated against (2026-01-01T00:00:00Z).
pub const NOW_MS: i64 = 1_767_225_600_000;

/// Splits a bundle archive into files. The format is meant to be easy to mutate and to write
/// by hand: entries separated by a NUL byte, each `path` SOH (0x01) `contents`; an entry
/// without SOH is ignored.
pub fn bundle_archive(data: &[u8]) -> BundleFiles {
    data.split(|b| *b == 0)
        .filter_map(|entry| {
            let at = entry.iter().position(|b| *b == 1)?;
            let (path, rest) = entry.split_at(at);
            let contents = rest.get(1..).unwrap_or_default();
            Some((
                String::from_utf8_lossy(path).into_owned(),
                contents.to_vec(),
            ))
        })
        .collect()
}

/// Writes files in the format [`bundle_archive`] reads (used to seed the corpus).
pub fn to_bundle_archive<'a>(files: impl IntoIterator<Item = (&'a str, &'a [u8])>) -> Vec<u8> {
    let mut out = Vec::new();
    for (path, contents) in files {
        if !out.is_empty() {
            out.push(0);
        }
        out.extend_from_slice(path.as_bytes());
        out.push(1);
        out.extend_from_slice(contents);
    }
    out
}

fn catalog() -> &'static ModelCatalog {
    static CATALOG: OnceLock<ModelCatalog> = OnceLock::new();
    CATALOG.get_or_init(ModelCatalog::builtin)
}

/// Limits small enough for fuzzer-sized inputs to reach every size and count check.
const TINY: Limits = Limits {
    manifest_bytes: 1024,
    prompt_bytes: 512,
    example_bytes: 512,
    tool_bytes: 512,
    max_examples: 3,
    max_tools: 3,
    total_bytes: 4096,
    yaml_alias_nodes: 256,
    yaml_alias_bytes: 4096,
};

fn run_validate(files: &BundleFiles, pin_policy: PinPolicy, limits: &Limits) -> Validation {
    validate(
        files,
        &ValidateOptions {
            pin_policy,
            catalog: catalog(),
            limits,
        },
    )
}

/// A manifest path must stay inside the bundle directory: relative, `/`-separated, no `.`,
/// `..` or empty segment, no backslash.
fn safe_path(path: &str) -> bool {
    !path.is_empty()
        && !path.contains('\\')
        && path
            .split('/')
            .all(|segment| !segment.is_empty() && segment != "." && segment != "..")
}

/// The bundle loader's pure half and the validator: the manifest's file paths never leave the
/// bundle, a validation holds a bundle exactly when it has no error, the pin policy and the
/// size limits only ever loosen, and a valid bundle's canonical JSON decodes to the same digest.
pub fn bundle(data: &[u8]) -> Result<(), String> {
    let files = bundle_archive(data);
    if let Some(manifest) = files.get(MANIFEST_FILE) {
        let partial = partial_manifest_paths(manifest);
        for path in [&partial.prompt, &partial.examples, &partial.tools]
            .into_iter()
            .flatten()
        {
            if !safe_path(path) {
                return Err(format!("manifest path {path:?} may leave the bundle"));
            }
        }
        if let Ok(strict) = manifest_paths(manifest) {
            let agrees = Some(&strict.prompt) == partial.prompt.as_ref()
                && strict.examples == partial.examples
                && strict.tools == partial.tools;
            if !agrees {
                return Err(format!(
                    "manifest_paths {strict:?} and partial_manifest_paths {partial:?} disagree"
                ));
            }
        }
    }

    let mut digests = BTreeMap::new();
    for (name, policy, limits) in [
        ("strict", PinPolicy::Strict, &Limits::DEFAULT),
        ("dev", PinPolicy::Dev, &Limits::DEFAULT),
        ("strict-tiny", PinPolicy::Strict, &TINY),
    ] {
        let v = run_validate(&files, policy, limits);
        for p in &v.problems {
            let _ = p.to_string();
        }
        if v.bundle.is_some() == v.has_errors() {
            return Err(format!(
                "{name}: bundle present = {}, errors = {:?}",
                v.bundle.is_some(),
                v.errors().collect::<Vec<_>>()
            ));
        }
        if let Some(b) = &v.bundle {
            digests.insert(name, canonical_round_trip(b)?);
        }
    }
    let strict = digests.get("strict");
    if strict.is_some() && digests.get("dev") != strict {
        return Err("valid under the strict pin policy but not the same under dev".into());
    }
    if let Some(tiny) = digests.get("strict-tiny")
        && strict != Some(tiny)
    {
        return Err("valid under tiny limits but not the same under the default limits".into());
    }
    Ok(())
}

fn canonical_round_trip(b: &Bundle) -> Result<String, String> {
    let json = b.canonical_json();
    let digest = b.digest();
    let back = Bundle::from_canonical_json(&json)
        .map_err(|e| format!("canonical JSON of a valid bundle does not decode: {e}"))?;
    if back.canonical_json() != json || back.digest() != digest {
        return Err("canonical JSON does not round-trip to the same digest".into());
    }
    Ok(digest.as_str().to_owned())
}

/// Release plans: parsing never panics, and a valid plan survives its JSON form (what the
/// store keeps and the API carries) unchanged and still valid.
pub fn plan(data: &[u8]) -> Result<(), String> {
    let Ok(text) = std::str::from_utf8(data) else {
        return Ok(());
    };
    let plan = match Plan::parse_yaml(text) {
        Ok(plan) => plan,
        Err(e) => {
            let _ = e.to_string();
            return Ok(());
        }
    };
    if let Err(e) = plan.validate() {
        let _ = e.to_string();
        return Ok(());
    }
    let _ = (plan.guardrails(), plan.last_step());
    let json = serde_json::to_value(&plan).map_err(|e| format!("plan does not serialize: {e}"))?;
    let back = Plan::from_value(json.clone())
        .map_err(|e| format!("plan's own JSON {json} does not parse: {e}"))?;
    if back != plan {
        return Err(format!(
            "plan changed through JSON: {plan:?} became {back:?}"
        ));
    }
    back.validate()
        .map_err(|e| format!("plan valid before its JSON round trip is not after: {e}"))
}

fn policy_schema() -> Result<&'static jsonschema::Validator, String> {
    static SCHEMA: OnceLock<Result<jsonschema::Validator, String>> = OnceLock::new();
    SCHEMA
        .get_or_init(|| jsonschema::validator_for(&policy_json_schema()).map_err(|e| e.to_string()))
        .as_ref()
        .map_err(|e| format!("the policy JSON Schema does not compile: {e}"))
}

/// Readiness policies: parsing never panics; a valid policy survives its JSON form unchanged
/// and still valid, and that JSON satisfies the published JSON Schema.
pub fn policy(data: &[u8]) -> Result<(), String> {
    let Ok(text) = std::str::from_utf8(data) else {
        return Ok(());
    };
    let policy = match Policy::parse_yaml(text) {
        Ok(policy) => policy,
        Err(e) => {
            let _ = e.to_string();
            return Ok(());
        }
    };
    if let Err(e) = policy.validate() {
        let _ = e.to_string();
        return Ok(());
    }
    for rule in &policy.block_if {
        let _ = rule.describe();
    }
    let json =
        serde_json::to_value(&policy).map_err(|e| format!("policy does not serialize: {e}"))?;
    let back = Policy::from_value(json.clone())
        .map_err(|e| format!("policy's own JSON {json} does not parse: {e}"))?;
    if back != policy {
        return Err(format!(
            "policy changed through JSON: {policy:?} became {back:?}"
        ));
    }
    back.validate()
        .map_err(|e| format!("policy valid before its JSON round trip is not after: {e}"))?;
    let schema = policy_schema()?;
    if let Some(e) = schema.iter_errors(&json).next() {
        return Err(format!(
            "a valid policy {json} fails the JSON Schema at {}: {e}",
            e.instance_path()
        ));
    }
    Ok(())
}

/// Splits a snapshot input at its first NUL byte: (served snapshot, stream event), or just an
/// event when there is no NUL.
pub fn snapshot_parts(data: &[u8]) -> (Option<&[u8]>, &[u8]) {
    match data.iter().position(|b| *b == 0) {
        Some(at) => (
            data.get(..at),
            data.get(at.saturating_add(1)..).unwrap_or_default(),
        ),
        None => (None, data),
    }
}

/// Snapshot decode as an SDK does it: JSON → `Snapshot` → `CompiledSnapshot`. A compiled
/// snapshot decides every agent for a few contexts consistently with itself, evaluates every
/// flag, and survives its JSON form unchanged.
pub fn snapshot(data: &[u8]) -> Result<(), String> {
    let (served, event) = snapshot_parts(data);
    for part in served.into_iter().chain([event]) {
        let Ok(snapshot) = serde_json::from_slice::<Snapshot>(part) else {
            continue;
        };
        let json = serde_json::to_string(&snapshot)
            .map_err(|e| format!("snapshot does not serialize: {e}"))?;
        let back: Snapshot = serde_json::from_str(&json)
            .map_err(|e| format!("snapshot's own JSON does not parse: {e}"))?;
        if back != snapshot {
            return Err("snapshot changed through JSON".into());
        }
        if let Ok(compiled) = CompiledSnapshot::compile(snapshot) {
            exercise(&compiled)?;
        }
    }
    Ok(())
}

/// Decides and evaluates flags on a compiled snapshot, checking what every decision promises.
pub fn exercise(compiled: &CompiledSnapshot) -> Result<(), String> {
    let snapshot = compiled.snapshot();
    let mut tenants: Vec<Option<&str>> = vec![None, Some("acme")];
    for a in snapshot.agents.values() {
        tenants.extend(a.killed_tenants.iter().map(|t| Some(t.as_str())));
        if let Some(r) = &a.release {
            tenants.extend(r.exclude_tenants.iter().map(|t| Some(t.as_str())));
        }
    }
    tenants.truncate(8);
    let ids = ["r-0", "r-1", "r-2", "r-3"];
    for (i, tenant) in tenants.iter().enumerate() {
        for id in ids {
            let ctx = Context {
                request_id: id,
                user: (i % 2 == 0).then_some("u-1"),
                tenant: *tenant,
                workload: Some("chat"),
                instance: Some("i-1"),
                region: Some("eu"),
                pool: Some("blue"),
            };
            for agent in snapshot.agents.keys() {
                let d = compiled
                    .decide(agent, &ctx)
                    .map_err(|e| format!("a routed agent {agent} does not decide: {e}"))?;
                let _ = d.explain(&ctx);
                if d.snapshot_version != compiled.version() {
                    return Err("decision names another snapshot version".into());
                }
                match (d.arm, d.bundle) {
                    (Arm::Killed, None) => {}
                    (Arm::Killed, Some(_)) | (_, None) => {
                        return Err(format!("arm {:?} with bundle {:?}", d.arm, d.bundle));
                    }
                    (_, Some(b)) => {
                        if compiled.bundle(&b.id).is_none() {
                            return Err(format!("decision serves {} which is not carried", b.id));
                        }
                    }
                }
                for f in compiled.agent_flags(agent, &ctx) {
                    let _ = f.value;
                }
            }
            for key in snapshot.flags.keys() {
                if compiled.flag(key, &ctx).is_none() {
                    return Err(format!(
                        "flag {key} is in the snapshot but does not evaluate"
                    ));
                }
            }
        }
    }
    Ok(())
}

/// What the server does with `POST /v1/outcomes`: the body must be `{"events": [...]}`; each
/// event is parsed and validated on its own, and accepted ones are recorded into minute
/// rollups and a guardrail monitor, whose persisted forms must read back.
pub fn outcome_batch(data: &[u8]) -> Result<(), String> {
    let Ok(body) = serde_json::from_slice::<Value>(data) else {
        return Ok(());
    };
    let Value::Object(mut map) = body else {
        return Ok(());
    };
    let Some(Value::Array(events)) = map.remove("events") else {
        return Ok(());
    };
    let mut stable = ArmAggregate::default();
    let mut canary = ArmAggregate::default();
    let mut monitor = Monitor::new(GuardrailConfig::spec_default());
    let mut accepted = 0_u64;
    for raw in events {
        let event: OutcomeEvent = match serde_path_to_error::deserialize(raw) {
            Ok(e) => e,
            Err(e) => {
                let _ = e.path().to_string();
                continue;
            }
        };
        if let Err(e) = event.validate(NOW_MS, &EventLimits::DEFAULT) {
            if !e.field.starts_with('/') {
                return Err(format!("rejection field {:?} is not a pointer", e.field));
            }
            continue;
        }
        accepted += 1;
        match event.arm {
            Arm::Canary => canary.record(&event),
            Arm::Stable => stable.record(&event),
            Arm::Killed => return Err("a killed event was accepted".into()),
        }
        monitor.observe(&event);
    }
    if accepted == 0 {
        return Ok(());
    }
    if stable.requests + canary.requests != accepted {
        return Err("rollups do not count every accepted event".into());
    }
    let _ = (stable.summary(), canary.summary(), monitor.verdicts());
    // An aggregate with no requests has empty sketches, whose persisted form is issue 11's
    // defect 1 (fixed and tested with the persistence round trip, not here): only aggregates
    // that saw events are checked, and the monitor once both of its arms have.
    for agg in [&stable, &canary] {
        if agg.requests > 0 {
            round_trip::<ArmAggregate>(agg, "rollup")?;
        }
    }
    if stable.requests > 0 && canary.requests > 0 {
        round_trip::<Monitor>(&monitor, "monitor")?;
    }
    Ok(())
}

/// What the store keeps must read back and serialize to the same text.
fn round_trip<T: serde::Serialize + serde::de::DeserializeOwned>(
    value: &T,
    what: &str,
) -> Result<(), String> {
    let json = serde_json::to_string(value).map_err(|e| format!("{what} serialize: {e}"))?;
    let back: T = serde_json::from_str(&json)
        .map_err(|e| format!("a persisted {what} does not read back: {e}: {json}"))?;
    let again = serde_json::to_string(&back).map_err(|e| format!("{what} serialize: {e}"))?;
    if again != json {
        return Err(format!("a persisted {what} changed: {json} became {again}"));
    }
    Ok(())
}
