//! `serin status` and `GET /v1/system/replicas`: the replica registry seen from the CLI.

use std::time::{Duration, Instant};

use serde_json::Value;

use crate::harness::{Backend, Server, push_two_bundles, run_cli};

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
    // The overview comes first (nothing is deployed yet), then the replicas section.
    assert!(
        human
            .stdout
            .starts_with("no agent has routing state in any env yet\n\nID "),
        "{}",
        human.stdout
    );
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_shows_each_agent_per_env_and_watch_redraws_on_each_change() {
    let backend = Backend::sqlite();
    let server = Server::start(&backend);
    let admin = server.bootstrap_token.clone().unwrap();
    server.create_env(&admin, "prod", true);
    let cli = server.cli(&admin);
    let work = tempfile::tempdir().unwrap();
    push_two_bundles(&cli, work.path());
    for (n, why) in [("1", "first"), ("2", "second")] {
        cli.run(&[
            "deploy", "support", "--env", "prod", "--bundle", n, "--force", "--reason", why,
        ])
        .ok();
    }
    cli.run(&[
        "kill", "support", "--env", "prod", "--tenant", "acme", "--reason", "x",
    ])
    .ok();
    let v: Value =
        serde_json::from_str(&cli.run(&["status", "--output", "json"]).ok().stdout).unwrap();
    let prod = v["envs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["env"] == "prod")
        .unwrap();
    let support = &prod["agents"][0];
    assert_eq!(support["agent"], "support", "{v:#}");
    assert_eq!(support["stable"], "support@2");
    assert_eq!(support["previous"], "support@1");
    assert_eq!(support["kill"]["tenants"], serde_json::json!(["acme"]));
    assert_eq!(prod["sdks"]["connected"], 0);
    assert!(v["replicas"].is_array(), "{v:#}");

    let human = cli.run(&["status"]).ok();
    let row = human
        .stdout
        .lines()
        .find(|l| l.starts_with("prod "))
        .unwrap_or_else(|| panic!("{}", human.stdout));
    assert!(
        row.contains("support@2") && row.contains("support@1"),
        "{row}"
    );
    assert!(row.contains("tenants: acme"), "{row}");

    // --watch prints the overview at once and again on each change, until stopped.
    let mut child = std::process::Command::new(crate::harness::BIN)
        .args(["status", "--watch", "--output", "json"])
        .env("SERIN_SERVER", &server.url)
        .env("SERIN_TOKEN", &admin)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            let _ = tx.send(line);
        }
    });
    let first: Value =
        serde_json::from_str(&rx.recv_timeout(Duration::from_secs(15)).unwrap()).unwrap();
    assert_eq!(first["envs"].as_array().unwrap().len(), 2, "{first:#}");
    cli.run(&[
        "rollback", "support", "--env", "prod", "--reason", "watch me",
    ])
    .ok();
    let prod_support = |field: &str, want: Value, what: &str| {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let line = rx
                .recv_timeout(deadline.saturating_duration_since(Instant::now()))
                .unwrap_or_else(|_| panic!("watch printed no update after {what}"));
            let v: Value = serde_json::from_str(&line).unwrap();
            let got = v["envs"]
                .as_array()
                .unwrap()
                .iter()
                .find(|e| e["env"] == "prod")
                .map(|e| {
                    e["agents"][0]
                        .pointer(field)
                        .cloned()
                        .unwrap_or(Value::Null)
                });
            if got == Some(want.clone()) {
                return;
            }
        }
    };
    prod_support("/stable", Value::from("support@1"), "the rollback");

    // The server restarts on the same port: watch reconnects and goes on.
    let port = server.port();
    server.stop();
    let server = Server::start_on(&backend, port);
    server
        .cli(&admin)
        .run(&[
            "kill",
            "support",
            "--env",
            "prod",
            "--reason",
            "after restart",
        ])
        .ok();
    prod_support(
        "/kill/killed",
        Value::Bool(true),
        "the restart and the kill",
    );
    let _ = child.kill();
    let _ = child.wait();

    // --watch against nobody: a connection error, exit 2.
    server.stop();
    let down = run_cli(
        &["status", "--watch"],
        &[
            ("SERIN_SERVER", &format!("http://127.0.0.1:{port}")),
            ("SERIN_TOKEN", &admin),
        ],
    );
    assert_eq!(down.code, 2, "{down:#?}");
}
