//! PostgreSQL restarted under load: two replicas keep answering (a write the store cannot
//! take is a 503 with `Retry-After`, never a 500 or a hang), reconnect once the database is
//! back, and lose nothing they acknowledged.
//!
//! The database is a private cluster this test runs itself (PostgreSQL 15's `initdb` and
//! `pg_ctl`), because stopping the shared test database would break every other test running
//! beside this one. Skipped, with the reason printed, when those binaries are missing, and
//! like every PostgreSQL test with `SERIN_TEST_SKIP_POSTGRES=1`.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde_json::json;

use crate::harness::{Backend, Http, Replicas, Server};

const PG_BIN: &str = "/usr/lib/postgresql/15/bin";
/// Longer than the store pool's 10 s wait for a connection, so writes during the outage
/// run out of it and answer 503 rather than waiting the whole outage out.
const OUTAGE: Duration = Duration::from_secs(11);

/// A throwaway PostgreSQL cluster on a free port; stopped when dropped.
struct Cluster {
    dir: tempfile::TempDir,
    port: u16,
    /// PostgreSQL refuses to run as root: then every command runs as user `postgres`.
    run_as_postgres: bool,
}

impl Cluster {
    /// initdb + start; None (with the reason printed) when this machine cannot run one.
    // A skipped test says why on stderr, or a missing binary would pass silently.
    #[allow(clippy::print_stderr)]
    fn start() -> Option<Cluster> {
        if serin_store::testing::postgres_skipped() {
            return None;
        }
        for bin in ["initdb", "pg_ctl", "postgres"] {
            if !Path::new(PG_BIN).join(bin).exists() {
                eprintln!("skipped: {PG_BIN}/{bin} is missing (PostgreSQL 15 server binaries)");
                return None;
            }
        }
        let run_as_postgres = uid() == Some(0);
        if run_as_postgres && !Path::new("/usr/sbin/runuser").exists() {
            eprintln!(
                "skipped: running as root and runuser is missing to run PostgreSQL as postgres"
            );
            return None;
        }
        let dir = tempfile::tempdir().unwrap();
        if run_as_postgres {
            let chown = Command::new("chown")
                .args(["postgres:", dir.path().to_str().unwrap()])
                .status()
                .unwrap();
            if !chown.success() {
                eprintln!("skipped: could not hand a temp dir to user postgres");
                return None;
            }
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let cluster = Cluster {
            dir,
            port,
            run_as_postgres,
        };
        let data = cluster.data();
        let init = cluster.run(
            "initdb",
            &[
                "-D",
                data.to_str().unwrap(),
                "-U",
                "postgres",
                "--auth=trust",
                "-E",
                "UTF8",
                "--no-sync",
            ],
        );
        assert!(init.status.success(), "initdb: {init:?}");
        cluster.pg_ctl_start();
        Some(cluster)
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    fn run(&self, bin: &str, args: &[&str]) -> std::process::Output {
        let path = Path::new(PG_BIN).join(bin);
        let mut cmd = if self.run_as_postgres {
            let mut c = Command::new("/usr/sbin/runuser");
            c.args(["-u", "postgres", "--"]).arg(path);
            c
        } else {
            Command::new(path)
        };
        cmd.args(args).output().unwrap()
    }

    fn pg_ctl_start(&self) {
        let options = format!(
            "-p {} -c listen_addresses=127.0.0.1 -c unix_socket_directories={} -c fsync=off",
            self.port,
            self.dir.path().display()
        );
        let log = self.dir.path().join("postgres.log");
        let out = self.run(
            "pg_ctl",
            &[
                "-D",
                self.data().to_str().unwrap(),
                "-l",
                log.to_str().unwrap(),
                "-w",
                "-o",
                &options,
                "start",
            ],
        );
        assert!(out.status.success(), "pg_ctl start: {out:?}");
    }

    /// `pg_ctl stop -m fast`: open sessions are cut, the postmaster exits.
    fn pg_ctl_stop(&self, mode: &str) -> std::process::Output {
        self.run(
            "pg_ctl",
            &[
                "-D",
                self.data().to_str().unwrap(),
                "-m",
                mode,
                "-w",
                "stop",
            ],
        )
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = self.pg_ctl_stop("immediate");
    }
}

fn uid() -> Option<u32> {
    let out = Command::new("id").arg("-u").output().ok()?;
    String::from_utf8(out.stdout).ok()?.trim().parse().ok()
}

/// One write as the client saw it.
#[derive(Debug)]
struct Write {
    env: String,
    status: u16,
    retry_after: bool,
    sent: Instant,
}

/// Creates envs `w<task>-<i>` one after another, alternating replicas, until told to stop.
async fn writer(task: usize, replicas: Vec<Http>, stop: Arc<AtomicBool>) -> Vec<Write> {
    let mut writes = Vec::new();
    let mut i = 0;
    while !stop.load(Ordering::Relaxed) {
        let env = format!("w{task}-{i}");
        let sent = Instant::now();
        let resp = replicas[i % replicas.len()]
            .req(reqwest::Method::POST, "/v1/envs")
            .json(&json!({ "name": env, "strict": false }))
            .timeout(Duration::from_secs(30))
            .send()
            .await
            .unwrap();
        writes.push(Write {
            env,
            status: resp.status().as_u16(),
            retry_after: resp.headers().contains_key(reqwest::header::RETRY_AFTER),
            sent,
        });
        i += 1;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    writes
}

/// Waits until `server`'s `/readyz` is 200 with its listener session up again.
async fn wait_ready(server: &Server, within: Duration) {
    let deadline = Instant::now() + within;
    loop {
        let (status, body) = server.http("").get("/readyz").await;
        if status == 200 && body["replica"]["listener_connected"] == true {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "not ready within {within:?}: {status} {body}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_ride_out_a_postgres_restart_answering_503_and_losing_nothing_acknowledged() {
    let started = Instant::now();
    let Some(cluster) = Cluster::start() else {
        return;
    };
    let schema = serin_store::testing::TestPostgres::create_at(&cluster.url())
        .await
        .unwrap();
    let r = Replicas::start_on(Backend::Postgres(schema), 2, &["--tick-ms", "100"]);
    let stop = Arc::new(AtomicBool::new(false));
    let writers: Vec<_> = (0..3)
        .map(|t| {
            let replicas = (0..2).map(|i| r.server(i).http(&r.admin)).collect();
            tokio::spawn(writer(t, replicas, stop.clone()))
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(1500)).await;

    // From here writes may meet the database going down.
    let down = Instant::now();
    let out = cluster.pg_ctl_stop("fast");
    assert!(out.status.success(), "pg_ctl stop: {out:?}");
    tokio::time::sleep(OUTAGE).await;
    cluster.pg_ctl_start();
    let up = Instant::now();
    for i in 0..2 {
        wait_ready(r.server(i), Duration::from_secs(15)).await;
    }
    r.leader(Duration::from_secs(10)).await;
    // Load goes on after the restart, so each replica must take writes again.
    tokio::time::sleep(Duration::from_secs(2)).await;
    stop.store(true, Ordering::Relaxed);
    let mut writes = Vec::new();
    for w in writers {
        writes.extend(w.await.unwrap());
    }

    for w in &writes {
        assert!(
            matches!(w.status, 200 | 201 | 503),
            "a write answered {}: {w:?}",
            w.status
        );
        assert_eq!(
            w.retry_after,
            w.status == 503,
            "Retry-After with 503 only: {w:?}"
        );
    }
    let refused_in_outage = writes
        .iter()
        .filter(|w| w.status == 503 && w.sent >= down && w.sent < up)
        .count();
    assert!(
        refused_in_outage > 0,
        "no write sent during the outage answered 503: {:?}",
        writes
            .iter()
            .map(|w| (w.status, w.sent - down))
            .collect::<Vec<_>>()
    );
    let acknowledged: Vec<&str> = writes
        .iter()
        .filter(|w| w.status < 300)
        .map(|w| w.env.as_str())
        .collect();
    let after = writes
        .iter()
        .filter(|w| w.status < 300 && w.sent > up)
        .count();
    assert!(
        after >= 2,
        "writes succeed again after the restart: {writes:?}"
    );
    for i in 0..2 {
        // A replica may list another's newest envs a moment late; a lost one never shows.
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let (status, envs) = r.server(i).http(&r.admin).get("/v1/envs").await;
            assert_eq!(status, 200, "{envs}");
            let names: Vec<&str> = envs
                .as_array()
                .unwrap()
                .iter()
                .filter_map(|e| e["env"].as_str())
                .collect();
            let missing: Vec<&&str> = acknowledged.iter().filter(|e| !names.contains(e)).collect();
            if missing.is_empty() {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "replica {i} lost acknowledged envs {missing:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    eprintln!(
        "postgres restart: {} writes, {} acknowledged, {refused_in_outage} answered 503 during \
         the {OUTAGE:?} outage; took {:?}",
        writes.len(),
        acknowledged.len(),
        started.elapsed()
    );
}
