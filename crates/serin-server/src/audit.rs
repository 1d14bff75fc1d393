//! Signed heads of the audit Merkle tree, and their delivery to a webhook.
//!
//! Every head is computed from the rows the store holds at that moment, never from a cache: a
//! verifier comparing an old head with today's log must see today's rows, tampered or not. The
//! signing key is read by the binary from a file outside the database and lives only in memory.

use std::sync::Arc;
use std::time::Duration;

use serin_core::audit::merkle::{self, Hash};
use serin_core::audit::{SignedHead, SigningKey};
use serin_store::{MAX_PAGE, Store, StoreError};

use crate::clock;

/// What the binary hands the server about audit heads.
#[derive(Debug, Clone)]
pub struct AuditConfig {
    /// Signs tree heads; without it `/v1/audit/head` answers 503 (embedded uses only).
    pub signer: Option<Arc<SigningKey>>,
    /// Where to POST signed heads.
    pub head_webhook: Option<String>,
    /// How often to look for a new head to POST.
    pub head_interval: Duration,
}

impl Default for AuditConfig {
    fn default() -> AuditConfig {
        AuditConfig {
            signer: None,
            head_webhook: None,
            head_interval: Duration::from_secs(600),
        }
    }
}

/// The leaf hashes of every audit entry the store holds, in id order.
pub async fn leaves(store: &Store) -> Result<Vec<Hash>, StoreError> {
    let mut out = Vec::new();
    let mut after = i64::MIN;
    loop {
        let page = store.audit_leaves(after, MAX_PAGE).await?;
        let full = i64::try_from(page.len()).unwrap_or(i64::MAX) >= MAX_PAGE;
        for leaf in page {
            out.push(merkle::leaf_hash(leaf.canonical.as_bytes()));
            after = leaf.id;
        }
        if !full {
            return Ok(out);
        }
    }
}

/// Signs the head of the tree over `leaves`.
pub fn sign(signer: &SigningKey, leaves: &[Hash], now_ms: i64) -> SignedHead {
    signer.sign(
        u64::try_from(leaves.len()).unwrap_or(u64::MAX),
        &merkle::root(leaves),
        now_ms,
        &merkle::subtrees(leaves),
    )
}

/// The body POSTed to the head webhook.
pub fn webhook_payload(head: &SignedHead) -> serde_json::Value {
    serde_json::json!({ "action": "audit.head", "head": head })
}

/// POSTs the current signed head to `url` at start and then every `every`, whenever the tree
/// changed since the last head the receiver accepted (a failed POST is retried next time). An
/// unchanged head adds no evidence, so it is not resent. Only the leader sends (replicas share
/// one log and one key, so they would send the same heads); a new leader sends the current
/// head once more.
pub fn spawn_head_webhook(
    store: Store,
    signer: Arc<SigningKey>,
    url: String,
    every: Duration,
    leader: Arc<crate::leader::Leader>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        // reqwest is built without a bundled crypto provider (see Cargo.toml).
        let _ = rustls::crypto::ring::default_provider().install_default();
        let http = match reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(2))
            .timeout(Duration::from_secs(5))
            .build()
        {
            Ok(c) => c,
            Err(e) => {
                tracing::error!(error = %e, "could not build the audit head webhook client");
                return;
            }
        };
        let mut delivered: Option<(u64, String)> = None;
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            if !leader.is_leader() {
                delivered = None;
                continue;
            }
            let head = match leaves(&store).await {
                Ok(l) => sign(&signer, &l, clock::now_ms()),
                Err(e) => {
                    tracing::warn!(error = %e, "could not read the audit log for its head");
                    continue;
                }
            };
            let key = (head.tree_size, head.root_hash.clone());
            if delivered.as_ref() == Some(&key) {
                continue;
            }
            let sent = http.post(&url).json(&webhook_payload(&head)).send().await;
            match sent {
                Ok(r) if r.status().is_success() => {
                    metrics::counter!("serin_audit_head_webhook_total", "result" => "delivered")
                        .increment(1);
                    delivered = Some(key);
                }
                Ok(r) => {
                    metrics::counter!("serin_audit_head_webhook_total", "result" => "failed")
                        .increment(1);
                    tracing::warn!(%url, status = %r.status(), "audit head webhook refused; will retry");
                }
                Err(e) => {
                    metrics::counter!("serin_audit_head_webhook_total", "result" => "failed")
                        .increment(1);
                    tracing::warn!(%url, error = %e, "audit head webhook failed; will retry");
                }
            }
        }
    })
}
