//! Which replica runs the jobs that must run once per deployment: the release controller's
//! ticks (promotion, rollback, watch checkpoints), the webhook outbox, the audit head webhook
//! and the sweep of drills orphaned by a dead replica.
//!
//! On PostgreSQL the leader is the replica whose dedicated session holds an advisory lock
//! (`serin_store::LeaderSession`); the others try again every [`RETRY`]. Taking the lock raises
//! the store's leadership epoch, and every release write the controller makes carries that
//! epoch: the store refuses it once a newer leader exists. So a leader that lost its session
//! without knowing yet (terminated backend, network cut, a pause longer than the idle limit)
//! may finish the tick it is in, but none of its writes land, and a failover never applies a
//! transition twice. A refused write makes it step down at once.
//!
//! A SQLite store has one process per data directory: it leads from the start, under a new
//! epoch, with no lock.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use futures_util::future::BoxFuture;
use serde::Serialize;
use serin_store::{LeaderSession, Store};
use tokio::sync::{Notify, watch};
use utoipa::ToSchema;

use crate::clock;
use crate::error::ApiError;

/// How often a replica that does not lead tries to take the lock, and reads the epoch.
pub const RETRY: Duration = Duration::from_secs(1);
/// How often the leader checks that its session (and so its lock) is alive.
pub const HEARTBEAT: Duration = Duration::from_millis(500);
/// A session query slower than this counts as a lost session: a leader that cannot reach
/// the database cannot tell whether someone else leads.
const SESSION_TIMEOUT: Duration = Duration::from_secs(2);
/// Opening the session (TCP, TLS, authentication) may take longer than a query.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// PostgreSQL ends the leader's session after this long without a heartbeat, so a frozen or
/// cut-off leader frees the lock without waiting for TCP keepalives (hours by default).
pub const IDLE_LIMIT: Duration = Duration::from_secs(15);
/// How long a replica that lost the leadership waits before contending again.
const STEP_ASIDE: Duration = Duration::from_secs(2);
/// The application name of the leader session in `pg_stat_activity`, followed by `/<pid>`.
pub const SESSION_NAME: &str = "serin-leader";

/// What `/readyz` says about leadership.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, ToSchema)]
pub struct LeaderStatus {
    /// Whether this replica runs the release controller and the other once-per-deployment
    /// jobs right now.
    pub is_leader: bool,
    /// The epoch this replica leads under; a replica that does not lead shows the newest
    /// one it has seen (0: nobody has led yet).
    pub epoch: i64,
}

/// Run when a replica takes the leadership, with its epoch, before it is reported leading
/// (so before the controller's first tick); an error gives the leadership back.
pub type OnElected = Arc<dyn Fn(i64) -> BoxFuture<'static, Result<(), ApiError>> + Send + Sync>;

pub struct Leader {
    store: Store,
    status: watch::Sender<LeaderStatus>,
    /// The epoch a job found superseded (see [`Leader::superseded`]), and the wake-up for
    /// the contention loop to let go of that term's session.
    deposed: AtomicI64,
    deposed_wake: Notify,
}

impl std::fmt::Debug for Leader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Leader")
            .field("status", &*self.status.borrow())
            .finish_non_exhaustive()
    }
}

impl Leader {
    fn new(store: Store, status: LeaderStatus) -> Arc<Leader> {
        Arc::new(Leader {
            store,
            status: watch::Sender::new(status),
            deposed: AtomicI64::new(-1),
            deposed_wake: Notify::new(),
        })
    }

    /// Starts leadership for this replica. Without `contend` (`--no-release-controller`) it
    /// never leads. On SQLite it leads at once: `on_elected` has run when this returns. On
    /// PostgreSQL the returned task contends for the lock for as long as it runs (it must
    /// be aborted with the app).
    pub async fn start(
        store: Store,
        contend: bool,
        on_elected: OnElected,
    ) -> Result<(Arc<Leader>, Option<tokio::task::JoinHandle<()>>), ApiError> {
        let seen = store.leadership().await?.epoch;
        let idle = LeaderStatus {
            is_leader: false,
            epoch: seen,
        };
        let can_spawn = tokio::runtime::Handle::try_current().is_ok();
        if store.backend_name() == "sqlite" {
            if !contend {
                return Ok((Leader::new(store, idle), None));
            }
            let epoch = store
                .take_leadership(&holder_name(), clock::now_ms())
                .await?;
            on_elected(epoch).await?;
            let leader = Leader::new(
                store,
                LeaderStatus {
                    is_leader: true,
                    epoch,
                },
            );
            leader.announce(epoch);
            return Ok((leader, None));
        }
        let leader = Leader::new(store, idle);
        if !can_spawn {
            return Ok((leader, None));
        }
        let task = if contend {
            tokio::spawn(leader.clone().contend(on_elected))
        } else {
            tokio::spawn(leader.clone().observe_forever())
        };
        Ok((leader, Some(task)))
    }

    /// This replica's leadership now.
    pub fn status(&self) -> LeaderStatus {
        *self.status.borrow()
    }

    /// The epoch to write under, while this replica leads.
    pub fn epoch(&self) -> Option<i64> {
        let s = self.status();
        s.is_leader.then_some(s.epoch)
    }

    pub fn is_leader(&self) -> bool {
        self.status().is_leader
    }

    /// Changes of [`Leader::status`], e.g. to tick at once when elected.
    pub fn subscribe(&self) -> watch::Receiver<LeaderStatus> {
        self.status.subscribe()
    }

    /// After a failed write under `epoch`: whether a newer leader exists. If so, this
    /// replica stops leading at once (the jobs see it before their next step) and the
    /// contention loop lets go of its session and contends again.
    pub async fn superseded(&self, epoch: i64) -> bool {
        let current = match self.store.leadership().await {
            Ok(l) => l,
            Err(e) => {
                tracing::warn!(error = %e, "could not read the leadership epoch");
                return false;
            }
        };
        if current.epoch == epoch {
            return false;
        }
        tracing::error!(
            epoch,
            current = current.epoch,
            holder = current.holder.as_deref().unwrap_or("?"),
            "a newer leader exists: this replica's write was refused (fenced) and it stops leading"
        );
        self.status.send_if_modified(|s| {
            let was = s.is_leader && s.epoch == epoch;
            if was {
                s.is_leader = false;
            }
            was
        });
        self.deposed.store(epoch, Ordering::SeqCst);
        self.deposed_wake.notify_one();
        metrics::gauge!("serin_leader").set(0.0);
        true
    }

    fn announce(&self, epoch: i64) {
        metrics::gauge!("serin_leader").set(1.0);
        metrics::gauge!("serin_leader_epoch").set(epoch as f64);
        metrics::counter!("serin_leader_elections_total").increment(1);
        tracing::info!(epoch, "this replica leads the release controller");
    }

    /// Records the newest epoch while not leading.
    async fn observe(&self) {
        if let Ok(l) = self.store.leadership().await {
            self.status.send_if_modified(|s| {
                let changed = !s.is_leader && s.epoch != l.epoch;
                if changed {
                    s.epoch = l.epoch;
                }
                changed
            });
        }
    }

    async fn observe_forever(self: Arc<Self>) {
        loop {
            tokio::time::sleep(RETRY).await;
            self.observe().await;
        }
    }

    async fn contend(self: Arc<Self>, on_elected: OnElected) {
        let holder = holder_name();
        let name = format!("{SESSION_NAME}/{}", std::process::id());
        loop {
            let session = tokio::time::timeout(
                CONNECT_TIMEOUT,
                self.store.leader_session(&name, Some(IDLE_LIMIT)),
            )
            .await;
            let mut session = match session {
                Ok(Ok(s)) => s,
                Ok(Err(e)) => {
                    tracing::warn!(error = %e, "could not open the leader session; retrying");
                    tokio::time::sleep(RETRY).await;
                    continue;
                }
                Err(_) => {
                    tracing::warn!("opening the leader session timed out; retrying");
                    tokio::time::sleep(RETRY).await;
                    continue;
                }
            };
            let Some(epoch) = self.wait_for_lock(&mut session, &holder).await else {
                // The session broke: a new one, after a pause.
                close(session).await;
                tokio::time::sleep(RETRY).await;
                continue;
            };
            if let Err(why) = self.take_office(&mut session, epoch, &on_elected).await {
                tracing::warn!(
                    epoch,
                    "could not resume as leader ({why}); giving the leadership back"
                );
                close(session).await;
                tokio::time::sleep(RETRY).await;
                continue;
            }
            self.status.send_replace(LeaderStatus {
                is_leader: true,
                epoch,
            });
            self.announce(epoch);
            let why = self.hold(&mut session, epoch).await;
            self.status.send_if_modified(|s| {
                let was = s.is_leader;
                s.is_leader = false;
                was
            });
            metrics::gauge!("serin_leader").set(0.0);
            tracing::warn!(epoch, "stopped leading the release controller: {why}");
            close(session).await;
            // Whatever cut this replica off may not be over: let a replica that did not
            // just lose its session take over first (they try every RETRY).
            tokio::time::sleep(STEP_ASIDE).await;
        }
    }

    /// Tries the lock every [`RETRY`] until it is this replica's (its new epoch), or the
    /// session fails (`None`).
    async fn wait_for_lock(&self, session: &mut LeaderSession, holder: &str) -> Option<i64> {
        loop {
            match tokio::time::timeout(SESSION_TIMEOUT, session.try_lead(holder, clock::now_ms()))
                .await
            {
                Ok(Ok(Some(epoch))) => return Some(epoch),
                Ok(Ok(None)) => {
                    self.observe().await;
                    tokio::time::sleep(RETRY).await;
                }
                Ok(Err(e)) => {
                    tracing::warn!(error = %e, "the leader session failed");
                    return None;
                }
                Err(_) => {
                    tracing::warn!("the leader session did not answer in time");
                    return None;
                }
            }
        }
    }

    /// Runs `on_elected` while keeping the session alive (resuming many releases may take
    /// longer than the idle limit).
    async fn take_office(
        &self,
        session: &mut LeaderSession,
        epoch: i64,
        on_elected: &OnElected,
    ) -> Result<(), String> {
        let resume = on_elected(epoch);
        tokio::pin!(resume);
        loop {
            tokio::select! {
                done = &mut resume => return done.map_err(|e| e.message),
                () = tokio::time::sleep(HEARTBEAT) => check(session).await?,
            }
        }
    }

    /// Keeps the leadership until the session is lost or a job finds the epoch superseded;
    /// answers why it ended.
    async fn hold(&self, session: &mut LeaderSession, epoch: i64) -> String {
        loop {
            tokio::select! {
                () = self.deposed_wake.notified() => {
                    // A wake-up left over from an earlier term is not about this one.
                    if self.deposed.load(Ordering::SeqCst) == epoch {
                        return "a newer leader's epoch refused its write".to_owned();
                    }
                }
                () = tokio::time::sleep(HEARTBEAT) => {
                    if let Err(why) = check(session).await {
                        return why;
                    }
                }
            }
        }
    }
}

async fn check(session: &mut LeaderSession) -> Result<(), String> {
    match tokio::time::timeout(SESSION_TIMEOUT, session.check()).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(format!("the leader session was lost ({e})")),
        Err(_) => Err(format!(
            "the leader session did not answer within {} s",
            SESSION_TIMEOUT.as_secs()
        )),
    }
}

/// Gives the lock back at once when the session still works; a broken one frees it as soon
/// as the server notices.
async fn close(session: LeaderSession) {
    let _ = tokio::time::timeout(SESSION_TIMEOUT, session.close()).await;
}

/// Who leads, as recorded in the store: `host:pid`.
fn holder_name() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "unknown".to_owned());
    format!("{host}:{}", std::process::id())
}

/// Runs `job` every `every` while this replica leads (on SQLite, the one server leads). A
/// failed run is logged as `what` and tried again at the next tick: the sweeps it runs are
/// idempotent, so a missed tick only delays them.
pub fn spawn_duty<F, Fut>(
    every: Duration,
    leader: Arc<Leader>,
    what: &'static str,
    job: F,
) -> tokio::task::JoinHandle<()>
where
    F: Fn(i64) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = Result<usize, ApiError>> + Send,
{
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            if !leader.is_leader() {
                continue;
            }
            if let Err(e) = job(clock::now_ms()).await {
                tracing::warn!(error = %e.message, "could not {what}");
            }
        }
    })
}
