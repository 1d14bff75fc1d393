//! `serin status` and `GET /v1/system/replicas`: the replica registry seen from the CLI.

use std::time::{Duration, Instant};

use serde_json::Value;

use crate::harness::{Backend, Server, run_cli};

/// `serin status --output json` through `server`, once `until` holds (or panics after 15 s).
fn status_until(server: &Server, token: &str, until: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let out = server.cli(token).run(&["status", "--output", "json"]).ok();
        let v: Value = serde_json::from_str(&out.stdout).unwrap();
        if until(&v) {
            return v;
        }
        assert!(Instant::now() < deadline, "never got there: {v:#}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn alive(v: &Value) -> Vec<&Value> {
    v["replicas"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["alive"] == true)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_lists_two_postgres_replicas_alive_with_exactly_one_leader() {
    let Some(backend) = Backend::postgres().await else {
        return;
    };
    let a = Server::start(&backend);
    let admin = a.bootstrap_token.clone().unwrap();
    let b = Server::start(&backend);
    let pids = [i64::from(a.pid()), i64::from(b.pid())];
    let v = status_until(&b, &admin, |v| {
        alive(v).len() == 2 && v["leader"].is_object()
    });
    let live = alive(&v);
    let mut seen: Vec<i64> = live.iter().map(|r| r["pid"].as_i64().unwrap()).collect();
    seen.sort_unstable();
    let mut want = pids.to_vec();
    want.sort_unstable();
    assert_eq!(seen, want, "{v:#}");
    let leaders: Vec<&&Value> = live.iter().filter(|r| r["is_leader"] == true).collect();
    assert_eq!(leaders.len(), 1, "{v:#}");
    assert_eq!(v["leader"]["id"], leaders[0]["id"]);
    assert_eq!(v["leader"]["epoch"], v["epoch"]);
    for r in &live {
        assert_eq!(r["listener_connected"], true, "{v:#}");
    }

    // A viewer may read the registry; an sdk token may not.
    let viewer = a.token(&admin, "viewer").await;
    let (code, body) = a.http(&viewer).get("/v1/system/replicas").await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["replicas"].as_array().unwrap().len(), 2);
    let sdk = a.token(&admin, "sdk").await;
    let (code, body) = a.http(&sdk).get("/v1/system/replicas").await;
    assert_eq!(code, 403, "{body}");

    // A replica that stops cleanly is listed gone at once.
    let b_pid = i64::from(b.pid());
    b.stop();
    let v = status_until(&a, &admin, |v| alive(v).len() == 1);
    let gone = v["replicas"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["pid"] == b_pid)
        .unwrap();
    assert!(gone["gone_ms"].is_i64(), "{v:#}");
    a.stop();
    if let Backend::Postgres(db) = backend {
        db.cleanup().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_shows_the_single_sqlite_replica_as_leader() {
    let backend = Backend::sqlite();
    let server = Server::start(&backend);
    let admin = server.bootstrap_token.clone().unwrap();
    let v = status_until(&server, &admin, |v| alive(v).len() == 1);
    let me = alive(&v)[0];
    assert_eq!(me["pid"], i64::from(server.pid()));
    assert_eq!(me["is_leader"], true);
    assert_eq!(me["caught_up"], true);
    assert_eq!(me["lag_versions"], 0);
    assert!(me.get("listener_connected").is_none(), "{v:#}");
    assert_eq!(v["leader"]["id"], me["id"]);
    assert_eq!(v["served_by"], me["id"]);

    let human = server.cli(&admin).run(&["status"]).ok();
    assert!(human.stdout.starts_with("ID "), "{}", human.stdout);
    assert!(human.stdout.contains("leader/"), "{}", human.stdout);
    let last = human.stdout.lines().last().unwrap();
    assert!(last.starts_with("leader: "), "{}", human.stdout);
    assert!(
        last.contains(&format!(":{}", server.pid())),
        "{}",
        human.stdout
    );

    // Nobody listening: one line on stderr, exit 2.
    let port = server.port();
    server.stop();
    let down = run_cli(
        &["status"],
        &[
            ("SERIN_SERVER", &format!("http://127.0.0.1:{port}")),
            ("SERIN_TOKEN", &admin),
        ],
    );
    assert_eq!(down.code, 2, "{down:#?}");
    assert_eq!(down.stderr.trim().lines().count(), 1, "{down:#?}");
    assert!(
        down.stderr.contains("could not reach the Serin server"),
        "{down:#?}"
    );
}
