//! The parsed, canonical bundle and its digest.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
#[cfg(feature = "digest")]
use sha2::{Digest as _, Sha256};

use super::json;

/// One immutable version of an agent, as validated from a bundle directory.
///
/// See the [module docs](crate::bundle) for what its canonical form and digest cover.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Bundle {
    /// The agent this bundle belongs to.
    pub agent: String,
    /// The pinned model.
    pub model: ModelSpec,
    /// The system prompt, with LF line endings.
    pub prompt: String,
    /// Few-shot examples, sorted by file name.
    #[serde(default)]
    pub examples: Vec<Example>,
    /// Tool definitions, sorted by name.
    #[serde(default)]
    pub tools: Vec<Tool>,
    /// The evaluation set this bundle is meant to be judged against.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eval_set: Option<String>,
    /// Who and what produced this bundle.
    #[serde(default)]
    pub metadata: Metadata,
}

/// The model a bundle runs on.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ModelSpec {
    /// Free text (`anthropic`, `openai`, `bedrock`, ...); matched case-insensitively.
    pub provider: String,
    /// The provider's model id, ideally a pinned snapshot.
    pub snapshot: String,
    /// Request parameters (`temperature`, `max_tokens`, ...), passed through verbatim.
    #[serde(default)]
    pub params: BTreeMap<String, Value>,
}

/// One few-shot conversation.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Example {
    /// The example's file name within the examples directory (`stuck.yaml`).
    pub name: String,
    /// The conversation.
    pub messages: Vec<Message>,
}

/// One message of an example conversation.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Message {
    /// Who speaks.
    pub role: MessageRole,
    /// The text, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content: Option<String>,
    /// Tool calls the assistant makes in this turn.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tool_calls: Vec<ToolCall>,
}

/// The speaker of a [`Message`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum MessageRole {
    /// System instructions.
    System,
    /// The end user.
    User,
    /// The model.
    Assistant,
    /// A tool result.
    Tool,
}

impl MessageRole {
    /// The lowercase name.
    pub fn as_str(self) -> &'static str {
        match self {
            MessageRole::System => "system",
            MessageRole::User => "user",
            MessageRole::Assistant => "assistant",
            MessageRole::Tool => "tool",
        }
    }
}

/// A call of a tool inside an example.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ToolCall {
    /// The tool's name.
    pub name: String,
    /// The arguments; must validate against the tool's `input_schema`.
    pub arguments: Value,
}

/// A tool definition (`tools/*.json`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Tool {
    /// The name the model calls it by, `[a-zA-Z0-9_-]{1,64}`.
    pub name: String,
    /// What the tool does, shown to the model.
    pub description: String,
    /// A JSON Schema of type `object` for the arguments.
    pub input_schema: Value,
    /// What calling the tool can do to the world, if declared (in the tool file or under
    /// `capabilities` in `bundle.yaml`). Absent from the canonical form when undeclared, so
    /// bundles written before capabilities existed keep their digest.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub capability: Option<Capability>,
}

/// A tool's declared side effects: their class, who answers for them, and numeric limits.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Capability {
    /// `read`, `write` or `irreversible`.
    pub effect: EffectClass,
    /// The team or person answerable for the tool's effects; required unless `read`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
    /// Upper bounds by name (`max_amount`: 500); a higher number allows more.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[cfg_attr(feature = "openapi", schema(value_type = Object))]
    pub limits: BTreeMap<String, serde_json::Number>,
}

/// How much a tool's call can change: ordered `read < write < irreversible`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum EffectClass {
    /// Looks, changes nothing.
    Read,
    /// Changes something that can be changed back.
    Write,
    /// Changes something that cannot be undone (money moved, data deleted, mail sent).
    Irreversible,
}

impl EffectClass {
    /// The lowercase name.
    pub fn as_str(self) -> &'static str {
        match self {
            EffectClass::Read => "read",
            EffectClass::Write => "write",
            EffectClass::Irreversible => "irreversible",
        }
    }

    /// The class named `s` (`read`, `write`, `irreversible`), if any.
    pub fn parse(s: &str) -> Option<EffectClass> {
        match s {
            "read" => Some(EffectClass::Read),
            "write" => Some(EffectClass::Write),
            "irreversible" => Some(EffectClass::Irreversible),
            _ => None,
        }
    }
}

impl fmt::Display for EffectClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Provenance of a bundle. Part of the digest.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Metadata {
    /// Who wrote the change.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub author: Option<String>,
    /// Who reviewed it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reviewer: Option<String>,
    /// The source commit it was built from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub commit: Option<String>,
    /// A one-line summary of the change.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
}

/// Why [`Bundle::from_canonical_json`] failed.
#[derive(Debug)]
pub enum BundleDecodeError {
    /// The text is not JSON of the bundle's shape.
    Json(serde_json::Error),
}

impl fmt::Display for BundleDecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BundleDecodeError::Json(e) => write!(f, "invalid bundle JSON: {e}"),
        }
    }
}

impl std::error::Error for BundleDecodeError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            BundleDecodeError::Json(e) => Some(e),
        }
    }
}

impl From<serde_json::Error> for BundleDecodeError {
    fn from(e: serde_json::Error) -> BundleDecodeError {
        BundleDecodeError::Json(e)
    }
}

impl Bundle {
    /// The canonical JSON text of this bundle: object keys sorted, no whitespace, examples and
    /// tools sorted by name, absent optional fields omitted, prompt line endings normalised to LF.
    ///
    /// Keys are sorted explicitly, so the output does not depend on whether serde_json's
    /// `preserve_order` feature happens to be enabled somewhere in the build.
    pub fn canonical_json(&self) -> String {
        json::to_canonical_string(&self.canonical_value())
    }

    /// `sha256:` over the bytes of [`Bundle::canonical_json`] (feature `digest`).
    #[cfg(feature = "digest")]
    pub fn digest(&self) -> Digest {
        let hash = Sha256::digest(self.canonical_json().as_bytes());
        Digest(format!("sha256:{}", hex::encode(hash)))
    }

    /// Parses a bundle from JSON (canonical or not) and brings it into canonical order.
    pub fn from_canonical_json(s: &str) -> Result<Bundle, BundleDecodeError> {
        let mut bundle: Bundle = serde_json::from_str(s)?;
        bundle.canonicalize();
        Ok(bundle)
    }

    /// Sorts examples and tools by name and normalises the prompt's line endings, in place.
    /// [`Bundle::canonical_json`] applies the same normalisation without needing `&mut`.
    pub fn canonicalize(&mut self) {
        self.prompt = normalize_newlines(&self.prompt);
        self.examples.sort_by(|a, b| a.name.cmp(&b.name));
        self.tools.sort_by(|a, b| a.name.cmp(&b.name));
    }

    /// The canonical form as a JSON value. Built by hand rather than through `Serialize` so
    /// that it cannot fail and so the hashed shape is spelled out in one place.
    fn canonical_value(&self) -> Value {
        let mut root = Map::new();
        root.insert("agent".into(), Value::String(self.agent.clone()));
        let mut model = Map::new();
        model.insert(
            "provider".into(),
            Value::String(self.model.provider.clone()),
        );
        model.insert(
            "snapshot".into(),
            Value::String(self.model.snapshot.clone()),
        );
        model.insert(
            "params".into(),
            Value::Object(
                self.model
                    .params
                    .iter()
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect(),
            ),
        );
        root.insert("model".into(), Value::Object(model));
        root.insert(
            "prompt".into(),
            Value::String(normalize_newlines(&self.prompt)),
        );

        let mut examples: Vec<&Example> = self.examples.iter().collect();
        examples.sort_by(|a, b| a.name.cmp(&b.name));
        root.insert(
            "examples".into(),
            Value::Array(examples.into_iter().map(example_value).collect()),
        );

        let mut tools: Vec<&Tool> = self.tools.iter().collect();
        tools.sort_by(|a, b| a.name.cmp(&b.name));
        root.insert(
            "tools".into(),
            Value::Array(tools.into_iter().map(tool_value).collect()),
        );

        if let Some(eval_set) = &self.eval_set {
            root.insert("eval_set".into(), Value::String(eval_set.clone()));
        }
        let mut metadata = Map::new();
        let m = &self.metadata;
        for (key, value) in [
            ("author", &m.author),
            ("reviewer", &m.reviewer),
            ("commit", &m.commit),
            ("description", &m.description),
        ] {
            if let Some(v) = value {
                metadata.insert(key.into(), Value::String(v.clone()));
            }
        }
        root.insert("metadata".into(), Value::Object(metadata));
        Value::Object(root)
    }
}

pub fn example_value(example: &Example) -> Value {
    let mut obj = Map::new();
    obj.insert("name".into(), Value::String(example.name.clone()));
    let messages = example
        .messages
        .iter()
        .map(|m| {
            let mut msg = Map::new();
            msg.insert("role".into(), Value::String(m.role.as_str().into()));
            if let Some(content) = &m.content {
                msg.insert("content".into(), Value::String(content.clone()));
            }
            if !m.tool_calls.is_empty() {
                let calls = m
                    .tool_calls
                    .iter()
                    .map(|c| {
                        let mut call = Map::new();
                        call.insert("name".into(), Value::String(c.name.clone()));
                        call.insert("arguments".into(), c.arguments.clone());
                        Value::Object(call)
                    })
                    .collect();
                msg.insert("tool_calls".into(), Value::Array(calls));
            }
            Value::Object(msg)
        })
        .collect();
    obj.insert("messages".into(), Value::Array(messages));
    Value::Object(obj)
}

pub fn tool_value(tool: &Tool) -> Value {
    let mut obj = Map::new();
    obj.insert("name".into(), Value::String(tool.name.clone()));
    obj.insert(
        "description".into(),
        Value::String(tool.description.clone()),
    );
    obj.insert("input_schema".into(), tool.input_schema.clone());
    if let Some(cap) = &tool.capability {
        obj.insert("capability".into(), capability_value(cap));
    }
    Value::Object(obj)
}

/// The canonical form of a capability: `effect`, then `owner` and `limits` when present.
pub fn capability_value(cap: &Capability) -> Value {
    let mut obj = Map::new();
    obj.insert("effect".into(), Value::String(cap.effect.as_str().into()));
    if let Some(owner) = &cap.owner {
        obj.insert("owner".into(), Value::String(owner.clone()));
    }
    if !cap.limits.is_empty() {
        let limits = cap
            .limits
            .iter()
            .map(|(k, v)| (k.clone(), Value::Number(v.clone())))
            .collect();
        obj.insert("limits".into(), Value::Object(limits));
    }
    Value::Object(obj)
}

/// Replaces every CRLF with LF.
pub fn normalize_newlines(s: &str) -> String {
    if s.contains("\r\n") {
        s.replace("\r\n", "\n")
    } else {
        s.to_owned()
    }
}

/// A content digest, `sha256:` followed by 64 lowercase hex digits.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Digest(String);

/// A string that is not `sha256:<64 lowercase hex>`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DigestParseError(pub String);

impl fmt::Display for DigestParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "invalid digest {:?}: expected \"sha256:\" followed by 64 lowercase hex digits",
            self.0
        )
    }
}

impl std::error::Error for DigestParseError {}

impl Digest {
    /// The full text, `sha256:...`.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The 64 hex digits without the `sha256:` prefix.
    pub fn hex(&self) -> &str {
        self.0.strip_prefix("sha256:").unwrap_or(&self.0)
    }

    /// The first 12 hex digits, for display (`sha256:0123456789ab`).
    pub fn short(&self) -> String {
        let hex = self.hex();
        format!("sha256:{}", hex.get(..12).unwrap_or(hex))
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for Digest {
    type Err = DigestParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let valid = s.strip_prefix("sha256:").is_some_and(|hex| {
            hex.len() == 64 && hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
        });
        if valid {
            Ok(Digest(s.to_owned()))
        } else {
            Err(DigestParseError(s.to_owned()))
        }
    }
}

impl TryFrom<String> for Digest {
    type Error = DigestParseError;

    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl From<Digest> for String {
    fn from(d: Digest) -> String {
        d.0
    }
}

impl AsRef<str> for Digest {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A bundle stored before tools could declare a capability, byte for byte as it was
    /// stored: its canonical text (and so its digest) must not move.
    pub(crate) const OLD_BUNDLE: &str = r#"{"agent":"support","examples":[],"metadata":{"author":"alex"},"model":{"params":{"max_tokens":1024},"provider":"anthropic","snapshot":"claude-opus-4-7-20260108"},"prompt":"Help.\n","tools":[{"description":"Fetch an account.","input_schema":{"properties":{"account_id":{"maxLength":64,"type":"string"}},"required":["account_id"],"type":"object"},"name":"lookup_account"}]}"#;

    #[test]
    fn a_bundle_without_capabilities_keeps_its_canonical_form() {
        let b = Bundle::from_canonical_json(OLD_BUNDLE).unwrap();
        assert_eq!(b.tools[0].capability, None);
        assert_eq!(b.canonical_json(), OLD_BUNDLE);
        // The derived serialisation (snapshots, API answers) omits the field too.
        assert!(!serde_json::to_string(&b).unwrap().contains("capability"));
    }

    #[test]
    fn a_declared_capability_is_part_of_the_canonical_form() {
        let with = OLD_BUNDLE.replace(
            r#""name":"lookup_account"}"#,
            r#""name":"lookup_account","capability":{"owner":"identity","effect":"read","limits":{"max_calls_per_request":3}}}"#,
        );
        let b = Bundle::from_canonical_json(&with).unwrap();
        let cap = b.tools[0].capability.as_ref().unwrap();
        assert_eq!(cap.effect, EffectClass::Read);
        assert_eq!(cap.owner.as_deref(), Some("identity"));
        assert!(b.canonical_json().contains(
            r#""capability":{"effect":"read","limits":{"max_calls_per_request":3},"owner":"identity"}"#
        ));
        let again = Bundle::from_canonical_json(&b.canonical_json()).unwrap();
        assert_eq!(again, b);
        assert!(EffectClass::Read < EffectClass::Write);
        assert!(EffectClass::Write < EffectClass::Irreversible);
        let bad = with.replace(r#""effect":"read""#, r#""effect":"delete""#);
        assert!(Bundle::from_canonical_json(&bad).is_err());
    }

    #[test]
    fn digest_parses_only_the_canonical_format() {
        let good = format!("sha256:{}", "a1".repeat(32));
        assert_eq!(good.parse::<Digest>().unwrap().as_str(), good);
        for bad in [
            String::new(),
            "sha256:".into(),
            format!("sha256:{}", "A1".repeat(32)),
            format!("sha256:{}", "a1".repeat(31)),
            format!("sha512:{}", "a1".repeat(32)),
            "a1".repeat(32),
        ] {
            assert!(bad.parse::<Digest>().is_err(), "{bad}");
        }
        let json = serde_json::to_string(&good.parse::<Digest>().unwrap()).unwrap();
        assert_eq!(json, format!("\"{good}\""));
        assert!(serde_json::from_str::<Digest>("\"sha256:zz\"").is_err());
    }
}
