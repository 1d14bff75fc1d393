//! Bundles: the immutable unit Serin ships (prompt + examples + pinned model + tool schemas +
//! metadata), how a bundle directory is validated, and how two bundles are compared.
//!
//! The flow is: something with I/O (the CLI's directory loader, or the server receiving a push)
//! collects the raw bytes of the bundle's files into [`BundleFiles`]; [`validate`] turns them into
//! a [`Validation`] holding every [`Problem`] at once and, when there is no error, the parsed
//! [`Bundle`]. [`manifest_paths`] tells a loader which files the manifest points at, so it
//! never has to understand more of `bundle.yaml` than that.
//!
//! # Canonical form and digest
//! A bundle's identity is [`Bundle::digest`], a sha256 over [`Bundle::canonical_json`]:
//! - the digest covers everything in the bundle: agent, model (provider, snapshot, params),
//!   prompt, examples, tools, eval set *and metadata* (a different reviewer is a different bundle);
//! - YAML/JSON formatting, comments, quoting and key order never change the digest: files are
//!   parsed, then re-serialised with object keys sorted and no whitespace;
//! - the prompt's CRLF line endings are normalised to LF before hashing, so a Windows checkout
//!   hashes like a Unix one; other bytes of the prompt are kept verbatim (trailing newline too);
//! - tools are identified by their `name`: the file a tool came from does not matter;
//!   examples are identified by their file name within the examples directory, which does;
//! - tools and examples are sorted by name; absent optional fields are omitted;
//! - numbers keep the type they were written with (`1` and `1.0` differ).

mod budget;
pub mod capabilities;
mod diff;
mod manifest;
mod problem;
mod validate;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

pub use diff::{
    BundleDiff, ChangeKind, ExampleDiff, FieldChange, JsonChange, ModelDiff, ToolDiff, diff,
    diff_labeled,
};
pub use manifest::{
    MANIFEST_FILE, ManifestPaths, PartialManifestPaths, manifest_paths, partial_manifest_paths,
};
pub(crate) use manifest::{yaml_location, yaml_message};
// The bundle's model and canonical form live in `serin-engine` (an SDK serves bundles);
// reading, validating and diffing them stay here.
pub use problem::{Problem, Severity, Validation};
use serin_engine::bundle as model;
use serin_engine::bundle::json;
pub use serin_engine::bundle::{
    Bundle, BundleDecodeError, Capability, Digest, DigestParseError, EffectClass, Example, Message,
    MessageRole, Metadata, ModelSpec, Tool, ToolCall,
};
pub use validate::validate;

use crate::catalog::ModelCatalog;

/// The raw files of a bundle, keyed by their path relative to the bundle directory with `/`
/// separators (`bundle.yaml`, `tools/refund.json`). Iteration is in path order.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct BundleFiles {
    files: BTreeMap<String, Vec<u8>>,
}

impl BundleFiles {
    /// An empty set of files.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds or replaces a file; returns the previous contents if any.
    pub fn insert(
        &mut self,
        path: impl Into<String>,
        bytes: impl Into<Vec<u8>>,
    ) -> Option<Vec<u8>> {
        self.files.insert(path.into(), bytes.into())
    }

    /// The contents of `path`, if present.
    pub fn get(&self, path: &str) -> Option<&[u8]> {
        self.files.get(path).map(Vec::as_slice)
    }

    /// Whether `path` is present.
    pub fn contains(&self, path: &str) -> bool {
        self.files.contains_key(path)
    }

    /// All files in path order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &[u8])> {
        self.files.iter().map(|(k, v)| (k.as_str(), v.as_slice()))
    }

    /// The number of files.
    pub fn len(&self) -> usize {
        self.files.len()
    }

    /// Whether there are no files.
    pub fn is_empty(&self) -> bool {
        self.files.is_empty()
    }

    /// The sum of all file sizes in bytes.
    pub fn total_bytes(&self) -> usize {
        self.files.values().map(Vec::len).sum()
    }
}

impl<K: Into<String>, V: Into<Vec<u8>>> FromIterator<(K, V)> for BundleFiles {
    fn from_iter<I: IntoIterator<Item = (K, V)>>(iter: I) -> Self {
        Self {
            files: iter
                .into_iter()
                .map(|(k, v)| (k.into(), v.into()))
                .collect(),
        }
    }
}

/// Size limits applied while validating (and, by the loader, while reading) a bundle.
///
/// They keep a bundle something a human can review and keep a push cheap to reject: a file over
/// its limit is reported as `too_large` and not parsed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Maximum size of `bundle.yaml`.
    pub manifest_bytes: usize,
    /// Maximum size of the prompt file.
    pub prompt_bytes: usize,
    /// Maximum size of one example file.
    pub example_bytes: usize,
    /// Maximum size of one tool file.
    pub tool_bytes: usize,
    /// Maximum number of example files.
    pub max_examples: usize,
    /// Maximum number of tool files.
    pub max_tools: usize,
    /// Maximum size of all files together.
    pub total_bytes: usize,
    /// Maximum number of YAML nodes that aliases may add, across every YAML file of one
    /// validation (each parse of a file counts). Nodes written out are bounded by the byte limits.
    pub yaml_alias_nodes: usize,
    /// Maximum scalar bytes that aliases may add, across every YAML file of one validation.
    pub yaml_alias_bytes: usize,
}

impl Limits {
    /// The defaults: manifest 64 KiB, prompt 1 MiB, example 256 KiB, tool 256 KiB,
    /// 500 examples, 256 tools (above what providers accept in one request), 8 MiB in total;
    /// aliases may add at most 100,000 YAML nodes and 4 MiB of scalars per validation.
    pub const DEFAULT: Limits = Limits {
        manifest_bytes: 64 * 1024,
        prompt_bytes: 1024 * 1024,
        example_bytes: 256 * 1024,
        tool_bytes: 256 * 1024,
        max_examples: 500,
        max_tools: 256,
        total_bytes: 8 * 1024 * 1024,
        yaml_alias_nodes: 100_000,
        yaml_alias_bytes: 4 * 1024 * 1024,
    };
}

impl Default for Limits {
    fn default() -> Self {
        Limits::DEFAULT
    }
}

/// How an env treats moving model aliases.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PinPolicy {
    /// A moving alias is an error. The default for every env but `dev`.
    Strict,
    /// A moving alias is a warning.
    Dev,
}

impl PinPolicy {
    /// The policy of an env by name: `dev` is [`PinPolicy::Dev`], everything else is strict.
    pub fn for_env(env: &str) -> PinPolicy {
        if env == "dev" {
            PinPolicy::Dev
        } else {
            PinPolicy::Strict
        }
    }

    /// `strict` or `dev`.
    pub fn as_str(self) -> &'static str {
        match self {
            PinPolicy::Strict => "strict",
            PinPolicy::Dev => "dev",
        }
    }
}

/// What [`validate`] checks against.
#[derive(Clone, Copy, Debug)]
pub struct ValidateOptions<'a> {
    /// The pin policy of the env the bundle is validated for.
    pub pin_policy: PinPolicy,
    /// Known snapshots and aliases.
    pub catalog: &'a ModelCatalog,
    /// Size limits.
    pub limits: &'a Limits,
}
