//! Stored rows the server could not read.
//!
//! A row that does not decode (a monitor, a release, a drill, a guardrail
//! config, a rollup) never stops the server from starting: it is quarantined
//! here instead. The row itself stays in the store untouched, so an operator
//! can repair it or replace it; this registry remembers what was found, with
//! the decode error and the raw text, logs it, counts it in
//! `serin_quarantined_rows{kind}`, and lists it at `GET /v1/system/quarantine`
//! (admin only). What each kind means for the release it belongs to is decided
//! by its owner (`guardrails.rs`, `releases.rs`, `drills.rs`).

use std::collections::BTreeMap;
use std::sync::Mutex;

use serde::Serialize;

use crate::clock;

/// Raw text kept per row, for diagnosis (the full row stays in the store).
const RAW_MAX_BYTES: usize = 64 * 1024;
/// Rows remembered at most; beyond this only the log and the gauge see new ones.
const MAX_ROWS: usize = 10_000;

/// Kinds of row, as they appear in the metric label and the listing.
pub const MONITOR: &str = "monitor";
pub const RELEASE: &str = "release";
pub const DRILL: &str = "drill";
pub const GUARDRAIL_CONFIG: &str = "guardrail_config";
pub const ROLLUP: &str = "rollup";
/// An outcome journal row whose events cannot be read (keyed by its id); the leader skips it.
pub const OUTCOME_JOURNAL: &str = "outcome_journal";

/// One unreadable row.
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub struct QuarantinedRow {
    /// `monitor`, `release`, `drill`, `guardrail_config`, `rollup` or `outcome_journal`.
    pub kind: String,
    /// The row's key: `env/agent/candidate` for a monitor, the id of a release
    /// or drill, `env/agent` for a guardrail config,
    /// `env/agent/bundle/arm/minute_ms` for a rollup.
    pub key: String,
    /// Why it could not be read.
    pub error: String,
    /// The stored text (first 64 KiB).
    pub raw: String,
    /// Whether `raw` was cut.
    pub truncated: bool,
    /// When this server found it (RFC 3339).
    pub found_at: String,
}

#[derive(Debug, Default)]
pub struct Quarantine {
    rows: Mutex<BTreeMap<(String, String), QuarantinedRow>>,
}

impl Quarantine {
    pub fn new() -> Quarantine {
        Quarantine::default()
    }

    fn rows(&self) -> std::sync::MutexGuard<'_, BTreeMap<(String, String), QuarantinedRow>> {
        self.rows
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn set_gauge(rows: &BTreeMap<(String, String), QuarantinedRow>, kind: &str) {
        let n = rows.keys().filter(|(k, _)| k == kind).count();
        metrics::gauge!("serin_quarantined_rows", "kind" => kind.to_owned()).set(n as f64); // small count → f64
    }

    /// Records an unreadable row and says so in the log.
    /// A row already quarantined is logged once, not at every look.
    pub fn record(&self, kind: &'static str, key: &str, error: &str, raw: &str) {
        if self.contains(kind, key) {
            return;
        }
        tracing::error!(
            kind,
            key,
            error,
            "stored row is unreadable; quarantined (the row is kept as it is; see GET /v1/system/quarantine)"
        );
        let mut cut = raw.len().min(RAW_MAX_BYTES);
        while !raw.is_char_boundary(cut) {
            cut -= 1;
        }
        let mut rows = self.rows();
        let id = (kind.to_owned(), key.to_owned());
        if rows.len() < MAX_ROWS || rows.contains_key(&id) {
            rows.insert(
                id,
                QuarantinedRow {
                    kind: kind.to_owned(),
                    key: key.to_owned(),
                    error: error.to_owned(),
                    raw: raw.get(..cut).unwrap_or_default().to_owned(),
                    truncated: cut < raw.len(),
                    found_at: clock::rfc3339(clock::now_ms()),
                },
            );
        }
        Self::set_gauge(&rows, kind);
    }

    /// Forgets a row that was replaced by an operator's action.
    pub fn clear(&self, kind: &'static str, key: &str) {
        let mut rows = self.rows();
        if rows.remove(&(kind.to_owned(), key.to_owned())).is_some() {
            tracing::info!(kind, key, "quarantined row replaced; no longer quarantined");
            Self::set_gauge(&rows, kind);
        }
    }

    pub fn contains(&self, kind: &str, key: &str) -> bool {
        self.rows().contains_key(&(kind.to_owned(), key.to_owned()))
    }

    pub fn get(&self, kind: &str, key: &str) -> Option<QuarantinedRow> {
        self.rows().get(&(kind.to_owned(), key.to_owned())).cloned()
    }

    /// Every quarantined row, by kind and key.
    pub fn list(&self) -> Vec<QuarantinedRow> {
        self.rows().values().cloned().collect()
    }
}

/// The key of a monitor row.
pub fn monitor_key(env: &str, agent: &str, candidate: &str) -> String {
    format!("{env}/{agent}/{candidate}")
}
