//! The model catalog: which model ids are pinned snapshots, which are moving aliases, and how
//! snapshots group into families with release dates.
//!
//! Serin ships a [built-in catalog](ModelCatalog::builtin) (`catalog.yaml` in this crate); a
//! server may [merge](ModelCatalog::merged_with) a user catalog in the same format over it.
//!
//! [`ModelCatalog::classify`] is the single place that decides whether a model id moves:
//! 1. an alias listed in the catalog is a moving alias, and the catalog says what it means now;
//! 2. an id containing the word `latest` (`latest`, `gpt-4o-latest`, `x@latest`) is a moving alias;
//! 3. a snapshot listed in the catalog is pinned, with its family and release date;
//! 4. otherwise an id with a date (`YYYYMMDD` or `YYYY-MM-DD`) or a revision suffix
//!    (`-001`, `@001`, `-0613`, `-v2`, `-v2:0`) is taken to be pinned but unknown;
//! 5. anything else (`claude-opus-4-7`, `gpt-4o`, `o3`) is treated as a moving alias.
//!
//! Rule 5 errs on the side of caution: a provider whose stable ids carry no suffix (for example
//! open-weight model names) can list them as snapshots in a user catalog.

use std::collections::BTreeMap;
use std::sync::LazyLock;

use jiff::civil::Date;
use serde::{Deserialize, Serialize};

const BUILTIN_YAML: &str = include_str!("catalog.yaml");

static BUILTIN: LazyLock<ModelCatalog> =
    LazyLock::new(|| ModelCatalog::from_yaml(BUILTIN_YAML).unwrap_or_default());

/// Known snapshots and aliases, keyed by provider (case-insensitive) and model id.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ModelCatalog {
    snapshots: BTreeMap<(String, String), SnapshotInfo>,
    aliases: BTreeMap<(String, String), String>,
}

/// One pinned snapshot the catalog knows.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct SnapshotInfo {
    /// The provider, lowercase.
    pub provider: String,
    /// The model id (`claude-sonnet-4-5-20250929`).
    pub id: String,
    /// The family it belongs to (`claude-sonnet`); lag is measured within a family.
    pub family: String,
    /// When it was released, if known.
    pub released: Option<Date>,
    /// What it costs, if the catalog says (the built-in one does not: prices change more
    /// often than Serin ships). OTLP ingestion prices token usage with it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub price: Option<Price>,
}

/// A model's price in micro-USD per million tokens (integers, so the catalog stays `Eq`);
/// written in the catalog as USD per million tokens: `price: {input: 3.0, output: 15.0}`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct Price {
    pub input_micro_usd_per_mtok: u64,
    pub output_micro_usd_per_mtok: u64,
}

impl Price {
    /// USD for one token of input and of output.
    pub fn per_token_usd(&self) -> (f64, f64) {
        (
            self.input_micro_usd_per_mtok as f64 / 1e12,
            self.output_micro_usd_per_mtok as f64 / 1e12,
        )
    }
}

/// What a model id is, according to the catalog and the naming rules in the module docs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ModelStatus {
    /// A pinned snapshot the catalog knows.
    Snapshot {
        /// Its family.
        family: Option<String>,
        /// Its release date.
        released: Option<Date>,
    },
    /// A moving alias: the model behind it can change without the bundle changing.
    Alias {
        /// The snapshot the alias currently resolves to, when the catalog knows.
        means: Option<String>,
        /// Why the id counts as an alias.
        reason: AliasReason,
    },
    /// Looks pinned (has a date or revision suffix) but the catalog does not know it.
    Unknown,
}

/// Why [`ModelCatalog::classify`] considers an id a moving alias.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AliasReason {
    /// The catalog lists it as an alias.
    Catalog,
    /// It contains the word `latest`.
    Latest,
    /// It has no date or revision suffix and is not a known snapshot.
    NoVersionSuffix,
}

impl ModelStatus {
    /// Whether the id is a moving alias.
    pub fn is_alias(&self) -> bool {
        matches!(self, ModelStatus::Alias { .. })
    }
}

/// Why a catalog did not load.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CatalogError {
    /// The YAML does not parse or has the wrong shape.
    #[error("invalid model catalog{}: {message}", location.as_ref().map(|l| format!(" at {l}")).unwrap_or_default())]
    Yaml {
        /// `line L, column C`, if known.
        location: Option<String>,
        /// The parser's reason.
        message: String,
    },
    /// A required string is empty.
    #[error("model catalog entry {entry}: {field} must not be empty")]
    Empty {
        /// The entry (`provider/family`).
        entry: String,
        /// Which field.
        field: &'static str,
    },
    /// The same id is listed twice (as snapshots, aliases, or one of each).
    #[error("model catalog entry {entry}: {id} is listed more than once for provider {provider}")]
    Duplicate {
        /// The entry (`provider/family`) where the second listing is.
        entry: String,
        /// The provider.
        provider: String,
        /// The repeated id.
        id: String,
    },
    /// An alias points at a snapshot that is not listed.
    #[error(
        "model catalog entry {entry}: alias {alias} points to {target}, which is not a snapshot listed for provider {provider}"
    )]
    UnknownAliasTarget {
        /// The entry (`provider/family`).
        entry: String,
        /// The provider.
        provider: String,
        /// The alias.
        alias: String,
        /// What it points to.
        target: String,
    },
    /// A release date is not `YYYY-MM-DD`.
    #[error(
        "model catalog entry {entry}: snapshot {id} has invalid released date {value:?}: expected YYYY-MM-DD"
    )]
    InvalidDate {
        /// The entry (`provider/family`).
        entry: String,
        /// The snapshot.
        id: String,
        /// The rejected text.
        value: String,
    },
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCatalog {
    models: Vec<RawFamily>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFamily {
    provider: String,
    family: String,
    #[serde(default)]
    snapshots: Vec<RawSnapshot>,
    #[serde(default)]
    aliases: BTreeMap<String, String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSnapshot {
    id: String,
    #[serde(default)]
    released: Option<String>,
    #[serde(default)]
    price: Option<RawPrice>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPrice {
    input: f64,
    output: f64,
}

/// USD per million tokens into micro-USD, refusing what no model costs.
fn micro_usd(usd: f64) -> Option<u64> {
    (usd.is_finite() && (0.0..=1_000_000.0).contains(&usd)).then(|| (usd * 1e6).round() as u64)
}

impl ModelCatalog {
    /// The catalog shipped with Serin.
    pub fn builtin() -> ModelCatalog {
        BUILTIN.clone()
    }

    /// The YAML text of the built-in catalog, a template for user catalogs.
    pub fn builtin_yaml() -> &'static str {
        BUILTIN_YAML
    }

    /// An empty catalog: every id is judged by its name alone.
    pub fn empty() -> ModelCatalog {
        ModelCatalog::default()
    }

    /// Parses a catalog (format: see `catalog.yaml`). Unknown fields, duplicate ids, aliases
    /// pointing at snapshots not listed in the same file and malformed dates are errors.
    pub fn from_yaml(yaml: &str) -> Result<ModelCatalog, CatalogError> {
        let raw: RawCatalog = serde_saphyr::from_str(yaml).map_err(|e| CatalogError::Yaml {
            location: crate::bundle::yaml_location(&e),
            message: crate::bundle::yaml_message(&e),
        })?;
        let mut catalog = ModelCatalog::default();
        for family in &raw.models {
            let entry = format!("{}/{}", family.provider, family.family);
            if family.provider.trim().is_empty() {
                return Err(CatalogError::Empty {
                    entry,
                    field: "provider",
                });
            }
            if family.family.trim().is_empty() {
                return Err(CatalogError::Empty {
                    entry,
                    field: "family",
                });
            }
            let provider = family.provider.to_ascii_lowercase();
            for snapshot in &family.snapshots {
                if snapshot.id.trim().is_empty() {
                    return Err(CatalogError::Empty { entry, field: "id" });
                }
                let released = match &snapshot.released {
                    None => None,
                    Some(text) => {
                        Some(
                            text.parse::<Date>()
                                .map_err(|_| CatalogError::InvalidDate {
                                    entry: entry.clone(),
                                    id: snapshot.id.clone(),
                                    value: text.clone(),
                                })?,
                        )
                    }
                };
                let price = match &snapshot.price {
                    None => None,
                    Some(p) => match (micro_usd(p.input), micro_usd(p.output)) {
                        (Some(i), Some(o)) => Some(Price {
                            input_micro_usd_per_mtok: i,
                            output_micro_usd_per_mtok: o,
                        }),
                        _ => {
                            return Err(CatalogError::Yaml {
                                location: None,
                                message: format!(
                                    "{entry}: price of {} must be USD per million tokens between 0 and 1000000",
                                    snapshot.id
                                ),
                            });
                        }
                    },
                };
                let key = (provider.clone(), snapshot.id.clone());
                if catalog.snapshots.contains_key(&key) {
                    return Err(CatalogError::Duplicate {
                        entry,
                        provider,
                        id: snapshot.id.clone(),
                    });
                }
                catalog.snapshots.insert(
                    key,
                    SnapshotInfo {
                        provider: provider.clone(),
                        id: snapshot.id.clone(),
                        family: family.family.clone(),
                        released,
                        price,
                    },
                );
            }
        }
        // Aliases after all snapshots, so an alias may point into another family of the file.
        for family in &raw.models {
            let entry = format!("{}/{}", family.provider, family.family);
            let provider = family.provider.to_ascii_lowercase();
            for (alias, target) in &family.aliases {
                let key = (provider.clone(), alias.clone());
                if catalog.snapshots.contains_key(&key) || catalog.aliases.contains_key(&key) {
                    return Err(CatalogError::Duplicate {
                        entry,
                        provider,
                        id: alias.clone(),
                    });
                }
                if !catalog
                    .snapshots
                    .contains_key(&(provider.clone(), target.clone()))
                {
                    return Err(CatalogError::UnknownAliasTarget {
                        entry,
                        provider,
                        alias: alias.clone(),
                        target: target.clone(),
                    });
                }
                catalog.aliases.insert(key, target.clone());
            }
        }
        Ok(catalog)
    }

    /// This catalog with `other` laid over it: snapshots and aliases of `other` are added, and
    /// replace entries of `self` with the same provider and id (an id that was an alias here
    /// and is a snapshot in `other`, or the reverse, takes `other`'s meaning).
    #[must_use]
    pub fn merged_with(mut self, other: ModelCatalog) -> ModelCatalog {
        for (key, info) in other.snapshots {
            self.aliases.remove(&key);
            self.snapshots.insert(key, info);
        }
        for (key, target) in other.aliases {
            self.snapshots.remove(&key);
            self.aliases.insert(key, target);
        }
        self
    }

    /// Whether the catalog has no entries.
    pub fn is_empty(&self) -> bool {
        self.snapshots.is_empty() && self.aliases.is_empty()
    }

    /// The snapshot `id` of `provider`, if listed.
    pub fn snapshot(&self, provider: &str, id: &str) -> Option<&SnapshotInfo> {
        self.snapshots
            .get(&(provider.to_ascii_lowercase(), id.to_owned()))
    }

    /// The snapshot an alias of `provider` currently points at, if listed.
    pub fn alias_target(&self, provider: &str, alias: &str) -> Option<&str> {
        self.aliases
            .get(&(provider.to_ascii_lowercase(), alias.to_owned()))
            .map(String::as_str)
    }

    /// Every listed snapshot, ordered by provider and id.
    pub fn snapshots(&self) -> impl Iterator<Item = &SnapshotInfo> {
        self.snapshots.values()
    }

    /// Every listed alias as `(provider, alias, target)`.
    pub fn aliases(&self) -> impl Iterator<Item = (&str, &str, &str)> {
        self.aliases
            .iter()
            .map(|((p, a), t)| (p.as_str(), a.as_str(), t.as_str()))
    }

    /// The newest snapshot of a family: latest release date, ties broken by id.
    /// Snapshots without a date count as older than any dated one.
    pub fn newest_in_family(&self, provider: &str, family: &str) -> Option<&SnapshotInfo> {
        let provider = provider.to_ascii_lowercase();
        self.snapshots
            .values()
            .filter(|s| s.provider == provider && s.family == family)
            .max_by(|a, b| a.released.cmp(&b.released).then_with(|| a.id.cmp(&b.id)))
    }

    /// Decides whether `snapshot` is pinned; see the module docs for the rules.
    pub fn classify(&self, provider: &str, snapshot: &str) -> ModelStatus {
        if let Some(target) = self.alias_target(provider, snapshot) {
            return ModelStatus::Alias {
                means: Some(target.to_owned()),
                reason: AliasReason::Catalog,
            };
        }
        if tokens(snapshot).any(|t| t.eq_ignore_ascii_case("latest")) {
            return ModelStatus::Alias {
                means: None,
                reason: AliasReason::Latest,
            };
        }
        if let Some(info) = self.snapshot(provider, snapshot) {
            return ModelStatus::Snapshot {
                family: Some(info.family.clone()),
                released: info.released,
            };
        }
        if looks_pinned(snapshot) {
            ModelStatus::Unknown
        } else {
            ModelStatus::Alias {
                means: None,
                reason: AliasReason::NoVersionSuffix,
            }
        }
    }
}

/// The alphanumeric runs of a model id (`gpt-4o-2024-08-06` → `gpt`, `4o`, `2024`, `08`, `06`).
fn tokens(id: &str) -> impl Iterator<Item = &str> {
    id.split(|c: char| !c.is_ascii_alphanumeric())
        .filter(|t| !t.is_empty())
}

fn is_digits(s: &str, len: usize) -> bool {
    s.len() == len && s.bytes().all(|b| b.is_ascii_digit())
}

fn plausible_date(year: &str, month: &str, day: &str) -> bool {
    let (Ok(y), Ok(m), Ok(d)) = (
        year.parse::<u32>(),
        month.parse::<u32>(),
        day.parse::<u32>(),
    ) else {
        return false;
    };
    (2000..2100).contains(&y) && (1..=12).contains(&m) && (1..=31).contains(&d)
}

/// Whether an id carries a date (`YYYYMMDD`, `YYYY-MM-DD`) anywhere, or ends in a revision
/// (`-001`, `@001`, `-0613`, `-v2`, `-v2:0`).
fn looks_pinned(id: &str) -> bool {
    let toks: Vec<&str> = tokens(id).collect();
    let compact_date = toks.iter().any(|t| {
        is_digits(t, 8)
            && match (t.get(0..4), t.get(4..6), t.get(6..8)) {
                (Some(y), Some(m), Some(d)) => plausible_date(y, m, d),
                _ => false,
            }
    });
    let dashed_date = toks.windows(3).any(|w| match w {
        [y, m, d] => {
            is_digits(y, 4) && is_digits(m, 2) && is_digits(d, 2) && plausible_date(y, m, d)
        }
        _ => false,
    });
    let is_version = |t: &&str| {
        t.len() >= 2
            && (t.starts_with('v') || t.starts_with('V'))
            && t.bytes().skip(1).all(|b| b.is_ascii_digit())
    };
    let revision = match toks.as_slice() {
        [.., prev, last] => {
            is_digits(last, 3) || is_digits(last, 4) || is_version(last) || is_version(prev)
        }
        [last] => is_version(last),
        [] => false,
    };
    compact_date || dashed_date || revision
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtin_catalog_parses_and_knows_the_spec_model() {
        let parsed = ModelCatalog::from_yaml(BUILTIN_YAML);
        assert!(parsed.is_ok(), "{parsed:?}");
        let catalog = ModelCatalog::builtin();
        assert!(!catalog.is_empty());
        let info = catalog
            .snapshot("Anthropic", "claude-opus-4-7-20260108")
            .unwrap();
        assert_eq!(info.family, "claude-opus");
        assert_eq!(info.released, Some(jiff::civil::date(2026, 1, 8)));
    }

    #[test]
    fn a_catalog_may_price_a_snapshot_per_million_tokens() {
        let yaml = "models:\n  - provider: acme\n    family: m\n    snapshots:\n      - {id: m-20260101, price: {input: 3.0, output: 15.0}}\n";
        let catalog = ModelCatalog::from_yaml(yaml).unwrap();
        let price = catalog
            .snapshot("acme", "m-20260101")
            .unwrap()
            .price
            .unwrap();
        assert_eq!(price.input_micro_usd_per_mtok, 3_000_000);
        let (i, o) = price.per_token_usd();
        assert!((i - 3e-6).abs() < 1e-15 && (o - 15e-6).abs() < 1e-15);
        let bad = yaml.replace("3.0", "-1.0");
        assert!(ModelCatalog::from_yaml(&bad).is_err());
    }

    fn status(catalog: &ModelCatalog, provider: &str, id: &str) -> String {
        match catalog.classify(provider, id) {
            ModelStatus::Snapshot { family, .. } => {
                format!("snapshot {}", family.unwrap_or_default())
            }
            ModelStatus::Alias { means, reason } => format!(
                "alias {reason:?}{}",
                means.map(|m| format!(" -> {m}")).unwrap_or_default()
            ),
            ModelStatus::Unknown => "unknown".into(),
        }
    }

    #[test]
    fn classify_tells_aliases_from_snapshots() {
        let c = ModelCatalog::builtin();
        let cases = [
            (
                "anthropic",
                "claude-opus-4-7-20260108",
                "snapshot claude-opus",
            ),
            (
                "ANTHROPIC",
                "claude-sonnet-4-5",
                "alias Catalog -> claude-sonnet-4-5-20250929",
            ),
            (
                "anthropic",
                "claude-3-7-sonnet-latest",
                "alias Catalog -> claude-3-7-sonnet-20250219",
            ),
            (
                "anthropic",
                "claude-opus-4-7",
                "alias Catalog -> claude-opus-4-7-20260108",
            ),
            ("openai", "gpt-4o", "alias Catalog -> gpt-4o-2024-08-06"),
            ("openai", "gpt-4o-2024-11-20", "snapshot gpt-4o"),
            ("openai", "chatgpt-4o-latest", "alias Latest"),
            ("x", "latest", "alias Latest"),
            ("x", "model@latest", "alias Latest"),
            ("x", "latest-and-greatest-20250101", "alias Latest"),
            ("google", "gemini-2.5-pro", "snapshot gemini-pro"),
            (
                "google",
                "gemini-2.0-flash",
                "alias Catalog -> gemini-2.0-flash-001",
            ),
            ("google", "gemini-1.5-flash-002", "unknown"),
            ("vertex", "claude-3-5-sonnet-v2@20241022", "unknown"),
            (
                "bedrock",
                "anthropic.claude-3-5-sonnet-20241022-v2:0",
                "unknown",
            ),
            ("openai", "gpt-4-0613", "unknown"),
            ("openai", "gpt-9-2031-02-03", "unknown"),
            ("acme", "acme-large-v3", "unknown"),
            ("acme", "acme-large", "alias NoVersionSuffix"),
            ("anthropic", "claude-opus-4", "alias NoVersionSuffix"),
            ("openai", "gpt-4", "alias NoVersionSuffix"),
            ("acme", "model-20251399", "alias NoVersionSuffix"),
            // A provider the catalog does not know does not inherit another's aliases.
            ("someone-else", "gpt-4o", "alias NoVersionSuffix"),
        ];
        for (provider, id, want) in cases {
            assert_eq!(status(&c, provider, id), want, "{provider} {id}");
        }
    }

    #[test]
    fn from_yaml_rejects_bad_entries_naming_them() {
        let check = |yaml: &str, want: &str| {
            let err = ModelCatalog::from_yaml(yaml).unwrap_err().to_string();
            assert!(err.contains(want), "{err:?} should contain {want:?}");
        };
        check(
            "models:\n  - {provider: p, family: f, snapshots: [{id: a}], aliases: {b: c}}\n",
            "model catalog entry p/f: alias b points to c",
        );
        check(
            "models:\n  - {provider: p, family: f, snapshots: [{id: a}, {id: a}]}\n",
            "entry p/f: a is listed more than once",
        );
        check(
            "models:\n  - {provider: p, family: f, snapshots: [{id: a}], aliases: {a: a}}\n",
            "a is listed more than once",
        );
        check(
            "models:\n  - {provider: p, family: f, snapshots: [{id: a, released: 2025-13-01}]}\n",
            "snapshot a has invalid released date \"2025-13-01\"",
        );
        check(
            "models:\n  - {provider: p, family: f, colour: red}\n",
            "colour",
        );
    }

    #[test]
    fn merged_catalog_extends_and_overrides_the_builtin() {
        let user = ModelCatalog::from_yaml(
            "models:\n  - provider: Anthropic\n    family: claude-opus\n    snapshots:\n      - {id: claude-opus-5-20270101, released: 2027-01-01}\n    aliases:\n      claude-opus-4-7: claude-opus-5-20270101\n  - provider: acme\n    family: acme\n    snapshots: [{id: acme-large}]\n",
        )
        .unwrap();
        let merged = ModelCatalog::builtin().merged_with(user);
        assert_eq!(
            merged.alias_target("anthropic", "claude-opus-4-7"),
            Some("claude-opus-5-20270101")
        );
        assert_eq!(
            merged
                .newest_in_family("anthropic", "claude-opus")
                .map(|s| s.id.as_str()),
            Some("claude-opus-5-20270101")
        );
        assert!(matches!(
            merged.classify("acme", "acme-large"),
            ModelStatus::Snapshot { .. }
        ));
        // Untouched builtin entries survive.
        assert!(merged.snapshot("openai", "gpt-4o-2024-05-13").is_some());
    }
}
