//! The outcome journal: how outcomes accepted by a replica that does not lead reach the one
//! set of guardrail monitors, the leader's.
//!
//! Such a replica appends each batch's accepted events as one row (with its dedup keys and
//! rollup deltas, in one transaction; [`Store::store_outcome_batch`]) and announces it on the
//! store's outcome channel. The leader reads rows past the stored cursor in id order
//! ([`Store::journal_pending`]), applies them to its monitors, and stores the monitors and the
//! new cursor in one transaction fenced by its epoch ([`Store::consume_journal`]), so a
//! deposed leader can neither move the cursor nor overwrite the evidence. A child module of
//! `store` so the write macros (textually scoped there) apply unchanged.

use sqlx::postgres::PgListener;

use super::fanout::{open_listener, prefixed_channel, recv_payload};
use super::{Backend, PG_WRITE_LOCK_CLASS, Store, StoreError};
use crate::model::MonitorRow;

const CHANNEL_PREFIX: &str = "serin_outcomes_";

/// The outcome channel of the store whose connections see `schema` first (per schema like the
/// env channel: NOTIFY is database-wide).
pub(crate) fn channel_for_schema(schema: &str) -> String {
    prefixed_channel(CHANNEL_PREFIX, schema)
}

/// Where [`Store::store_outcome_batch`] puts a batch's monitor evidence.
#[derive(Clone, Copy, Debug)]
pub enum BatchEvidence<'a> {
    /// The monitors the batch changed, upserted; with `epoch`, only while that is still the
    /// leadership epoch (`Fenced` otherwise, and nothing is written).
    Monitors {
        rows: &'a [MonitorRow],
        epoch: Option<i64>,
    },
    /// The batch's accepted events (a JSON array), appended to the journal for the leader.
    Journal { events: &'a str },
}

/// One journalled batch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JournalRow {
    pub id: i64,
    /// When the accepting replica received it (its clock), Unix ms.
    pub received_ms: i64,
    /// The batch's accepted events, a JSON array of serin-core `OutcomeEvent`s.
    pub events: String,
}

/// Where the journal stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct JournalMarks {
    /// The id of the last row applied to the stored monitors.
    pub consumed: i64,
    /// Rows appended and not yet applied.
    pub behind: i64,
    /// Raised by every write of monitor rows.
    pub monitors_rev: i64,
}

/// Monitor rows written after a given revision.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MonitorChanges {
    /// The revision they bring the reader to.
    pub rev: i64,
    pub rows: Vec<MonitorRow>,
}

/// Announces an appended journal row from inside its transaction (delivered at commit).
pub(crate) trait AnnounceJournal {
    async fn announce(&mut self, channel: &str, id: i64) -> Result<(), StoreError>;
}

impl AnnounceJournal for sqlx::SqliteConnection {
    async fn announce(&mut self, _: &str, _: i64) -> Result<(), StoreError> {
        Ok(())
    }
}

impl AnnounceJournal for sqlx::PgConnection {
    async fn announce(&mut self, channel: &str, id: i64) -> Result<(), StoreError> {
        sqlx::query("SELECT pg_notify($1, $2)")
            .bind(channel)
            .bind(id.to_string())
            .execute(self)
            .await?;
        Ok(())
    }
}

pub(crate) async fn announce_journal<C: AnnounceJournal>(
    conn: &mut C,
    channel: Option<&str>,
    id: i64,
) -> Result<(), StoreError> {
    match channel {
        Some(channel) => conn.announce(channel, id).await,
        None => Ok(()),
    }
}

/// A dedicated PostgreSQL session hearing journal appends. Spent at its first error, like
/// [`crate::EnvListener`]: its owner opens another and reads the journal for what it missed.
pub struct JournalListener {
    listener: PgListener,
}

impl std::fmt::Debug for JournalListener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JournalListener").finish_non_exhaustive()
    }
}

impl JournalListener {
    /// Waits for the next append (its payload is the row id, which the reader does not need:
    /// it reads everything past its cursor anyway).
    pub async fn recv(&mut self) -> Result<(), StoreError> {
        recv_payload(&mut self.listener).await.map(|_| ())
    }
}

/// A `guardrail_monitors` row as the queries here select it.
type MonitorTuple = (String, String, String, String, i64, i64);

fn monitor_row(
    (env, agent, candidate, state, created_at_ms, updated_at_ms): MonitorTuple,
) -> MonitorRow {
    MonitorRow {
        env,
        agent,
        candidate,
        state,
        created_at_ms,
        updated_at_ms,
    }
}

impl Store {
    /// Opens a session hearing journal appends by any process sharing this store. `None` on
    /// SQLite, where one server owns the data directory and never journals.
    pub async fn listen_outcome_journal(
        &self,
        application_name: &str,
    ) -> Result<Option<JournalListener>, StoreError> {
        let (Backend::Postgres(pool), Some(channel)) = (&self.backend, &self.outcome_channel)
        else {
            return Ok(None);
        };
        let listener = open_listener(pool, application_name, channel).await?;
        Ok(Some(JournalListener { listener }))
    }

    /// The stored cursor and up to `limit` journal rows past it, oldest first.
    pub async fn journal_pending(&self, limit: i64) -> Result<(i64, Vec<JournalRow>), StoreError> {
        let limit = limit.max(1);
        let (consumed, rows): (i64, Vec<(i64, i64, String)>) = with_read!(self, |db| {
            let consumed: i64 =
                sqlx::query_scalar("SELECT consumed FROM outcome_journal_cursor WHERE id = 1")
                    .fetch_one(db)
                    .await?;
            let rows = sqlx::query_as(
                "SELECT id, received_ms, events FROM outcome_journal WHERE id > $1 \
                 ORDER BY id LIMIT $2",
            )
            .bind(consumed)
            .bind(limit)
            .fetch_all(db)
            .await?;
            (consumed, rows)
        });
        Ok((
            consumed,
            rows.into_iter()
                .map(|(id, received_ms, events)| JournalRow {
                    id,
                    received_ms,
                    events,
                })
                .collect(),
        ))
    }

    /// Stores the monitors the journal rows up to `consumed` produced, and moves the cursor
    /// there, in one transaction, while `epoch` is the leadership epoch (`Fenced` otherwise, and
    /// nothing is written). The cursor never moves back.
    pub async fn consume_journal(
        &self,
        monitors: &[MonitorRow],
        consumed: i64,
        epoch: i64,
    ) -> Result<(), StoreError> {
        with_tx!(self, |tx| {
            check_epoch_in!(tx, epoch);
            upsert_monitors_in!(tx, monitors);
            sqlx::query(
                "UPDATE outcome_journal_cursor SET consumed = $1 WHERE id = 1 AND consumed < $1",
            )
            .bind(consumed)
            .execute(&mut *tx)
            .await?;
            Ok(())
        })
    }

    /// Deletes consumed journal rows received before `before_ms`; answers how many. Rows not yet
    /// consumed stay whatever their age: they are evidence nobody has counted.
    pub async fn prune_journal(&self, before_ms: i64) -> Result<u64, StoreError> {
        with_tx!(self, |tx| {
            let pruned = sqlx::query(
                "DELETE FROM outcome_journal WHERE received_ms < $1 \
                 AND id <= (SELECT consumed FROM outcome_journal_cursor WHERE id = 1)",
            )
            .bind(before_ms)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            Ok(pruned)
        })
    }

    /// The cursor, the rows behind it and the monitors' revision.
    pub async fn journal_marks(&self) -> Result<JournalMarks, StoreError> {
        let (consumed, monitors_rev, behind): (i64, i64, i64) = with_read!(self, |db| {
            sqlx::query_as(
                "SELECT c.consumed, c.monitors_rev, \
                 (SELECT COUNT(*) FROM outcome_journal j WHERE j.id > c.consumed) \
                 FROM outcome_journal_cursor c WHERE c.id = 1",
            )
            .fetch_one(db)
            .await?
        });
        Ok(JournalMarks {
            consumed,
            behind,
            monitors_rev,
        })
    }

    /// Monitor rows written after revision `rev` (all of them from 0, but rows older than the
    /// revision column carry 0: read those with [`Store::load_monitors`]).
    pub async fn monitors_changed_since(&self, rev: i64) -> Result<MonitorChanges, StoreError> {
        // The revision is read first: a row written between the two reads is returned now and
        // again next time, never missed.
        let (now, rows): (i64, Vec<MonitorTuple>) = with_read!(self, |db| {
            let now: i64 =
                sqlx::query_scalar("SELECT monitors_rev FROM outcome_journal_cursor WHERE id = 1")
                    .fetch_one(db)
                    .await?;
            if now == rev {
                (now, Vec::new())
            } else {
                let rows = sqlx::query_as(
                    "SELECT env, agent, candidate, state, created_at_ms, updated_at_ms \
                         FROM guardrail_monitors WHERE rev > $1 AND rev <= $2 \
                         ORDER BY env, agent, candidate",
                )
                .bind(rev)
                .bind(now)
                .fetch_all(db)
                .await?;
                (now, rows)
            }
        });
        Ok(MonitorChanges {
            rev: now,
            rows: rows.into_iter().map(monitor_row).collect(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outcome_channels_fit_postgres_names_and_differ_from_env_channels() {
        assert_eq!(channel_for_schema("public"), "serin_outcomes_public");
        assert_ne!(
            channel_for_schema("public"),
            super::super::fanout::channel_for_schema("public")
        );
        let (a, b) = (
            channel_for_schema(&"a".repeat(63)),
            channel_for_schema(&format!("{}b", "a".repeat(62))),
        );
        assert!(a.len() <= 63 && b.len() <= 63);
        assert_ne!(a, b);
    }
}
