//! The registry of SDK instances: which SDKs follow each env's snapshot
//! stream, and which snapshot version each one says it serves.
//!
//! The stream tells the server what it *sent*; only the SDK knows what it
//! *applied* (a delta it could not merge, a snapshot that did not compile, a
//! process that froze). A rollback drill must measure the latter, so each SDK
//! reports the version it swapped in (`POST /v1/sdk/applied`), and a stream
//! opened with `Last-Event-ID: V` counts as having applied V (the SDK already
//! serves it, and the server sends nothing until the next change).
//!
//! Everything here is in memory and per replica: it describes live
//! connections, which a restart ends anyway. Entries without an open stream
//! are kept [`RETAIN_AFTER_DISCONNECT`] after they were last seen, so
//! operators can see recently gone SDKs, and are pruned lazily. The number of
//! entries is bounded ([`MAX_INSTANCES`]) so a buggy client minting instance
//! ids cannot grow memory without limit.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use serde::{Serialize, Serializer};
use tokio::sync::watch;
use utoipa::ToSchema;

use crate::clock;
use crate::error::{ApiError, ErrorCode};

/// Default bound on the number of (env, instance) entries.
pub const MAX_INSTANCES: usize = 100_000;

/// How long an entry without an open stream is kept after it was last seen.
pub const RETAIN_AFTER_DISCONNECT: Duration = Duration::from_secs(10 * 60);

/// Expired entries are swept at most this often (and whenever the registry is
/// full), so a busy registry does not walk every entry on each request.
const PRUNE_EVERY: Duration = Duration::from_secs(30);

const CONNECTED_GAUGE: &str = "serin_sdk_instances_connected";

/// A new instance was refused because the registry holds its maximum.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("the server tracks {limit} SDK instances already; retry later")]
pub struct RegistryFull {
    pub limit: usize,
}

impl From<RegistryFull> for ApiError {
    fn from(e: RegistryFull) -> Self {
        ApiError::new(ErrorCode::Overloaded, e.to_string())
    }
}

/// One SDK instance of one env, as `GET /v1/envs/{env}/sdks` lists it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, ToSchema)]
pub struct SdkInstance {
    pub instance: String,
    /// What the SDK calls itself (`serin-rust/0.1.0`), from its reports.
    pub sdk: Option<String>,
    /// At least one snapshot stream is open.
    pub connected: bool,
    /// Open snapshot streams (more than one while a reconnect overlaps the
    /// old connection's teardown).
    pub streams: u32,
    /// Unix ms when the current connection opened; `None` while disconnected.
    pub connected_since_ms: Option<i64>,
    /// The newest version the stream sent this instance.
    pub last_sent_version: Option<u64>,
    /// The newest version the instance says it serves; never decreases.
    pub applied_version: Option<u64>,
    /// Unix ms when `applied_version` was first reported.
    pub applied_at_ms: Option<i64>,
    /// Unix ms of the last connect, disconnect or report.
    pub last_seen_ms: i64,
}

/// What [`SdkRegistry::wait_applied`] found. Every list is sorted by instance.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct AppliedWait {
    /// The instances connected to the env when the wait began.
    pub waited_for: Vec<String>,
    /// Those that applied the version (or a later one).
    pub confirmed: Vec<Confirmation>,
    /// Those whose every stream closed before they confirmed.
    pub disconnected: Vec<String>,
    /// Those still connected but behind when the timeout elapsed.
    pub lagging: Vec<Lagging>,
}

/// One instance that applied the awaited version.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Confirmation {
    pub instance: String,
    /// From the wait's `since` to the instance's apply (zero if it applied
    /// before `since`). Serialized as `after_ms`, fractional milliseconds, so
    /// sub-millisecond propagation stays visible.
    #[serde(rename = "after_ms", serialize_with = "as_millis_f64")]
    pub after: Duration,
}

/// One instance still behind when the wait timed out.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Lagging {
    pub instance: String,
    /// What it serves, as far as the server knows.
    pub applied_version: Option<u64>,
}

fn as_millis_f64<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64(d.as_secs_f64() * 1000.0)
}

/// The registry; one per server (`AppState::sdks`).
#[derive(Debug)]
pub struct SdkRegistry {
    inner: Mutex<Inner>,
    /// Bumped on every apply and every disconnect; waiters re-check on it.
    changed: watch::Sender<u64>,
    max_instances: usize,
    retain: Duration,
}

#[derive(Debug, Default)]
struct Inner {
    /// env → instance → entry; the inner map is ordered so listings are sorted.
    envs: HashMap<String, BTreeMap<String, Entry>>,
    len: usize,
    last_prune: Option<Instant>,
}

#[derive(Debug)]
struct Entry {
    sdk: Option<String>,
    streams: u32,
    connected_since_ms: Option<i64>,
    last_sent_version: Option<u64>,
    applied_version: Option<u64>,
    applied_at_ms: Option<i64>,
    /// The precise moment of the apply, for drill timings.
    applied_at: Option<Instant>,
    last_seen_ms: i64,
    /// Monotonic twin of `last_seen_ms`; an entry without streams expires
    /// `retain` after it.
    seen: Instant,
}

impl Entry {
    fn new(now: Instant, now_ms: i64) -> Entry {
        Entry {
            sdk: None,
            streams: 0,
            connected_since_ms: None,
            last_sent_version: None,
            applied_version: None,
            applied_at_ms: None,
            applied_at: None,
            last_seen_ms: now_ms,
            seen: now,
        }
    }

    fn touch(&mut self, now: Instant, now_ms: i64) {
        self.seen = now;
        self.last_seen_ms = now_ms;
    }

    /// Records `version` as applied unless a version at least as new was;
    /// returns whether anything changed.
    fn apply(&mut self, version: u64, now: Instant, now_ms: i64) -> bool {
        if self.applied_version.is_some_and(|v| v >= version) {
            return false;
        }
        self.applied_version = Some(version);
        self.applied_at_ms = Some(now_ms);
        self.applied_at = Some(now);
        true
    }

    fn expired(&self, now: Instant, retain: Duration) -> bool {
        self.streams == 0 && now.saturating_duration_since(self.seen) >= retain
    }

    fn view(&self, instance: &str) -> SdkInstance {
        SdkInstance {
            instance: instance.to_owned(),
            sdk: self.sdk.clone(),
            connected: self.streams > 0,
            streams: self.streams,
            connected_since_ms: self.connected_since_ms,
            last_sent_version: self.last_sent_version,
            applied_version: self.applied_version,
            applied_at_ms: self.applied_at_ms,
            last_seen_ms: self.last_seen_ms,
        }
    }
}

impl Inner {
    fn prune(&mut self, now: Instant, retain: Duration) {
        let mut removed = 0usize;
        self.envs.retain(|_, instances| {
            let before = instances.len();
            instances.retain(|_, e| !e.expired(now, retain));
            removed = removed.saturating_add(before.saturating_sub(instances.len()));
            !instances.is_empty()
        });
        self.len = self.len.saturating_sub(removed);
        self.last_prune = Some(now);
    }

    fn prune_if_due(&mut self, now: Instant, retain: Duration) {
        let due = self
            .last_prune
            .is_none_or(|t| now.saturating_duration_since(t) >= PRUNE_EVERY);
        if due {
            self.prune(now, retain);
        }
    }

    /// The entry of (env, instance), created if there is room.
    fn entry(
        &mut self,
        env: &str,
        instance: &str,
        now: Instant,
        now_ms: i64,
        retain: Duration,
        max: usize,
    ) -> Result<&mut Entry, RegistryFull> {
        self.prune_if_due(now, retain);
        let exists = self.envs.get(env).is_some_and(|m| m.contains_key(instance));
        if !exists {
            if self.len >= max {
                self.prune(now, retain);
            }
            if self.len >= max {
                return Err(RegistryFull { limit: max });
            }
            self.len = self.len.saturating_add(1);
        }
        Ok(self
            .envs
            .entry(env.to_owned())
            .or_default()
            .entry(instance.to_owned())
            .or_insert_with(|| Entry::new(now, now_ms)))
    }
}

impl Default for SdkRegistry {
    fn default() -> Self {
        SdkRegistry::new()
    }
}

impl SdkRegistry {
    /// A registry with the default bound and retention.
    pub fn new() -> SdkRegistry {
        SdkRegistry::with_limits(MAX_INSTANCES, RETAIN_AFTER_DISCONNECT)
    }

    /// A registry holding at most `max_instances` entries, keeping each
    /// stream-less one `retain` after it was last seen.
    pub fn with_limits(max_instances: usize, retain: Duration) -> SdkRegistry {
        SdkRegistry {
            inner: Mutex::new(Inner::default()),
            changed: watch::channel(0).0,
            max_instances,
            retain,
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn bump(&self) {
        self.changed.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// A snapshot stream of `instance` opened. `last_event_id` is the version
    /// the SDK said it holds: it serves it already, so it counts as applied.
    /// The returned guard closes the stream in the registry when dropped.
    pub fn connect(
        self: &Arc<Self>,
        env: &str,
        instance: &str,
        last_event_id: Option<u64>,
    ) -> Result<StreamGuard, RegistryFull> {
        let (now, now_ms) = (Instant::now(), clock::now_ms());
        let applied = {
            let mut inner = self.lock();
            let entry = inner.entry(env, instance, now, now_ms, self.retain, self.max_instances)?;
            if entry.streams == 0 {
                entry.connected_since_ms = Some(now_ms);
                metrics::gauge!(CONNECTED_GAUGE).increment(1.0);
            }
            entry.streams = entry.streams.saturating_add(1);
            entry.touch(now, now_ms);
            last_event_id
                .filter(|v| *v >= 1)
                .is_some_and(|v| entry.apply(v, now, now_ms))
        };
        if applied {
            self.bump();
        }
        Ok(StreamGuard {
            registry: self.clone(),
            env: env.to_owned(),
            instance: instance.to_owned(),
        })
    }

    fn disconnect(&self, env: &str, instance: &str) {
        let (now, now_ms) = (Instant::now(), clock::now_ms());
        {
            let mut inner = self.lock();
            let Some(entry) = inner.envs.get_mut(env).and_then(|m| m.get_mut(instance)) else {
                return;
            };
            entry.streams = entry.streams.saturating_sub(1);
            if entry.streams == 0 {
                entry.connected_since_ms = None;
                metrics::gauge!(CONNECTED_GAUGE).decrement(1.0);
            }
            entry.touch(now, now_ms);
        }
        self.bump();
    }

    fn sent(&self, env: &str, instance: &str, version: u64) {
        let mut inner = self.lock();
        if let Some(entry) = inner.envs.get_mut(env).and_then(|m| m.get_mut(instance)) {
            entry.last_sent_version =
                Some(entry.last_sent_version.map_or(version, |v| v.max(version)));
        }
    }

    /// An SDK reports the version it swapped in. Versions only grow, so an
    /// older report (a delayed request) leaves `applied_version` as it is.
    /// An instance that never opened a stream is recorded all the same.
    pub fn report_applied(
        &self,
        env: &str,
        instance: &str,
        version: u64,
        sdk: Option<String>,
    ) -> Result<(), RegistryFull> {
        let (now, now_ms) = (Instant::now(), clock::now_ms());
        let applied = {
            let mut inner = self.lock();
            let entry = inner.entry(env, instance, now, now_ms, self.retain, self.max_instances)?;
            entry.touch(now, now_ms);
            if sdk.is_some() {
                entry.sdk = sdk;
            }
            entry.apply(version, now, now_ms)
        };
        if applied {
            self.bump();
        }
        Ok(())
    }

    /// Every instance of `env` seen within the retention, sorted by instance.
    pub fn list(&self, env: &str) -> Vec<SdkInstance> {
        let now = Instant::now();
        let mut inner = self.lock();
        inner.prune_if_due(now, self.retain);
        inner
            .envs
            .get(env)
            .map(|m| {
                m.iter()
                    .filter(|(_, e)| !e.expired(now, self.retain))
                    .map(|(id, e)| e.view(id))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The instances with an open stream on `env`, sorted.
    pub fn connected(&self, env: &str) -> Vec<String> {
        self.lock()
            .envs
            .get(env)
            .map(|m| {
                m.iter()
                    .filter(|(_, e)| e.streams > 0)
                    .map(|(id, _)| id.clone())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Instances with an open stream, across every env.
    pub fn connected_count(&self) -> usize {
        self.lock()
            .envs
            .values()
            .flat_map(BTreeMap::values)
            .filter(|e| e.streams > 0)
            .count()
    }

    /// Waits until every instance connected to `env` at call time has applied
    /// `version` (or later), has disconnected, or `timeout` elapsed (counted
    /// from the call). Each confirmation's `after` is measured from `since`
    /// (typically the moment the change was published), saturating at zero.
    ///
    /// Wakes only when an apply or a disconnect is recorded; it never polls.
    pub async fn wait_applied(
        &self,
        env: &str,
        version: u64,
        since: Instant,
        timeout: Duration,
    ) -> AppliedWait {
        let deadline = tokio::time::Instant::now()
            .checked_add(timeout)
            .unwrap_or_else(|| tokio::time::Instant::now() + Duration::from_secs(86_400 * 365));
        // Subscribe before the first look, so no change can slip between.
        let mut rx = self.changed.subscribe();
        let waited_for = self.connected(env);
        let mut pending: BTreeSet<String> = waited_for.iter().cloned().collect();
        let mut confirmed = Vec::new();
        let mut disconnected = Vec::new();
        loop {
            rx.borrow_and_update();
            {
                let inner = self.lock();
                let entries = inner.envs.get(env);
                pending.retain(|id| match entries.and_then(|m| m.get(id)) {
                    Some(e) if e.applied_version.is_some_and(|v| v >= version) => {
                        let after = e
                            .applied_at
                            .map_or(Duration::ZERO, |t| t.saturating_duration_since(since));
                        confirmed.push(Confirmation {
                            instance: id.clone(),
                            after,
                        });
                        false
                    }
                    Some(e) if e.streams > 0 => true,
                    _ => {
                        disconnected.push(id.clone());
                        false
                    }
                });
            }
            if pending.is_empty() {
                break;
            }
            tokio::select! {
                changed = rx.changed() => if changed.is_err() { break },
                () = tokio::time::sleep_until(deadline) => break,
            }
        }
        let lagging = {
            let inner = self.lock();
            let entries = inner.envs.get(env);
            pending
                .into_iter()
                .map(|id| Lagging {
                    applied_version: entries
                        .and_then(|m| m.get(&id))
                        .and_then(|e| e.applied_version),
                    instance: id,
                })
                .collect()
        };
        confirmed.sort_by(|a, b| a.instance.cmp(&b.instance));
        disconnected.sort();
        AppliedWait {
            waited_for,
            confirmed,
            disconnected,
            lagging,
        }
    }
}

/// One open snapshot stream of one instance; closes it in the registry when
/// dropped (the client went away, or the server is shutting down).
#[derive(Debug)]
pub struct StreamGuard {
    registry: Arc<SdkRegistry>,
    env: String,
    instance: String,
}

impl StreamGuard {
    /// The stream sent `version` to this instance.
    pub fn sent(&self, version: u64) {
        self.registry.sent(&self.env, &self.instance, version);
    }
}

impl Drop for StreamGuard {
    fn drop(&mut self) {
        self.registry.disconnect(&self.env, &self.instance);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LONG: Duration = Duration::from_secs(600);

    fn registry() -> Arc<SdkRegistry> {
        Arc::new(SdkRegistry::new())
    }

    #[tokio::test]
    async fn wait_returns_at_once_when_every_connected_instance_has_applied() {
        let r = registry();
        let since = Instant::now();
        let _a = r.connect("prod", "a", Some(7)).unwrap();
        let _b = r.connect("prod", "b", None).unwrap();
        r.report_applied("prod", "b", 8, None).unwrap();
        let _other = r.connect("dev", "c", None).unwrap();
        let started = Instant::now();
        let w = r.wait_applied("prod", 7, since, LONG).await;
        assert!(started.elapsed() < Duration::from_secs(1));
        assert_eq!(w.waited_for, ["a", "b"]);
        let names: Vec<_> = w.confirmed.iter().map(|c| c.instance.as_str()).collect();
        assert_eq!(names, ["a", "b"]);
        assert!(w.disconnected.is_empty() && w.lagging.is_empty());
        // Applied before `since`: zero, not negative.
        let early = r.wait_applied("prod", 7, Instant::now(), LONG).await;
        assert!(early.confirmed.iter().all(|c| c.after == Duration::ZERO));
    }

    #[tokio::test]
    async fn wait_wakes_on_a_later_apply_and_times_it_from_since() {
        let r = registry();
        let _a = r.connect("prod", "a", Some(1)).unwrap();
        let since = Instant::now();
        let waiter = {
            let r = r.clone();
            tokio::spawn(async move { r.wait_applied("prod", 2, since, LONG).await })
        };
        tokio::time::sleep(Duration::from_millis(30)).await;
        assert!(!waiter.is_finished());
        r.report_applied("prod", "a", 2, Some("serin-rust/0.1.0".into()))
            .unwrap();
        let w = tokio::time::timeout(Duration::from_secs(5), waiter)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(w.confirmed.len(), 1);
        assert!(w.confirmed[0].after >= Duration::from_millis(30));
        let json = serde_json::to_value(&w).unwrap();
        assert!(json["confirmed"][0]["after_ms"].as_f64().unwrap() >= 30.0);
    }

    #[tokio::test]
    async fn a_disconnect_removes_an_instance_from_the_wait() {
        let r = registry();
        let a = r.connect("prod", "a", Some(1)).unwrap();
        let _b = r.connect("prod", "b", Some(1)).unwrap();
        // A second stream of the same instance: one closing is not enough.
        let a2 = r.connect("prod", "a", Some(1)).unwrap();
        let waiter = {
            let r = r.clone();
            tokio::spawn(async move { r.wait_applied("prod", 2, Instant::now(), LONG).await })
        };
        tokio::time::sleep(Duration::from_millis(20)).await;
        drop(a);
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!waiter.is_finished());
        drop(a2);
        r.report_applied("prod", "b", 2, None).unwrap();
        let w = tokio::time::timeout(Duration::from_secs(5), waiter)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(w.disconnected, ["a"]);
        assert_eq!(w.confirmed.len(), 1);
        assert_eq!(w.confirmed[0].instance, "b");
        assert!(w.lagging.is_empty());
    }

    #[tokio::test]
    async fn a_timeout_reports_the_laggards_with_what_they_serve() {
        let r = registry();
        let _a = r.connect("prod", "a", Some(4)).unwrap();
        let _b = r.connect("prod", "b", None).unwrap();
        let _c = r.connect("prod", "c", Some(5)).unwrap();
        let started = Instant::now();
        let w = r
            .wait_applied("prod", 5, started, Duration::from_millis(50))
            .await;
        assert!(started.elapsed() >= Duration::from_millis(50));
        assert_eq!(
            w.lagging,
            [
                Lagging {
                    instance: "a".into(),
                    applied_version: Some(4)
                },
                Lagging {
                    instance: "b".into(),
                    applied_version: None
                }
            ]
        );
        assert_eq!(w.confirmed.len(), 1);
        // Nobody connected: nothing to wait for.
        let empty = r.wait_applied("staging", 5, started, LONG).await;
        assert_eq!(empty, AppliedWait::default());
    }

    #[test]
    fn the_applied_version_never_decreases_and_keeps_its_first_time() {
        let r = registry();
        r.report_applied("prod", "a", 5, Some("x/1".into()))
            .unwrap();
        let first = r.list("prod")[0].clone();
        assert_eq!(first.applied_version, Some(5));
        assert!(!first.connected);
        assert_eq!(first.streams, 0);
        r.report_applied("prod", "a", 3, None).unwrap();
        r.report_applied("prod", "a", 5, None).unwrap();
        let later = &r.list("prod")[0];
        assert_eq!(later.applied_version, Some(5));
        assert_eq!(later.applied_at_ms, first.applied_at_ms);
        assert_eq!(later.sdk.as_deref(), Some("x/1"));
        // A reconnect with an older Last-Event-ID does not move it back either.
        let _g = r.connect("prod", "a", Some(2)).unwrap();
        assert_eq!(r.list("prod")[0].applied_version, Some(5));
    }

    #[test]
    fn streams_are_counted_and_sent_versions_recorded() {
        let r = registry();
        let g = r.connect("prod", "a", None).unwrap();
        g.sent(3);
        g.sent(2);
        let v = &r.list("prod")[0];
        assert!(v.connected && v.connected_since_ms.is_some());
        assert_eq!(v.last_sent_version, Some(3));
        assert_eq!(r.connected("prod"), ["a"]);
        assert_eq!(r.connected_count(), 1);
        drop(g);
        let v = &r.list("prod")[0];
        assert!(!v.connected && v.connected_since_ms.is_none());
        assert_eq!(v.streams, 0);
        assert!(r.connected("prod").is_empty());
    }

    #[test]
    fn gone_instances_are_pruned_after_the_retention_and_make_room() {
        // Zero retention: an entry expires as soon as its last stream closes.
        let r = Arc::new(SdkRegistry::with_limits(2, Duration::ZERO));
        let a = r.connect("prod", "a", None).unwrap();
        r.report_applied("prod", "b", 1, None).unwrap();
        assert!(r.list("prod").iter().all(|v| v.instance != "b"));
        let _c = r.connect("prod", "c", None).unwrap();
        drop(a);
        assert!(r.list("prod").iter().all(|v| v.instance != "a"));
        let _d = r.connect("dev", "d", None).unwrap();
        assert_eq!(r.connected("dev"), ["d"]);

        // Kept for the retention: they occupy their slot, and a full registry
        // refuses new instances but still serves known ones.
        let r = Arc::new(SdkRegistry::with_limits(2, LONG));
        drop(r.connect("prod", "a", None).unwrap());
        let _b = r.connect("prod", "b", None).unwrap();
        let listed = r.list("prod");
        assert_eq!(listed.len(), 2);
        assert!(!listed[0].connected && listed[1].connected);
        assert_eq!(
            r.connect("prod", "c", None).unwrap_err(),
            RegistryFull { limit: 2 }
        );
        assert!(r.report_applied("prod", "c", 1, None).is_err());
        r.report_applied("prod", "a", 1, None).unwrap();
        let err = ApiError::from(RegistryFull { limit: 2 });
        assert_eq!(err.code, ErrorCode::Overloaded);
    }
}
