//! [`validate`]: every check of SPEC.md "Bundle directory", all problems at once.

use std::collections::{BTreeMap, BTreeSet};

use serde::Deserialize;
use serde_json::Value;

use super::budget::YamlBudget;
use super::json;
use super::manifest::{
    LenientPaths, MANIFEST_FILE, RawManifest, lenient_paths, missing_fields, normalize_path,
    parse_yaml_value, type_problems, yaml_location, yaml_message,
};
use super::model::{
    Bundle, Capability, EffectClass, Example, Message, MessageRole, ModelSpec, Tool,
    normalize_newlines,
};
use super::problem::{Problem, Validation};
use super::{BundleFiles, PinPolicy, ValidateOptions};
use crate::catalog::{AliasReason, ModelStatus};

/// The location used for problems about the bundle as a whole.
const WHOLE_BUNDLE: &str = ".";

/// Validates a bundle's files: the manifest, the prompt, every tool and example, their
/// consistency with each other, and the model pin under `opts.pin_policy`.
///
/// Every problem is reported, each with its file, location and reason; within one YAML file
/// the parser stops at the first structural error, so at most one such error per YAML file.
/// A file over its size limit is reported and not parsed. When the whole bundle is over
/// `limits.total_bytes`, or `bundle.yaml` cannot be read, nothing further is checked.
pub fn validate(files: &BundleFiles, opts: &ValidateOptions<'_>) -> Validation {
    let mut v = Validator {
        opts,
        problems: Vec::new(),
        referenced: BTreeSet::new(),
        budget: YamlBudget::new(opts.limits),
    };
    let bundle = v.run(files);
    let mut problems = v.problems;
    problems.sort_by(|a, b| a.file.cmp(&b.file));
    let has_errors = problems.iter().any(Problem::is_error);
    let bundle = match bundle {
        Some(b) if !has_errors => Some(b),
        None if !has_errors => {
            // Unreachable by construction (every missing piece reports an error); keep the
            // invariant "bundle is Some iff there is no error" even so.
            problems.push(Problem::error(
                WHOLE_BUNDLE,
                None,
                "internal_error",
                "validation found no error but could not assemble the bundle",
            ));
            None
        }
        _ => None,
    };
    Validation { problems, bundle }
}

struct Validator<'o, 'a> {
    opts: &'o ValidateOptions<'a>,
    problems: Vec<Problem>,
    /// Files the manifest points at (valid or not); everything else is unreferenced.
    referenced: BTreeSet<String>,
    /// One alias-expansion budget for every YAML file of this validation.
    budget: YamlBudget,
}

/// What checking the tools produced.
#[derive(Default)]
struct ToolSet {
    tools: Vec<Tool>,
    /// Compiled `input_schema` of every tool whose schema is valid, by tool name.
    validators: BTreeMap<String, jsonschema::Validator>,
    /// Names that may exist: every valid tool, plus names (or file stems) of broken tool files,
    /// so a broken tool file does not also produce `unknown_tool` noise elsewhere.
    maybe_names: BTreeSet<String>,
    /// The file each valid tool came from, by tool name.
    files: BTreeMap<String, String>,
    /// False when the tools were not checked at all (too many files).
    checked: bool,
    ok: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ExampleFile {
    messages: Vec<Message>,
}

impl Validator<'_, '_> {
    fn error(&mut self, file: &str, location: Option<String>, code: &str, message: String) {
        self.problems
            .push(Problem::error(file, location, code, message));
    }

    fn warning(&mut self, file: &str, location: Option<String>, code: &str, message: String) {
        self.problems
            .push(Problem::warning(file, location, code, message));
    }

    /// Charges `parses` parses of a YAML file to the validation's budget; `false` (with the
    /// first refusal reported as `budget_exceeded`) means the file must not be parsed.
    fn within_budget(&mut self, file: &str, text: &str, parses: u64) -> bool {
        match self.budget.charge(text, parses) {
            Ok(()) => true,
            Err(e) => {
                if e.first {
                    self.error(file, None, "budget_exceeded", e.message);
                }
                false
            }
        }
    }

    fn run(&mut self, files: &BundleFiles) -> Option<Bundle> {
        let limits = self.opts.limits;
        for (path, _) in files.iter() {
            if normalize_path(path, false).as_deref() != Ok(path) {
                self.error(
                    path,
                    None,
                    "path_outside_bundle",
                    "file path must be relative to the bundle directory, `/`-separated, without `.`, `..` or empty segments".into(),
                );
            }
        }
        let total = files.total_bytes();
        if total > limits.total_bytes {
            self.error(
                WHOLE_BUNDLE,
                None,
                "too_large",
                format!(
                    "the bundle's files add up to {}, over the limit of {} (total_bytes); nothing else was checked",
                    human_bytes(total),
                    human_bytes(limits.total_bytes)
                ),
            );
            return None;
        }

        self.referenced.insert(MANIFEST_FILE.into());
        let Some(manifest_bytes) = files.get(MANIFEST_FILE) else {
            self.error(
                MANIFEST_FILE,
                None,
                "missing_file",
                "the bundle has no bundle.yaml manifest".into(),
            );
            return None;
        };
        let text = self.text(
            MANIFEST_FILE,
            manifest_bytes,
            limits.manifest_bytes,
            "manifest",
        )?;
        if !self.within_budget(MANIFEST_FILE, text, 2) {
            return None;
        }
        let value = match parse_yaml_value(text) {
            Ok(value) => value,
            Err(e) => {
                self.problems.push(e.into_problem(MANIFEST_FILE));
                return None;
            }
        };
        let (paths, path_problems) = lenient_paths(&value);
        let missing = missing_fields(&value);
        for pointer in &missing {
            self.error(
                MANIFEST_FILE,
                Some((*pointer).to_owned()),
                "missing_field",
                format!(
                    "missing field `{}`",
                    pointer.trim_start_matches('/').replace('/', ".")
                ),
            );
        }
        let type_errors = type_problems(&value);
        let mistyped = !type_errors.is_empty();
        self.problems.extend(type_errors);
        self.problems.extend(path_problems);
        let manifest = match serde_saphyr::from_str::<RawManifest>(text) {
            Ok(m) => Some(m),
            Err(e) => {
                let problem = structure_problem(MANIFEST_FILE, &e);
                // Missing and mistyped fields were all reported above, located by pointer;
                // the strict parse adds unknown fields (with line and column) and anything
                // the checks above do not know about.
                let covered = (problem.code == "missing_field" && !missing.is_empty())
                    || (problem.code == "invalid_field" && mistyped);
                if !covered {
                    self.problems.push(problem);
                }
                None
            }
        };
        let model = manifest.as_ref().and_then(|m| self.check_manifest(m));

        let prompt = self.check_prompt(files, &paths);
        let mut tools = match &paths.tools {
            Some(dir) => self.check_tools(files, dir),
            None => ToolSet {
                checked: !paths.tools_unusable,
                ok: true,
                ..ToolSet::default()
            },
        };
        let examples = match &paths.examples {
            Some(dir) => self.check_examples(files, dir, &tools),
            None => Some(Vec::new()),
        };
        self.apply_manifest_capabilities(&value, &mut tools);
        if manifest.is_some() {
            // With a broken manifest, its `capabilities` may be what is broken: stay quiet.
            self.warn_undeclared_capabilities(&tools, &value);
        }
        if let (Some(prompt), Some(prompt_file)) = (&prompt, &paths.prompt) {
            self.check_prompt_mentions(prompt_file, prompt, &tools);
        }
        if manifest.is_some() {
            // With a broken manifest, what it refers to is guesswork: stay quiet.
            self.check_unreferenced(files, &paths);
        }

        let manifest = manifest?;
        if !tools.ok {
            return None;
        }
        Some(Bundle {
            agent: manifest.agent,
            model: model?,
            prompt: prompt?,
            examples: examples?,
            tools: tools.tools,
            eval_set: manifest.eval_set,
            metadata: manifest.metadata.unwrap_or_default(),
        })
    }

    /// The file as text, or `None` after reporting `too_large` / `not_utf8`.
    fn text<'f>(
        &mut self,
        file: &str,
        bytes: &'f [u8],
        limit: usize,
        what: &str,
    ) -> Option<&'f str> {
        if bytes.len() > limit {
            self.error(
                file,
                None,
                "too_large",
                format!(
                    "file is over the {} limit for {what} files; it was not checked further",
                    human_bytes(limit)
                ),
            );
            return None;
        }
        match std::str::from_utf8(bytes) {
            Ok(text) => Some(text),
            Err(e) => {
                self.problems.push(not_utf8_problem(file, bytes, &e));
                None
            }
        }
    }

    /// Field-level checks of a manifest that parsed; returns the model spec if usable.
    fn check_manifest(&mut self, m: &RawManifest) -> Option<ModelSpec> {
        if let Err(e) = crate::slug::validate_agent(&m.agent) {
            self.error(
                MANIFEST_FILE,
                Some("/agent".into()),
                "invalid_agent",
                e.to_string(),
            );
        }
        let mut ok = true;
        for (pointer, value) in [
            ("/model/provider", &m.model.provider),
            ("/model/snapshot", &m.model.snapshot),
        ] {
            if value.trim().is_empty() {
                ok = false;
                self.error(
                    MANIFEST_FILE,
                    Some(pointer.into()),
                    "empty_field",
                    format!(
                        "`{}` must not be empty",
                        pointer.trim_start_matches('/').replace('/', ".")
                    ),
                );
            }
        }
        if m.eval_set.as_deref().is_some_and(|s| s.trim().is_empty()) {
            self.error(
                MANIFEST_FILE,
                Some("/eval_set".into()),
                "empty_field",
                "`eval_set` must not be empty; omit it instead".into(),
            );
        }
        if !ok {
            return None;
        }
        self.check_pin(&m.model.provider, &m.model.snapshot);
        Some(ModelSpec {
            provider: m.model.provider.clone(),
            snapshot: m.model.snapshot.clone(),
            params: m.model.params.clone().unwrap_or_default(),
        })
    }

    fn check_pin(&mut self, provider: &str, snapshot: &str) {
        let ModelStatus::Alias { means, reason } = self.opts.catalog.classify(provider, snapshot)
        else {
            return;
        };
        let why = match (reason, &means) {
            (AliasReason::Catalog, Some(means)) => {
                format!("alias {snapshot} currently means {means}; pin `snapshot: {means}`")
            }
            (AliasReason::Latest, _) => {
                "`latest` follows whatever the provider released last; pin a dated snapshot".into()
            }
            _ => format!(
                "it has no date or version suffix and is not a snapshot the model catalog knows for provider {provider}; pin a dated snapshot"
            ),
        };
        let policy = match self.opts.pin_policy {
            PinPolicy::Strict => {
                "an error under the strict pin policy; allowed as a warning in dev"
            }
            PinPolicy::Dev => "allowed in dev, an error in every strict env",
        };
        let message = format!("model snapshot {snapshot:?} is a moving alias: {why} ({policy})");
        let location = Some("/model/snapshot".to_owned());
        match self.opts.pin_policy {
            PinPolicy::Strict => self.error(MANIFEST_FILE, location, "unpinned_model", message),
            PinPolicy::Dev => self.warning(MANIFEST_FILE, location, "unpinned_model", message),
        }
    }

    fn check_prompt(&mut self, files: &BundleFiles, paths: &LenientPaths) -> Option<String> {
        let file = paths.prompt.as_deref()?;
        self.referenced.insert(file.to_owned());
        let Some(bytes) = files.get(file) else {
            self.error(
                file,
                None,
                "missing_file",
                "the prompt file named by bundle.yaml /prompt does not exist".into(),
            );
            return None;
        };
        let text = self.text(file, bytes, self.opts.limits.prompt_bytes, "prompt")?;
        Some(normalize_newlines(text))
    }

    /// The `*.json` files directly inside `dir`, in path order.
    fn dir_files<'f>(files: &'f BundleFiles, dir: &str, exts: &[&str]) -> Vec<(&'f str, &'f [u8])> {
        let prefix = format!("{dir}/");
        files
            .iter()
            .filter(|(path, _)| {
                path.strip_prefix(&prefix).is_some_and(|rest| {
                    !rest.contains('/')
                        && exts
                            .iter()
                            .any(|ext| rest.ends_with(ext) && rest.len() > ext.len())
                })
            })
            .collect()
    }

    fn check_tools(&mut self, files: &BundleFiles, dir: &str) -> ToolSet {
        let mut set = ToolSet::default();
        let entries = Self::dir_files(files, dir, &[".json"]);
        for (path, _) in &entries {
            self.referenced.insert((*path).to_owned());
        }
        if entries.len() > self.opts.limits.max_tools {
            self.error(
                dir,
                None,
                "too_large",
                format!(
                    "{} tool files, over the limit of {} (max_tools); the tools were not checked",
                    entries.len(),
                    self.opts.limits.max_tools
                ),
            );
            return set;
        }
        set.checked = true;
        set.ok = true;
        let mut seen: BTreeMap<String, String> = BTreeMap::new();
        for (path, bytes) in entries {
            let stem = path
                .rsplit('/')
                .next()
                .and_then(|n| n.strip_suffix(".json"))
                .unwrap_or(path);
            let errors_before = self.error_count();
            let parsed = self
                .text(path, bytes, self.opts.limits.tool_bytes, "tool")
                .and_then(|text| self.check_tool(path, text));
            let Some((name, tool)) = parsed else {
                set.ok = false;
                set.maybe_names.insert(stem.to_owned());
                continue;
            };
            if let Some(name) = &name {
                set.maybe_names.insert(name.clone());
                if let Some(first) = seen.get(name) {
                    self.error(
                        path,
                        Some("/name".into()),
                        "duplicate_tool",
                        format!("tool name {name:?} is defined both in {first} and in {path}; tool names must be unique"),
                    );
                } else {
                    seen.insert(name.clone(), path.to_owned());
                }
            } else {
                set.maybe_names.insert(stem.to_owned());
            }
            match tool {
                Some((tool, validator)) if self.error_count() == errors_before => {
                    set.validators.insert(tool.name.clone(), validator);
                    set.files.insert(tool.name.clone(), path.to_owned());
                    set.tools.push(tool);
                }
                Some((tool, validator)) => {
                    // Valid on its own but a duplicate: keep the schema of the first definition.
                    set.validators.entry(tool.name.clone()).or_insert(validator);
                    set.ok = false;
                }
                None => set.ok = false,
            }
        }
        set.tools.sort_by(|a, b| a.name.cmp(&b.name));
        set
    }

    fn error_count(&self) -> usize {
        self.problems.iter().filter(|p| p.is_error()).count()
    }

    /// Checks one tool file. Returns `None` if it is not even JSON; otherwise the name (if it
    /// has a usable one) and, if everything is valid, the tool and its compiled schema.
    #[allow(clippy::type_complexity)]
    fn check_tool(
        &mut self,
        file: &str,
        text: &str,
    ) -> Option<(Option<String>, Option<(Tool, jsonschema::Validator)>)> {
        let value: Value = match serde_json::from_str(text) {
            Ok(v) => v,
            Err(e) => {
                self.error(
                    file,
                    Some(format!("line {}, column {}", e.line(), e.column())),
                    "invalid_json",
                    json_message(&e),
                );
                return None;
            }
        };
        let Some(obj) = value.as_object() else {
            self.error(
                file,
                None,
                "invalid_field",
                format!(
                    "a tool file must be a JSON object {{\"name\", \"description\", \"input_schema\"}}, found {}",
                    json_type(&value)
                ),
            );
            return Some((None, None));
        };
        let mut ok = true;
        for key in obj.keys() {
            if !matches!(
                key.as_str(),
                "name" | "description" | "input_schema" | "capability"
            ) {
                ok = false;
                self.error(
                    file,
                    Some(json::join("", key)),
                    "unknown_field",
                    format!("unknown field `{key}`: a tool has only `name`, `description`, `input_schema` and `capability`"),
                );
            }
        }
        let capability = match obj.get("capability") {
            None => Some(None),
            Some(value) => self.parse_capability(file, "/capability", value).map(Some),
        };
        ok &= capability.is_some();
        let name = match obj.get("name") {
            None => {
                ok = false;
                self.error(
                    file,
                    Some("/name".into()),
                    "missing_field",
                    "missing field `name`".into(),
                );
                None
            }
            Some(Value::String(name)) => {
                if is_valid_tool_name(name) {
                    Some(name.clone())
                } else {
                    ok = false;
                    self.error(
                        file,
                        Some("/name".into()),
                        "invalid_tool_name",
                        format!("tool name {name:?} must match ^[a-zA-Z0-9_-]{{1,64}}$"),
                    );
                    None
                }
            }
            Some(other) => {
                ok = false;
                self.error(
                    file,
                    Some("/name".into()),
                    "invalid_field",
                    format!("field `name` must be a string, found {}", json_type(other)),
                );
                None
            }
        };
        let description = match obj.get("description") {
            None => {
                ok = false;
                self.error(
                    file,
                    Some("/description".into()),
                    "missing_field",
                    "missing field `description`".into(),
                );
                None
            }
            Some(Value::String(d)) => Some(d.clone()),
            Some(other) => {
                ok = false;
                self.error(
                    file,
                    Some("/description".into()),
                    "invalid_field",
                    format!(
                        "field `description` must be a string, found {}",
                        json_type(other)
                    ),
                );
                None
            }
        };
        let validator = match obj.get("input_schema") {
            None => {
                self.error(
                    file,
                    Some("/input_schema".into()),
                    "missing_field",
                    "missing field `input_schema`".into(),
                );
                None
            }
            Some(schema) => self.check_schema(file, schema),
        };
        let tool = match (
            ok,
            name.clone(),
            description,
            validator,
            obj.get("input_schema"),
        ) {
            (true, Some(name), Some(description), Some(validator), Some(schema)) => Some((
                Tool {
                    name,
                    description,
                    input_schema: schema.clone(),
                    capability: capability.flatten(),
                },
                validator,
            )),
            _ => None,
        };
        Some((name, tool))
    }

    /// Reads a capability (`{effect, owner, limits}`) found at `base` in `file`, reporting
    /// every problem; `None` if there was one.
    fn parse_capability(&mut self, file: &str, base: &str, value: &Value) -> Option<Capability> {
        let Some(obj) = value.as_object() else {
            self.error(
                file,
                Some(base.to_owned()),
                "invalid_field",
                format!(
                    "a capability must be a mapping {{effect, owner, limits}}, found {}",
                    json_type(value)
                ),
            );
            return None;
        };
        let errors_before = self.error_count();
        for key in obj.keys() {
            if !matches!(key.as_str(), "effect" | "owner" | "limits") {
                self.error(
                    file,
                    Some(json::join(base, key)),
                    "unknown_field",
                    format!("unknown field `{key}`: a capability has only `effect`, `owner` and `limits`"),
                );
            }
        }
        let at = |key: &str| Some(json::join(base, key));
        let effect = match obj.get("effect") {
            None | Some(Value::Null) => {
                self.error(
                    file,
                    at("effect"),
                    "missing_field",
                    "missing field `effect`: read, write or irreversible".into(),
                );
                None
            }
            Some(Value::String(e)) => {
                let parsed = EffectClass::parse(e);
                if parsed.is_none() {
                    self.error(
                        file,
                        at("effect"),
                        "invalid_field",
                        format!("effect {e:?} is not one of read, write, irreversible"),
                    );
                }
                parsed
            }
            Some(other) => {
                self.error(
                    file,
                    at("effect"),
                    "invalid_field",
                    format!(
                        "field `effect` must be read, write or irreversible, found {}",
                        json_type(other)
                    ),
                );
                None
            }
        };
        let owner = match obj.get("owner") {
            None | Some(Value::Null) => None,
            Some(Value::String(o)) if o.trim().is_empty() => {
                self.error(
                    file,
                    at("owner"),
                    "empty_field",
                    "`owner` must name a team or person".into(),
                );
                None
            }
            Some(Value::String(o))
                if o.chars().count() > 200 || o.chars().any(char::is_control) =>
            {
                self.error(
                    file,
                    at("owner"),
                    "invalid_field",
                    "`owner` must be one line of at most 200 characters".into(),
                );
                None
            }
            Some(Value::String(o)) => Some(o.clone()),
            Some(other) => {
                self.error(
                    file,
                    at("owner"),
                    "invalid_field",
                    format!(
                        "field `owner` must be a string (a team or person), found {}",
                        json_type(other)
                    ),
                );
                None
            }
        };
        if let Some(effect) = effect
            && effect >= EffectClass::Write
            && owner.is_none()
            && obj.get("owner").is_none_or(Value::is_null)
        {
            self.error(
                file,
                at("owner"),
                "missing_owner",
                format!(
                    "{} {effect} tool needs an `owner`: the team or person answerable for its effects",
                    if effect == EffectClass::Irreversible { "an" } else { "a" }
                ),
            );
        }
        let mut limits = BTreeMap::new();
        match obj.get("limits") {
            None | Some(Value::Null) => {}
            Some(Value::Object(map)) => {
                let base = json::join(base, "limits");
                for (name, v) in map {
                    let here = Some(json::join(&base, name));
                    if !is_limit_name(name) {
                        self.error(
                            file,
                            here.clone(),
                            "invalid_limit",
                            format!("limit name {name:?} must match ^[a-z][a-z0-9_]{{0,63}}$ (e.g. max_amount)"),
                        );
                    }
                    match v {
                        Value::Number(n)
                            if n.as_f64().is_some_and(|f| f.is_finite() && f >= 0.0) =>
                        {
                            limits.insert(name.clone(), n.clone());
                        }
                        other => self.error(
                            file,
                            here,
                            "invalid_limit",
                            format!(
                                "limit `{name}` must be a finite number of at least 0, found {}",
                                match other {
                                    Value::Number(n) => n.to_string(),
                                    other => json_type(other).to_owned(),
                                }
                            ),
                        ),
                    }
                }
            }
            Some(other) => self.error(
                file,
                at("limits"),
                "invalid_field",
                format!(
                    "field `limits` must be a mapping of limit name to number, found {}",
                    json_type(other)
                ),
            ),
        }
        if self.error_count() != errors_before {
            return None;
        }
        Some(Capability {
            effect: effect?,
            owner,
            limits,
        })
    }

    /// `capabilities:` in bundle.yaml: each entry names a tool and declares its capability,
    /// which must not also be declared in the tool's own file.
    fn apply_manifest_capabilities(&mut self, manifest: &Value, tools: &mut ToolSet) {
        // A wrong type was reported with the manifest's other type errors.
        let Some(caps) = manifest.get("capabilities").and_then(Value::as_object) else {
            return;
        };
        for (name, value) in caps {
            let pointer = json::join("/capabilities", name);
            let parsed = self.parse_capability(MANIFEST_FILE, &pointer, value);
            let Some(tool) = tools.tools.iter_mut().find(|t| t.name == *name) else {
                if tools.checked && !tools.maybe_names.contains(name) {
                    let names = tools.tools.iter().map(|t| t.name.as_str());
                    let hint = match crate::slug::nearest(name, names) {
                        Some(near) => format!("did you mean {near}?"),
                        None => known_tools(tools),
                    };
                    self.error(
                        MANIFEST_FILE,
                        Some(pointer),
                        "unknown_tool",
                        format!(
                            "capabilities names tool `{name}`, which the bundle does not define; {hint}"
                        ),
                    );
                }
                continue;
            };
            if tool.capability.is_some() {
                let file = tools
                    .files
                    .get(name)
                    .map_or("its tool file", String::as_str);
                self.error(
                    MANIFEST_FILE,
                    Some(pointer),
                    "duplicate_capability",
                    format!(
                        "tool `{name}` declares its capability both in {file} and in bundle.yaml; keep one"
                    ),
                );
                tools.ok = false;
            } else if let Some(cap) = parsed {
                tool.capability = Some(cap);
            }
        }
    }

    /// A tool without a capability is treated as `write` (see `bundle::capabilities`); say so.
    /// Tools that bundle.yaml declares (even wrongly, which is reported there) are skipped.
    fn warn_undeclared_capabilities(&mut self, tools: &ToolSet, manifest: &Value) {
        let in_manifest = |name: &str| {
            manifest
                .get("capabilities")
                .and_then(Value::as_object)
                .is_some_and(|caps| caps.contains_key(name))
        };
        for tool in tools
            .tools
            .iter()
            .filter(|t| t.capability.is_none() && !in_manifest(&t.name))
        {
            let file = tools
                .files
                .get(&tool.name)
                .cloned()
                .unwrap_or_else(|| WHOLE_BUNDLE.to_owned());
            self.warning(
                &file,
                Some("/capability".into()),
                "undeclared_capability",
                format!(
                    "capability undeclared, treated as write: declare `capability: {{effect, owner}}` in this file or under `capabilities: {{{}: ...}}` in bundle.yaml",
                    tool.name
                ),
            );
        }
    }

    /// Checks that `schema` is a valid JSON Schema of type object and compiles it.
    fn check_schema(&mut self, file: &str, schema: &Value) -> Option<jsonschema::Validator> {
        const BASE: &str = "/input_schema";
        if !schema.is_object() {
            self.error(
                file,
                Some(BASE.into()),
                "invalid_schema",
                format!(
                    "input_schema must be a JSON Schema object with \"type\": \"object\", found {}",
                    json_type(schema)
                ),
            );
            return None;
        }
        let meta = match jsonschema::meta::validator_for(schema) {
            Ok(meta) => meta,
            Err(e) => {
                self.error(
                    file,
                    Some(format!("{BASE}/$schema")),
                    "invalid_schema",
                    format!("input_schema's meta-schema cannot be used: {e}"),
                );
                return None;
            }
        };
        let errors: Vec<(String, String)> = meta
            .iter_errors(schema)
            .map(|e| (format!("{BASE}{}", e.instance_path()), e.to_string()))
            .collect();
        if !errors.is_empty() {
            for (location, reason) in errors {
                self.error(
                    file,
                    Some(location),
                    "invalid_schema",
                    format!("input_schema is not a valid JSON Schema: {reason}"),
                );
            }
            return None;
        }
        match schema.get("type") {
            Some(Value::String(t)) if t == "object" => {}
            Some(other) => {
                self.error(
                    file,
                    Some(format!("{BASE}/type")),
                    "invalid_schema",
                    format!("input_schema must have \"type\": \"object\" (providers require tool arguments to be an object), found {other}"),
                );
                return None;
            }
            None => {
                self.error(
                    file,
                    Some(BASE.into()),
                    "invalid_schema",
                    "input_schema must have \"type\": \"object\" (providers require tool arguments to be an object)".into(),
                );
                return None;
            }
        }
        match jsonschema::validator_for(schema) {
            Ok(validator) => Some(validator),
            Err(e) => {
                self.error(
                    file,
                    Some(format!("{BASE}{}", e.instance_path())),
                    "invalid_schema",
                    format!("input_schema cannot be compiled: {e}"),
                );
                None
            }
        }
    }

    fn check_examples(
        &mut self,
        files: &BundleFiles,
        dir: &str,
        tools: &ToolSet,
    ) -> Option<Vec<Example>> {
        let entries = Self::dir_files(files, dir, &[".yaml", ".yml"]);
        for (path, _) in &entries {
            self.referenced.insert((*path).to_owned());
        }
        if entries.len() > self.opts.limits.max_examples {
            self.error(
                dir,
                None,
                "too_large",
                format!(
                    "{} example files, over the limit of {} (max_examples); the examples were not checked",
                    entries.len(),
                    self.opts.limits.max_examples
                ),
            );
            return None;
        }
        let prefix_len = dir.len() + 1;
        let mut examples = Vec::new();
        let mut ok = true;
        for (path, bytes) in entries {
            let name = path.get(prefix_len..).unwrap_or(path);
            match self.check_example(path, name, bytes, tools) {
                Some(example) => examples.push(example),
                None => ok = false,
            }
        }
        examples.sort_by(|a, b| a.name.cmp(&b.name));
        ok.then_some(examples)
    }

    fn check_example(
        &mut self,
        file: &str,
        name: &str,
        bytes: &[u8],
        tools: &ToolSet,
    ) -> Option<Example> {
        let text = self.text(file, bytes, self.opts.limits.example_bytes, "example")?;
        if !self.within_budget(file, text, 2) {
            return None;
        }
        if let Err(e) = parse_yaml_value(text) {
            self.problems.push(e.into_problem(file));
            return None;
        }
        let parsed = match serde_saphyr::from_str::<ExampleFile>(text) {
            Ok(p) => p,
            Err(e) => {
                self.problems.push(structure_problem(file, &e));
                return None;
            }
        };
        let errors_before = self.error_count();
        if parsed.messages.is_empty() {
            self.warning(
                file,
                Some("/messages".into()),
                "empty_example",
                "the example has no messages".into(),
            );
        }
        for (i, message) in parsed.messages.iter().enumerate() {
            let at = format!("/messages/{i}");
            if message.content.is_none() && message.tool_calls.is_empty() {
                self.error(
                    file,
                    Some(at.clone()),
                    "invalid_message",
                    "a message needs `content`, `tool_calls` or both".into(),
                );
            }
            if !message.tool_calls.is_empty() && message.role != MessageRole::Assistant {
                self.error(
                    file,
                    Some(format!("{at}/tool_calls")),
                    "invalid_message",
                    format!(
                        "only assistant messages make tool calls, this one has role {}",
                        message.role.as_str()
                    ),
                );
            }
            for (j, call) in message.tool_calls.iter().enumerate() {
                let at = format!("{at}/tool_calls/{j}");
                if let Some(validator) = tools.validators.get(&call.name) {
                    let errors: Vec<(String, String)> = validator
                        .iter_errors(&call.arguments)
                        .map(|e| {
                            (
                                format!("{at}/arguments{}", e.instance_path()),
                                e.to_string(),
                            )
                        })
                        .collect();
                    for (location, reason) in errors {
                        self.error(
                            file,
                            Some(location),
                            "tool_arguments_invalid",
                            format!("arguments of the call to `{}` do not match its input_schema: {reason}", call.name),
                        );
                    }
                } else if tools.checked && !tools.maybe_names.contains(&call.name) {
                    self.error(
                        file,
                        Some(format!("{at}/name")),
                        "unknown_tool",
                        format!(
                            "the example calls tool `{}`, which the bundle does not define ({})",
                            call.name,
                            known_tools(tools)
                        ),
                    );
                }
            }
        }
        (self.error_count() == errors_before).then(|| Example {
            name: name.to_owned(),
            messages: parsed.messages,
        })
    }

    fn check_prompt_mentions(&mut self, file: &str, prompt: &str, tools: &ToolSet) {
        if !tools.checked {
            return;
        }
        let mut reported = BTreeSet::new();
        for (line_no, name) in prompt_tool_mentions(prompt) {
            if tools.maybe_names.contains(name) || !reported.insert(name) {
                continue;
            }
            self.error(
                file,
                Some(format!("line {line_no}")),
                "prompt_mentions_unknown_tool",
                format!(
                    "the prompt calls `{name}(` but the bundle defines no tool named {name} ({})",
                    known_tools(tools)
                ),
            );
        }
    }

    fn check_unreferenced(&mut self, files: &BundleFiles, paths: &LenientPaths) {
        let dirs: Vec<&str> = [paths.tools.as_deref(), paths.examples.as_deref()]
            .into_iter()
            .flatten()
            .collect();
        let unreferenced: Vec<String> = files
            .iter()
            .map(|(path, _)| path)
            .filter(|path| !self.referenced.contains(*path))
            .map(str::to_owned)
            .collect();
        for path in unreferenced {
            let in_dir = dirs
                .iter()
                .find(|d| path.strip_prefix(**d).is_some_and(|r| r.starts_with('/')));
            let message = match in_dir {
                Some(dir) if Some(*dir) == paths.tools.as_deref() => {
                    format!(
                        "only *.json files directly in {dir}/ are tools; this file is not part of the bundle"
                    )
                }
                Some(dir) => format!(
                    "only *.yaml and *.yml files directly in {dir}/ are examples; this file is not part of the bundle"
                ),
                None => {
                    "bundle.yaml does not refer to this file; it is not part of the bundle".into()
                }
            };
            self.warning(&path, None, "unreferenced_file", message);
        }
    }
}

/// `tools: a, b` or `it defines no tools`, for messages.
fn known_tools(tools: &ToolSet) -> String {
    if tools.tools.is_empty() {
        "it defines no tools".into()
    } else {
        let names: Vec<&str> = tools.tools.iter().map(|t| t.name.as_str()).collect();
        format!("tools: {}", names.join(", "))
    }
}

/// `^[a-z][a-z0-9_]{0,63}$`
fn is_limit_name(name: &str) -> bool {
    name.len() <= 64
        && name.bytes().next().is_some_and(|b| b.is_ascii_lowercase())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
}

/// `^[a-zA-Z0-9_-]{1,64}$`
fn is_valid_tool_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// Tool calls written in the prompt as `name(`: `(line, name)` for each mention.
///
/// To avoid flagging prose such as "function(s)", a mention counts only when the identifier
/// contains an underscore (`refund_order(`) or sits inside an inline code span (`` `lookup(` ``).
/// Method calls (`x.name(`, `a::name(`) are skipped. Lines of fenced code blocks are scanned
/// but have no inline code spans.
pub(crate) fn prompt_tool_mentions(prompt: &str) -> Vec<(usize, &str)> {
    let mut mentions = Vec::new();
    let mut in_fence = false;
    for (idx, line) in prompt.lines().enumerate() {
        let marker = line.trim_start().starts_with("```") || line.trim_start().starts_with("~~~");
        if marker {
            in_fence = !in_fence;
        }
        let fence = marker || in_fence;
        let bytes = line.as_bytes();
        let mut in_code = false;
        let mut i = 0;
        while i < bytes.len() {
            let b = bytes.get(i).copied().unwrap_or_default();
            if b == b'`' && !fence {
                in_code = !in_code;
                i += 1;
                continue;
            }
            let starts_ident = b.is_ascii_alphabetic() || b == b'_';
            let prev = i.checked_sub(1).and_then(|p| bytes.get(p)).copied();
            let continues_word =
                prev.is_some_and(|p| p.is_ascii_alphanumeric() || p == b'_' || p == b'-');
            if !starts_ident || continues_word {
                i += 1;
                continue;
            }
            let start = i;
            while bytes
                .get(i)
                .is_some_and(|c| c.is_ascii_alphanumeric() || *c == b'_' || *c == b'-')
            {
                i += 1;
            }
            let ident = line.get(start..i).unwrap_or_default();
            let is_method = matches!(prev, Some(b'.' | b':'));
            if bytes.get(i) == Some(&b'(') && !is_method && (ident.contains('_') || in_code) {
                mentions.push((idx + 1, ident));
            }
        }
    }
    mentions
}

/// The problem for a file that parses as YAML but not into the expected shape.
fn structure_problem(file: &str, e: &serde_saphyr::Error) -> Problem {
    let message = yaml_message(e);
    let code = if message.contains("unknown field") {
        "unknown_field"
    } else if message.contains("missing field") {
        "missing_field"
    } else {
        "invalid_field"
    };
    Problem::error(file, yaml_location(e), code, message)
}

/// The problem for a file that is not UTF-8, locating the first bad byte.
pub(crate) fn not_utf8_problem(file: &str, bytes: &[u8], e: &std::str::Utf8Error) -> Problem {
    let valid = bytes.get(..e.valid_up_to()).unwrap_or_default();
    let line = valid.iter().filter(|b| **b == b'\n').count() + 1;
    Problem::error(
        file,
        Some(format!("line {line}")),
        "not_utf8",
        format!(
            "{file} is not UTF-8 text (invalid byte at offset {}); bundle files must be UTF-8",
            e.valid_up_to()
        ),
    )
}

/// serde_json's message without its trailing " at line L column C".
fn json_message(e: &serde_json::Error) -> String {
    let text = e.to_string();
    match text.rfind(" at line ") {
        Some(idx) => text.get(..idx).unwrap_or(&text).to_owned(),
        None => text,
    }
}

fn json_type(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// `64 KiB`, `1 MiB`, or `N bytes`.
pub(crate) fn human_bytes(n: usize) -> String {
    const KIB: usize = 1024;
    const MIB: usize = 1024 * 1024;
    if n >= MIB && n.is_multiple_of(MIB) {
        format!("{} MiB", n / MIB)
    } else if n >= KIB && n.is_multiple_of(KIB) {
        format!("{} KiB", n / KIB)
    } else {
        format!("{n} bytes")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prompt_mentions_count_snake_case_and_inline_code_only() {
        let prompt = "Use refund_order(id) to refund.\n\
                      Call `lookup(` for accounts; the function(s) return data.\n\
                      Never call obj.internal_call( or a::b_c(.\n\
                      ```\nplain(x) and `odd(` here\n```\n\
                      x-refund_order( counts as x-refund_order.";
        let got = prompt_tool_mentions(prompt);
        assert_eq!(
            got,
            [(1, "refund_order"), (2, "lookup"), (7, "x-refund_order"),]
        );
    }

    #[test]
    fn human_bytes_prefers_whole_units() {
        assert_eq!(human_bytes(64 * 1024), "64 KiB");
        assert_eq!(human_bytes(8 * 1024 * 1024), "8 MiB");
        assert_eq!(human_bytes(1000), "1000 bytes");
    }
}
