//! Revoked tokens lose their open snapshot streams.
//!
//! A token is checked when a request arrives, but a snapshot stream lives for
//! hours: without more, a stream opened before its token was revoked would
//! keep receiving every snapshot, bundle contents included. So every stream
//! registers the token it was opened with, and ends as soon as that token is
//! known revoked:
//!
//! - a revocation through this server's API wakes the token's streams at once;
//! - one made on another replica, or offline by `serin token revoke --data`,
//!   is seen by a poller shared by all streams: every [`POLL_EVERY`] it asks
//!   the store how many tokens were ever revoked (one cheap query, and none
//!   while no stream is open), and only when that number moved does it list
//!   the tokens to find which.
//!
//! Before a stream sends a newly published version, the store is asked once
//! for that version ([`Revocations::check_before_sending`]), so a change
//! published after a revocation elsewhere never reaches the revoked streams.
//!
//! A stream re-checks its token once more right after registering, so a
//! revocation landing between the request's authentication and the
//! registration is not missed either. Revocation also frees the token's SDK
//! instance ids ([`SdkRegistry::forget_token`]).

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use serin_store::Store;
use tokio::sync::watch;

use crate::error::{ApiError, ErrorCode};
use crate::sdks::SdkRegistry;

/// How often the store is asked whether a token was revoked elsewhere; a
/// revoked token's streams end within about this long (the contract is 1 s).
pub const POLL_EVERY: Duration = Duration::from_millis(400);

#[derive(Debug)]
pub struct Revocations {
    store: Store,
    sdks: Arc<SdkRegistry>,
    inner: Mutex<Inner>,
    /// The newest snapshot version a pre-send check has finished for. Streams wait on it
    /// together: with 10,000 streams woken by one version, a lock taken in turn by each
    /// made them a queue of 10,000 wakeups, one after another, before the last could send.
    checked_for: watch::Sender<u64>,
    /// The newest snapshot version a pre-send check has started for, so that one stream
    /// starts it and the rest only wait.
    checking_for: AtomicU64,
}

#[derive(Debug, Default)]
struct Inner {
    /// token id → (revoked flag its streams wait on, open streams). An entry
    /// lives while the token has a stream open, so the map is bounded by the
    /// open streams, whose tokens are authenticated.
    tokens: HashMap<String, (watch::Sender<bool>, usize)>,
    /// The store's revoked-token count at the last poll.
    seen_revocations: Option<i64>,
}

impl Revocations {
    pub fn new(store: Store, sdks: Arc<SdkRegistry>) -> Arc<Revocations> {
        Arc::new(Revocations {
            store,
            sdks,
            inner: Mutex::new(Inner::default()),
            checked_for: watch::channel(0).0,
            checking_for: AtomicU64::new(0),
        })
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Registers a stream opened with `token_id`, then checks the token is
    /// still active (it may have been revoked since the request was
    /// authenticated). The returned watch ends the stream when revoked.
    pub async fn watch(self: &Arc<Self>, token_id: &str) -> Result<TokenWatch, ApiError> {
        let rx = {
            let mut inner = self.lock();
            let (tx, n) = inner
                .tokens
                .entry(token_id.to_owned())
                .or_insert_with(|| (watch::channel(false).0, 0));
            *n = n.saturating_add(1);
            tx.subscribe()
        };
        let guard = TokenWatch {
            revocations: self.clone(),
            token_id: token_id.to_owned(),
            rx,
        };
        if !self.store.token_active(token_id).await? {
            return Err(ApiError::new(
                ErrorCode::Unauthenticated,
                "the token is unknown or revoked",
            ));
        }
        Ok(guard)
    }

    /// `token_id` was revoked: its streams end now and its SDK instance ids
    /// are freed.
    pub fn revoked(&self, token_id: &str) {
        if let Some((tx, _)) = self.lock().tokens.get(token_id) {
            tx.send_replace(true);
        }
        let dropped = self.sdks.forget_token(token_id);
        tracing::info!(
            token = token_id,
            sdk_instances = dropped,
            "token revoked; closing its snapshot streams"
        );
    }

    /// Looks for revocations made elsewhere. Cheap when nothing changed: one
    /// count query, and no query at all while no stream is open and no SDK
    /// instance is registered.
    pub async fn poll(&self) -> Result<(), ApiError> {
        if self.lock().tokens.is_empty() && self.sdks.token_ids().is_empty() {
            return Ok(());
        }
        let count = self.store.revoked_token_count().await?;
        if self.lock().seen_revocations == Some(count) {
            return Ok(());
        }
        // Gathered after the count was read: a stream registered before a
        // revocation the count includes is among them.
        let watched: HashSet<String> = self
            .lock()
            .tokens
            .keys()
            .cloned()
            .chain(self.sdks.token_ids())
            .collect();
        let revoked: Vec<String> = self
            .store
            .list_tokens()
            .await?
            .into_iter()
            .filter(|t| t.revoked_at_ms.is_some() && watched.contains(&t.id))
            .map(|t| t.id)
            .collect();
        for id in &revoked {
            self.revoked(id);
        }
        // Recorded last: a failed poll is retried in full at the next tick.
        self.lock().seen_revocations = Some(count);
        Ok(())
    }

    /// Polls once per published snapshot `version`, before any stream sends
    /// it: the first stream woken by the version starts the check, the others
    /// wait for its answer. So a revocation committed anywhere before a
    /// change was published keeps that change from every revoked stream, at
    /// the cost of one count query per version.
    pub async fn check_before_sending(self: &Arc<Self>, version: u64) {
        if *self.checked_for.borrow() >= version {
            return;
        }
        if self.checking_for.fetch_max(version, Ordering::AcqRel) < version {
            // Its own task: the stream that happened to start the check may be dropped
            // (its client gone) while the others still wait for the answer.
            let this = Arc::clone(self);
            tokio::spawn(async move {
                if let Err(e) = this.poll().await {
                    tracing::warn!(error = %e.message, "token revocation check failed");
                }
                // Not retried per stream on failure: the poller tries again shortly.
                this.checked_for.send_if_modified(|checked| {
                    let newer = *checked < version;
                    if newer {
                        *checked = version;
                    }
                    newer
                });
            });
        }
        let mut rx = self.checked_for.subscribe();
        // The sender lives in `self`, which the caller holds, so this cannot fail.
        let _ = rx.wait_for(|checked| *checked >= version).await;
    }

    /// Polls every [`POLL_EVERY`] until this is dropped.
    pub fn spawn_poller(self: &Arc<Self>) -> tokio::task::JoinHandle<()> {
        let weak = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(POLL_EVERY);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let Some(this) = weak.upgrade() else { break };
                if let Err(e) = this.poll().await {
                    tracing::warn!(error = %e.message, "token revocation check failed");
                }
            }
        })
    }

    fn release(&self, token_id: &str) {
        let mut inner = self.lock();
        let last = match inner.tokens.get_mut(token_id) {
            Some((_, n)) => {
                *n = n.saturating_sub(1);
                *n == 0
            }
            None => false,
        };
        if last {
            inner.tokens.remove(token_id);
        }
    }
}

/// One open stream's view of its token; unregisters when dropped.
#[derive(Debug)]
pub struct TokenWatch {
    revocations: Arc<Revocations>,
    token_id: String,
    rx: watch::Receiver<bool>,
}

impl TokenWatch {
    /// Resolves once the token is revoked (never, otherwise).
    pub async fn revoked(&mut self) {
        loop {
            let now = *self.rx.borrow_and_update();
            if now {
                return;
            }
            if self.rx.changed().await.is_err() {
                // The sender lives as long as any watch of the token does,
                // so this is unreachable; wait forever rather than end.
                std::future::pending::<()>().await;
            }
        }
    }

    pub fn is_revoked(&self) -> bool {
        *self.rx.borrow()
    }
}

impl Drop for TokenWatch {
    fn drop(&mut self) {
        self.revocations.release(&self.token_id);
    }
}
