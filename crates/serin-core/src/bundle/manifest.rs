//! `bundle.yaml`: its strict shape, and the lenient reading loaders use to find files.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::Value;

use super::model::Metadata;
use super::problem::Problem;

/// The manifest's file name at the root of a bundle directory.
pub const MANIFEST_FILE: &str = "bundle.yaml";

/// `bundle.yaml`, strictly.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawManifest {
    pub agent: String,
    pub model: RawModel,
    // The three paths are read (and normalised) by `lenient_paths`; they are declared here so
    // the strict parse requires `prompt`, type-checks all three and rejects unknown fields.
    #[allow(dead_code)]
    pub prompt: String,
    #[allow(dead_code)]
    #[serde(default)]
    pub examples: Option<String>,
    #[allow(dead_code)]
    #[serde(default)]
    pub tools: Option<String>,
    #[serde(default)]
    pub eval_set: Option<String>,
    #[serde(default)]
    pub metadata: Option<Metadata>,
    // Read (and checked) from the generic value by `validate`, which reports problems by
    // pointer; declared here so the strict parse accepts the field.
    #[allow(dead_code)]
    #[serde(default)]
    pub capabilities: Option<Value>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawModel {
    pub provider: String,
    pub snapshot: String,
    #[serde(default)]
    pub params: Option<BTreeMap<String, Value>>,
}

/// Which files the manifest points at, so a loader knows what to read.
/// Paths are relative to the bundle directory, `/`-separated, without `.` segments or a
/// trailing slash.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ManifestPaths {
    /// The prompt file.
    pub prompt: String,
    /// The examples directory, if any.
    pub examples: Option<String>,
    /// The tools directory, if any.
    pub tools: Option<String>,
}

/// The paths of a manifest that may be partly wrong: each one that is present and usable.
/// Returned by [`partial_manifest_paths`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PartialManifestPaths {
    /// The prompt file.
    pub prompt: Option<String>,
    /// The examples directory.
    pub examples: Option<String>,
    /// The tools directory.
    pub tools: Option<String>,
}

/// Like [`manifest_paths`] but never fails: every usable path is returned and the problems
/// are left for [`validate`](super::validate) to report. A loader uses this so that one bad
/// path (or an unrelated mistake in `bundle.yaml`) does not stop it from reading the other
/// files, and validation can then report everything at once.
pub fn partial_manifest_paths(bundle_yaml: &[u8]) -> PartialManifestPaths {
    let Ok(text) = std::str::from_utf8(bundle_yaml) else {
        return PartialManifestPaths::default();
    };
    let Ok(value) = parse_manifest_alone(text) else {
        return PartialManifestPaths::default();
    };
    let (paths, _) = lenient_paths(&value);
    PartialManifestPaths {
        prompt: paths.prompt,
        examples: paths.examples,
        tools: paths.tools,
    }
}

/// What a lenient reading found: each path if it is present and usable.
#[derive(Debug, Default)]
pub(crate) struct LenientPaths {
    pub prompt: Option<String>,
    pub examples: Option<String>,
    pub tools: Option<String>,
    /// `tools` is present but unusable (wrong type or rejected path): the tools could not be
    /// read, so "no such tool" findings elsewhere would be noise.
    pub tools_unusable: bool,
}

/// Reads just `prompt`, `examples` and `tools` from `bundle.yaml`, ignoring every other field,
/// so a loader can collect the files even when the rest of the manifest is wrong (validation
/// then reports everything at once).
///
/// Paths must be relative, without `..`, `\` or a leading `/`; violations are problems with
/// code `path_outside_bundle`.
pub fn manifest_paths(bundle_yaml: &[u8]) -> Result<ManifestPaths, Vec<Problem>> {
    let text = match std::str::from_utf8(bundle_yaml) {
        Ok(t) => t,
        Err(e) => {
            return Err(vec![super::validate::not_utf8_problem(
                MANIFEST_FILE,
                bundle_yaml,
                &e,
            )]);
        }
    };
    let value = match parse_manifest_alone(text) {
        Ok(v) => v,
        Err(p) => return Err(vec![p.into_problem(MANIFEST_FILE)]),
    };
    let (paths, mut problems) = lenient_paths(&value);
    match paths.prompt {
        Some(prompt) if problems.is_empty() => Ok(ManifestPaths {
            prompt,
            examples: paths.examples,
            tools: paths.tools,
        }),
        prompt => {
            let reported = problems
                .iter()
                .any(|p| p.location.as_deref() == Some("/prompt"));
            if prompt.is_none() && !reported {
                let (code, message) = match value.get("prompt") {
                    None | Some(Value::Null) => (
                        "missing_field",
                        "missing field `prompt`: the path of the prompt file, e.g. prompt.md",
                    ),
                    Some(_) => (
                        "invalid_field",
                        "field `prompt` must be a string: the path of the prompt file",
                    ),
                };
                problems.push(Problem::error(
                    MANIFEST_FILE,
                    Some("/prompt".into()),
                    code,
                    message,
                ));
            }
            Err(problems)
        }
    }
}

/// Extracts the three paths from an already parsed manifest value. Problems are reported only
/// for values that are present and strings but unusable; type errors are left to the strict
/// parse so they are not reported twice.
pub(crate) fn lenient_paths(value: &Value) -> (LenientPaths, Vec<Problem>) {
    let mut problems = Vec::new();
    let mut paths = LenientPaths::default();
    let Some(map) = value.as_object() else {
        return (paths, problems);
    };
    let mut get = |key: &str, is_dir: bool| -> Option<String> {
        let raw = map.get(key)?.as_str()?;
        match normalize_path(raw, is_dir) {
            Ok(p) => Some(p),
            Err((code, reason)) => {
                problems.push(Problem::error(
                    MANIFEST_FILE,
                    Some(format!("/{key}")),
                    code,
                    format!("`{key}: {raw}` {reason}"),
                ));
                None
            }
        }
    };
    paths.prompt = get("prompt", false);
    paths.examples = get("examples", true);
    paths.tools = get("tools", true);
    paths.tools_unusable = paths.tools.is_none() && map.get("tools").is_some_and(|v| !v.is_null());
    (paths, problems)
}

/// Normalises a relative path: drops empty and `.` segments and a trailing slash.
/// Returns the problem code and reason if the path is unusable.
pub(crate) fn normalize_path(raw: &str, is_dir: bool) -> Result<String, (&'static str, String)> {
    const OUTSIDE: &str = "path_outside_bundle";
    if raw.contains('\\') {
        return Err((OUTSIDE, "must use `/` separators, not `\\`".into()));
    }
    if raw.starts_with('/') {
        return Err((OUTSIDE, "must be relative to the bundle directory".into()));
    }
    if raw.len() >= 2 && raw.as_bytes().get(1) == Some(&b':') {
        return Err((OUTSIDE, "must be relative to the bundle directory".into()));
    }
    let mut segments = Vec::new();
    for segment in raw.split('/') {
        match segment {
            "" | "." => {}
            ".." => return Err((OUTSIDE, "must not contain `..`".into())),
            s => segments.push(s),
        }
    }
    if segments.is_empty() {
        let what = if is_dir {
            "must name a subdirectory of the bundle, not the bundle directory itself"
        } else {
            "must name a file inside the bundle directory"
        };
        return Err(("invalid_path", what.into()));
    }
    Ok(segments.join("/"))
}

/// JSON pointers of required manifest fields absent from `value`, so they are all reported
/// at once and located by name rather than by the line where the mapping ends.
pub(crate) fn missing_fields(value: &Value) -> Vec<&'static str> {
    let mut missing = Vec::new();
    let Some(map) = value.as_object() else {
        return missing;
    };
    for (key, pointer) in [
        ("agent", "/agent"),
        ("model", "/model"),
        ("prompt", "/prompt"),
    ] {
        if !map.contains_key(key) {
            missing.push(pointer);
        }
    }
    if let Some(model) = map.get("model").and_then(Value::as_object) {
        for (key, pointer) in [
            ("provider", "/model/provider"),
            ("snapshot", "/model/snapshot"),
        ] {
            if !model.contains_key(key) {
                missing.push(pointer);
            }
        }
    }
    missing
}

/// Type errors of known manifest fields, located by JSON pointer and all at once (the strict
/// parse stops at the first one and cannot name the field). Scalars are accepted wherever a
/// string is expected, as the strict parse does (`commit: 1234567` is the string "1234567").
pub(crate) fn type_problems(value: &Value) -> Vec<Problem> {
    let mut problems = Vec::new();
    let Some(map) = value.as_object() else {
        problems.push(Problem::error(
            MANIFEST_FILE,
            None,
            "invalid_field",
            format!(
                "bundle.yaml must be a mapping with agent, model, prompt and optional examples, tools, eval_set, metadata, capabilities; found {}",
                yaml_type(value)
            ),
        ));
        return problems;
    };
    let mut expect = |pointer: &str, value: Option<&Value>, want: Want, required: bool| {
        let Some(value) = value else { return };
        let ok = match (want, value) {
            (_, Value::Null) => !required,
            (Want::Text, v) => is_scalar(v),
            (Want::Mapping, v) => v.is_object(),
        };
        if !ok {
            problems.push(Problem::error(
                MANIFEST_FILE,
                Some(pointer.to_owned()),
                "invalid_field",
                format!(
                    "field `{}` must be {}, found {}",
                    pointer.trim_start_matches('/').replace('/', "."),
                    want.describe(),
                    yaml_type(value)
                ),
            ));
        }
    };
    expect("/agent", map.get("agent"), Want::Text, true);
    expect("/model", map.get("model"), Want::Mapping, true);
    expect("/prompt", map.get("prompt"), Want::Text, true);
    expect("/examples", map.get("examples"), Want::Text, false);
    expect("/tools", map.get("tools"), Want::Text, false);
    expect("/eval_set", map.get("eval_set"), Want::Text, false);
    expect("/metadata", map.get("metadata"), Want::Mapping, false);
    expect(
        "/capabilities",
        map.get("capabilities"),
        Want::Mapping,
        false,
    );
    if let Some(model) = map.get("model").and_then(Value::as_object) {
        expect("/model/provider", model.get("provider"), Want::Text, true);
        expect("/model/snapshot", model.get("snapshot"), Want::Text, true);
        expect("/model/params", model.get("params"), Want::Mapping, false);
    }
    if let Some(metadata) = map.get("metadata").and_then(Value::as_object) {
        for key in ["author", "reviewer", "commit", "description"] {
            expect(
                &format!("/metadata/{key}"),
                metadata.get(key),
                Want::Text,
                false,
            );
        }
    }
    problems
}

#[derive(Clone, Copy)]
enum Want {
    Text,
    Mapping,
}

impl Want {
    fn describe(self) -> &'static str {
        match self {
            Want::Text => "a string",
            Want::Mapping => "a mapping",
        }
    }
}

fn is_scalar(v: &Value) -> bool {
    matches!(v, Value::String(_) | Value::Number(_) | Value::Bool(_))
}

fn yaml_type(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a sequence",
        Value::Object(_) => "a mapping",
    }
}

/// A YAML document that does not parse, with the location of the error.
#[derive(Debug)]
pub(crate) struct YamlSyntaxError {
    pub location: Option<String>,
    pub message: String,
}

impl YamlSyntaxError {
    pub fn into_problem(self, file: &str) -> Problem {
        Problem::error(file, self.location, "invalid_yaml", self.message)
    }
}

/// Parses `bundle.yaml` on its own (a loader finding paths), under a budget of its own.
fn parse_manifest_alone(text: &str) -> Result<Value, YamlSyntaxError> {
    let mut budget = super::budget::YamlBudget::new(&super::Limits::DEFAULT);
    if let Err(e) = budget.charge(text, 1) {
        return Err(YamlSyntaxError {
            location: None,
            message: e.message,
        });
    }
    parse_yaml_value(text)
}

/// Parses YAML into a generic JSON value (to check syntax and find paths). Callers charge
/// the text to a [`YamlBudget`](super::budget::YamlBudget) first.
pub(crate) fn parse_yaml_value(text: &str) -> Result<Value, YamlSyntaxError> {
    serde_saphyr::from_str::<Value>(text).map_err(|e| YamlSyntaxError {
        location: yaml_location(&e),
        message: yaml_message(&e),
    })
}

/// `line L, column C` of a serde-saphyr error, if known.
pub(crate) fn yaml_location(e: &serde_saphyr::Error) -> Option<String> {
    let loc = e.location()?;
    if loc.line() == 0 {
        return None;
    }
    Some(format!("line {}, column {}", loc.line(), loc.column()))
}

/// The message of a serde-saphyr error without source snippet or location suffix.
pub(crate) fn yaml_message(e: &serde_saphyr::Error) -> String {
    let text = e.without_snippet().to_string();
    let first = text.lines().next().unwrap_or_default().trim();
    // The plain rendering ends with " at line L, column C"; the location is reported separately.
    let trimmed = match first.rfind(" at line ") {
        Some(idx) => first.get(..idx).unwrap_or(first),
        None => first,
    };
    trimmed.trim_end_matches(':').trim().to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_normalised_or_rejected() {
        let cases: &[(&str, bool, Result<&str, &str>)] = &[
            ("prompt.md", false, Ok("prompt.md")),
            ("./prompt.md", false, Ok("prompt.md")),
            ("examples/", true, Ok("examples")),
            ("a//b/./c/", true, Ok("a/b/c")),
            ("../prompt.md", false, Err("path_outside_bundle")),
            ("a/../../b", false, Err("path_outside_bundle")),
            ("/etc/passwd", false, Err("path_outside_bundle")),
            ("a\\b", false, Err("path_outside_bundle")),
            ("C:/x", false, Err("path_outside_bundle")),
            ("./", true, Err("invalid_path")),
            ("", false, Err("invalid_path")),
        ];
        for (raw, is_dir, want) in cases {
            let got = normalize_path(raw, *is_dir);
            match want {
                Ok(p) => assert_eq!(got.as_deref().ok(), Some(*p), "{raw}"),
                Err(code) => assert_eq!(got.err().map(|e| e.0), Some(*code), "{raw}"),
            }
        }
    }

    #[test]
    fn manifest_paths_ignores_unrelated_fields_and_reports_bad_paths() {
        let ok = manifest_paths(b"prompt: p.md\ntools: tools/\nbogus: 1\nmodel: 3\n").unwrap();
        assert_eq!(
            ok,
            ManifestPaths {
                prompt: "p.md".into(),
                examples: None,
                tools: Some("tools".into()),
            }
        );
        let err = manifest_paths(b"prompt: ../p.md\nexamples: /abs\n").unwrap_err();
        let got: Vec<_> = err
            .iter()
            .map(|p| (p.code.as_str(), p.location.as_deref()))
            .collect();
        assert_eq!(
            got,
            [
                ("path_outside_bundle", Some("/prompt")),
                ("path_outside_bundle", Some("/examples")),
            ]
        );
        let err = manifest_paths(b"agent: x\n").unwrap_err();
        assert_eq!(err[0].code, "missing_field");
        let err = manifest_paths(b"agent: [\n").unwrap_err();
        assert_eq!(err[0].code, "invalid_yaml");
    }
}
