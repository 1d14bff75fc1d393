//! Defect 10: the audit chain is unkeyed, so whoever can write the database can rewrite history
//! and recompute every hash. A signed tree head saved outside the server catches it.

use std::path::Path;
use std::time::Duration;

use serde_json::{Value, json};
use serin_store::{NewAudit, Store};

use crate::harness::{Backend, Cli, Receiver, Server, run_cli};

fn data_dir(backend: &Backend) -> &Path {
    match backend {
        Backend::Sqlite(dir) => dir.path(),
        Backend::Postgres(_) => unreachable!("these tests tamper with a SQLite file"),
    }
}

/// `serin audit head > path`.
fn save_head(cli: &Cli, path: &Path) -> Value {
    let out = cli.run(&["audit", "head"]).ok();
    std::fs::write(path, &out.stdout).unwrap();
    serde_json::from_str(&out.stdout).unwrap()
}

fn verify_head(cli: &Cli, path: &Path, extra: &[&str]) -> crate::harness::Output {
    let mut args = vec!["audit", "verify", "--head", path.to_str().unwrap()];
    args.extend_from_slice(extra);
    cli.run(&args)
}

/// A second handle on the server's SQLite file, with the append-only triggers dropped, as an
/// attacker with file access would have.
async fn tamper_handle(backend: &Backend) -> Store {
    let store = Store::open_sqlite(data_dir(backend)).await.unwrap();
    store
        .execute_unchecked_for_tests(
            "DROP TRIGGER IF EXISTS audit_no_update; DROP TRIGGER IF EXISTS audit_no_delete;",
        )
        .await
        .unwrap();
    store
}

/// Rewrites the whole log through the store's own append (so the hash chain is flawless),
/// with `edit` applied to the entries first.
async fn rewrite_log(store: &Store, edit: impl FnOnce(&mut Vec<NewAudit>)) {
    let mut entries: Vec<NewAudit> = store
        .list_audit(1000, None)
        .await
        .unwrap()
        .into_iter()
        .rev()
        .map(|e| NewAudit {
            at_ms: e.at_ms,
            actor: e.actor,
            action: e.action,
            subject: e.subject,
            details: e.details,
        })
        .collect();
    edit(&mut entries);
    store
        .execute_unchecked_for_tests("DELETE FROM audit")
        .await
        .unwrap();
    for e in entries {
        store.append_audit(e).await.unwrap();
    }
}

async fn some_mutations(server: &Server, admin: &str, n: usize) {
    for _ in 0..n {
        server.token(admin, "viewer").await;
    }
}

#[tokio::test]
async fn a_log_rewritten_with_a_valid_chain_fails_verify_against_a_saved_head_at_the_first_bad_entry()
 {
    let backend = Backend::sqlite();
    let server = Server::start(&backend);
    let admin = server.bootstrap_token.clone().unwrap();
    let cli = server.cli(&admin);
    some_mutations(&server, &admin, 4).await;
    let work = tempfile::tempdir().unwrap();
    let head_file = work.path().join("head.json");
    let head = save_head(&cli, &head_file);
    assert_eq!(head["tree_size"], 5, "bootstrap token + 4 tokens: {head}");

    let out = verify_head(&cli, &head_file, &[]).ok();
    assert!(out.stdout.contains("audit log intact"), "{out:#?}");
    assert!(
        out.stderr.contains("--public-key"),
        "unpinned is said: {out:#?}"
    );
    let public_key = head["public_key"].as_str().unwrap();
    verify_head(&cli, &head_file, &["--public-key", public_key]).ok();

    // The log grows, the server restarts: the old head still holds (same key from its file).
    some_mutations(&server, &admin, 2).await;
    server.stop();
    let key_file = data_dir(&backend).join("audit-signing.key");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&key_file).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "the key file is private");
    }
    let server = Server::start(&backend);
    let cli = server.cli(&admin);
    verify_head(&cli, &head_file, &["--public-key", public_key]).ok();

    // Entry 3 rewritten, and every hash after it recomputed.
    let store = tamper_handle(&backend).await;
    rewrite_log(&store, |e| e[2].actor = "mallory".to_owned()).await;
    let chain = cli.run(&["audit", "verify"]);
    assert_eq!(chain.code, 0, "the chain alone cannot tell: {chain:#?}");
    let out = verify_head(&cli, &head_file, &["--public-key", public_key]);
    assert_eq!(out.code, 1, "{out:#?}");
    assert!(out.stderr.contains("first bad entry: 3 "), "{}", out.stderr);
    assert_eq!(out.stderr.trim().lines().count(), 1, "{}", out.stderr);

    // Put it back exactly: the head holds again, so the check is about content, not history.
    rewrite_log(&store, |e| e[2].actor = admin_actor(e)).await;
    verify_head(&cli, &head_file, &[]).ok();

    // Inserted in the middle, reordered, newest rows deleted, everything deleted.
    rewrite_log(&store, |e| {
        let mut forged = e[1].clone();
        forged.subject = "backdoor".to_owned();
        e.insert(1, forged);
    })
    .await;
    assert_bad_entry(&cli, &head_file, 2);
    rewrite_log(&store, |e| {
        e.remove(1);
        e.swap(3, 4);
    })
    .await;
    assert_bad_entry(&cli, &head_file, 4);
    rewrite_log(&store, |e| {
        e.swap(3, 4);
        e.truncate(4);
    })
    .await;
    let out = verify_head(&cli, &head_file, &[]);
    assert_eq!(out.code, 1, "{out:#?}");
    assert!(
        out.stderr.contains("first bad entry: 5 ") && out.stderr.contains("deleted"),
        "{}",
        out.stderr
    );
    rewrite_log(&store, Vec::clear).await;
    assert_bad_entry(&cli, &head_file, 1);
    store.close().await;
}

/// The actor of the original entry 3: the bootstrap admin token's id, which created it.
fn admin_actor(entries: &[NewAudit]) -> String {
    entries[1].actor.clone()
}

#[track_caller]
fn assert_bad_entry(cli: &Cli, head_file: &Path, entry: u64) {
    let out = verify_head(cli, head_file, &[]);
    assert_eq!(out.code, 1, "{out:#?}");
    assert!(
        out.stderr.contains(&format!("first bad entry: {entry} ")),
        "expected entry {entry}: {}",
        out.stderr
    );
}

#[tokio::test]
async fn a_viewer_reads_the_signed_head_but_cannot_forge_one() {
    let backend = Backend::sqlite();
    let server = Server::start(&backend);
    let admin = server.bootstrap_token.clone().unwrap();
    let viewer = server.token(&admin, "viewer").await;
    let sdk = server.token(&admin, "sdk").await;

    let (status, head) = server.http(&viewer).get("/v1/audit/head").await;
    assert_eq!(status, 200, "{head}");
    assert_eq!(head["tree_size"], 3);
    assert_eq!(head["signature"].as_str().unwrap().len(), 128);
    assert_eq!(server.http(&sdk).get("/v1/audit/head").await.0, 403);
    assert_eq!(server.http("").get("/v1/audit/head").await.0, 401);
    let (status, _) = server
        .http(&viewer)
        .post("/v1/audit/head", &json!({}))
        .await;
    assert_eq!(status, 405);
    let seed = std::fs::read_to_string(data_dir(&backend).join("audit-signing.key")).unwrap();
    assert!(
        !head.to_string().contains(seed.trim()),
        "the private key never leaves its file"
    );
    let (status, proof) = server
        .http(&viewer)
        .get("/v1/audit/proof?from=4&to=3")
        .await;
    assert_eq!(status, 400, "{proof}");
    let (status, _) = server.http(&viewer).get("/v1/audit/proof?from=1").await;
    assert_eq!(status, 200);

    let cli = server.cli(&viewer);
    let work = tempfile::tempdir().unwrap();
    let real = work.path().join("head.json");
    save_head(&cli, &real);
    verify_head(&cli, &real, &[]).ok();
    let public_key = head["public_key"].as_str().unwrap().to_owned();

    // A smaller tree_size under the real signature: the signature no longer verifies.
    let mut shrunk = head.clone();
    shrunk["tree_size"] = json!(2);
    let forged = work.path().join("shrunk.json");
    std::fs::write(&forged, shrunk.to_string()).unwrap();
    let out = verify_head(&cli, &forged, &[]);
    assert_eq!(out.code, 1, "{out:#?}");
    assert!(out.stderr.contains("not authentic"), "{}", out.stderr);

    // A head signed with the viewer's own key: refused against the pinned key, and without a
    // pin the server's fresh head (real key) does not match it.
    let own = serin_core::audit::SigningKey::from_seed(&[9; 32]).unwrap();
    let root: [u8; 32] = hex::decode(head["root_hash"].as_str().unwrap())
        .unwrap()
        .try_into()
        .unwrap();
    let fake = own.sign(2, &root, 1, &[]);
    let forged = work.path().join("own-key.json");
    std::fs::write(&forged, serde_json::to_string(&fake).unwrap()).unwrap();
    let out = verify_head(&cli, &forged, &["--public-key", &public_key]);
    assert_eq!(out.code, 1, "{out:#?}");
    assert!(out.stderr.contains("pinned key"), "{}", out.stderr);
    let out = verify_head(&cli, &forged, &[]);
    assert_eq!(out.code, 1, "{out:#?}");
    assert!(out.stderr.contains("saved head's key"), "{}", out.stderr);

    // Unreadable input is a usage error, not a verdict.
    std::fs::write(&forged, "{}").unwrap();
    assert_eq!(verify_head(&cli, &forged, &[]).code, 2);
    assert_eq!(
        verify_head(&cli, &real, &["--public-key", "nothex"]).code,
        2
    );
}

#[tokio::test]
async fn signed_heads_reach_the_webhook_whenever_the_log_grows() {
    let receiver = Receiver::start().await;
    let backend = Backend::sqlite();
    let server = Server::start_with(
        &backend,
        0,
        &[
            "--audit-head-webhook",
            &receiver.url,
            "--audit-head-interval",
            "200ms",
        ],
    );
    let admin = server.bootstrap_token.clone().unwrap();
    let first = receiver.wait_for(1).await.remove(0);
    assert_eq!(first["action"], "audit.head");
    assert_eq!(first["head"]["tree_size"], 1);

    // What the receiver kept is a head `verify --head` accepts.
    let work = tempfile::tempdir().unwrap();
    let kept = work.path().join("from-webhook.json");
    std::fs::write(&kept, first.to_string()).unwrap();
    let cli = server.cli(&admin);
    verify_head(&cli, &kept, &[]).ok();

    server.token(&admin, "viewer").await;
    let got = receiver.wait_for(2).await;
    assert_eq!(got[1]["head"]["tree_size"], 2);
    // An unchanged log is not posted again.
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(receiver.got.lock().unwrap().len(), 2);
}

#[test]
fn a_postgres_server_refuses_to_start_without_an_audit_key() {
    let out = run_cli(
        &[
            "server",
            "--database-url",
            "postgres://nobody@127.0.0.1:1/none",
            "--listen",
            "127.0.0.1:0",
        ],
        &[],
    );
    assert_eq!(out.code, 2, "{out:#?}");
    assert!(out.stderr.contains("--audit-key"), "{}", out.stderr);
}
