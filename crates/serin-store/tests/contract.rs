#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]
//! The storage contract: every case runs on a fresh SQLite store in a temp dir AND on a fresh
//! PostgreSQL schema (`SERIN_TEST_DATABASE_URL`, default postgres://postgres@127.0.0.1:5432/test).
//! PostgreSQL being unreachable fails the PostgreSQL half unless `SERIN_TEST_SKIP_POSTGRES=1`.

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::path::PathBuf;

use serin_store::testing::TestPostgres;
use serin_store::{NewAudit, NewBundle, Store, StoreError};
use sha2::Digest;

// ----- harness ---------------------------------------------------------------------------------

/// What a case gets: the open store and a way to open the same database again.
struct Ctx {
    store: Store,
    place: Place,
}

enum Place {
    Sqlite(PathBuf),
    Postgres(String),
}

impl Ctx {
    fn is_pg(&self) -> bool {
        matches!(self.place, Place::Postgres(_))
    }

    /// Opens a second handle on the same database (same SQLite dir / same PG schema).
    async fn reopen(&self) -> Store {
        match &self.place {
            Place::Sqlite(dir) => Store::open_sqlite(dir).await.unwrap(),
            Place::Postgres(url) => Store::open_postgres(url).await.unwrap(),
        }
    }

    /// Raw SQL, picking the dialect.
    async fn exec(&self, sqlite: &str, postgres: &str) -> Result<u64, StoreError> {
        let sql = if self.is_pg() { postgres } else { sqlite };
        self.store.execute_unchecked_for_tests(sql).await
    }

    async fn count(&self, table: &str) -> i64 {
        self.store
            .query_text_for_tests(&format!("SELECT CAST(COUNT(*) AS TEXT) FROM {table}"))
            .await
            .unwrap()
            .unwrap()
            .parse()
            .unwrap()
    }
}

async fn run_sqlite<F, Fut>(case: F)
where
    F: FnOnce(Ctx) -> Fut,
    Fut: Future<Output = ()>,
{
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let store = Store::open_sqlite(&data).await.unwrap();
    assert_eq!(store.backend_name(), "sqlite");
    let keep = store.clone();
    case(Ctx {
        store,
        place: Place::Sqlite(data),
    })
    .await;
    keep.close().await;
}

async fn run_postgres<F, Fut>(case: F)
where
    F: FnOnce(Ctx) -> Fut,
    Fut: Future<Output = ()>,
{
    let db = match TestPostgres::create().await {
        Ok(Some(db)) => db,
        Ok(None) => return, // SERIN_TEST_SKIP_POSTGRES=1
        Err(e) => panic!("{e}"),
    };
    let store = Store::open_postgres(db.url()).await.unwrap();
    assert_eq!(store.backend_name(), "postgres");
    let keep = store.clone();
    case(Ctx {
        store,
        place: Place::Postgres(db.url().to_owned()),
    })
    .await;
    keep.close().await;
    db.cleanup().await.unwrap();
}

/// One `#[tokio::test]` per backend for every listed case.
macro_rules! contract {
    ($($case:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    super::run_sqlite(super::$case).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    super::run_postgres(super::$case).await;
                }
            )*
        }
    };
}

contract!(
    pushes_number_bundles_one_two_three_per_agent_independently,
    repushing_identical_content_returns_the_same_number_and_writes_nothing,
    get_list_paginate_latest_and_agents,
    concurrent_pushes_get_dense_numbers_and_identical_content_shares_one,
    bundles_and_audit_rows_reject_raw_update_and_delete,
    reopening_the_store_keeps_everything,
    tokens_authenticate_only_with_the_right_unrevoked_secret,
    revocations_are_counted_and_a_revoked_token_is_no_longer_active,
    stored_token_hash_is_not_the_secret,
    bootstrap_admin_happens_once_even_when_raced,
    bootstrap_admin_refuses_once_any_token_was_created,
    audit_chain_verifies_and_lists_newest_first,
    tampering_an_audit_row_is_reported_by_verify,
    deleting_an_audit_row_is_reported_by_verify,
    failed_audit_insert_rolls_back_the_whole_mutation,
    constraint_error_leaves_no_partial_rows,
    ping_and_close,
    env_states_grow_globally_and_keep_every_version,
    a_refused_env_change_writes_nothing,
    concurrent_env_changes_serialize_without_losing_updates,
    committed_env_states_are_announced_and_refused_or_rolled_back_ones_are_not,
    guardrail_evidence_upserts_and_survives_reopen,
    write_release_inserts_updates_and_writes_everything_in_one_tx,
    a_second_active_release_is_refused_and_writes_nothing,
    a_refused_release_env_change_writes_nothing,
    concurrent_release_starts_let_exactly_one_win,
    inactive_releases_do_not_block_a_new_one,
    notifications_are_due_until_delivered_with_backoff,
    a_failed_notification_is_never_due_again_and_keeps_its_error,
    releases_and_notifications_survive_reopen,
    watches_come_due_in_order_end_and_survive_reopen,
    leadership_epochs_grow_by_one_per_leader_and_survive_reopen,
    replica_heartbeats_upsert_list_mark_gone_and_prune,
    sdk_instances_upsert_list_expire_forget_and_prune,
    sdk_instance_rows_round_trip_extreme_values,
    replica_rows_round_trip_extreme_values,
    a_write_under_a_superseded_epoch_is_refused_and_writes_nothing,
    a_write_from_a_stale_revision_is_refused_and_writes_nothing,
    racing_writers_from_one_revision_let_exactly_one_apply,
    readiness_policies_are_versioned_and_identical_reapply_writes_nothing,
    evidence_keeps_history_and_the_newest_per_key_counts,
    evals_are_kept_per_bundle_newest_first,
    readiness_rows_reject_raw_update_and_delete,
    drills_and_releases_exclude_each_other,
    a_refused_drill_env_change_writes_nothing,
    identical_policy_reapply_adds_no_row_and_concurrent_applies_get_distinct_versions,
    finished_drills_allow_a_new_one_and_list_in_order,
    envs_are_created_once_audited_and_listed_with_their_policy,
    envs_survive_reopen_and_reject_raw_delete,
    an_old_store_registers_every_env_it_already_used,
    restart_with_quarantined_rows_returns_them_verbatim_and_keeps_writing,
    outcome_batches_merge_stored_rollups_instead_of_overwriting,
    request_ids_are_recorded_with_the_batch_and_survive_reopen,
    a_batch_with_an_already_recorded_request_id_writes_nothing,
    request_ids_older_than_the_window_are_pruned_and_no_longer_seen,
    the_dedup_migration_applies_to_a_store_with_existing_rows,
    audit_leaves_are_the_chained_canonical_entries_in_order,
    signed_head_holds_while_the_log_only_grows,
    head_catches_a_row_edited_with_the_chain_rehashed_after_it,
    head_catches_the_newest_rows_deleted,
    head_catches_a_row_inserted_in_the_middle,
    head_catches_reordered_rows,
    head_catches_a_truncated_log,
    journal_appends_read_in_order_past_the_cursor_and_only_the_leader_moves_it,
    a_fenced_or_duplicate_batch_writes_nothing,
    consumed_journal_rows_are_pruned_after_their_hour_and_unconsumed_ones_never,
    monitors_changed_since_returns_only_rows_written_after_a_revision,
    journal_rows_round_trip_outcome_events_with_empty_and_extreme_values,
    ledger_intents_are_idempotent_and_a_reused_key_conflicts,
    approvals_are_filed_decided_expired_and_capped_in_one_transaction_each,
    approval_signals_are_owed_until_counted_with_their_monitors,
    approval_policies_are_versioned_and_identical_reapply_writes_nothing,
    approval_rows_round_trip_extreme_values,
    ledger_results_settle_once_in_one_audited_tx,
    ledger_sweep_marks_only_overdue_intents_unknown,
    ledger_lists_by_agent_bundle_and_status_and_rows_round_trip_extremes,
    ledger_counts_each_status_per_agent_bundle,
);

// ----- helpers ---------------------------------------------------------------------------------

fn bundle(agent: &str, content: &str, at_ms: i64) -> NewBundle {
    NewBundle {
        agent: agent.to_owned(),
        digest: format!("sha256:{}", hex::encode(sha2::Sha256::digest(content))),
        content: content.to_owned(),
        size_bytes: i64::try_from(content.len()).unwrap(),
        at_ms,
        actor: "local".to_owned(),
    }
}

fn audit(action: &str, subject: &str, at_ms: i64) -> NewAudit {
    NewAudit {
        at_ms,
        actor: "tok123".to_owned(),
        action: action.to_owned(),
        subject: subject.to_owned(),
        details: serde_json::json!({"reason": "because", "n": 1, "nested": {"b": [1.5, null], "a": true}}),
    }
}

async fn audit_count(store: &Store) -> usize {
    store.list_audit(1000, None).await.unwrap().len()
}

// ----- cases -----------------------------------------------------------------------------------

async fn pushes_number_bundles_one_two_three_per_agent_independently(t: Ctx) {
    let s = &t.store;
    for (i, content) in ["a1", "a2", "a3"].iter().enumerate() {
        let put = s.put_bundle(bundle("alpha", content, 100)).await.unwrap();
        assert!(put.created);
        assert_eq!(put.bundle.number, i64::try_from(i).unwrap() + 1);
    }
    // Same content under another agent is a different bundle, numbered from 1.
    let b1 = s.put_bundle(bundle("beta", "a1", 200)).await.unwrap();
    assert!(b1.created);
    assert_eq!(b1.bundle.number, 1);
    let b2 = s.put_bundle(bundle("beta", "b2", 201)).await.unwrap();
    assert_eq!(b2.bundle.number, 2);
    let a4 = s.put_bundle(bundle("alpha", "a4", 300)).await.unwrap();
    assert_eq!(a4.bundle.number, 4);

    let stored = s.get_bundle("alpha", 2).await.unwrap().unwrap();
    assert_eq!(
        stored,
        s.get_bundle_by_digest("alpha", &bundle("alpha", "a2", 0).digest)
            .await
            .unwrap()
            .unwrap()
    );
    assert_eq!(stored.content, "a2");
    assert_eq!(stored.created_by, "local");
    assert_eq!(stored.created_at_ms, 100);
    assert_eq!(stored.size_bytes, 2);

    let entries = s.list_audit(100, None).await.unwrap();
    assert_eq!(entries.len(), 6);
    assert!(entries.iter().all(|e| e.action == "bundle.push"));
    assert_eq!(entries[0].subject, "alpha@4");
    assert_eq!(
        entries[0].details["digest"],
        bundle("alpha", "a4", 0).digest
    );
}

async fn repushing_identical_content_returns_the_same_number_and_writes_nothing(t: Ctx) {
    let s = &t.store;
    let first = s.put_bundle(bundle("support", "v1", 10)).await.unwrap();
    s.put_bundle(bundle("support", "v2", 11)).await.unwrap();
    let audits = audit_count(s).await;

    let mut again = bundle("support", "v1", 99);
    again.actor = "someone-else".to_owned();
    let re = s.put_bundle(again).await.unwrap();
    assert!(!re.created);
    assert_eq!(
        re.bundle, first.bundle,
        "the original, not the re-pushed metadata"
    );
    assert_eq!(
        audit_count(s).await,
        audits,
        "no audit row for a no-op push"
    );
    assert_eq!(t.count("bundles").await, 2);
    assert_eq!(
        s.put_bundle(bundle("support", "v3", 12))
            .await
            .unwrap()
            .bundle
            .number,
        3
    );
}

async fn get_list_paginate_latest_and_agents(t: Ctx) {
    let s = &t.store;
    assert!(s.list_agents().await.unwrap().is_empty());
    assert!(s.latest_bundles().await.unwrap().is_empty());
    assert!(s.list_bundles("nobody", 10, None).await.unwrap().is_empty());
    assert_eq!(s.get_bundle("nobody", 1).await.unwrap(), None);
    assert_eq!(
        s.get_bundle_by_digest("nobody", "sha256:00").await.unwrap(),
        None
    );

    for n in 1..=5 {
        s.put_bundle(bundle("writer", &format!("w{n}"), 1000 + n))
            .await
            .unwrap();
    }
    s.put_bundle(bundle("reader", "r1", 50)).await.unwrap();
    assert_eq!(s.get_bundle("writer", 6).await.unwrap(), None);
    assert_eq!(s.get_bundle("writer", 0).await.unwrap(), None);

    let nums =
        |v: Vec<serin_store::BundleSummary>| v.into_iter().map(|b| b.number).collect::<Vec<_>>();
    assert_eq!(
        nums(s.list_bundles("writer", 2, None).await.unwrap()),
        [5, 4]
    );
    assert_eq!(
        nums(s.list_bundles("writer", 2, Some(4)).await.unwrap()),
        [3, 2]
    );
    assert_eq!(
        nums(s.list_bundles("writer", 2, Some(2)).await.unwrap()),
        [1]
    );
    assert_eq!(
        nums(s.list_bundles("writer", 2, Some(1)).await.unwrap()),
        Vec::<i64>::new()
    );
    assert_eq!(
        nums(s.list_bundles("writer", 0, None).await.unwrap()),
        [5],
        "limit clamps to 1"
    );
    assert_eq!(nums(s.list_bundles("writer", -7, None).await.unwrap()), [5]);
    assert_eq!(
        nums(s.list_bundles("writer", i64::MAX, None).await.unwrap()),
        [5, 4, 3, 2, 1]
    );
    let summary = &s.list_bundles("writer", 1, None).await.unwrap()[0];
    assert_eq!(summary.agent, "writer");
    assert_eq!(summary.digest, bundle("writer", "w5", 0).digest);
    assert_eq!(summary.created_at_ms, 1005);
    assert_eq!(summary.size_bytes, 2);

    let latest = s.latest_bundles().await.unwrap();
    assert_eq!(
        latest
            .iter()
            .map(|b| (b.agent.as_str(), b.number, b.content.as_str()))
            .collect::<Vec<_>>(),
        [("reader", 1, "r1"), ("writer", 5, "w5")]
    );

    let agents = s.list_agents().await.unwrap();
    assert_eq!(agents.len(), 2);
    assert_eq!(
        (
            agents[0].name.as_str(),
            agents[0].bundles,
            agents[0].latest,
            agents[0].updated_at_ms
        ),
        ("reader", 1, 1, 50)
    );
    assert_eq!(
        (
            agents[1].name.as_str(),
            agents[1].bundles,
            agents[1].latest,
            agents[1].updated_at_ms
        ),
        ("writer", 5, 5, 1005)
    );
}

async fn concurrent_pushes_get_dense_numbers_and_identical_content_shares_one(t: Ctx) {
    for round in 0..3 {
        let agent = format!("racer{round}");
        let mut tasks = Vec::new();
        for i in 0..8 {
            let s = t.store.clone();
            let b = bundle(&agent, &format!("content-{}", i % 4), 7);
            tasks.push(tokio::spawn(async move { s.put_bundle(b).await }));
        }
        let mut by_content: BTreeMap<String, BTreeSet<i64>> = BTreeMap::new();
        let mut created = 0;
        for task in tasks {
            let put = task.await.unwrap().unwrap();
            created += usize::from(put.created);
            by_content
                .entry(put.bundle.content)
                .or_default()
                .insert(put.bundle.number);
        }
        assert_eq!(created, 4, "each distinct content created exactly once");
        assert!(by_content.values().all(|n| n.len() == 1), "{by_content:?}");
        let numbers: BTreeSet<i64> = by_content.values().flatten().copied().collect();
        assert_eq!(
            numbers,
            (1..=4).collect(),
            "dense and unique: {by_content:?}"
        );
    }
    assert_eq!(t.count("bundles").await, 12);
    assert_eq!(audit_count(&t.store).await, 12);
    assert!(t.store.verify_audit().await.unwrap().ok);
}

async fn bundles_and_audit_rows_reject_raw_update_and_delete(t: Ctx) {
    let s = &t.store;
    s.put_bundle(bundle("imm", "original", 1)).await.unwrap();
    for sql in [
        "UPDATE bundles SET content = 'evil' WHERE agent = 'imm'",
        "UPDATE bundles SET number = 9",
        "DELETE FROM bundles WHERE agent = 'imm'",
        "DELETE FROM bundles",
        "UPDATE audit SET actor = 'mallory'",
        "DELETE FROM audit",
    ] {
        let err = s.execute_unchecked_for_tests(sql).await;
        assert!(
            matches!(err, Err(StoreError::Database(_))),
            "{sql}: {err:?}"
        );
    }
    if t.is_pg() {
        assert!(
            s.execute_unchecked_for_tests("TRUNCATE bundles")
                .await
                .is_err()
        );
        assert!(
            s.execute_unchecked_for_tests("TRUNCATE audit")
                .await
                .is_err()
        );
    }
    let b = s.get_bundle("imm", 1).await.unwrap().unwrap();
    assert_eq!(b.content, "original");
    assert_eq!(audit_count(s).await, 1);
    assert!(s.verify_audit().await.unwrap().ok);
}

async fn reopening_the_store_keeps_everything(t: Ctx) {
    let s = &t.store;
    s.put_bundle(bundle("keep", "k1", 1)).await.unwrap();
    s.put_bundle(bundle("keep", "k2", 2)).await.unwrap();
    let tok = s.create_token("deployer", "ci", 3, "local").await.unwrap();
    s.append_audit(audit("release.start", "keep/prod", 4))
        .await
        .unwrap();
    let before = s.list_audit(100, None).await.unwrap();
    s.close().await;
    assert!(matches!(s.ping().await, Err(StoreError::Unavailable(_))));

    let s2 = t.reopen().await;
    assert_eq!(
        s2.get_bundle("keep", 2).await.unwrap().unwrap().content,
        "k2"
    );
    assert_eq!(s2.list_audit(100, None).await.unwrap(), before);
    assert_eq!(
        s2.authenticate(&tok.token).await.unwrap(),
        Some(tok.info.clone())
    );
    let v = s2.verify_audit().await.unwrap();
    assert!(v.ok && v.entries == 4, "{v:?}");
    assert_eq!(
        s2.put_bundle(bundle("keep", "k3", 5))
            .await
            .unwrap()
            .bundle
            .number,
        3
    );
    assert_eq!(s2.bootstrap_admin(6).await.unwrap(), None);
    assert!(s2.verify_audit().await.unwrap().ok);
    s2.close().await;
}

async fn revocations_are_counted_and_a_revoked_token_is_no_longer_active(t: Ctx) {
    let s = &t.store;
    assert_eq!(s.revoked_token_count().await.unwrap(), 0);
    assert!(!s.token_active("").await.unwrap());
    assert!(!s.token_active("000000000000").await.unwrap());
    let a = s.create_token("sdk", "a", 1, "admin").await.unwrap();
    let b = s.create_token("sdk", "b", 1, "admin").await.unwrap();
    assert!(s.token_active(&a.info.id).await.unwrap());
    assert!(s.revoke_token(&a.info.id, 2, "admin").await.unwrap());
    assert!(!s.token_active(&a.info.id).await.unwrap());
    assert!(s.token_active(&b.info.id).await.unwrap());
    assert_eq!(s.revoked_token_count().await.unwrap(), 1);
    // A second revocation of the same token changes nothing.
    assert!(!s.revoke_token(&a.info.id, 3, "admin").await.unwrap());
    assert_eq!(s.revoked_token_count().await.unwrap(), 1);
    assert!(s.revoke_token(&b.info.id, 4, "admin").await.unwrap());
    assert_eq!(s.revoked_token_count().await.unwrap(), 2);
}

async fn tokens_authenticate_only_with_the_right_unrevoked_secret(t: Ctx) {
    let s = &t.store;
    let issued = s
        .create_token("viewer", "dashboards", 10, "admintok")
        .await
        .unwrap();
    let info = &issued.info;
    assert_eq!(info.id.len(), 12);
    assert!(
        info.id
            .bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
    );
    assert_eq!(
        issued.token,
        format!("serin_{}_{}", info.id, &issued.token[19..])
    );
    assert_eq!(issued.token.len(), "serin_".len() + 12 + 1 + 64);
    assert_eq!(
        (info.role.as_str(), info.name.as_str(), info.created_at_ms),
        ("viewer", "dashboards", 10)
    );
    assert_eq!(
        (info.created_by.as_str(), info.revoked_at_ms),
        ("admintok", None)
    );
    assert!(
        !format!("{issued:?}").contains(&issued.token[19..]),
        "Debug must not print the secret"
    );

    assert_eq!(
        s.authenticate(&issued.token).await.unwrap().as_ref(),
        Some(info)
    );

    let other = s
        .create_token("sdk", "fleet", 11, "admintok")
        .await
        .unwrap();
    assert_ne!(other.info.id, info.id);
    let (id, secret) = (&info.id, &issued.token[19..]);
    let mut wrong = secret.to_owned().into_bytes();
    wrong[63] = if wrong[63] == b'0' { b'1' } else { b'0' };
    let wrong = String::from_utf8(wrong).unwrap();
    let other_secret = &other.token[19..];
    for bad in [
        format!("serin_{id}_{wrong}"),
        format!("serin_{id}_{other_secret}"), // someone else's secret
        format!("serin_{}_{secret}", other.info.id), // someone else's id
        format!("serin_000000000000_{secret}"), // unknown id
        format!("serin_{id}_{}", secret.to_uppercase()),
        format!("Bearer {}", issued.token),
        format!("{} ", issued.token),
        format!("serin_{id}"),
        String::new(),
        "serin_' OR 1=1 --_x".to_owned(),
    ] {
        assert_eq!(s.authenticate(&bad).await.unwrap(), None, "{bad}");
    }

    assert_eq!(
        s.list_tokens().await.unwrap(),
        [info.clone(), other.info.clone()]
    );
    assert!(s.revoke_token(id, 20, "admintok").await.unwrap());
    assert_eq!(
        s.authenticate(&issued.token).await.unwrap(),
        None,
        "revoked"
    );
    assert!(
        !s.revoke_token(id, 21, "admintok").await.unwrap(),
        "already revoked"
    );
    assert!(
        !s.revoke_token("ffffffffffff", 21, "admintok")
            .await
            .unwrap(),
        "unknown"
    );
    assert_eq!(
        s.authenticate(&other.token).await.unwrap().as_ref(),
        Some(&other.info)
    );
    let listed = s.list_tokens().await.unwrap();
    assert_eq!(listed[0].revoked_at_ms, Some(20));

    let actions: Vec<String> = s
        .list_audit(100, None)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.action)
        .collect();
    assert_eq!(actions, ["token.revoke", "token.create", "token.create"]);
}

async fn stored_token_hash_is_not_the_secret(t: Ctx) {
    let s = &t.store;
    let issued = s.create_token("admin", "ops", 1, "local").await.unwrap();
    let secret = &issued.token[19..];
    let stored = s
        .query_text_for_tests(&format!(
            "SELECT secret_sha256 FROM tokens WHERE id = '{}'",
            issued.info.id
        ))
        .await
        .unwrap()
        .unwrap();
    assert_ne!(stored, secret);
    assert!(!issued.token.contains(&stored));
    assert_eq!(stored, hex::encode(sha2::Sha256::digest(secret.as_bytes())));
    // Nothing else in the database holds the secret either (audit details included).
    for e in s.list_audit(100, None).await.unwrap() {
        assert!(!serde_json::to_string(&e).unwrap().contains(secret));
    }
}

async fn bootstrap_admin_happens_once_even_when_raced(t: Ctx) {
    let mut tasks = Vec::new();
    for i in 0..4 {
        let s = t.store.clone();
        tasks.push(tokio::spawn(
            async move { s.bootstrap_admin(100 + i).await },
        ));
    }
    let mut winners = Vec::new();
    for task in tasks {
        if let Some(tok) = task.await.unwrap().unwrap() {
            winners.push(tok);
        }
    }
    assert_eq!(winners.len(), 1, "{winners:?}");
    let admin = &winners[0];
    assert_eq!(admin.info.name, "bootstrap-admin");
    assert_eq!(admin.info.role, "admin");
    assert_eq!(
        t.store.authenticate(&admin.token).await.unwrap().as_ref(),
        Some(&admin.info)
    );
    assert_eq!(t.store.bootstrap_admin(200).await.unwrap(), None);
    assert_eq!(t.store.list_tokens().await.unwrap().len(), 1);
    // Still none after the bootstrap token is revoked: "ever created", not "currently exists".
    assert!(
        t.store
            .revoke_token(&admin.info.id, 300, "local")
            .await
            .unwrap()
    );
    assert_eq!(t.store.bootstrap_admin(301).await.unwrap(), None);
    let actions: Vec<String> = t
        .store
        .list_audit(10, None)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.action)
        .collect();
    assert_eq!(actions, ["token.revoke", "token.create"]);
}

async fn bootstrap_admin_refuses_once_any_token_was_created(t: Ctx) {
    t.store
        .create_token("viewer", "first", 1, "local")
        .await
        .unwrap();
    assert_eq!(t.store.bootstrap_admin(2).await.unwrap(), None);
    assert_eq!(t.store.list_tokens().await.unwrap().len(), 1);
}

async fn audit_chain_verifies_and_lists_newest_first(t: Ctx) {
    let s = &t.store;
    let empty = s.verify_audit().await.unwrap();
    assert!(empty.ok);
    assert_eq!(
        (
            empty.entries,
            empty.head_hash.clone(),
            empty.first_broken_id
        ),
        (0, None, None)
    );

    let mut appended = Vec::new();
    for i in 0..7 {
        appended.push(
            s.append_audit(audit("flag.set", &format!("f{i}"), 1000 + i))
                .await
                .unwrap(),
        );
    }
    assert_eq!(
        appended.iter().map(|e| e.id).collect::<Vec<_>>(),
        (1..=7).collect::<Vec<_>>()
    );
    assert_eq!(appended[0].prev_hash, serin_store::GENESIS_HASH);
    for w in appended.windows(2) {
        assert_eq!(w[1].prev_hash, w[0].hash);
    }
    // The documented hash recipe, recomputed independently.
    let e = &appended[2];
    let body = format!(
        r#"{{"action":"flag.set","actor":"tok123","at_ms":1002,"details":{},"id":3,"subject":"f2"}}"#,
        serin_store::canonical_json(&e.details)
    );
    assert!(
        body.contains(r#""details":{"n":1,"nested":{"a":true,"b":[1.5,null]},"reason":"because"}"#)
    );
    let mut h = sha2::Sha256::new();
    h.update(e.prev_hash.as_bytes());
    h.update(body.as_bytes());
    assert_eq!(e.hash, hex::encode(h.finalize()));

    let listed = s.list_audit(3, None).await.unwrap();
    assert_eq!(listed.iter().map(|e| e.id).collect::<Vec<_>>(), [7, 6, 5]);
    assert_eq!(
        listed[0], appended[6],
        "listed entries equal what append returned"
    );
    let next = s.list_audit(3, Some(5)).await.unwrap();
    assert_eq!(next.iter().map(|e| e.id).collect::<Vec<_>>(), [4, 3, 2]);
    assert_eq!(s.list_audit(0, Some(2)).await.unwrap().len(), 1);

    let v = s.verify_audit().await.unwrap();
    assert!(v.ok, "{v:?}");
    assert_eq!(v.entries, 7);
    assert_eq!(v.head_hash.as_deref(), Some(appended[6].hash.as_str()));
}

async fn drop_audit_triggers(t: &Ctx) {
    t.exec(
        "DROP TRIGGER audit_no_update; DROP TRIGGER audit_no_delete;",
        "DROP TRIGGER audit_no_update_delete ON audit;",
    )
    .await
    .unwrap();
}

async fn tampering_an_audit_row_is_reported_by_verify(t: Ctx) {
    let s = &t.store;
    for i in 0..4 {
        s.append_audit(audit("deploy", "support/prod", i))
            .await
            .unwrap();
    }
    drop_audit_triggers(&t).await;
    s.execute_unchecked_for_tests("UPDATE audit SET actor = 'mallory' WHERE id = 2")
        .await
        .unwrap();
    let v = s.verify_audit().await.unwrap();
    assert!(!v.ok);
    assert_eq!(v.first_broken_id, Some(2), "{v:?}");
    assert_eq!(v.entries, 1);
    assert!(v.reason.unwrap().contains("hash"));

    // Re-hashing the tampered row only moves the break to the next row.
    let fixed = s.list_audit(1, Some(3)).await.unwrap().remove(0);
    let forged = {
        let body = format!(
            r#"{{"action":"deploy","actor":"mallory","at_ms":1,"details":{},"id":2,"subject":"support/prod"}}"#,
            serin_store::canonical_json(&fixed.details)
        );
        let mut h = sha2::Sha256::new();
        h.update(fixed.prev_hash.as_bytes());
        h.update(body.as_bytes());
        hex::encode(h.finalize())
    };
    s.execute_unchecked_for_tests(&format!("UPDATE audit SET hash = '{forged}' WHERE id = 2"))
        .await
        .unwrap();
    let v = s.verify_audit().await.unwrap();
    assert_eq!(v.first_broken_id, Some(3), "{v:?}");

    // Tampering with details text is caught too.
    s.execute_unchecked_for_tests(
        "UPDATE audit SET details = '{\"reason\":\"other\"}' WHERE id = 1",
    )
    .await
    .unwrap();
    assert_eq!(s.verify_audit().await.unwrap().first_broken_id, Some(1));
}

async fn deleting_an_audit_row_is_reported_by_verify(t: Ctx) {
    let s = &t.store;
    for i in 0..4 {
        s.append_audit(audit("deploy", "x", i)).await.unwrap();
    }
    drop_audit_triggers(&t).await;
    s.execute_unchecked_for_tests("DELETE FROM audit WHERE id = 3")
        .await
        .unwrap();
    let v = s.verify_audit().await.unwrap();
    assert_eq!(
        (v.ok, v.first_broken_id, v.entries),
        (false, Some(4), 2),
        "{v:?}"
    );
}

async fn failed_audit_insert_rolls_back_the_whole_mutation(t: Ctx) {
    let s = &t.store;
    let issued = s
        .create_token("admin", "pre-existing", 1, "local")
        .await
        .unwrap();
    let audits = audit_count(s).await;
    t.exec(
        "CREATE TRIGGER test_fail_audit BEFORE INSERT ON audit \
         BEGIN SELECT RAISE(ABORT, 'forced audit failure'); END;",
        "CREATE FUNCTION test_fail_audit() RETURNS trigger LANGUAGE plpgsql AS \
         $$ BEGIN RAISE EXCEPTION 'forced audit failure'; END $$; \
         CREATE TRIGGER test_fail_audit BEFORE INSERT ON audit \
         FOR EACH ROW EXECUTE FUNCTION test_fail_audit();",
    )
    .await
    .unwrap();

    let err = s.put_bundle(bundle("atomic", "c1", 5)).await.unwrap_err();
    assert!(matches!(err, StoreError::Database(_)), "{err:?}");
    assert_eq!(
        s.get_bundle_by_digest("atomic", &bundle("atomic", "c1", 0).digest)
            .await
            .unwrap(),
        None
    );
    assert_eq!(t.count("bundles").await, 0);

    assert!(s.create_token("viewer", "never", 6, "local").await.is_err());
    assert!(s.revoke_token(&issued.info.id, 7, "local").await.is_err());
    assert!(s.append_audit(audit("x", "y", 8)).await.is_err());
    assert_eq!(
        s.list_tokens().await.unwrap(),
        std::slice::from_ref(&issued.info),
        "no new token, not revoked"
    );
    assert_eq!(
        s.authenticate(&issued.token).await.unwrap().as_ref(),
        Some(&issued.info)
    );
    assert_eq!(audit_count(s).await, audits);

    t.exec(
        "DROP TRIGGER test_fail_audit;",
        "DROP TRIGGER test_fail_audit ON audit;",
    )
    .await
    .unwrap();
    let put = s.put_bundle(bundle("atomic", "c1", 9)).await.unwrap();
    assert!(put.created);
    assert_eq!(
        put.bundle.number, 1,
        "the failed push left no number behind"
    );
    assert!(s.verify_audit().await.unwrap().ok);
}

async fn constraint_error_leaves_no_partial_rows(t: Ctx) {
    let s = &t.store;
    let mut negative = bundle("neg", "c", 1);
    negative.size_bytes = -1;
    assert!(matches!(
        s.put_bundle(negative).await,
        Err(StoreError::Invalid(_))
    ));

    // Token creation writes store_meta first, then tokens: make the tokens insert fail and check
    // that the earlier meta row did not survive (otherwise bootstrap would be lost for good).
    t.exec(
        "CREATE TRIGGER test_fail_token BEFORE INSERT ON tokens \
         BEGIN SELECT RAISE(ABORT, 'forced token failure'); END;",
        "CREATE FUNCTION test_fail_token() RETURNS trigger LANGUAGE plpgsql AS \
         $$ BEGIN RAISE EXCEPTION 'forced token failure'; END $$; \
         CREATE TRIGGER test_fail_token BEFORE INSERT ON tokens \
         FOR EACH ROW EXECUTE FUNCTION test_fail_token();",
    )
    .await
    .unwrap();
    assert!(s.bootstrap_admin(2).await.is_err());
    assert!(s.create_token("admin", "x", 2, "local").await.is_err());
    assert_eq!(
        t.count("store_meta").await,
        0,
        "the meta row went with the failed token insert"
    );
    assert_eq!(t.count("tokens").await, 0);
    assert_eq!(t.count("audit").await, 0);
    t.exec(
        "DROP TRIGGER test_fail_token;",
        "DROP TRIGGER test_fail_token ON tokens;",
    )
    .await
    .unwrap();
    assert!(
        s.bootstrap_admin(3).await.unwrap().is_some(),
        "bootstrap still possible"
    );
}

async fn ping_and_close(t: Ctx) {
    t.store.ping().await.unwrap();
    let other = t.reopen().await;
    other.ping().await.unwrap();
    other.close().await;
    assert!(matches!(
        other.ping().await,
        Err(StoreError::Unavailable(_))
    ));
    t.store.ping().await.unwrap();
}

// ----- backend-specific ------------------------------------------------------------------------

#[tokio::test]
async fn sqlite_store_is_wal_with_full_sync_and_foreign_keys_in_the_given_dir() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("nested").join("data");
    let store = Store::open_sqlite(&data).await.unwrap();
    assert!(data.join(serin_store::SQLITE_FILE_NAME).is_file());
    let q = |sql: &'static str| {
        let store = store.clone();
        async move { store.query_text_for_tests(sql).await.unwrap().unwrap() }
    };
    assert_eq!(
        q("SELECT journal_mode FROM pragma_journal_mode()").await,
        "wal"
    );
    // 2 = FULL
    assert_eq!(
        q("SELECT CAST(synchronous AS TEXT) FROM pragma_synchronous()").await,
        "2"
    );
    assert_eq!(
        q("SELECT CAST(foreign_keys AS TEXT) FROM pragma_foreign_keys()").await,
        "1"
    );
    store.close().await;
}

/// Two stores in two schemas of one database: NOTIFY is database-wide, the channels are not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listeners_hear_only_their_own_schema_and_a_cut_session_is_reported() {
    let Some(db1) = TestPostgres::create().await.unwrap() else {
        return;
    };
    let Some(db2) = TestPostgres::create().await.unwrap() else {
        return;
    };
    let (s1, s2) = (
        Store::open_postgres(db1.url()).await.unwrap(),
        Store::open_postgres(db2.url()).await.unwrap(),
    );
    // Unique per test run, so the session can be found and cut.
    let name = format!("contract-{}", db1.schema());
    let mut listener = s1.listen_env_changes(&name).await.unwrap().unwrap();
    assert_ne!(
        listener.channel(),
        s2.listen_env_changes("x").await.unwrap().unwrap().channel()
    );
    s2.update_env_state("prod", 1, "t", |_| Ok::<_, ()>(change("other".into())))
        .await
        .unwrap()
        .unwrap();
    let mine = s1
        .update_env_state("dev", 1, "t", |_| Ok::<_, ()>(change("mine".into())))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        next_change(&mut listener).await,
        committed("dev", mine.version)
    );

    let cut = s1
        .query_text_for_tests(&format!(
            "SELECT CAST(COUNT(pg_terminate_backend(pid)) AS TEXT) FROM pg_stat_activity \
             WHERE application_name = '{name}'"
        ))
        .await
        .unwrap();
    assert_eq!(
        cut.as_deref(),
        Some("1"),
        "one listener session named {name}"
    );
    let lost = tokio::time::timeout(std::time::Duration::from_secs(5), listener.recv())
        .await
        .expect("the loss is reported at once");
    assert!(lost.is_err(), "{lost:?}");
    s1.close().await;
    s2.close().await;
    db1.cleanup().await.unwrap();
    db2.cleanup().await.unwrap();
}

#[tokio::test]
async fn invalid_postgres_url_is_rejected_without_echoing_it() {
    let err = Store::open_postgres("postgres://user:hunter2@[bad")
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Invalid(_)), "{err:?}");
    assert!(!err.to_string().contains("hunter2"), "{err}");
}

#[tokio::test]
async fn unreachable_postgres_is_unavailable() {
    let err = Store::open_postgres("postgres://postgres:secretpw@127.0.0.1:1/test")
        .await
        .unwrap_err();
    assert!(err.is_transient(), "{err:?}");
    assert!(!err.to_string().contains("secretpw"), "{err}");
}

// ----- env states ------------------------------------------------------------------------------

fn change(state: String) -> serin_store::EnvStateChange {
    serin_store::EnvStateChange {
        state,
        action: "test.change".into(),
        subject: "env".into(),
        details: serde_json::json!({}),
    }
}

async fn env_states_grow_globally_and_keep_every_version(t: Ctx) {
    let s = &t.store;
    assert!(s.latest_env_state("prod").await.unwrap().is_none());
    let a = s
        .update_env_state("prod", 10, "t1", |cur| {
            assert_eq!(cur, None);
            Ok::<_, ()>(change("p1".into()))
        })
        .await
        .unwrap()
        .unwrap();
    let b = s
        .update_env_state("dev", 11, "t1", |_| Ok::<_, ()>(change("d1".into())))
        .await
        .unwrap()
        .unwrap();
    let c = s
        .update_env_state("prod", 12, "t2", |cur| {
            assert_eq!(cur, Some("p1"));
            Ok::<_, ()>(change("p2".into()))
        })
        .await
        .unwrap()
        .unwrap();
    assert_eq!((a.version, b.version, c.version), (1, 2, 3));
    assert_eq!(
        s.latest_env_state("prod").await.unwrap().unwrap().state,
        "p2"
    );
    assert_eq!(s.env_state_at(1).await.unwrap().unwrap().state, "p1");
    assert_eq!(s.env_state_at(2).await.unwrap().unwrap().env, "dev");
    assert!(s.env_state_at(99).await.unwrap().is_none());
    let envs = s.list_envs().await.unwrap();
    assert_eq!(
        envs.iter()
            .map(|e| (e.env.as_str(), e.version))
            .collect::<Vec<_>>(),
        vec![("dev", 2), ("prod", 3)]
    );
    // Each change is audited with its env and version.
    let audit = s.list_audit(10, None).await.unwrap();
    assert_eq!(audit[0].details["version"], 3);
    assert_eq!(audit[0].details["env"], "prod");
    assert!(s.verify_audit().await.unwrap().ok);
    // History is append-only.
    assert!(
        s.execute_unchecked_for_tests("UPDATE env_states SET state = 'x'")
            .await
            .is_err()
    );
    assert!(
        s.execute_unchecked_for_tests("DELETE FROM env_states")
            .await
            .is_err()
    );
    // And survives a reopen.
    s.close().await;
    let s = t.reopen().await;
    assert_eq!(
        s.latest_env_state("prod").await.unwrap().unwrap().version,
        3
    );
}

async fn a_refused_env_change_writes_nothing(t: Ctx) {
    let s = &t.store;
    let audit_before = s.list_audit(1000, None).await.unwrap().len();
    let out = s
        .update_env_state("prod", 1, "t", |_| {
            Err::<serin_store::EnvStateChange, _>("refused")
        })
        .await
        .unwrap();
    assert_eq!(out, Err("refused"));
    assert!(s.latest_env_state("prod").await.unwrap().is_none());
    assert_eq!(s.list_audit(1000, None).await.unwrap().len(), audit_before);
}

async fn concurrent_env_changes_serialize_without_losing_updates(t: Ctx) {
    let s = t.store.clone();
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let s = s.clone();
        tasks.push(tokio::spawn(async move {
            s.update_env_state("prod", 1, "t", |cur| {
                let n: u32 = cur.map(|c| c.parse().unwrap()).unwrap_or(0);
                Ok::<_, ()>(change((n + 1).to_string()))
            })
            .await
            .unwrap()
            .unwrap()
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let latest = s.latest_env_state("prod").await.unwrap().unwrap();
    assert_eq!(
        latest.state, "8",
        "every read-modify-write saw the previous one"
    );
    assert_eq!(latest.version, 8);
}

/// The next announcement, or a panic after 5 s.
async fn next_change(l: &mut serin_store::EnvListener) -> serin_store::EnvChange {
    tokio::time::timeout(std::time::Duration::from_secs(5), l.recv())
        .await
        .expect("an announcement within 5 s")
        .expect("the listener session stays up")
}

fn committed(env: &str, version: i64) -> serin_store::EnvChange {
    serin_store::EnvChange::Committed {
        env: env.into(),
        version,
    }
}

async fn committed_env_states_are_announced_and_refused_or_rolled_back_ones_are_not(t: Ctx) {
    let s = &t.store;
    assert_eq!(s.newest_env_version("prod").await.unwrap(), None);
    let listener = s.listen_env_changes("serin-contract").await.unwrap();
    let Some(mut listener) = listener else {
        // SQLite: one server per data directory, nobody to announce to.
        assert!(!t.is_pg());
        let v = s
            .update_env_state("prod", 1, "t", |_| Ok::<_, ()>(change("p1".into())))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(s.newest_env_version("prod").await.unwrap(), Some(v.version));
        return;
    };
    assert!(t.is_pg());
    // Another handle on the same schema stands in for another replica.
    let other = t.reopen().await;
    let a = other
        .update_env_state("prod", 1, "t", |_| Ok::<_, ()>(change("p1".into())))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        next_change(&mut listener).await,
        committed("prod", a.version)
    );
    assert_eq!(s.newest_env_version("prod").await.unwrap(), Some(a.version));

    // Release writes that change routing are announced too.
    let b = other
        .write_release(
            release("support-prod-1", r#"{"step":0}"#, true, true),
            2,
            "t",
            |_| Ok::<_, ()>(Some(change("routing".into()))),
            vec![],
            vec![],
        )
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(
        next_change(&mut listener).await,
        committed("prod", b.version)
    );

    // A change the caller refuses writes nothing, so announces nothing.
    let refused = other
        .update_env_state("prod", 3, "t", |_| {
            Err::<serin_store::EnvStateChange, _>("no")
        })
        .await
        .unwrap();
    assert_eq!(refused, Err("no"));
    // A transaction that fails at COMMIT, after its NOTIFY was issued, announces nothing.
    t.exec(
        "",
        "CREATE FUNCTION test_fail_commit() RETURNS trigger LANGUAGE plpgsql AS \
         $$ BEGIN RAISE EXCEPTION 'forced commit failure'; END $$; \
         CREATE CONSTRAINT TRIGGER test_fail_commit AFTER INSERT ON env_states \
         DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION test_fail_commit();",
    )
    .await
    .unwrap();
    let failed = other
        .update_env_state("dev", 4, "t", |_| Ok::<_, ()>(change("d1".into())))
        .await;
    assert!(failed.is_err(), "{failed:?}");
    assert_eq!(s.newest_env_version("dev").await.unwrap(), None);
    t.exec("", "DROP TRIGGER test_fail_commit ON env_states;")
        .await
        .unwrap();
    let c = other
        .update_env_state("dev", 5, "t", |_| Ok::<_, ()>(change("d1".into())))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        next_change(&mut listener).await,
        committed("dev", c.version),
        "neither the refused nor the rolled-back write was announced"
    );
    other.close().await;
}

// ----- guardrail evidence ----------------------------------------------------------------------

async fn guardrail_evidence_upserts_and_survives_reopen(t: Ctx) {
    use serin_store::{MonitorRow, RollupRow};
    let s = &t.store;
    let monitor = |state: &str, at| MonitorRow {
        env: "prod".into(),
        agent: "support".into(),
        candidate: "support@2".into(),
        state: state.into(),
        created_at_ms: 1,
        updated_at_ms: at,
    };
    let rollup = |arm: &str, minute_ms, data: &str| RollupRow {
        env: "prod".into(),
        agent: "support".into(),
        bundle: "support@2".into(),
        arm: arm.into(),
        minute_ms,
        data: data.into(),
    };
    s.save_outcomes(
        &[monitor("s1", 10)],
        &[rollup("canary", 60_000, "a"), rollup("stable", 60_000, "b")],
    )
    .await
    .unwrap();
    s.save_outcomes(
        &[monitor("s2", 20)],
        &[
            rollup("canary", 60_000, "a2"),
            rollup("canary", 120_000, "c"),
        ],
    )
    .await
    .unwrap();
    let monitors = s.load_monitors().await.unwrap();
    assert_eq!(monitors.len(), 1);
    assert_eq!(
        (
            monitors[0].state.as_str(),
            monitors[0].created_at_ms,
            monitors[0].updated_at_ms
        ),
        ("s2", 1, 20)
    );
    let rows = s.rollups("prod", "support", 0).await.unwrap();
    let got: Vec<(&str, i64, &str)> = rows
        .iter()
        .map(|r| (r.arm.as_str(), r.minute_ms, r.data.as_str()))
        .collect();
    assert_eq!(
        got,
        vec![
            ("canary", 60_000, "a2"),
            ("stable", 60_000, "b"),
            ("canary", 120_000, "c")
        ]
    );
    assert_eq!(
        s.rollups("prod", "support", 100_000).await.unwrap().len(),
        1
    );

    assert!(
        s.guardrail_config("prod", "support")
            .await
            .unwrap()
            .is_none()
    );
    s.put_guardrail_config("prod", "support", r#"{"error_rate":{"max":"2%"}}"#, 5, "t1")
        .await
        .unwrap();
    s.put_guardrail_config("prod", "support", r#"{"error_rate":{"max":"3%"}}"#, 6, "t1")
        .await
        .unwrap();
    assert_eq!(
        s.guardrail_config("prod", "support")
            .await
            .unwrap()
            .as_deref(),
        Some(r#"{"error_rate":{"max":"3%"}}"#)
    );
    let audit = s.list_audit(1, None).await.unwrap();
    assert_eq!(audit[0].action, "guardrails.set");

    s.close().await;
    let s = t.reopen().await;
    assert_eq!(s.load_monitors().await.unwrap()[0].state, "s2");
    assert_eq!(s.rollups("prod", "support", 0).await.unwrap().len(), 3);
}

// ----- releases and webhook outbox -------------------------------------------------------------

fn release(id: &str, state: &str, active: bool, is_new: bool) -> serin_store::ReleaseWrite {
    assert!(is_new, "updates name the revision they read: use `update`");
    serin_store::ReleaseWrite {
        id: id.to_owned(),
        env: "prod".to_owned(),
        agent: "support".to_owned(),
        state: state.to_owned(),
        active,
        is_new,
        watch_due_ms: None,
        expected_revision: None,
        epoch: None,
    }
}

/// An update of release `id` decided from its stored `revision`.
fn update(id: &str, state: &str, active: bool, revision: i64) -> serin_store::ReleaseWrite {
    serin_store::ReleaseWrite {
        is_new: false,
        expected_revision: Some(revision),
        ..release(id, state, active, true)
    }
}

fn notification(release_id: &str, n: u32) -> serin_store::NewNotification {
    serin_store::NewNotification {
        release_id: release_id.to_owned(),
        url: format!("https://hooks.example/{n}"),
        payload: format!(r#"{{"n":{n}}}"#),
    }
}

/// `write_release` with no env change, no audits and no notifications.
async fn write_plain(
    s: &Store,
    r: serin_store::ReleaseWrite,
    at_ms: i64,
) -> Result<Option<serin_store::StoredEnvState>, StoreError> {
    s.write_release(r, at_ms, "t1", |_| Ok::<_, ()>(None), vec![], vec![])
        .await
        .map(|out| out.unwrap())
}

async fn write_release_inserts_updates_and_writes_everything_in_one_tx(t: Ctx) {
    let s = &t.store;
    assert_eq!(s.count_releases("prod", "support").await.unwrap(), 0);
    let env = s
        .write_release(
            release("support-prod-1", r#"{"step":0}"#, true, true),
            100,
            "t1",
            |cur| {
                assert_eq!(cur, None);
                Ok::<_, ()>(Some(change("routing-1".into())))
            },
            vec![audit("release.start", "support/prod", 100)],
            vec![
                notification("support-prod-1", 1),
                notification("support-prod-1", 2),
            ],
        )
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!((env.version, env.state.as_str()), (1, "routing-1"));
    let row = s.get_release("support-prod-1").await.unwrap().unwrap();
    assert_eq!(
        row,
        serin_store::ReleaseRow {
            id: "support-prod-1".into(),
            env: "prod".into(),
            agent: "support".into(),
            state: r#"{"step":0}"#.into(),
            active: true,
            created_at_ms: 100,
            updated_at_ms: 100,
            revision: 1,
            leader_epoch: None,
        }
    );
    // Env change audit first, then the given audits in order.
    let audits = s.list_audit(10, None).await.unwrap();
    let actions: Vec<&str> = audits.iter().rev().map(|a| a.action.as_str()).collect();
    assert_eq!(actions, vec!["test.change", "release.start"]);
    assert_eq!(audits[1].details["version"], 1);
    let queued = s.release_notifications("support-prod-1").await.unwrap();
    assert_eq!(queued.len(), 2);
    assert_eq!(queued[0].url, "https://hooks.example/1");
    assert_eq!(queued[1].payload, r#"{"n":2}"#);
    assert!(queued[0].id < queued[1].id);
    for n in &queued {
        assert_eq!(
            (n.created_at_ms, n.next_attempt_ms, n.attempts),
            (100, 100, 0)
        );
        assert_eq!((n.delivered_at_ms, n.last_error.as_deref()), (None, None));
    }

    // Update: state and active change, env change sees the previous state, audits keep order.
    let env = s
        .write_release(
            update("support-prod-1", r#"{"step":1}"#, false, 1),
            200,
            "t2",
            |cur| {
                assert_eq!(cur, Some("routing-1"));
                Ok::<_, ()>(Some(change("routing-2".into())))
            },
            vec![
                audit("release.advance", "support/prod", 200),
                audit("release.complete", "support/prod", 200),
            ],
            vec![notification("support-prod-1", 3)],
        )
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!((env.version, env.created_by.as_str()), (2, "t2"));
    let row = s.get_release("support-prod-1").await.unwrap().unwrap();
    assert_eq!(
        (
            row.state.as_str(),
            row.active,
            row.created_at_ms,
            row.updated_at_ms
        ),
        (r#"{"step":1}"#, false, 100, 200)
    );
    let actions: Vec<String> = s
        .list_audit(10, None)
        .await
        .unwrap()
        .into_iter()
        .rev()
        .map(|a| a.action)
        .collect();
    assert_eq!(
        actions,
        vec![
            "test.change",
            "release.start",
            "test.change",
            "release.advance",
            "release.complete"
        ]
    );
    assert!(s.verify_audit().await.unwrap().ok);
    assert_eq!(
        s.release_notifications("support-prod-1")
            .await
            .unwrap()
            .len(),
        3
    );

    // No env change: the env is left alone.
    let out = write_plain(s, update("support-prod-1", "{}", false, 2), 300)
        .await
        .unwrap();
    assert_eq!(out, None);
    assert_eq!(
        s.latest_env_state("prod").await.unwrap().unwrap().version,
        2
    );
    assert_eq!(t.count("env_states").await, 2);

    // Updating an unknown id is a conflict and writes nothing.
    let err = write_plain(s, update("nope", "{}", true, 1), 400)
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Conflict(_)), "{err}");
    // So is inserting an id twice.
    let err = write_plain(s, release("support-prod-1", "{}", false, true), 400)
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Conflict(_)), "{err}");
    assert_eq!(t.count("releases").await, 1);

    assert_eq!(s.count_releases("prod", "support").await.unwrap(), 1);
    assert_eq!(s.count_releases("dev", "support").await.unwrap(), 0);
    assert!(s.active_release("prod", "support").await.unwrap().is_none());
}

async fn a_second_active_release_is_refused_and_writes_nothing(t: Ctx) {
    let s = &t.store;
    write_plain(s, release("r1", "{}", true, true), 10)
        .await
        .unwrap();
    let audits = audit_count(s).await;
    let envs = t.count("env_states").await;
    let mut ran = false;
    let err = s
        .write_release(
            release("r2", "{}", true, true),
            20,
            "t1",
            |_| {
                ran = true;
                Ok::<_, ()>(Some(change("x".into())))
            },
            vec![audit("release.start", "support/prod", 20)],
            vec![notification("r2", 1)],
        )
        .await
        .unwrap_err();
    match &err {
        StoreError::Conflict(msg) => {
            assert!(msg.contains("already has an active release"), "{msg}");
        }
        other => panic!("expected a conflict, got {other}"),
    }
    assert!(!ran, "the env change must not run for a refused release");
    assert!(s.get_release("r2").await.unwrap().is_none());
    assert_eq!(audit_count(s).await, audits);
    assert_eq!(t.count("env_states").await, envs);
    assert_eq!(t.count("notifications").await, 0);
    assert_eq!(
        s.active_release("prod", "support")
            .await
            .unwrap()
            .unwrap()
            .id,
        "r1"
    );
    // Another agent or env is independent.
    let mut other = release("r3", "{}", true, true);
    other.agent = "billing".into();
    write_plain(s, other, 30).await.unwrap();
    let mut other = release("r4", "{}", true, true);
    other.env = "dev".into();
    write_plain(s, other, 40).await.unwrap();
    let ids: Vec<String> = s
        .active_releases()
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.id)
        .collect();
    assert_eq!(ids, vec!["r1", "r3", "r4"]);
    // Re-activating an inactive release beside the active one is refused too.
    write_plain(s, release("r5", "{}", false, true), 50)
        .await
        .unwrap();
    let err = write_plain(s, update("r5", "{}", true, 1), 60)
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Conflict(_)), "{err}");
    assert!(!s.get_release("r5").await.unwrap().unwrap().active);
    // And the database itself refuses a second active row.
    assert!(
        t.exec(
            "UPDATE releases SET active = 1 WHERE id = 'r5'",
            "UPDATE releases SET active = 1 WHERE id = 'r5'",
        )
        .await
        .is_err()
    );
}

async fn a_refused_release_env_change_writes_nothing(t: Ctx) {
    let s = &t.store;
    let audits = audit_count(s).await;
    let out = s
        .write_release(
            release("r1", "{}", true, true),
            10,
            "t1",
            |_| Err::<Option<serin_store::EnvStateChange>, _>("refused"),
            vec![audit("release.start", "support/prod", 10)],
            vec![notification("r1", 1)],
        )
        .await
        .unwrap();
    assert_eq!(out, Err("refused"));
    assert!(s.get_release("r1").await.unwrap().is_none());
    assert_eq!(audit_count(s).await, audits);
    assert_eq!(t.count("env_states").await, 0);
    assert_eq!(t.count("notifications").await, 0);
    // The store is still usable afterwards.
    write_plain(s, release("r1", "{}", true, true), 20)
        .await
        .unwrap();
}

async fn concurrent_release_starts_let_exactly_one_win(t: Ctx) {
    let s = t.store.clone();
    let mut tasks = Vec::new();
    for i in 0..4 {
        let s = s.clone();
        tasks.push(tokio::spawn(async move {
            let id = format!("r{i}");
            s.write_release(
                release(&id, "{}", true, true),
                10 + i64::from(i),
                "t1",
                |cur| {
                    let n: u32 = cur.map(|c| c.parse().unwrap()).unwrap_or(0);
                    Ok::<_, ()>(Some(change((n + 1).to_string())))
                },
                vec![audit("release.start", "support/prod", 10)],
                vec![notification(&id, 1)],
            )
            .await
        }));
    }
    let mut won = 0;
    for task in tasks {
        match task.await.unwrap() {
            Ok(out) => {
                out.unwrap();
                won += 1;
            }
            Err(StoreError::Conflict(msg)) => {
                assert!(msg.contains("already has an active release"), "{msg}");
            }
            Err(other) => panic!("unexpected error: {other}"),
        }
    }
    assert_eq!(won, 1);
    assert_eq!(s.active_releases().await.unwrap().len(), 1);
    assert_eq!(t.count("releases").await, 1);
    assert_eq!(t.count("notifications").await, 1);
    assert_eq!(
        s.latest_env_state("prod").await.unwrap().unwrap().state,
        "1"
    );
    assert_eq!(audit_count(&s).await, 2);
}

async fn inactive_releases_do_not_block_a_new_one(t: Ctx) {
    let s = &t.store;
    write_plain(s, release("r1", "{}", true, true), 10)
        .await
        .unwrap();
    write_plain(s, update("r1", "done", false, 1), 20)
        .await
        .unwrap();
    write_plain(s, release("r2", "{}", true, true), 30)
        .await
        .unwrap();
    write_plain(s, update("r2", "done", false, 1), 40)
        .await
        .unwrap();
    write_plain(s, release("r3", "{}", true, true), 50)
        .await
        .unwrap();
    assert_eq!(
        s.active_release("prod", "support")
            .await
            .unwrap()
            .unwrap()
            .id,
        "r3"
    );
    assert_eq!(s.count_releases("prod", "support").await.unwrap(), 3);
    let listed: Vec<(String, bool)> = s
        .list_releases("prod", "support", 10)
        .await
        .unwrap()
        .into_iter()
        .map(|r| (r.id, r.active))
        .collect();
    assert_eq!(
        listed,
        vec![
            ("r3".to_owned(), true),
            ("r2".to_owned(), false),
            ("r1".to_owned(), false)
        ]
    );
    assert_eq!(
        s.list_releases("prod", "support", 2).await.unwrap().len(),
        2
    );
    assert!(
        s.list_releases("dev", "support", 10)
            .await
            .unwrap()
            .is_empty()
    );
    // Finished ones of every agent in the env, newest first, the active one left out.
    let mut other = release("b1", "done", false, true);
    other.agent = "billing".to_owned();
    write_plain(s, other, 60).await.unwrap();
    let finished: Vec<String> = s
        .finished_releases_in_env("prod", 10)
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.id)
        .collect();
    assert_eq!(finished, vec!["b1", "r2", "r1"]);
    assert_eq!(
        s.finished_releases_in_env("prod", 1).await.unwrap().len(),
        1
    );
    assert!(
        s.finished_releases_in_env("dev", 10)
            .await
            .unwrap()
            .is_empty()
    );
}

async fn notifications_are_due_until_delivered_with_backoff(t: Ctx) {
    let s = &t.store;
    s.write_release(
        release("r1", "{}", true, true),
        1_000,
        "t1",
        |_| Ok::<_, ()>(None),
        vec![],
        vec![notification("r1", 1), notification("r1", 2)],
    )
    .await
    .unwrap()
    .unwrap();
    assert!(s.due_notifications(999, 10).await.unwrap().is_empty());
    let due = s.due_notifications(1_000, 10).await.unwrap();
    assert_eq!(due.len(), 2);
    assert_eq!(s.due_notifications(1_000, 1).await.unwrap(), due[..1]);
    let (first, second) = (due[0].id, due[1].id);

    // The first fails and backs off; the second is delivered.
    s.mark_notification(first, None, Some("HTTP 503"), 5_000)
        .await
        .unwrap();
    s.mark_notification(second, Some(1_100), None, 1_100)
        .await
        .unwrap();
    assert!(s.due_notifications(4_999, 10).await.unwrap().is_empty());
    let due = s.due_notifications(5_000, 10).await.unwrap();
    assert_eq!(due.len(), 1);
    assert_eq!(due[0].id, first);
    assert_eq!(
        (
            due[0].attempts,
            due[0].next_attempt_ms,
            due[0].last_error.as_deref()
        ),
        (1, 5_000, Some("HTTP 503"))
    );
    // Delivered on the second attempt: never due again.
    s.mark_notification(first, Some(5_010), None, 5_000)
        .await
        .unwrap();
    assert!(s.due_notifications(i64::MAX, 10).await.unwrap().is_empty());
    let all = s.release_notifications("r1").await.unwrap();
    assert_eq!(
        all.iter()
            .map(|n| (n.attempts, n.delivered_at_ms, n.last_error.as_deref()))
            .collect::<Vec<_>>(),
        vec![(2, Some(5_010), None), (1, Some(1_100), None)]
    );
    assert!(s.release_notifications("other").await.unwrap().is_empty());
    assert!(s.mark_notification(9_999, None, None, 0).await.is_err());
}

async fn a_failed_notification_is_never_due_again_and_keeps_its_error(t: Ctx) {
    let s = &t.store;
    s.write_release(
        release("r1", "{}", true, true),
        1_000,
        "t1",
        |_| Ok::<_, ()>(None),
        vec![],
        vec![notification("r1", 1), notification("r1", 2)],
    )
    .await
    .unwrap()
    .unwrap();
    let due = s.due_notifications(1_000, 10).await.unwrap();
    let (first, second) = (due[0].id, due[1].id);
    s.mark_notification(first, None, Some("HTTP 500"), 1_100)
        .await
        .unwrap();
    s.fail_notification(first, "HTTP 500", 1_200).await.unwrap();
    // Whatever its next attempt said, a failed notification is never due again.
    let due = s.due_notifications(i64::MAX, 10).await.unwrap();
    assert_eq!(due.iter().map(|n| n.id).collect::<Vec<_>>(), vec![second]);
    let all = s.release_notifications("r1").await.unwrap();
    assert_eq!(
        all.iter()
            .map(|n| (
                n.attempts,
                n.delivered_at_ms,
                n.failed_at_ms,
                n.last_error.as_deref()
            ))
            .collect::<Vec<_>>(),
        vec![
            (2, None, Some(1_200), Some("HTTP 500")),
            (0, None, None, None)
        ]
    );
    // Failing twice, or failing a delivered one, is refused and changes nothing.
    assert!(s.fail_notification(first, "again", 1_300).await.is_err());
    s.mark_notification(second, Some(1_400), None, 1_400)
        .await
        .unwrap();
    assert!(s.fail_notification(second, "late", 1_500).await.is_err());
    assert!(s.fail_notification(9_999, "none", 1_500).await.is_err());
    let all = s.release_notifications("r1").await.unwrap();
    assert_eq!(all[0].failed_at_ms, Some(1_200));
    assert_eq!(all[1].failed_at_ms, None);
    assert_eq!(all[1].delivered_at_ms, Some(1_400));
}

async fn releases_and_notifications_survive_reopen(t: Ctx) {
    let s = &t.store;
    s.write_release(
        release("r1", r#"{"step":2}"#, true, true),
        10,
        "t1",
        |_| Ok::<_, ()>(Some(change("routing".into()))),
        vec![audit("release.start", "support/prod", 10)],
        vec![notification("r1", 1)],
    )
    .await
    .unwrap()
    .unwrap();
    let release_before = s.get_release("r1").await.unwrap().unwrap();
    let due_before = s.due_notifications(10, 10).await.unwrap();
    s.close().await;
    let s = t.reopen().await;
    assert_eq!(s.get_release("r1").await.unwrap().unwrap(), release_before);
    assert_eq!(s.active_releases().await.unwrap(), vec![release_before]);
    assert_eq!(s.due_notifications(10, 10).await.unwrap(), due_before);
    assert_eq!(
        s.latest_env_state("prod").await.unwrap().unwrap().state,
        "routing"
    );
    assert!(s.verify_audit().await.unwrap().ok);
    // The one-active rule still holds after reopening.
    let err = write_plain(&s, release("r2", "{}", true, true), 20)
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Conflict(_)), "{err}");
    s.close().await;
}

async fn watches_come_due_in_order_end_and_survive_reopen(t: Ctx) {
    let s = &t.store;
    let watched = |id: &str, due: Option<i64>| serin_store::ReleaseWrite {
        id: id.to_owned(),
        agent: format!("agent-{id}"),
        watch_due_ms: due,
        ..release(id, r#"{"phase":"completed"}"#, false, true)
    };
    write_plain(s, watched("w1", Some(100)), 10).await.unwrap();
    write_plain(s, watched("w2", Some(50)), 10).await.unwrap();
    write_plain(s, watched("w3", None), 10).await.unwrap();
    let ids =
        |rows: Vec<serin_store::ReleaseRow>| rows.into_iter().map(|r| r.id).collect::<Vec<_>>();
    assert!(s.due_watches(49, 10).await.unwrap().is_empty());
    assert_eq!(ids(s.due_watches(75, 10).await.unwrap()), ["w2"]);
    assert_eq!(ids(s.due_watches(1_000, 10).await.unwrap()), ["w2", "w1"]);
    // A checkpoint moves the due time on; the last one ends the watch.
    let next = serin_store::ReleaseWrite {
        is_new: false,
        expected_revision: Some(1),
        ..watched("w2", Some(500))
    };
    write_plain(s, next, 60).await.unwrap();
    let ended = serin_store::ReleaseWrite {
        is_new: false,
        expected_revision: Some(1),
        ..watched("w1", None)
    };
    write_plain(s, ended, 110).await.unwrap();
    assert!(s.due_watches(499, 10).await.unwrap().is_empty());
    s.close().await;
    let s = t.reopen().await;
    assert_eq!(ids(s.due_watches(1_000, 10).await.unwrap()), ["w2"]);
    // Completed releases under watch never block a new active release of their agent.
    assert!(s.active_releases().await.unwrap().is_empty());
    s.close().await;
}

// ----- replica registry ----------------------------------------------------------------------

fn replica(id: &str, started_ms: i64, last_seen_ms: i64) -> serin_store::ReplicaRow {
    serin_store::ReplicaRow {
        id: id.into(),
        host: "node-1".into(),
        pid: 4242,
        version: "0.1.0".into(),
        started_ms,
        last_seen_ms,
        is_leader: false,
        epoch: 3,
        listener_connected: Some(true),
        caught_up: true,
        behind: Vec::new(),
        published: BTreeMap::from([("dev".to_owned(), 7)]),
        sdk_streams: 2,
        gone_ms: None,
    }
}

async fn replica_heartbeats_upsert_list_mark_gone_and_prune(t: Ctx) {
    let s = &t.store;
    assert!(s.list_replicas().await.unwrap().is_empty());
    let a = replica("a", 100, 1_000);
    let mut b = replica("b", 50, 1_100);
    s.upsert_replica(&a).await.unwrap();
    s.upsert_replica(&b).await.unwrap();
    // Oldest start first.
    assert_eq!(s.list_replicas().await.unwrap(), vec![b.clone(), a.clone()]);

    // A heartbeat replaces every column of its own row only.
    b.last_seen_ms = 5_000;
    b.is_leader = true;
    b.epoch = 4;
    b.listener_connected = Some(false);
    b.caught_up = false;
    b.behind = vec!["prod".into()];
    b.published = BTreeMap::from([("dev".to_owned(), 8), ("prod".to_owned(), 2)]);
    b.sdk_streams = 0;
    s.upsert_replica(&b).await.unwrap();
    assert_eq!(s.list_replicas().await.unwrap(), vec![b.clone(), a.clone()]);

    // Marked gone on shutdown: still listed, with the time.
    assert!(s.mark_replica_gone("a", 6_000).await.unwrap());
    assert!(!s.mark_replica_gone("nobody", 6_000).await.unwrap());
    let listed = s.list_replicas().await.unwrap();
    assert_eq!(listed[1].gone_ms, Some(6_000));
    // Operational state: nothing audited.
    assert_eq!(t.count("audit").await, 0);

    // Pruning deletes only the rows last seen before the cutoff, and survives a reopen.
    assert_eq!(s.prune_replicas(1_000).await.unwrap(), 0);
    assert_eq!(s.prune_replicas(1_001).await.unwrap(), 1);
    let again = t.reopen().await;
    assert_eq!(again.list_replicas().await.unwrap(), vec![b]);
    assert_eq!(again.prune_replicas(i64::MAX).await.unwrap(), 1);
    assert!(again.list_replicas().await.unwrap().is_empty());
    again.close().await;
}

async fn replica_rows_round_trip_extreme_values(t: Ctx) {
    let s = &t.store;
    let max = serin_store::ReplicaRow {
        id: "r-\u{1F980}-'\"; DROP TABLE replicas; --".into(),
        host: "h\u{00E9}te-\u{2603}".repeat(50),
        pid: i64::MAX,
        version: String::new(),
        started_ms: i64::MIN,
        last_seen_ms: i64::MAX,
        is_leader: true,
        epoch: i64::MAX,
        listener_connected: None,
        caught_up: false,
        behind: vec!["e\"\\nv".into(), String::new()],
        published: BTreeMap::from([("a".to_owned(), i64::MAX), ("b".to_owned(), i64::MIN)]),
        sdk_streams: i64::MAX,
        gone_ms: Some(i64::MIN),
    };
    let min = serin_store::ReplicaRow {
        id: "x".into(),
        pid: i64::MIN,
        started_ms: i64::MAX,
        last_seen_ms: i64::MIN,
        epoch: i64::MIN,
        sdk_streams: i64::MIN,
        published: BTreeMap::new(),
        gone_ms: Some(i64::MAX),
        ..replica("x", 0, 0)
    };
    s.upsert_replica(&max).await.unwrap();
    s.upsert_replica(&min).await.unwrap();
    assert_eq!(
        s.list_replicas().await.unwrap(),
        vec![max.clone(), min.clone()]
    );
    // Nothing was seen before i64::MIN; everything but the i64::MAX row before i64::MAX.
    assert_eq!(s.prune_replicas(i64::MIN).await.unwrap(), 0);
    assert_eq!(s.prune_replicas(i64::MAX).await.unwrap(), 1);
    assert_eq!(s.list_replicas().await.unwrap(), vec![max]);
}

// ----- leadership and fencing ----------------------------------------------------------------

/// Takes the leadership the way each backend does: SQLite directly (one process per data
/// dir), PostgreSQL through a session holding the leader lock (kept open in `sessions`).
async fn lead(
    t: &Ctx,
    holder: &str,
    at_ms: i64,
    sessions: &mut Vec<serin_store::LeaderSession>,
) -> i64 {
    if t.is_pg() {
        let mut session = t.store.leader_session(holder, None).await.unwrap();
        let epoch = session.try_lead(holder, at_ms).await.unwrap();
        sessions.push(session);
        epoch.expect("no other session holds the lock")
    } else {
        t.store.take_leadership(holder, at_ms).await.unwrap()
    }
}

async fn leadership_epochs_grow_by_one_per_leader_and_survive_reopen(t: Ctx) {
    let s = &t.store;
    let fresh = s.leadership().await.unwrap();
    assert_eq!((fresh.epoch, fresh.holder), (0, None));
    let mut sessions = Vec::new();
    assert_eq!(lead(&t, "a:1", 10, &mut sessions).await, 1);
    if t.is_pg() {
        // While a session holds the lock, nobody else leads or raises the epoch.
        let mut other = s.leader_session("b:2", None).await.unwrap();
        assert_eq!(other.try_lead("b:2", 20).await.unwrap(), None);
        assert_eq!(s.leadership().await.unwrap().epoch, 1);
        // The holder's session ends: the next one leads, one epoch up.
        sessions.pop().unwrap().close().await;
        assert_eq!(other.try_lead("b:2", 20).await.unwrap(), Some(2));
        other.check().await.unwrap();
        sessions.push(other);
        // Only the lock holder raises the epoch on PostgreSQL.
        assert!(matches!(
            s.take_leadership("c:3", 25).await,
            Err(StoreError::Invalid(_))
        ));
    } else {
        assert_eq!(lead(&t, "b:2", 20, &mut sessions).await, 2);
        assert!(matches!(
            s.leader_session("c:3", None).await,
            Err(StoreError::Invalid(_))
        ));
    }
    let now = s.leadership().await.unwrap();
    assert_eq!(
        (now.epoch, now.holder.as_deref(), now.since_ms),
        (2, Some("b:2"), Some(20))
    );
    for session in sessions {
        session.close().await;
    }
    s.close().await;
    let s = t.reopen().await;
    assert_eq!(s.leadership().await.unwrap().epoch, 2);
    // Epochs are not audited: they are operational state, not a change anyone made.
    assert_eq!(audit_count(&s).await, 0);
    s.close().await;
}

/// `write_release` of `w` with an env change, an audit entry and a notification, so a refusal
/// can be checked to leave every one of them unwritten.
async fn write_full(
    s: &Store,
    w: serin_store::ReleaseWrite,
    at_ms: i64,
) -> Result<Option<serin_store::StoredEnvState>, StoreError> {
    let id = w.id.clone();
    s.write_release(
        w,
        at_ms,
        "system",
        |_| Ok::<_, ()>(Some(change(format!("routing-{at_ms}")))),
        vec![audit("release.advance", "support/prod", at_ms)],
        vec![notification(&id, 1)],
    )
    .await
    .map(|out| out.unwrap())
}

/// Counts of everything a release write may add.
async fn footprint(t: &Ctx) -> (i64, i64, i64) {
    (
        t.count("env_states").await,
        t.count("audit").await,
        t.count("notifications").await,
    )
}

async fn a_write_under_a_superseded_epoch_is_refused_and_writes_nothing(t: Ctx) {
    let s = &t.store;
    let mut sessions = Vec::new();
    let first = lead(&t, "a:1", 10, &mut sessions).await;
    write_plain(s, release("r1", "step-0", true, true), 10)
        .await
        .unwrap();
    let tick = |state: &str, revision: i64, epoch: i64| serin_store::ReleaseWrite {
        epoch: Some(epoch),
        ..update("r1", state, true, revision)
    };
    write_full(s, tick("step-1", 1, first), 20).await.unwrap();
    let row = s.get_release("r1").await.unwrap().unwrap();
    assert_eq!(
        (row.state.as_str(), row.revision, row.leader_epoch),
        ("step-1", 2, Some(first))
    );
    // A newer leader takes over; the old one's late tick changes nothing at all.
    for session in sessions.drain(..) {
        session.close().await;
    }
    let second = lead(&t, "b:2", 30, &mut sessions).await;
    assert_eq!(second, first + 1);
    let before = footprint(&t).await;
    let err = write_full(s, tick("step-2-late", 2, first), 40)
        .await
        .unwrap_err();
    assert!(
        matches!(err, StoreError::Fenced { epoch, current } if epoch == first && current == second),
        "{err}"
    );
    assert_eq!(footprint(&t).await, before);
    assert_eq!(s.get_release("r1").await.unwrap().unwrap(), row);
    // An epoch nobody took is refused the same way.
    let err = write_full(s, tick("step-2-bogus", 2, second + 5), 40)
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Fenced { .. }), "{err}");
    // The current leader writes; an operator's command is not fenced by leadership.
    write_full(s, tick("step-2", 2, second), 50).await.unwrap();
    write_full(s, update("r1", "paused", true, 3), 60)
        .await
        .unwrap();
    let row = s.get_release("r1").await.unwrap().unwrap();
    assert_eq!(
        (row.state.as_str(), row.revision, row.leader_epoch),
        ("paused", 4, None)
    );
    assert!(s.verify_audit().await.unwrap().ok);
}

async fn a_write_from_a_stale_revision_is_refused_and_writes_nothing(t: Ctx) {
    let s = &t.store;
    write_plain(s, release("r1", "step-0", true, true), 10)
        .await
        .unwrap();
    write_full(s, update("r1", "step-1", true, 1), 20)
        .await
        .unwrap();
    let row = s.get_release("r1").await.unwrap().unwrap();
    assert_eq!(row.revision, 2);
    let before = footprint(&t).await;
    // Decided from revision 1, which another writer has moved on from.
    let err = write_full(s, update("r1", "paused-at-0", false, 1), 30)
        .await
        .unwrap_err();
    assert!(
        matches!(&err, StoreError::Stale { id, expected: 1, current: 2 } if id == "r1"),
        "{err}"
    );
    assert_eq!(footprint(&t).await, before);
    assert_eq!(s.get_release("r1").await.unwrap().unwrap(), row);
    // A revision from the future is just as stale.
    let err = write_full(s, update("r1", "x", true, 7), 30)
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Stale { current: 2, .. }), "{err}");
    // An update must name the revision it read, and an insert none.
    let unnamed = serin_store::ReleaseWrite {
        expected_revision: None,
        ..update("r1", "x", true, 2)
    };
    assert!(matches!(
        write_full(s, unnamed, 40).await,
        Err(StoreError::Invalid(_))
    ));
    let named = serin_store::ReleaseWrite {
        expected_revision: Some(0),
        ..release("r2", "x", false, true)
    };
    assert!(matches!(
        write_full(s, named, 40).await,
        Err(StoreError::Invalid(_))
    ));
    assert_eq!(footprint(&t).await, before);
    assert_eq!(t.count("releases").await, 1);
}

async fn racing_writers_from_one_revision_let_exactly_one_apply(t: Ctx) {
    let s = t.store.clone();
    write_plain(&s, release("r1", "step-0", true, true), 10)
        .await
        .unwrap();
    let before = footprint(&t).await;
    // A command on one replica and the controller's tick on another, both decided from
    // revision 1: one applies, the other is refused whole.
    let mut tasks = Vec::new();
    for who in ["command", "tick", "another-command", "another-tick"] {
        let s = s.clone();
        tasks.push(tokio::spawn(async move {
            write_full(&s, update("r1", who, true, 1), 20).await
        }));
    }
    let mut applied = Vec::new();
    for task in tasks {
        match task.await.unwrap() {
            Ok(_) => applied.push(()),
            Err(StoreError::Stale {
                expected: 1,
                current: 2,
                ..
            }) => {}
            Err(other) => panic!("unexpected error: {other}"),
        }
    }
    assert_eq!(applied.len(), 1);
    let (envs, audits, notes) = before;
    assert_eq!(footprint(&t).await, (envs + 1, audits + 2, notes + 1));
    assert_eq!(s.get_release("r1").await.unwrap().unwrap().revision, 2);
}

// ----- readiness and drills ------------------------------------------------------------------

async fn audit_actions(s: &Store) -> Vec<String> {
    s.list_audit(1000, None)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.action)
        .collect()
}

async fn readiness_policies_are_versioned_and_identical_reapply_writes_nothing(t: Ctx) {
    let s = &t.store;
    assert!(s.current_policy("prod", "support").await.unwrap().is_none());
    let (v1, changed) = s
        .apply_policy("prod", "support", r#"{"require":["a"]}"#, 10, "alice")
        .await
        .unwrap();
    assert!(changed);
    assert_eq!(v1.version, 1);
    let (v2, changed) = s
        .apply_policy("prod", "support", r#"{"require":["a","b"]}"#, 20, "bob")
        .await
        .unwrap();
    assert!(changed);
    assert_eq!(v2.version, 2);
    // Identical content: no new version, no audit entry.
    let audits = t.count("audit").await;
    let (same, changed) = s
        .apply_policy("prod", "support", r#"{"require":["a","b"]}"#, 30, "carol")
        .await
        .unwrap();
    assert!(!changed);
    assert_eq!(same, v2);
    assert_eq!(t.count("audit").await, audits);
    // Another env or agent has its own numbering.
    let (other, _) = s
        .apply_policy("staging", "support", r#"{}"#, 40, "alice")
        .await
        .unwrap();
    assert_eq!(other.version, 1);
    assert_eq!(
        s.current_policy("prod", "support").await.unwrap(),
        Some(v2.clone())
    );
    assert_eq!(
        s.policy_at("prod", "support", 1).await.unwrap(),
        Some(v1.clone())
    );
    assert_eq!(s.policy_at("prod", "support", 3).await.unwrap(), None);
    let history = s.policy_history("prod", "support", 10).await.unwrap();
    assert_eq!(history, vec![v2, v1]);
    assert_eq!(
        audit_actions(s)
            .await
            .iter()
            .filter(|a| *a == "readiness.apply")
            .count(),
        3
    );
    let entry = &s.list_audit(1, None).await.unwrap()[0];
    assert_eq!(entry.subject, "support/staging");
    assert_eq!(entry.details["version"], 1);
    assert!(s.verify_audit().await.unwrap().ok);
}

async fn evidence_keeps_history_and_the_newest_per_key_counts(t: Ctx) {
    let s = &t.store;
    for (i, (key, status)) in [
        ("oncall", "fail"),
        ("runbook", "pass"),
        ("oncall", "partial"),
        ("oncall", "pass"),
    ]
    .into_iter()
    .enumerate()
    {
        let record = format!(r#"{{"key":"{key}","status":"{status}"}}"#);
        s.add_evidence(
            "prod",
            "support",
            key,
            &record,
            i as i64,
            "sam",
            serde_json::json!({"status": status}),
        )
        .await
        .unwrap();
    }
    s.add_evidence(
        "staging",
        "support",
        "oncall",
        "{}",
        9,
        "sam",
        serde_json::json!({}),
    )
    .await
    .unwrap();
    let current = s.current_evidence("prod", "support").await.unwrap();
    let got: Vec<(&str, &str)> = current
        .iter()
        .map(|r| (r.key.as_str(), r.record.as_str()))
        .collect();
    assert_eq!(
        got,
        vec![
            ("oncall", r#"{"key":"oncall","status":"pass"}"#),
            ("runbook", r#"{"key":"runbook","status":"pass"}"#),
        ]
    );
    let history = s
        .evidence_history("prod", "support", "oncall", 10)
        .await
        .unwrap();
    let statuses: Vec<i64> = history.iter().map(|r| r.recorded_at_ms).collect();
    assert_eq!(statuses, vec![3, 2, 0], "newest first");
    assert_eq!(
        s.evidence_history("prod", "support", "oncall", 1)
            .await
            .unwrap()
            .len(),
        1
    );
    let entry = &s.list_audit(1, None).await.unwrap()[0];
    assert_eq!(entry.action, "evidence.set");
    assert_eq!(entry.subject, "support/staging/oncall");
    assert!(s.verify_audit().await.unwrap().ok);
}

async fn evals_are_kept_per_bundle_newest_first(t: Ctx) {
    let s = &t.store;
    for (bundle, score) in [(1, "0.8"), (2, "0.9"), (2, "0.95")] {
        s.add_eval(
            "support",
            bundle,
            &format!("sha256:{bundle}"),
            "golden-v3",
            &format!(r#"{{"score":{score}}}"#),
            5,
            "ci",
            serde_json::json!({"score": score}),
        )
        .await
        .unwrap();
    }
    let evals = s.evals("support", 2).await.unwrap();
    assert_eq!(evals.len(), 2);
    assert_eq!(evals[0].record, r#"{"score":0.95}"#);
    assert_eq!(evals[0].digest, "sha256:2");
    assert_eq!(evals[0].set_name, "golden-v3");
    assert!(evals[0].id > evals[1].id);
    assert_eq!(s.evals("support", 3).await.unwrap(), vec![]);
    assert_eq!(s.list_audit(1, None).await.unwrap()[0].subject, "support@2");
}

async fn readiness_rows_reject_raw_update_and_delete(t: Ctx) {
    let s = &t.store;
    s.apply_policy("prod", "support", "{}", 1, "a")
        .await
        .unwrap();
    s.add_evidence("prod", "support", "k", "{}", 1, "a", serde_json::json!({}))
        .await
        .unwrap();
    s.add_eval(
        "support",
        1,
        "sha256:1",
        "set",
        "{}",
        1,
        "a",
        serde_json::json!({}),
    )
    .await
    .unwrap();
    for (table, set) in [
        ("readiness_policies", "policy = 'x'"),
        ("readiness_evidence", "record = 'x'"),
        ("eval_records", "record = 'x'"),
    ] {
        let update = format!("UPDATE {table} SET {set}");
        assert!(t.exec(&update, &update).await.is_err(), "{table} update");
        let delete = format!("DELETE FROM {table}");
        assert!(t.exec(&delete, &delete).await.is_err(), "{table} delete");
        assert_eq!(t.count(table).await, 1, "{table}");
    }
}

fn drill(id: &str, running: bool, is_new: bool) -> serin_store::DrillWrite {
    serin_store::DrillWrite {
        id: id.to_owned(),
        env: "prod".to_owned(),
        agent: "support".to_owned(),
        state: format!(r#"{{"running":{running}}}"#),
        running,
        is_new,
    }
}

async fn write_drill_plain(
    s: &Store,
    d: serin_store::DrillWrite,
    at_ms: i64,
) -> Result<Option<serin_store::StoredEnvState>, StoreError> {
    s.write_drill(d, at_ms, "t1", |_| Ok::<_, ()>(None), vec![])
        .await
        .map(|out| out.unwrap())
}

async fn drills_and_releases_exclude_each_other(t: Ctx) {
    let s = &t.store;
    write_drill_plain(s, drill("d1", true, true), 1)
        .await
        .unwrap();
    // One running drill per agent and env.
    let err = write_drill_plain(s, drill("d2", true, true), 2)
        .await
        .unwrap_err();
    assert!(
        matches!(err, StoreError::Conflict(ref m) if m.contains("d1")),
        "{err}"
    );
    // A release cannot start beside it.
    let err = write_plain(s, release("support-prod-1", "{}", true, true), 3)
        .await
        .unwrap_err();
    assert!(
        matches!(err, StoreError::Conflict(ref m) if m.contains("drill")),
        "{err}"
    );
    assert_eq!(s.count_releases("prod", "support").await.unwrap(), 0);
    // Another agent is not affected.
    let mut other = drill("o1", true, true);
    other.agent = "billing".to_owned();
    write_drill_plain(s, other, 3).await.unwrap();
    assert_eq!(s.running_drills().await.unwrap().len(), 2);
    // Finished: a release may start, and then a new drill is refused.
    write_drill_plain(s, drill("d1", false, false), 4)
        .await
        .unwrap();
    let row = s.get_drill("d1").await.unwrap().unwrap();
    assert!(!row.running);
    assert_eq!((row.created_at_ms, row.updated_at_ms), (1, 4));
    write_plain(s, release("support-prod-1", "{}", true, true), 5)
        .await
        .unwrap();
    let err = write_drill_plain(s, drill("d2", true, true), 6)
        .await
        .unwrap_err();
    assert!(
        matches!(err, StoreError::Conflict(ref m) if m.contains("active release")),
        "{err}"
    );
    // Updating an unknown drill is a conflict, and so is reusing an id.
    assert!(
        write_drill_plain(s, drill("nope", false, false), 7)
            .await
            .is_err()
    );
    assert!(
        write_drill_plain(s, drill("d1", false, true), 7)
            .await
            .is_err()
    );
    assert_eq!(s.count_drills("prod", "support").await.unwrap(), 1);
    let list = s.list_drills("prod", "support", 10).await.unwrap();
    assert_eq!(list.len(), 1);
    assert_eq!(list[0].id, "d1");
}

async fn a_refused_drill_env_change_writes_nothing(t: Ctx) {
    let s = &t.store;
    let audits = t.count("audit").await;
    let out = s
        .write_drill(
            drill("d1", true, true),
            1,
            "t1",
            |_| Err::<Option<serin_store::EnvStateChange>, &str>("stable moved"),
            vec![serin_store::NewAudit {
                at_ms: 1,
                actor: "t1".into(),
                action: "drill.start".into(),
                subject: "support/prod".into(),
                details: serde_json::json!({}),
            }],
        )
        .await
        .unwrap();
    assert_eq!(out, Err("stable moved"));
    assert_eq!(t.count("drills").await, 0);
    assert_eq!(t.count("audit").await, audits);
    // And a change that goes through writes a version and its audit entry with the row.
    let stored = s
        .write_drill(
            drill("d1", true, true),
            2,
            "t1",
            |cur| {
                assert!(cur.is_none());
                Ok::<_, ()>(Some(serin_store::EnvStateChange {
                    state: "{}".into(),
                    action: "drill.rollback".into(),
                    subject: "support".into(),
                    details: serde_json::json!({}),
                }))
            },
            vec![],
        )
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(stored.env, "prod");
    assert_eq!(t.count("drills").await, 1);
    assert_eq!(audit_actions(s).await[0], "drill.rollback");
}

async fn identical_policy_reapply_adds_no_row_and_concurrent_applies_get_distinct_versions(t: Ctx) {
    let s = t.store.clone();
    s.apply_policy("prod", "support", "not json", 1, "a")
        .await
        .unwrap();
    let (same, changed) = s
        .apply_policy("prod", "support", "not json", 2, "b")
        .await
        .unwrap();
    assert!(!changed);
    assert_eq!((same.version, same.applied_by.as_str()), (1, "a"));
    assert_eq!(t.count("readiness_policies").await, 1);
    // A policy that is not JSON is audited as a string.
    let entry = &s.list_audit(1, None).await.unwrap()[0];
    assert_eq!(entry.details["policy"], "not json");

    let mut tasks = Vec::new();
    for i in 0..6 {
        let s = s.clone();
        tasks.push(tokio::spawn(async move {
            s.apply_policy("prod", "support", &format!(r#"{{"n":{i}}}"#), 10, "c")
                .await
                .unwrap()
        }));
    }
    let mut versions = BTreeSet::new();
    for task in tasks {
        let (row, changed) = task.await.unwrap();
        assert!(changed);
        assert!(
            versions.insert(row.version),
            "version {} twice",
            row.version
        );
    }
    assert_eq!(versions, (2..=7).collect::<BTreeSet<i64>>());
    assert_eq!(t.count("readiness_policies").await, 7);
    assert!(s.verify_audit().await.unwrap().ok);
    if t.is_pg() {
        for table in ["readiness_policies", "readiness_evidence", "eval_records"] {
            let sql = format!("TRUNCATE {table}");
            assert!(s.execute_unchecked_for_tests(&sql).await.is_err(), "{sql}");
        }
        assert_eq!(t.count("readiness_policies").await, 7);
    }
}

async fn finished_drills_allow_a_new_one_and_list_in_order(t: Ctx) {
    let s = &t.store;
    assert_eq!(s.count_drills("prod", "support").await.unwrap(), 0);
    assert!(s.get_drill("d1").await.unwrap().is_none());
    write_drill_plain(s, drill("d1", true, true), 10)
        .await
        .unwrap();
    let mut dev = drill("x1", true, true);
    dev.env = "dev".to_owned();
    write_drill_plain(s, dev, 15).await.unwrap();
    write_drill_plain(s, drill("d1", false, false), 20)
        .await
        .unwrap();
    // Finished: another drill of the same agent in the same env may run.
    write_drill_plain(s, drill("d2", true, true), 30)
        .await
        .unwrap();
    // A drill cannot be moved to another env by an update.
    let mut moved = drill("d2", false, false);
    moved.env = "dev".to_owned();
    let err = write_drill_plain(s, moved, 35).await.unwrap_err();
    assert!(matches!(err, StoreError::Conflict(_)), "{err}");
    // Restarting the finished one beside the running one is refused, by the store and the index.
    let err = write_drill_plain(s, drill("d1", true, false), 40)
        .await
        .unwrap_err();
    assert!(
        matches!(err, StoreError::Conflict(ref m) if m.contains("d2")),
        "{err}"
    );
    assert!(
        t.exec(
            "UPDATE drills SET running = 1 WHERE id = 'd1'",
            "UPDATE drills SET running = 1 WHERE id = 'd1'",
        )
        .await
        .is_err()
    );
    assert!(!s.get_drill("d1").await.unwrap().unwrap().running);

    let running: Vec<String> = s
        .running_drills()
        .await
        .unwrap()
        .into_iter()
        .map(|d| d.id)
        .collect();
    assert_eq!(running, vec!["x1", "d2"], "oldest first, every env");
    let listed: Vec<(String, bool)> = s
        .list_drills("prod", "support", 10)
        .await
        .unwrap()
        .into_iter()
        .map(|d| (d.id, d.running))
        .collect();
    assert_eq!(
        listed,
        vec![("d2".to_owned(), true), ("d1".to_owned(), false)]
    );
    assert_eq!(s.list_drills("prod", "support", 1).await.unwrap().len(), 1);
    assert_eq!(s.list_drills("prod", "support", 0).await.unwrap().len(), 1);
    assert_eq!(s.count_drills("prod", "support").await.unwrap(), 2);
    assert_eq!(s.count_drills("dev", "support").await.unwrap(), 1);
    let d2 = s.get_drill("d2").await.unwrap().unwrap();
    assert_eq!(
        d2,
        serin_store::DrillRow {
            id: "d2".into(),
            env: "prod".into(),
            agent: "support".into(),
            state: r#"{"running":true}"#.into(),
            running: true,
            created_at_ms: 30,
            updated_at_ms: 30,
        }
    );
}

// ----- env registry ----------------------------------------------------------------------------

async fn envs_are_created_once_audited_and_listed_with_their_policy(t: Ctx) {
    let s = &t.store;
    // dev exists from the start, lenient.
    let dev = s.get_env("dev").await.unwrap().unwrap();
    assert!(!dev.strict);
    assert_eq!(dev.version, None);
    assert!(s.get_env("prod").await.unwrap().is_none());

    let prod = s.create_env("prod", true, 100, "admin-1").await.unwrap();
    assert_eq!(
        (
            prod.name.as_str(),
            prod.strict,
            prod.created_at_ms,
            prod.created_by.as_str()
        ),
        ("prod", true, 100, "admin-1")
    );
    let audit = s.list_audit(10, None).await.unwrap();
    assert_eq!(
        (audit[0].action.as_str(), audit[0].subject.as_str()),
        ("env.create", "prod")
    );
    assert_eq!(audit[0].details["strict"], true);

    // A second create is a conflict, whatever the policy asked, and writes nothing.
    let audits = t.count("audit").await;
    for strict in [true, false] {
        assert!(matches!(
            s.create_env("prod", strict, 101, "admin-2").await,
            Err(StoreError::Conflict(_))
        ));
    }
    assert!(matches!(
        s.create_env("dev", false, 101, "admin-2").await,
        Err(StoreError::Conflict(_))
    ));
    assert_eq!(t.count("audit").await, audits);
    assert!(s.get_env("prod").await.unwrap().unwrap().strict);

    // Concurrent creates of one name: exactly one wins.
    let results = futures_join(s, "staging").await;
    assert_eq!(
        results.iter().filter(|r| r.is_ok()).count(),
        1,
        "{results:?}"
    );

    // The list carries each env's newest state version once it has one.
    let v = s
        .update_env_state("prod", 200, "t", |_| Ok::<_, ()>(change("p1".into())))
        .await
        .unwrap()
        .unwrap();
    let envs = s.registered_envs().await.unwrap();
    assert_eq!(
        envs.iter()
            .map(|e| (e.name.as_str(), e.strict, e.version, e.updated_at_ms))
            .collect::<Vec<_>>(),
        vec![
            ("dev", false, None, None),
            ("prod", true, Some(v.version), Some(200)),
            ("staging", true, None, None),
        ]
    );
    assert!(s.verify_audit().await.unwrap().ok);
}

async fn futures_join(s: &Store, name: &str) -> Vec<Result<serin_store::EnvRecord, StoreError>> {
    let mut handles = Vec::new();
    for i in 0..4 {
        let s = s.clone();
        let name = name.to_owned();
        handles.push(tokio::spawn(async move {
            s.create_env(&name, true, i, "racer").await
        }));
    }
    let mut out = Vec::new();
    for h in handles {
        out.push(h.await.unwrap());
    }
    out
}

async fn envs_survive_reopen_and_reject_raw_delete(t: Ctx) {
    t.store.create_env("qa", false, 5, "admin").await.unwrap();
    assert!(
        t.store
            .execute_unchecked_for_tests("DELETE FROM envs WHERE name = 'qa'")
            .await
            .is_err()
    );
    t.store.close().await;
    let s = t.reopen().await;
    let qa = s.get_env("qa").await.unwrap().unwrap();
    assert_eq!(
        (qa.strict, qa.created_at_ms, qa.created_by.as_str()),
        (false, 5, "admin")
    );
    assert!(s.get_env("dev").await.unwrap().is_some());
    s.close().await;
}

async fn an_old_store_registers_every_env_it_already_used(t: Ctx) {
    let s = &t.store;
    // What a store from before the registry holds: env states and a readiness policy in envs
    // nobody created.
    for (env, at) in [("prod", 30), ("dev", 20), ("prod", 40), ("staging", 50)] {
        s.update_env_state(env, at, "old", |_| {
            Ok::<_, ()>(change(format!("{env}{at}")))
        })
        .await
        .unwrap()
        .unwrap();
    }
    s.apply_policy("canary-only", "support", "require: []", 60, "old")
        .await
        .unwrap();
    // Undo migration 0007, as if this store predated it.
    t.exec(
        "DROP TABLE envs; DELETE FROM _sqlx_migrations WHERE version = 7;",
        "DROP TABLE envs; DELETE FROM _sqlx_migrations WHERE version = 7;",
    )
    .await
    .unwrap();
    t.store.close().await;
    let s = t.reopen().await;
    let envs = s.registered_envs().await.unwrap();
    assert_eq!(
        envs.iter()
            .map(|e| (
                e.name.as_str(),
                e.strict,
                e.created_at_ms,
                e.created_by.as_str()
            ))
            .collect::<Vec<_>>(),
        vec![
            ("canary-only", true, 60, "migration"),
            ("dev", false, 20, "migration"),
            ("prod", true, 30, "migration"),
            ("staging", true, 50, "migration"),
        ]
    );
    assert!(
        envs.iter()
            .filter(|e| e.name == "prod")
            .all(|e| e.version == Some(3))
    );
    s.close().await;
}

// ----- quarantine, durable rollups and dedup -------------------------------------------------

fn monitor_row(candidate: &str, state: &str) -> serin_store::MonitorRow {
    serin_store::MonitorRow {
        env: "prod".into(),
        agent: "support".into(),
        candidate: candidate.into(),
        state: state.into(),
        created_at_ms: 1,
        updated_at_ms: 2,
    }
}

fn rollup_row(minute_ms: i64, data: &str) -> serin_store::RollupRow {
    serin_store::RollupRow {
        env: "prod".into(),
        agent: "support".into(),
        bundle: "support@1".into(),
        arm: "stable".into(),
        minute_ms,
        data: data.into(),
    }
}

/// Merge used by these cases: the stored text, a plus, the delta.
fn concat(stored: &serin_store::RollupRow, delta: &str) -> String {
    format!("{}+{delta}", stored.data)
}

fn ids(env: &str, ids: &[&str]) -> Vec<(String, String)> {
    ids.iter()
        .map(|i| (env.to_owned(), (*i).to_owned()))
        .collect()
}

async fn seen(s: &Store, env: &str, wanted: &[&str], since: i64) -> BTreeSet<String> {
    let wanted: Vec<String> = wanted.iter().map(|w| (*w).to_owned()).collect();
    s.seen_request_ids(env, &wanted, since)
        .await
        .unwrap()
        .into_iter()
        .collect()
}

async fn restart_with_quarantined_rows_returns_them_verbatim_and_keeps_writing(t: Ctx) {
    let s = &t.store;
    s.save_outcomes(
        &[
            monitor_row("support@2", "{}"),
            monitor_row("support@3", "{}"),
        ],
        &[rollup_row(60_000, "{}")],
    )
    .await
    .unwrap();
    write_plain(s, release("r1", r#"{"step":0}"#, true, true), 10)
        .await
        .unwrap();
    // Unreadable for the server, but still text the store must hand back as it is.
    let garbage = "{\"min\": null, \u{1F4A5} not json";
    t.exec(
        &format!(
            "UPDATE guardrail_monitors SET state = '{garbage}' WHERE candidate = 'support@2'; \
             UPDATE releases SET state = '{garbage}' WHERE id = 'r1'; \
             UPDATE outcome_rollups SET data = '{garbage}'"
        ),
        &format!(
            "UPDATE guardrail_monitors SET state = '{garbage}' WHERE candidate = 'support@2'; \
             UPDATE releases SET state = '{garbage}' WHERE id = 'r1'; \
             UPDATE outcome_rollups SET data = '{garbage}'"
        ),
    )
    .await
    .unwrap();
    s.close().await;
    let s = t.reopen().await;
    let monitors = s.load_monitors().await.unwrap();
    assert_eq!(
        monitors
            .iter()
            .map(|m| (m.candidate.as_str(), m.state.as_str()))
            .collect::<Vec<_>>(),
        vec![("support@2", garbage), ("support@3", "{}")]
    );
    let active = s.active_releases().await.unwrap();
    assert_eq!(active.len(), 1);
    assert_eq!(active[0].state, garbage);
    assert_eq!(
        s.rollups("prod", "support", 0).await.unwrap()[0].data,
        garbage
    );
    // The quarantined release can be closed with its text untouched, and the
    // unreadable rollup is handed to the merge as it is.
    write_plain(&s, update("r1", garbage, false, 1), 20)
        .await
        .unwrap();
    assert!(s.active_releases().await.unwrap().is_empty());
    assert_eq!(s.get_release("r1").await.unwrap().unwrap().state, garbage);
    let mut handed = Vec::new();
    s.save_outcome_batch(
        &[monitor_row("support@3", "{\"fresh\":1}")],
        &[rollup_row(60_000, "delta")],
        |stored, delta| {
            handed.push(stored.data.clone());
            delta.to_owned()
        },
        &[],
        0,
        30,
    )
    .await
    .unwrap();
    assert_eq!(handed, vec![garbage.to_owned()]);
    assert_eq!(
        s.rollups("prod", "support", 0).await.unwrap()[0].data,
        "delta"
    );
    assert_eq!(
        s.load_monitors().await.unwrap()[0].state,
        garbage,
        "other rows' writes leave a quarantined monitor alone"
    );
    s.close().await;
}

#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_creates_its_data_dir_0700_and_its_database_files_0600() {
    use std::os::unix::fs::PermissionsExt;
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("nested").join("data");
    let store = Store::open_sqlite(&data).await.unwrap();
    store.bootstrap_admin(1).await.unwrap();
    assert_eq!(mode(&data), 0o700);
    for file in ["serin.db", "serin.db-wal", "serin.db-shm"] {
        let p = data.join(file);
        assert!(p.exists(), "{file} missing");
        assert_eq!(mode(&p), 0o600, "{file}");
    }
    store.close().await;
    // Reopening keeps the data (the pre-created file is a valid empty database only once).
    let store = Store::open_sqlite(&data).await.unwrap();
    assert!(store.bootstrap_admin(2).await.unwrap().is_none());
    store.close().await;
}

async fn outcome_batches_merge_stored_rollups_instead_of_overwriting(t: Ctx) {
    let s = &t.store;
    s.save_outcome_batch(&[], &[rollup_row(60_000, "a")], concat, &[], 0, 1)
        .await
        .unwrap();
    s.close().await;
    // A new handle knows nothing in memory: the stored row is what it merges with.
    let s = t.reopen().await;
    s.save_outcome_batch(
        &[],
        &[rollup_row(60_000, "b"), rollup_row(120_000, "c")],
        concat,
        &[],
        0,
        2,
    )
    .await
    .unwrap();
    let got: Vec<(i64, String)> = s
        .rollups("prod", "support", 0)
        .await
        .unwrap()
        .into_iter()
        .map(|r| (r.minute_ms, r.data))
        .collect();
    assert_eq!(got, vec![(60_000, "a+b".into()), (120_000, "c".into())]);
    s.close().await;
}

async fn request_ids_are_recorded_with_the_batch_and_survive_reopen(t: Ctx) {
    let s = &t.store;
    let long = "x".repeat(4096);
    s.save_outcome_batch(
        &[],
        &[rollup_row(60_000, "a")],
        concat,
        &ids("prod", &["r1", "r2", long.as_str()]),
        0,
        1_000,
    )
    .await
    .unwrap();
    assert_eq!(t.count("outcome_dedup").await, 3);
    s.close().await;
    let s = t.reopen().await;
    assert_eq!(
        seen(&s, "prod", &["r1", "r3", long.as_str()], 0).await,
        BTreeSet::from(["r1".to_owned(), long.clone()])
    );
    // Keyed per env.
    assert!(seen(&s, "dev", &["r1"], 0).await.is_empty());
    // One lookup larger than a statement's chunk.
    let many: Vec<String> = (0..serin_store::DEDUP_CHUNK + 10)
        .map(|i| format!("m{i}"))
        .collect();
    let pairs: Vec<(String, String)> = many
        .iter()
        .map(|i| ("prod".to_owned(), i.clone()))
        .collect();
    s.save_outcome_batch(&[], &[], concat, &pairs, 0, 1_000)
        .await
        .unwrap();
    assert_eq!(
        s.seen_request_ids("prod", &many, 0).await.unwrap().len(),
        many.len()
    );
    s.close().await;
}

async fn a_batch_with_an_already_recorded_request_id_writes_nothing(t: Ctx) {
    let s = &t.store;
    s.save_outcome_batch(
        &[],
        &[rollup_row(60_000, "a")],
        concat,
        &ids("prod", &["r1"]),
        0,
        1,
    )
    .await
    .unwrap();
    let err = s
        .save_outcome_batch(
            &[monitor_row("support@2", "m")],
            &[rollup_row(60_000, "b")],
            concat,
            &ids("prod", &["r2", "r1"]),
            0,
            2,
        )
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Conflict(_)), "{err}");
    assert_eq!(s.rollups("prod", "support", 0).await.unwrap()[0].data, "a");
    assert!(s.load_monitors().await.unwrap().is_empty());
    assert_eq!(t.count("outcome_dedup").await, 1);
}

async fn request_ids_older_than_the_window_are_pruned_and_no_longer_seen(t: Ctx) {
    let s = &t.store;
    s.save_outcome_batch(&[], &[], concat, &ids("prod", &["old"]), 0, 1_000)
        .await
        .unwrap();
    // Not seen once the window has passed, even before it is pruned.
    assert!(seen(s, "prod", &["old"], 1_001).await.is_empty());
    assert_eq!(seen(s, "prod", &["old"], 1_000).await.len(), 1);
    // The next write prunes it, and the same id may be counted again.
    s.save_outcome_batch(
        &[],
        &[],
        concat,
        &ids("prod", &["new", "old"]),
        1_001,
        700_000,
    )
    .await
    .unwrap();
    assert_eq!(t.count("outcome_dedup").await, 2);
    assert_eq!(seen(s, "prod", &["old", "new"], 1_001).await.len(), 2);
}

async fn the_dedup_migration_applies_to_a_store_with_existing_rows(t: Ctx) {
    let s = &t.store;
    s.save_outcomes(
        &[monitor_row("support@2", "{}")],
        &[rollup_row(60_000, "a")],
    )
    .await
    .unwrap();
    write_plain(s, release("r1", "{}", true, true), 10)
        .await
        .unwrap();
    // Back to the store as the previous release left it: no dedup table, migration 6 not run.
    t.exec(
        "DROP TABLE outcome_dedup; DELETE FROM _sqlx_migrations WHERE version = 6",
        "DROP TABLE outcome_dedup; DELETE FROM _sqlx_migrations WHERE version = 6",
    )
    .await
    .unwrap();
    s.close().await;
    let s = t.reopen().await;
    assert_eq!(s.load_monitors().await.unwrap().len(), 1);
    assert_eq!(s.rollups("prod", "support", 0).await.unwrap()[0].data, "a");
    assert_eq!(s.active_releases().await.unwrap().len(), 1);
    s.save_outcome_batch(
        &[],
        &[rollup_row(60_000, "b")],
        concat,
        &ids("prod", &["r1"]),
        0,
        5,
    )
    .await
    .unwrap();
    assert_eq!(
        s.rollups("prod", "support", 0).await.unwrap()[0].data,
        "a+b"
    );
    assert_eq!(seen(&s, "prod", &["r1"], 0).await.len(), 1);
    s.close().await;
}

// ----- audit Merkle tree against a saved head --------------------------------------------------

use serin_core::audit::merkle::{self, Hash, Subtree};

async fn audit_leaf_hashes(s: &Store) -> Vec<Hash> {
    let mut out = Vec::new();
    let mut after = 0;
    loop {
        let page = s.audit_leaves(after, 2).await.unwrap();
        if page.is_empty() {
            return out;
        }
        for leaf in page {
            out.push(merkle::leaf_hash(leaf.canonical.as_bytes()));
            after = leaf.id;
        }
    }
}

/// What a signed head pins (its signature is `serin_core`'s business, tested there).
struct SavedHead {
    size: u64,
    root: Hash,
    pieces: Vec<Subtree>,
}

async fn save_head(s: &Store) -> SavedHead {
    let leaves = audit_leaf_hashes(s).await;
    SavedHead {
        size: leaves.len() as u64,
        root: merkle::root(&leaves),
        pieces: merkle::subtrees(&leaves),
    }
}

/// `Ok` when today's log extends the head; else the first entry id it no longer reproduces.
async fn check_head(s: &Store, head: &SavedHead) -> Result<(), u64> {
    let now = audit_leaf_hashes(s).await;
    let n = usize::try_from(head.size).unwrap();
    if now.len() >= n {
        let proof = merkle::consistency_proof(&now, n).unwrap();
        if merkle::verify_consistency(
            head.size,
            now.len() as u64,
            &head.root,
            &merkle::root(&now),
            &proof,
        ) {
            return Ok(());
        }
    }
    let current = merkle::subtree_hashes(&now, &merkle::subtree_ranges(head.size));
    let (start, size) = merkle::first_divergence(&head.pieces, &current).unwrap();
    assert_eq!(size, 1, "small logs are located to one entry");
    Err(start + 1)
}

fn seeded_entries() -> Vec<NewAudit> {
    (0..6)
        .map(|i| {
            audit(
                &format!("flag.set{i}"),
                &format!("support/prod{i}"),
                100 + i,
            )
        })
        .collect()
}

async fn seed_log(s: &Store) -> Vec<NewAudit> {
    let entries = seeded_entries();
    for e in &entries {
        s.append_audit(e.clone()).await.unwrap();
    }
    entries
}

/// Rewrites the log as someone with write access to the database could: every row deleted, then
/// `entries` appended through the store itself, which builds a flawless hash chain.
async fn rewrite_log(t: &Ctx, entries: &[NewAudit]) {
    t.exec(
        "DROP TRIGGER IF EXISTS audit_no_update; DROP TRIGGER IF EXISTS audit_no_delete;",
        "DROP TRIGGER IF EXISTS audit_no_update_delete ON audit;",
    )
    .await
    .unwrap();
    t.store
        .execute_unchecked_for_tests("DELETE FROM audit")
        .await
        .unwrap();
    for e in entries {
        t.store.append_audit(e.clone()).await.unwrap();
    }
    let chain = t.store.verify_audit().await.unwrap();
    assert!(chain.ok, "the rewritten chain verifies: {chain:?}");
}

async fn audit_leaves_are_the_chained_canonical_entries_in_order(t: Ctx) {
    let s = &t.store;
    assert!(s.audit_leaves(0, 10).await.unwrap().is_empty());
    seed_log(s).await;
    let leaves = s.audit_leaves(0, 1000).await.unwrap();
    assert_eq!(
        leaves.iter().map(|l| l.id).collect::<Vec<_>>(),
        [1, 2, 3, 4, 5, 6]
    );
    assert_eq!(
        leaves[0].canonical,
        r#"{"action":"flag.set0","actor":"tok123","at_ms":100,"details":{"n":1,"nested":{"a":true,"b":[1.5,null]},"reason":"because"},"id":1,"subject":"support/prod0"}"#
    );
    // The chain hashes exactly these bytes.
    let mut entries = s.list_audit(100, None).await.unwrap();
    entries.reverse();
    for (leaf, entry) in leaves.iter().zip(&entries) {
        let mut h = sha2::Sha256::new();
        h.update(entry.prev_hash.as_bytes());
        h.update(leaf.canonical.as_bytes());
        assert_eq!(hex::encode(h.finalize()), entry.hash, "entry {}", leaf.id);
    }
    let page = s.audit_leaves(2, 2).await.unwrap();
    assert_eq!(page.iter().map(|l| l.id).collect::<Vec<_>>(), [3, 4]);
    assert_eq!(s.audit_leaves(6, 10).await.unwrap(), vec![]);
}

async fn signed_head_holds_while_the_log_only_grows(t: Ctx) {
    let s = &t.store;
    let empty = save_head(s).await;
    let entries = seed_log(s).await;
    let head = save_head(s).await;
    assert_eq!(head.size, 6);
    assert_eq!(check_head(s, &empty).await, Ok(()));
    assert_eq!(check_head(s, &head).await, Ok(()));
    s.append_audit(audit("deploy", "support/prod", 200))
        .await
        .unwrap();
    assert_eq!(check_head(s, &head).await, Ok(()));
    // Restoring the same rows (same content, same ids) reproduces the head exactly.
    rewrite_log(&t, &entries).await;
    assert_eq!(check_head(s, &head).await, Ok(()));
}

async fn head_catches_a_row_edited_with_the_chain_rehashed_after_it(t: Ctx) {
    let s = &t.store;
    seed_log(s).await;
    let head = save_head(s).await;
    drop_audit_triggers(&t).await;
    s.execute_unchecked_for_tests("UPDATE audit SET actor = 'mallory' WHERE id = 3")
        .await
        .unwrap();
    // Re-hash entries 3.. from their (edited) canonical bytes, as the store would have.
    let mut prev = s.list_audit(1, Some(3)).await.unwrap().remove(0).hash;
    for leaf in s.audit_leaves(2, 100).await.unwrap() {
        let mut h = sha2::Sha256::new();
        h.update(prev.as_bytes());
        h.update(leaf.canonical.as_bytes());
        let hash = hex::encode(h.finalize());
        s.execute_unchecked_for_tests(&format!(
            "UPDATE audit SET prev_hash = '{prev}', hash = '{hash}' WHERE id = {}",
            leaf.id
        ))
        .await
        .unwrap();
        prev = hash;
    }
    let chain = s.verify_audit().await.unwrap();
    assert!(chain.ok, "the chain alone cannot tell: {chain:?}");
    assert_eq!(check_head(s, &head).await, Err(3));
}

async fn head_catches_the_newest_rows_deleted(t: Ctx) {
    let s = &t.store;
    let entries = seed_log(s).await;
    let head = save_head(s).await;
    drop_audit_triggers(&t).await;
    s.execute_unchecked_for_tests("DELETE FROM audit WHERE id >= 5")
        .await
        .unwrap();
    assert!(
        s.verify_audit().await.unwrap().ok,
        "the chain alone cannot tell"
    );
    assert_eq!(check_head(s, &head).await, Err(5));
    // Appending fresh rows in their place does not help.
    for e in entries.iter().take(2) {
        s.append_audit(e.clone()).await.unwrap();
    }
    assert_eq!(check_head(s, &head).await, Err(5));
}

async fn head_catches_a_row_inserted_in_the_middle(t: Ctx) {
    let s = &t.store;
    let mut entries = seed_log(s).await;
    let head = save_head(s).await;
    entries.insert(3, audit("token.create", "backdoor", 103));
    rewrite_log(&t, &entries).await;
    assert_eq!(check_head(s, &head).await, Err(4));
}

async fn head_catches_reordered_rows(t: Ctx) {
    let s = &t.store;
    let mut entries = seed_log(s).await;
    let head = save_head(s).await;
    entries.swap(1, 2);
    rewrite_log(&t, &entries).await;
    assert_eq!(check_head(s, &head).await, Err(2));
}

async fn head_catches_a_truncated_log(t: Ctx) {
    let s = &t.store;
    seed_log(s).await;
    let head = save_head(s).await;
    rewrite_log(&t, &[]).await;
    assert_eq!(check_head(s, &head).await, Err(1));
    // A new history of the same length is a different history.
    let mut forged = seeded_entries();
    forged[0].actor = "mallory".to_owned();
    rewrite_log(&t, &forged).await;
    assert_eq!(check_head(s, &head).await, Err(1));
}

// ----- the outcome journal (shared evidence across replicas) --------------------------------

/// Appends one journalled batch the way a replica that does not lead does.
async fn journal(
    s: &Store,
    events: &str,
    request_ids: &[&str],
    at_ms: i64,
) -> Result<Option<i64>, StoreError> {
    s.store_outcome_batch(
        serin_store::BatchEvidence::Journal { events },
        &[rollup_row(60_000, "d")],
        concat,
        &ids("prod", request_ids),
        0,
        at_ms,
    )
    .await
}

async fn journal_appends_read_in_order_past_the_cursor_and_only_the_leader_moves_it(t: Ctx) {
    let s = &t.store;
    assert_eq!(s.journal_pending(10).await.unwrap(), (0, Vec::new()));
    let first = journal(s, "[1]", &["r1"], 100).await.unwrap().unwrap();
    let second = journal(s, "[2]", &["r2"], 90).await.unwrap().unwrap();
    let third = journal(s, "[]", &[], 110).await.unwrap().unwrap();
    assert!(first < second && second < third, "{first} {second} {third}");
    // The batch's dedup keys and rollup delta went in with it.
    assert_eq!(seen(s, "prod", &["r1", "r2"], 0).await.len(), 2);
    let rollups = s.rollups("prod", "support", 0).await.unwrap();
    assert_eq!(rollups[0].data, "d+d+d");
    let (cursor, rows) = s.journal_pending(2).await.unwrap();
    assert_eq!(cursor, 0);
    assert_eq!(
        rows,
        vec![
            serin_store::JournalRow {
                id: first,
                received_ms: 100,
                events: "[1]".into()
            },
            serin_store::JournalRow {
                id: second,
                received_ms: 90,
                events: "[2]".into()
            },
        ]
    );
    let mut sessions = Vec::new();
    let epoch = lead(&t, "a:1", 10, &mut sessions).await;
    let marks = s.journal_marks().await.unwrap();
    assert_eq!((marks.consumed, marks.behind), (0, 3));
    // The leader stores what the first two produced and the cursor, together.
    s.consume_journal(&[monitor_row("support@2", "after-2")], second, epoch)
        .await
        .unwrap();
    let (cursor, rows) = s.journal_pending(10).await.unwrap();
    assert_eq!(cursor, second);
    assert_eq!(rows.iter().map(|r| r.id).collect::<Vec<_>>(), vec![third]);
    assert_eq!(s.load_monitors().await.unwrap()[0].state, "after-2");
    // Under any other epoch neither the monitors nor the cursor move.
    let err = s
        .consume_journal(&[monitor_row("support@2", "deposed")], third, epoch + 1)
        .await
        .unwrap_err();
    assert!(
        matches!(err, StoreError::Fenced { epoch: e, current } if e == epoch + 1 && current == epoch),
        "{err}"
    );
    assert_eq!(s.journal_pending(10).await.unwrap().0, second);
    assert_eq!(s.load_monitors().await.unwrap()[0].state, "after-2");
    // The cursor never moves back.
    s.consume_journal(&[], first, epoch).await.unwrap();
    assert_eq!(s.journal_pending(10).await.unwrap().0, second);
    s.consume_journal(&[], third, epoch).await.unwrap();
    let marks = s.journal_marks().await.unwrap();
    assert_eq!((marks.consumed, marks.behind), (third, 0));
    // Everything survives a reopen.
    let again = t.reopen().await;
    assert_eq!(
        again.journal_pending(10).await.unwrap(),
        (third, Vec::new())
    );
    again.close().await;
    if t.is_pg() {
        // Appends are announced to listeners of this store.
        let mut l = s
            .listen_outcome_journal("contract-journal")
            .await
            .unwrap()
            .unwrap();
        journal(s, "[4]", &["r4"], 120).await.unwrap();
        tokio::time::timeout(std::time::Duration::from_secs(5), l.recv())
            .await
            .expect("an append is announced")
            .unwrap();
    } else {
        assert!(
            s.listen_outcome_journal("contract-journal")
                .await
                .unwrap()
                .is_none()
        );
    }
    for session in sessions {
        session.close().await;
    }
}

async fn a_fenced_or_duplicate_batch_writes_nothing(t: Ctx) {
    let s = &t.store;
    let mut sessions = Vec::new();
    let epoch = lead(&t, "a:1", 10, &mut sessions).await;
    let rows = [monitor_row("support@2", "leader")];
    s.store_outcome_batch(
        serin_store::BatchEvidence::Monitors {
            rows: &rows,
            epoch: Some(epoch),
        },
        &[rollup_row(60_000, "d")],
        concat,
        &ids("prod", &["r1"]),
        0,
        100,
    )
    .await
    .unwrap();
    let before = (
        t.count("outcome_dedup").await,
        t.count("outcome_journal").await,
        s.rollups("prod", "support", 0).await.unwrap(),
    );
    let stale = [monitor_row("support@2", "deposed")];
    let err = s
        .store_outcome_batch(
            serin_store::BatchEvidence::Monitors {
                rows: &stale,
                epoch: Some(epoch - 1),
            },
            &[rollup_row(60_000, "d")],
            concat,
            &ids("prod", &["r2"]),
            0,
            110,
        )
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Fenced { .. }), "{err}");
    // A journalled retry of a counted request id is a conflict, and appends nothing.
    let err = journal(s, "[1]", &["r3", "r1"], 120).await.unwrap_err();
    assert!(matches!(err, StoreError::Conflict(_)), "{err}");
    let after = (
        t.count("outcome_dedup").await,
        t.count("outcome_journal").await,
        s.rollups("prod", "support", 0).await.unwrap(),
    );
    assert_eq!(after, before);
    assert_eq!(s.load_monitors().await.unwrap()[0].state, "leader");
    for session in sessions {
        session.close().await;
    }
}

async fn consumed_journal_rows_are_pruned_after_their_hour_and_unconsumed_ones_never(t: Ctx) {
    let s = &t.store;
    let old = journal(s, "[1]", &["r1"], 1_000).await.unwrap().unwrap();
    let recent = journal(s, "[2]", &["r2"], 5_000).await.unwrap().unwrap();
    let unconsumed_old = journal(s, "[3]", &["r3"], 1_000).await.unwrap().unwrap();
    let mut sessions = Vec::new();
    let epoch = lead(&t, "a:1", 10, &mut sessions).await;
    s.consume_journal(&[], recent, epoch).await.unwrap();
    assert_eq!(s.prune_journal(2_000).await.unwrap(), 1);
    let left: Vec<i64> = s
        .journal_pending(10)
        .await
        .unwrap()
        .1
        .iter()
        .map(|r| r.id)
        .collect();
    assert_eq!(left, vec![unconsumed_old]);
    assert_eq!(t.count("outcome_journal").await, 2);
    assert_eq!(s.prune_journal(i64::MAX).await.unwrap(), 1);
    assert_eq!(t.count("outcome_journal").await, 1);
    // Ids are never reused after a prune, so the cursor cannot skip a new row.
    let next = journal(s, "[4]", &["r4"], 6_000).await.unwrap().unwrap();
    assert!(next > unconsumed_old && old < recent);
    for session in sessions {
        session.close().await;
    }
}

async fn monitors_changed_since_returns_only_rows_written_after_a_revision(t: Ctx) {
    let s = &t.store;
    let start = s.monitors_changed_since(0).await.unwrap();
    assert_eq!((start.rev, start.rows.len()), (0, 0));
    s.save_outcomes(
        &[monitor_row("support@2", "a"), monitor_row("support@3", "b")],
        &[],
    )
    .await
    .unwrap();
    let first = s.monitors_changed_since(0).await.unwrap();
    assert_eq!(first.rows.len(), 2);
    assert!(first.rev > 0);
    let none = s.monitors_changed_since(first.rev).await.unwrap();
    assert_eq!((none.rev, none.rows.len()), (first.rev, 0));
    // Rollups alone raise nothing.
    s.save_outcomes(&[], &[rollup_row(60_000, "x")])
        .await
        .unwrap();
    assert_eq!(s.journal_marks().await.unwrap().monitors_rev, first.rev);
    s.save_outcomes(&[monitor_row("support@3", "b2")], &[])
        .await
        .unwrap();
    let changed = s.monitors_changed_since(first.rev).await.unwrap();
    assert_eq!(
        changed
            .rows
            .iter()
            .map(|r| (r.candidate.as_str(), r.state.as_str()))
            .collect::<Vec<_>>(),
        vec![("support@3", "b2")]
    );
    assert_eq!(
        s.load_monitor("prod", "support", "support@3")
            .await
            .unwrap()
            .unwrap()
            .state,
        "b2"
    );
    assert!(
        s.load_monitor("prod", "support", "support@9")
            .await
            .unwrap()
            .is_none()
    );
}

/// Outcome events as varied as the format allows: none at all, the smallest, and the largest
/// numbers, optional fields absent and present, unicode and control characters in strings.
fn extreme_events(seed: u64) -> Vec<serin_core::outcome::OutcomeEvent> {
    use rand::{Rng, SeedableRng};
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let count = rng.random_range(0..6);
    let texts = [
        "",
        "a",
        "ünï\u{0}cödé \"quoted\" \\ / \n\t🦀",
        &"x".repeat(4096),
    ];
    (0..count)
        .map(|i| {
            let text = texts[rng.random_range(0..texts.len())];
            let versions = [0, 1, u64::MAX, i64::MAX as u64];
            let ats = [None, Some(0), Some(i64::MIN), Some(i64::MAX)];
            // Only floats serde_json reads back bit for bit without its `float_roundtrip`
            // feature (ingestion refuses non-finite and absurd values before they get here).
            let floats = [0.0, 1.5, 123_456.75, 1e15];
            let arm = ["stable", "canary", "killed"][rng.random_range(0..3)];
            let mut event = serde_json::json!({
                "request_id": format!("{text}-{i}"),
                "agent": text,
                "env": "prod",
                "snapshot_version": versions[rng.random_range(0..versions.len())],
                "bundle": format!("{text}@{i}"),
                "arm": arm,
                "latency_ms": floats[rng.random_range(0..floats.len())],
                "cost_usd": floats[rng.random_range(0..floats.len())],
                "refused": rng.random_bool(0.5),
            });
            if let Some(at) = ats[rng.random_range(0..ats.len())] {
                event["at_ms"] = at.into();
            }
            if rng.random_bool(0.5) {
                event["tenant"] = text.into();
                event["user"] = text.into();
                event["instance"] = text.into();
                event["trace_id"] = text.into();
                event["stages"] = serde_json::json!({ text: 0.0, "b": 1e15 });
            }
            serde_json::from_value(event).unwrap()
        })
        .collect()
}

async fn journal_rows_round_trip_outcome_events_with_empty_and_extreme_values(t: Ctx) {
    let s = &t.store;
    let received = [0, 1, -1, i64::MIN, i64::MAX];
    for seed in 0..40u64 {
        let events = extreme_events(seed);
        let text = serde_json::to_string(&events).unwrap();
        let at = received[(seed as usize) % received.len()];
        let id = s
            .store_outcome_batch(
                serin_store::BatchEvidence::Journal { events: &text },
                &[],
                concat,
                &ids("prod", &[]),
                i64::MIN,
                at,
            )
            .await
            .unwrap()
            .unwrap();
        let (_, rows) = s.journal_pending(1_000).await.unwrap();
        let row = rows.iter().find(|r| r.id == id).unwrap();
        assert_eq!((row.received_ms, row.events.as_str()), (at, text.as_str()));
        let back: Vec<serin_core::outcome::OutcomeEvent> =
            serde_json::from_str(&row.events).unwrap();
        assert_eq!(back, events, "seed {seed}");
    }
}

fn sdk_row(env: &str, instance: &str, replica: &str, seen: i64) -> serin_store::SdkInstanceRow {
    serin_store::SdkInstanceRow {
        env: env.into(),
        instance: instance.into(),
        replica_id: replica.into(),
        token_id: "tok".into(),
        sdk: Some("serin-rust/0.1.0".into()),
        connected: true,
        applied_version: Some(3),
        applied_at_ms: Some(seen - 1),
        last_seen_ms: seen,
        region: Some("eu-west".into()),
        pool: None,
    }
}

async fn sdk_instances_upsert_list_expire_forget_and_prune(t: Ctx) {
    let s = &t.store;
    assert!(s.fleet_sdk_instances("prod", 0).await.unwrap().is_empty());
    let a = sdk_row("prod", "a", "r1", 1_000);
    let mut b = sdk_row("prod", "b", "r2", 2_000);
    let dev = sdk_row("dev", "a", "r1", 1_000);
    s.publish_sdk_instances(&[b.clone(), a.clone(), dev.clone()], 0)
        .await
        .unwrap();
    s.publish_sdk_instances(&[], 0).await.unwrap();
    assert_eq!(
        s.fleet_sdk_instances("prod", 0).await.unwrap(),
        vec![a.clone(), b.clone()]
    );
    // Rows not seen since the cutoff are left out (expired).
    assert_eq!(
        s.fleet_sdk_instances("prod", 1_001).await.unwrap(),
        vec![b.clone()]
    );

    // Only the published (changed) rows are rewritten; the others keep what they held.
    b.applied_version = Some(9);
    b.applied_at_ms = Some(2_500);
    b.sdk = None;
    b.last_seen_ms = 2_600;
    s.publish_sdk_instances(std::slice::from_ref(&b), 0)
        .await
        .unwrap();
    assert_eq!(
        s.fleet_sdk_instances("prod", 0).await.unwrap(),
        vec![a.clone(), b.clone()]
    );

    // b moved to r3: r3's open stream replaces r2's row, and r2's late close does not hide it
    // while r3 keeps it fresh; once r3's row is stale, the close is taken.
    let moved = serin_store::SdkInstanceRow {
        replica_id: "r3".into(),
        last_seen_ms: 3_000,
        ..b.clone()
    };
    s.publish_sdk_instances(std::slice::from_ref(&moved), 0)
        .await
        .unwrap();
    let late_close = serin_store::SdkInstanceRow {
        connected: false,
        last_seen_ms: 3_100,
        ..b.clone()
    };
    s.publish_sdk_instances(std::slice::from_ref(&late_close), 2_000)
        .await
        .unwrap();
    assert_eq!(s.sdk_instance("prod", "b").await.unwrap(), Some(moved));
    s.publish_sdk_instances(std::slice::from_ref(&late_close), 3_001)
        .await
        .unwrap();
    assert_eq!(
        s.sdk_instance("prod", "b").await.unwrap(),
        Some(late_close.clone())
    );
    assert_eq!(s.sdk_instance("prod", "zz").await.unwrap(), None);

    // A refresh marks only the given replica's connected rows seen, in every env.
    assert_eq!(s.refresh_sdk_instances("r1", 3_500).await.unwrap(), 2);
    assert_eq!(s.refresh_sdk_instances("nobody", 3_500).await.unwrap(), 0);
    assert_eq!(
        s.sdk_instance("prod", "a")
            .await
            .unwrap()
            .unwrap()
            .last_seen_ms,
        3_500
    );
    assert_eq!(
        s.sdk_instance("prod", "b").await.unwrap(),
        Some(late_close.clone())
    );
    assert_eq!(s.refresh_sdk_instances("r2", 3_600).await.unwrap(), 0);

    // A negative version is refused, and nothing of the batch is written.
    let bad = serin_store::SdkInstanceRow {
        applied_version: Some(-1),
        ..sdk_row("prod", "c", "r1", 4_000)
    };
    let err = s
        .publish_sdk_instances(&[sdk_row("prod", "d", "r1", 4_000), bad], 0)
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Invalid(_)), "{err}");
    assert_eq!(s.fleet_sdk_instances("prod", 0).await.unwrap().len(), 2);
    // Operational state: nothing audited.
    assert_eq!(t.count("audit").await, 0);

    // Revoking a token deletes its rows, in every env.
    let other = serin_store::SdkInstanceRow {
        token_id: "other".into(),
        ..sdk_row("prod", "e", "r1", 4_000)
    };
    s.publish_sdk_instances(std::slice::from_ref(&other), 0)
        .await
        .unwrap();
    assert_eq!(s.forget_sdk_token("tok").await.unwrap(), 3);
    assert_eq!(s.forget_sdk_token("tok").await.unwrap(), 0);
    assert_eq!(
        s.fleet_sdk_instances("prod", 0).await.unwrap(),
        vec![other.clone()]
    );

    // Pruning deletes only rows last seen before the cutoff, and survives a reopen.
    s.publish_sdk_instances(std::slice::from_ref(&dev), 0)
        .await
        .unwrap();
    assert_eq!(s.prune_sdk_instances(1_000).await.unwrap(), 0);
    assert_eq!(s.prune_sdk_instances(1_001).await.unwrap(), 1);
    let again = t.reopen().await;
    assert_eq!(
        again.fleet_sdk_instances("prod", 0).await.unwrap(),
        vec![other]
    );
    assert!(
        again
            .fleet_sdk_instances("dev", 0)
            .await
            .unwrap()
            .is_empty()
    );
    again.close().await;
}

async fn sdk_instance_rows_round_trip_extreme_values(t: Ctx) {
    let s = &t.store;
    let max = serin_store::SdkInstanceRow {
        env: "e-\u{1F980}-'\"; DROP TABLE sdk_instances; --".into(),
        instance: "i\u{00E9}-\u{2603}".repeat(60),
        replica_id: String::new(),
        token_id: "t\\n\"".into(),
        sdk: Some("s".repeat(500)),
        connected: true,
        applied_version: Some(i64::MAX),
        applied_at_ms: Some(i64::MIN),
        last_seen_ms: i64::MAX,
        region: Some("r-\u{1F980}'\"".repeat(40)),
        pool: Some(String::new()),
    };
    let min = serin_store::SdkInstanceRow {
        env: max.env.clone(),
        instance: String::new(),
        replica_id: "r".into(),
        token_id: String::new(),
        sdk: None,
        connected: false,
        applied_version: Some(0),
        applied_at_ms: None,
        last_seen_ms: i64::MIN,
        region: None,
        pool: Some("p".repeat(128)),
    };
    let none = serin_store::SdkInstanceRow {
        instance: "n".into(),
        applied_version: None,
        applied_at_ms: Some(i64::MAX),
        last_seen_ms: 0,
        ..min.clone()
    };
    s.publish_sdk_instances(&[max.clone(), min.clone(), none.clone()], i64::MIN)
        .await
        .unwrap();
    assert_eq!(
        s.fleet_sdk_instances(&max.env, i64::MIN).await.unwrap(),
        vec![min.clone(), max.clone(), none]
    );
    assert_eq!(
        s.sdk_instance(&max.env, &max.instance).await.unwrap(),
        Some(max)
    );
}

// ----- side-effect ledger ------------------------------------------------------------------------

fn to_row(e: &serin_core::ledger::Effect) -> serin_store::EffectRow {
    serin_store::EffectRow {
        key: e.key.clone(),
        agent: e.agent.clone(),
        bundle: e.bundle,
        request_id: e.request_id.clone(),
        tool: e.tool.clone(),
        args_digest: e.args_digest.clone(),
        timeout_ms: e.timeout_ms,
        status: e.status.as_str().to_owned(),
        detail: e.detail.clone(),
        created_at_ms: e.created_at_ms,
        created_by: e.created_by.clone(),
        resolved_at_ms: e.resolved_at_ms,
        deadline_ms: e.deadline_ms(),
    }
}

fn from_row(r: &serin_store::EffectRow) -> serin_core::ledger::Effect {
    serin_core::ledger::Effect {
        key: r.key.clone(),
        agent: r.agent.clone(),
        bundle: r.bundle,
        request_id: r.request_id.clone(),
        tool: r.tool.clone(),
        args_digest: r.args_digest.clone(),
        timeout_ms: r.timeout_ms,
        status: serin_core::ledger::EffectStatus::parse(&r.status).unwrap(),
        detail: r.detail.clone(),
        created_at_ms: r.created_at_ms,
        created_by: r.created_by.clone(),
        resolved_at_ms: r.resolved_at_ms,
    }
}

fn intent_row(key: &str, bundle: i64, args: &str, at_ms: i64) -> serin_store::EffectRow {
    let intent = serin_core::ledger::EffectIntent {
        key: key.into(),
        agent: "support".into(),
        bundle,
        request_id: format!("req-{key}"),
        tool: "refund".into(),
        args_digest: args.into(),
        timeout_ms: Some(1000),
    };
    to_row(&serin_core::ledger::Effect::open(
        &intent,
        at_ms,
        "token:sdk",
    ))
}

async fn resolve(
    s: &Store,
    key: &str,
    status: serin_core::ledger::EffectStatus,
    at_ms: i64,
) -> serin_store::Resolved<serin_core::ledger::LedgerError> {
    s.resolve_effect(key, at_ms, "token:sdk", |row| {
        Ok(from_row(row)
            .resolve(status, Some("why"), at_ms)?
            .map(|e| to_row(&e)))
    })
    .await
    .unwrap()
}

async fn actions(s: &Store) -> Vec<String> {
    let mut a: Vec<String> = s
        .list_audit(1000, None)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.action)
        .collect();
    a.reverse();
    a
}

async fn ledger_intents_are_idempotent_and_a_reused_key_conflicts(t: Ctx) {
    let s = &t.store;
    let row = intent_row("k1", 2, "sha256:a", 100);
    let (first, created) = s.insert_effect(&row, "token:sdk").await.unwrap();
    assert!(created);
    assert_eq!(first, row);
    // A retry later, from another actor: the earlier record, nothing written.
    let mut retry = intent_row("k1", 2, "sha256:a", 999);
    retry.created_by = "token:other".into();
    let (again, created) = s.insert_effect(&retry, "token:other").await.unwrap();
    assert!(!created);
    assert_eq!(again, row);
    let reused = intent_row("k1", 2, "sha256:b", 100);
    let err = s.insert_effect(&reused, "token:sdk").await.unwrap_err();
    assert!(matches!(err, StoreError::Conflict(_)), "{err}");
    assert_eq!(t.count("effects").await, 1);
    assert_eq!(actions(s).await, vec!["effect.intent"]);
    assert_eq!(s.get_effect("k1").await.unwrap(), Some(row));
    assert_eq!(s.get_effect("nope").await.unwrap(), None);
}

async fn ledger_results_settle_once_in_one_audited_tx(t: Ctx) {
    use serin_core::ledger::EffectStatus as S;
    use serin_store::Resolved;
    let s = &t.store;
    s.insert_effect(&intent_row("k1", 2, "a", 100), "token:sdk")
        .await
        .unwrap();
    assert!(matches!(
        resolve(s, "missing", S::Committed, 200).await,
        Resolved::NoSuchKey
    ));
    let Resolved::Done { row, changed } = resolve(s, "k1", S::Committed, 200).await else {
        panic!("not done")
    };
    assert!(changed);
    assert_eq!(
        (row.status.as_str(), row.resolved_at_ms),
        ("committed", Some(200))
    );
    assert_eq!(row.detail.as_deref(), Some("why"));
    let Resolved::Done { row: same, changed } = resolve(s, "k1", S::Committed, 300).await else {
        panic!("not done")
    };
    assert!(!changed);
    assert_eq!(same.resolved_at_ms, Some(200), "a repeat changes nothing");
    let Resolved::Refused(e) = resolve(s, "k1", S::Failed, 300).await else {
        panic!("a different result was accepted")
    };
    assert_eq!(e.code(), "result_conflict");
    assert_eq!(
        s.get_effect("k1").await.unwrap().unwrap().status,
        "committed"
    );
    assert_eq!(actions(s).await, vec!["effect.intent", "effect.result"]);
    // A store error inside the rule's write leaves nothing behind: an update naming another
    // key is refused and the transaction rolled back.
    let err = s
        .resolve_effect("k1", 400, "t", |row| {
            let mut next = row.clone();
            next.key = "other".into();
            Ok::<_, ()>(Some(next))
        })
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Invalid(_)));
    assert_eq!(actions(s).await.len(), 2);
    let v = s.verify_audit().await.unwrap();
    assert!(v.ok, "{v:?}");
}

async fn ledger_sweep_marks_only_overdue_intents_unknown(t: Ctx) {
    let s = &t.store;
    // Deadlines 1100, 1200, 1300 (timeout 1000 ms).
    for (i, key) in ["a", "b", "c"].iter().enumerate() {
        s.insert_effect(&intent_row(key, 1, "x", 100 * (i as i64 + 1)), "t")
            .await
            .unwrap();
    }
    // `b` got its answer in time: the sweep must leave it alone.
    resolve(s, "b", serin_core::ledger::EffectStatus::Failed, 150).await;
    let expire = |r: &serin_store::EffectRow| from_row(r).expire(1250).map(|e| to_row(&e));
    let swept = s.expire_effects(1250, 100, "sweep", expire).await.unwrap();
    assert_eq!(
        swept.iter().map(|r| r.key.as_str()).collect::<Vec<_>>(),
        ["a"]
    );
    assert_eq!(swept[0].status, "unknown");
    assert_eq!(swept[0].resolved_at_ms, Some(1250));
    assert_eq!(s.get_effect("b").await.unwrap().unwrap().status, "failed");
    assert_eq!(s.get_effect("c").await.unwrap().unwrap().status, "intent");
    // Nothing due: nothing written, not even audit.
    let before = actions(s).await.len();
    assert!(
        s.expire_effects(1250, 100, "sweep", expire)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(actions(s).await.len(), before);
    assert_eq!(actions(s).await.last().unwrap(), "effect.expire");
    // The limit bounds one sweep.
    for key in ["d", "e", "f"] {
        s.insert_effect(&intent_row(key, 1, "x", 0), "t")
            .await
            .unwrap();
    }
    let expire = |r: &serin_store::EffectRow| from_row(r).expire(5000).map(|e| to_row(&e));
    assert_eq!(
        s.expire_effects(5000, 2, "sweep", expire)
            .await
            .unwrap()
            .len(),
        2
    );
    assert_eq!(
        s.expire_effects(5000, 100, "sweep", expire)
            .await
            .unwrap()
            .len(),
        2
    );
}

async fn ledger_lists_by_agent_bundle_and_status_and_rows_round_trip_extremes(t: Ctx) {
    let s = &t.store;
    for (key, bundle, at) in [("b1", 1, 5), ("b2-x", 2, 3), ("b2-y", 2, 4)] {
        s.insert_effect(&intent_row(key, bundle, "x", at), "t")
            .await
            .unwrap();
    }
    resolve(s, "b2-y", serin_core::ledger::EffectStatus::Committed, 9).await;
    let keys =
        |rows: Vec<serin_store::EffectRow>| rows.into_iter().map(|r| r.key).collect::<Vec<_>>();
    assert_eq!(
        keys(s.list_effects("support", 2, None, 100).await.unwrap()),
        ["b2-x", "b2-y"]
    );
    assert_eq!(
        keys(
            s.list_effects("support", 2, Some("committed"), 100)
                .await
                .unwrap()
        ),
        ["b2-y"]
    );
    assert_eq!(
        keys(
            s.list_effects("support", 2, Some("unknown"), 100)
                .await
                .unwrap()
        ),
        Vec::<String>::new()
    );
    assert_eq!(
        keys(s.list_effects("support", 2, None, 1).await.unwrap()),
        ["b2-x"]
    );
    assert!(
        s.list_effects("other", 2, None, 100)
            .await
            .unwrap()
            .is_empty()
    );

    // Extreme values read back exactly, on both backends.
    let extreme = serin_store::EffectRow {
        key: "k".repeat(200),
        agent: "a".into(),
        bundle: i64::MAX,
        request_id: "é\u{1F600}\"'\\".into(),
        tool: String::new(),
        args_digest: "x".repeat(10_000),
        timeout_ms: i64::MAX,
        status: "unknown".into(),
        detail: Some(String::new()),
        created_at_ms: i64::MIN,
        created_by: "token:t".into(),
        resolved_at_ms: Some(i64::MAX),
        deadline_ms: i64::MAX,
    };
    s.insert_effect(&extreme, "t").await.unwrap();
    assert_eq!(
        s.get_effect(&extreme.key).await.unwrap(),
        Some(extreme.clone())
    );
    let again = t.reopen().await;
    assert_eq!(
        again
            .list_effects("a", i64::MAX, Some("unknown"), 10)
            .await
            .unwrap(),
        vec![extreme]
    );
    // The schema refuses a status the ledger does not have.
    let mut bad = intent_row("bad", 1, "x", 1);
    bad.status = "maybe".into();
    assert!(s.insert_effect(&bad, "t").await.is_err());
    assert!(s.get_effect("bad").await.unwrap().is_none());
}

fn approval(
    id: u128,
    kind: serin_core::approvals::ApprovalKind,
    at_ms: i64,
) -> serin_core::approvals::ApprovalRequest {
    use serin_core::approvals::*;
    ApprovalRequest {
        id: new_id(id),
        kind,
        env: "prod".into(),
        agent: "support".into(),
        bundle: Some(2),
        requested_by: "token:dep".into(),
        reason: "adds refunds".into(),
        details: serde_json::json!({"tool": "refund"}),
        status: ApprovalStatus::Pending,
        created_at_ms: at_ms,
        expires_at_ms: at_ms + 1_000,
        decided_by: None,
        decided_at_ms: None,
        decision_reason: None,
        used_at_ms: None,
        snapshot_version: Some(7),
        overdue: false,
        counted: Counted::default(),
    }
}

fn approval_row(r: &serin_core::approvals::ApprovalRequest) -> serin_store::ApprovalRow {
    serin_store::ApprovalRow {
        id: r.id.clone(),
        env: r.env.clone(),
        agent: r.agent.clone(),
        kind: r.kind.as_str().to_owned(),
        status: r.status.as_str().to_owned(),
        created_at_ms: r.created_at_ms,
        expires_at_ms: r.expires_at_ms,
        record: serde_json::to_string(r).unwrap(),
    }
}

fn approval_of(row: &serin_store::ApprovalRow) -> serin_core::approvals::ApprovalRequest {
    serde_json::from_str(&row.record).unwrap()
}

async fn approvals_are_filed_decided_expired_and_capped_in_one_transaction_each(t: Ctx) {
    use serin_core::approvals::{ApprovalKind, ApprovalStatus};
    let s = &t.store;
    let hooks = vec!["http://127.0.0.1:9/hooks".to_owned()];
    let a = approval(1, ApprovalKind::ReleaseStart, 100);
    let stored = s
        .insert_approval(&approval_row(&a), "token:dep", None, &hooks)
        .await
        .unwrap();
    assert_eq!(stored.as_ref().map(approval_of), Some(a.clone()));
    // The webhook is queued in the same transaction.
    let due = s.due_notifications(i64::MAX, 100).await.unwrap();
    assert!(
        due.iter()
            .any(|n| n.release_id == a.id && n.payload.contains("approval.request")),
        "{due:?}"
    );
    // A refused decision writes nothing; an accepted one writes the row and its audit entry.
    let refused = s
        .update_approval(&a.id, 200, "token:dep", "approval.approve", &hooks, |row| {
            approval_of(row)
                .decide(true, "token:dep", "mine", 200, 1_000)
                .map(|r| Some(approval_row(&r)))
        })
        .await
        .unwrap();
    assert!(matches!(
        refused,
        serin_store::Updated::Refused(serin_core::approvals::ApprovalError::OwnRequest)
    ));
    let done = s
        .update_approval(&a.id, 200, "token:apr", "approval.deny", &hooks, |row| {
            approval_of(row)
                .decide(false, "token:apr", "no", 200, 1_000)
                .map(|r| Some(approval_row(&r)))
        })
        .await
        .unwrap();
    let serin_store::Updated::Done(row) = done else {
        panic!("not written: {done:?}")
    };
    assert_eq!(row.status, "denied");
    assert_eq!(
        approval_of(&s.get_approval(&a.id).await.unwrap().unwrap()).status,
        ApprovalStatus::Denied
    );
    let missing = s
        .update_approval(
            "apr-00000000000000000000000000",
            200,
            "x",
            "approval.deny",
            &[],
            |_| Ok::<_, ()>(None),
        )
        .await
        .unwrap();
    assert_eq!(missing, serin_store::Updated::NoSuchId);
    // The sweep expires only pending rows past their expiry.
    let b = approval(2, ApprovalKind::Unkill, 300);
    s.insert_approval(&approval_row(&b), "token:dep", None, &[])
        .await
        .unwrap();
    let early = s
        .expire_approvals(b.expires_at_ms - 1, 10, "system", |row| {
            approval_of(row)
                .expire(b.expires_at_ms - 1)
                .map(|r| (approval_row(&r), vec![]))
        })
        .await
        .unwrap();
    assert!(early.is_empty());
    let swept = s
        .expire_approvals(b.expires_at_ms, 10, "system", |row| {
            approval_of(row)
                .expire(b.expires_at_ms)
                .map(|r| (approval_row(&r), vec![]))
        })
        .await
        .unwrap();
    assert_eq!(swept.len(), 1);
    assert_eq!(swept[0].status, "expired");
    let listed = s
        .list_approvals(Some("prod"), None, Some("expired"), None, 10)
        .await
        .unwrap();
    assert_eq!(
        listed.iter().map(|r| r.id.clone()).collect::<Vec<_>>(),
        vec![b.id.clone()]
    );
    // The pending cap is counted inside the insert's transaction.
    for i in 0..3 {
        let c = approval(10 + i, ApprovalKind::ToolCall, 400 + i as i64);
        assert!(
            s.insert_approval(&approval_row(&c), "token:sdk", Some(3), &[])
                .await
                .unwrap()
                .is_some()
        );
    }
    let over = approval(20, ApprovalKind::ToolCall, 500);
    assert!(
        s.insert_approval(&approval_row(&over), "token:sdk", Some(3), &[])
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        s.get_approval(&over.id).await.unwrap().is_none(),
        "nothing written past the cap"
    );
    let acts = actions(s).await;
    for a in ["approval.request", "approval.deny", "approval.expire"] {
        assert!(acts.iter().any(|x| x == a), "{a} not audited: {acts:?}");
    }
    assert!(
        !acts.iter().any(|x| x == "approval.approve"),
        "a refused decision is not audited"
    );
}

async fn approval_signals_are_owed_until_counted_with_their_monitors(t: Ctx) {
    use serin_core::approvals::ApprovalKind;
    let s = &t.store;
    let op = approval(1, ApprovalKind::Unkill, 100);
    let agent = approval(2, ApprovalKind::ToolCall, 200);
    s.insert_approval(&approval_row(&op), "token:dep", None, &[])
        .await
        .unwrap();
    s.insert_approval(&approval_row(&agent), "token:sdk", None, &[])
        .await
        .unwrap();
    let owing = s.approvals_owing_signals(10).await.unwrap();
    assert_eq!(
        owing.iter().map(|r| r.id.clone()).collect::<Vec<_>>(),
        vec![agent.id.clone()],
        "only agents' requests owe signals"
    );
    let monitor = serin_store::MonitorRow {
        env: "prod".into(),
        agent: "support".into(),
        candidate: "support@2".into(),
        state: "{}".into(),
        created_at_ms: 1,
        updated_at_ms: 2,
    };
    s.settle_approval_signals(
        std::slice::from_ref(&monitor),
        std::slice::from_ref(&agent.id),
        |row| {
            let mut r = approval_of(row);
            r.counted.requested = true;
            Some((approval_row(&r), false))
        },
    )
    .await
    .unwrap();
    assert!(s.approvals_owing_signals(10).await.unwrap().is_empty());
    assert!(
        s.load_monitors()
            .await
            .unwrap()
            .iter()
            .any(|m| m.candidate == "support@2")
    );
    // A later change (a denial) owes again.
    s.update_approval(&agent.id, 300, "token:apr", "approval.deny", &[], |row| {
        approval_of(row)
            .decide(false, "token:apr", "no", 300, 1_000)
            .map(|r| Some(approval_row(&r)))
    })
    .await
    .unwrap();
    assert_eq!(s.approvals_owing_signals(10).await.unwrap().len(), 1);
    let counted = approval_of(&s.get_approval(&agent.id).await.unwrap().unwrap()).counted;
    assert!(counted.requested, "the earlier count survives the decision");
}

async fn approval_policies_are_versioned_and_identical_reapply_writes_nothing(t: Ctx) {
    let s = &t.store;
    assert!(s.current_approval_policy("prod").await.unwrap().is_none());
    let (v1, changed) = s
        .apply_approval_policy("prod", r#"{"require":["unkill"]}"#, 1, "token:a")
        .await
        .unwrap();
    assert_eq!((v1.version, changed), (1, true));
    let (same, changed) = s
        .apply_approval_policy("prod", r#"{"require":["unkill"]}"#, 2, "token:a")
        .await
        .unwrap();
    assert_eq!((same.version, changed), (1, false));
    let (v2, _) = s
        .apply_approval_policy("prod", r#"{"require":[]}"#, 3, "token:b")
        .await
        .unwrap();
    assert_eq!(v2.version, 2);
    assert_eq!(
        s.current_approval_policy("prod")
            .await
            .unwrap()
            .unwrap()
            .policy,
        r#"{"require":[]}"#
    );
    assert!(
        s.current_approval_policy("staging")
            .await
            .unwrap()
            .is_none(),
        "per env"
    );
    let acts = actions(s).await;
    assert_eq!(
        acts.iter().filter(|a| *a == "approvals.policy").count(),
        2,
        "{acts:?}"
    );
}

async fn approval_rows_round_trip_extreme_values(t: Ctx) {
    use serin_core::approvals::{ApprovalKind, Counted};
    let s = &t.store;
    let mut r = approval(u128::MAX, ApprovalKind::ToolCall, i64::MIN);
    r.expires_at_ms = i64::MAX;
    r.bundle = Some(u64::MAX);
    r.snapshot_version = Some(u64::MAX);
    r.reason = "é\u{0}\"'; DROP TABLE approvals; --".into();
    r.details = serde_json::json!({"deep": [[[[{"x": -0.0, "y": 1e308}]]]], "s": ""});
    r.counted = Counted {
        requested: true,
        denied: false,
        overdue: true,
    };
    r.overdue = true;
    s.insert_approval(&approval_row(&r), "token:sdk", None, &[])
        .await
        .unwrap();
    let back = approval_of(&s.get_approval(&r.id).await.unwrap().unwrap());
    assert_eq!(back, r);
    let mut empty = approval(5, ApprovalKind::Unkill, 0);
    empty.bundle = None;
    empty.details = serde_json::Value::Null;
    empty.snapshot_version = None;
    s.insert_approval(&approval_row(&empty), "token:a", None, &[])
        .await
        .unwrap();
    assert_eq!(
        approval_of(&s.get_approval(&empty.id).await.unwrap().unwrap()),
        empty
    );
}

async fn ledger_counts_each_status_per_agent_bundle(t: Ctx) {
    use serin_core::ledger::EffectStatus;
    let s = &t.store;
    assert_eq!(
        s.count_effects("support", 2).await.unwrap(),
        serin_store::EffectCounts::default()
    );
    for (key, bundle) in [
        ("c1", 2),
        ("c2", 2),
        ("c3", 2),
        ("c4", 2),
        ("c5", 2),
        ("o1", 1),
    ] {
        s.insert_effect(&intent_row(key, bundle, "x", 10), "t")
            .await
            .unwrap();
    }
    resolve(s, "c1", EffectStatus::Committed, 20).await;
    resolve(s, "c2", EffectStatus::Committed, 20).await;
    resolve(s, "c3", EffectStatus::Failed, 20).await;
    resolve(s, "c4", EffectStatus::Unknown, 20).await;
    let counts = s.count_effects("support", 2).await.unwrap();
    assert_eq!(
        counts,
        serin_store::EffectCounts {
            intent: 1,
            committed: 2,
            failed: 1,
            unknown: 1,
        }
    );
    assert_eq!(counts.total(), 5);
    // Another bundle and another agent are counted apart.
    assert_eq!(s.count_effects("support", 1).await.unwrap().intent, 1);
    assert_eq!(s.count_effects("other", 2).await.unwrap().total(), 0);
    // An unknown settled by a real answer leaves the unknown count.
    resolve(s, "c4", EffectStatus::Committed, 30).await;
    assert_eq!(
        t.reopen().await.count_effects("support", 2).await.unwrap(),
        serin_store::EffectCounts {
            intent: 1,
            committed: 3,
            failed: 1,
            unknown: 0,
        }
    );
}
