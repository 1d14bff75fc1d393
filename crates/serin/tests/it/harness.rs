//! Starts the real `serin` binary on port 0 against a real store and drives it
//! through the CLI and raw HTTP.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use serde_json::Value;

pub const BIN: &str = env!("CARGO_BIN_EXE_serin");

pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

pub fn sample_bundle() -> PathBuf {
    repo_root().join("examples/bundles/support")
}

/// Copies a directory tree (files and subdirectories only).
pub fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}

/// Where a test server keeps its state.
pub enum Backend {
    Sqlite(tempfile::TempDir),
    Postgres(serin_store::testing::TestPostgres),
}

impl Backend {
    pub fn sqlite() -> Backend {
        Backend::Sqlite(tempfile::tempdir().unwrap())
    }

    pub async fn postgres() -> Option<Backend> {
        serin_store::testing::TestPostgres::create()
            .await
            .expect("PostgreSQL for tests (SERIN_TEST_SKIP_POSTGRES=1 skips)")
            .map(Backend::Postgres)
    }

    fn args(&self) -> Vec<String> {
        match self {
            Backend::Sqlite(dir) => vec!["--data".into(), dir.path().display().to_string()],
            Backend::Postgres(schema) => vec![
                "--database-url".into(),
                schema.url().to_owned(),
                // PostgreSQL has no data dir to keep the audit signing key in.
                "--audit-key".into(),
                std::env::temp_dir()
                    .join(format!("{}-audit.key", schema.schema()))
                    .display()
                    .to_string(),
            ],
        }
    }
}

pub struct Server {
    child: Child,
    pub url: String,
    /// The admin token printed on first start; None on a restart.
    pub bootstrap_token: Option<String>,
}

impl Server {
    pub fn start(backend: &Backend) -> Server {
        Server::start_on(backend, 0)
    }

    /// Starts on a given port (0 picks one), e.g. to restart where SDKs expect it.
    pub fn start_on(backend: &Backend, port: u16) -> Server {
        Server::spawn(backend, port, true, &[])
    }

    /// Starts with the wall clock only (no `--adjustable-clock`).
    pub fn start_plain_clock(backend: &Backend) -> Server {
        Server::spawn(backend, 0, false, &[])
    }

    /// Starts with extra `serin server` flags (`--refresh-ms` replaces the default; other
    /// flags must not repeat one the harness passes).
    pub fn start_with(backend: &Backend, port: u16, extra: &[&str]) -> Server {
        Server::spawn(backend, port, true, extra)
    }

    fn spawn(backend: &Backend, port: u16, adjustable_clock: bool, extra: &[&str]) -> Server {
        // clap refuses a repeated flag, so a caller's own poll interval replaces this default.
        let refresh = (!extra.contains(&"--refresh-ms")).then_some(["--refresh-ms", "200"]);
        let child = Command::new(BIN)
            .arg("server")
            .args(backend.args())
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .args(refresh.into_iter().flatten())
            // Tests step over durations and expiries with `advance_clock`
            // instead of sleeping through them.
            .args(adjustable_clock.then_some("--adjustable-clock"))
            .args(extra)
            .env("SERIN_LOG", "warn")
            .env_remove("SERIN_TOKEN")
            .env_remove("SERIN_DATABASE_URL")
            .env_remove("SERIN_DATA")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn serin server");
        // Owned by a Server at once, so a failure below still kills the child.
        let mut server = Server {
            child,
            url: String::new(),
            bootstrap_token: None,
        };
        let stdout = server.child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        // Keep draining stdout for the server's whole life so it never blocks.
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                let _ = tx.send(line);
            }
        });
        loop {
            let line = rx
                .recv_timeout(Duration::from_secs(60))
                .expect("server did not print its listening line within 60 s");
            if let Some(t) = line.trim().strip_prefix("SERIN_TOKEN=") {
                server.bootstrap_token = Some(t.to_owned());
            }
            if let Some(url) = line.strip_prefix("serin listening on ") {
                server.url = url.trim().to_owned();
                return server;
            }
        }
    }

    /// The server's process id (it names its listener and leader sessions in PostgreSQL).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn port(&self) -> u16 {
        self.url.rsplit(':').next().unwrap().parse().unwrap()
    }

    /// SIGTERM and wait: a graceful shutdown.
    pub fn stop(mut self) {
        let pid = self.child.id().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        let status = self.child.wait().unwrap();
        assert!(
            status.success(),
            "server exited with {status} after SIGTERM"
        );
    }

    /// SIGKILL: the process gets no chance to flush anything.
    pub fn kill9(mut self) {
        self.child.kill().unwrap();
        let _ = self.child.wait();
    }

    pub fn cli(&self, token: &str) -> Cli {
        Cli {
            server: self.url.clone(),
            token: token.to_owned(),
        }
    }

    pub fn http(&self, token: &str) -> Http {
        // reqwest is built without a bundled crypto provider (see Cargo.toml).
        let _ = rustls::crypto::ring::default_provider().install_default();
        Http {
            base: self.url.clone(),
            token: token.to_owned(),
            client: reqwest::Client::new(),
        }
    }
}

impl Server {
    /// Moves the server's clock forward (`POST /v1/system/clock`).
    pub async fn advance_clock(&self, admin: &str, by: Duration) {
        let (status, body) = self
            .http(admin)
            .post(
                "/v1/system/clock",
                &serde_json::json!({"advance_ms": by.as_millis() as i64}),
            )
            .await;
        assert_eq!(status, 200, "{body}");
    }

    /// A new API token of `role`, created through the API with the admin token.
    pub async fn token(&self, admin: &str, role: &str) -> String {
        let (status, body) = self
            .http(admin)
            .post(
                "/v1/tokens",
                &serde_json::json!({"role": role, "name": format!("test-{role}")}),
            )
            .await;
        assert_eq!(status, 201, "{body}");
        assert_eq!(body["role"], role);
        body["token"].as_str().unwrap().to_owned()
    }
}

impl Server {
    /// Creates env `name` through the CLI with the admin token (strict unless `strict` is
    /// false): envs exist only once created.
    pub fn create_env(&self, admin: &str, name: &str, strict: bool) {
        let policy = if strict { "--strict" } else { "--lenient" };
        let out = self.cli(admin).run(&["env", "create", name, policy]);
        assert_eq!(
            out.code, 0,
            "env create {name}: {}{}",
            out.stdout, out.stderr
        );
    }

    /// Creates the strict envs `staging` and `prod`, as most tests deploy there.
    pub fn create_envs(&self, admin: &str) {
        self.create_env(admin, "staging", true);
        self.create_env(admin, "prod", true);
    }
}

/// Pushes the sample bundle as support@1 and a variant with another prompt as support@2
/// (in a copy under `work`).
pub fn push_two_bundles(cli: &Cli, work: &Path) {
    cli.run(&["bundle", "push", sample_bundle().to_str().unwrap()])
        .ok();
    let dir = work.join("support");
    copy_dir(&sample_bundle(), &dir);
    std::fs::write(
        dir.join("prompt.md"),
        "You help with access requests via `create_support_ticket(`. Be brief.\n",
    )
    .unwrap();
    let out = cli.run(&["bundle", "push", dir.to_str().unwrap()]).ok();
    assert!(out.stdout.contains("support@2"), "{}", out.stdout);
}

/// Writes `plan_yaml` to `work/plan.yaml` and starts a release of support@`bundle` in prod
/// with it (the CLI must succeed).
pub fn start_release(cli: &Cli, work: &Path, bundle: &str, plan_yaml: impl AsRef<str>) -> Output {
    let plan = work.join("plan.yaml");
    std::fs::write(&plan, plan_yaml.as_ref()).unwrap();
    cli.run(&[
        "release",
        "start",
        "support",
        "--env",
        "prod",
        "--bundle",
        bundle,
        "--plan",
        plan.to_str().unwrap(),
    ])
    .ok()
}

/// support@1 deployed to prod (forced past readiness), then a release of support@2 under
/// `plan_yaml`: the setup most release tests share. Expects both bundles pushed.
pub fn stable_then_release(cli: &Cli, work: &Path, plan_yaml: impl AsRef<str>) -> Output {
    cli.run(&[
        "deploy", "support", "--env", "prod", "--bundle", "1", "--force", "--reason", "initial",
    ])
    .ok();
    start_release(cli, work, "2", plan_yaml)
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[derive(Debug)]
pub struct Output {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Output {
    #[track_caller]
    pub fn ok(self) -> Output {
        assert_eq!(self.code, 0, "expected success, got {self:#?}");
        self
    }
}

pub struct Cli {
    pub server: String,
    pub token: String,
}

impl Cli {
    pub fn run(&self, args: &[&str]) -> Output {
        run_cli(
            args,
            &[("SERIN_SERVER", &self.server), ("SERIN_TOKEN", &self.token)],
        )
    }
}

/// Runs the CLI with no server settings but the ones given.
pub fn run_cli(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(BIN);
    cmd.args(args)
        .env_remove("SERIN_SERVER")
        .env_remove("SERIN_TOKEN")
        .env_remove("SERIN_MODEL_CATALOG")
        .stdin(Stdio::null());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("run serin");
    Output {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

pub struct Http {
    pub base: String,
    pub token: String,
    pub client: reqwest::Client,
}

impl Http {
    pub fn req(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        let r = self
            .client
            .request(method, format!("{}{}", self.base, path));
        if self.token.is_empty() {
            r
        } else {
            r.bearer_auth(&self.token)
        }
    }

    /// Sends and returns (status, JSON body or Null).
    pub async fn send(&self, req: reqwest::RequestBuilder) -> (u16, serde_json::Value) {
        let resp = req.send().await.unwrap();
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap();
        (
            status,
            serde_json::from_str(&text).unwrap_or(serde_json::Value::Null),
        )
    }

    /// Posts a body over the route's size limit. The server answers 413 as
    /// soon as the declared length is too large and closes the connection, so
    /// a client still writing may see a broken pipe instead of the answer
    /// (`None`); callers then check that nothing was stored.
    pub async fn post_oversized(
        &self,
        path: &str,
        body: &serde_json::Value,
    ) -> Option<(u16, serde_json::Value)> {
        let req = self.req(reqwest::Method::POST, path).json(body);
        match req.send().await {
            Ok(resp) => {
                let status = resp.status().as_u16();
                let text = resp.text().await.unwrap_or_default();
                Some((
                    status,
                    serde_json::from_str(&text).unwrap_or(serde_json::Value::Null),
                ))
            }
            Err(e) => {
                assert!(e.is_request() || e.is_body(), "unexpected failure: {e}");
                None
            }
        }
    }

    pub async fn get(&self, path: &str) -> (u16, serde_json::Value) {
        self.send(self.req(reqwest::Method::GET, path)).await
    }

    pub async fn post(&self, path: &str, body: &serde_json::Value) -> (u16, serde_json::Value) {
        self.send(self.req(reqwest::Method::POST, path).json(body))
            .await
    }
}

/// A bundle directory's files as the push API's `files` object.
pub fn files_json(dir: &Path) -> serde_json::Value {
    let mut map = serde_json::Map::new();
    fn walk(root: &Path, dir: &Path, map: &mut serde_json::Map<String, serde_json::Value>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let p = entry.unwrap().path();
            if p.is_dir() {
                walk(root, &p, map);
            } else {
                let rel = p
                    .strip_prefix(root)
                    .unwrap()
                    .to_string_lossy()
                    .replace('\\', "/");
                map.insert(rel, std::fs::read_to_string(&p).unwrap().into());
            }
        }
    }
    walk(dir, dir, &mut map);
    serde_json::Value::Object(map)
}

/// A local HTTP server that records every JSON body POSTed to it.
pub struct Receiver {
    pub url: String,
    pub got: Arc<Mutex<Vec<Value>>>,
    _task: tokio::task::JoinHandle<()>,
}

impl Receiver {
    pub async fn start() -> Receiver {
        let got: Arc<Mutex<Vec<Value>>> = Arc::default();
        let sink = got.clone();
        let app = axum::Router::new().route(
            "/hooks",
            axum::routing::post(move |body: axum::Json<Value>| {
                let sink = sink.clone();
                async move {
                    sink.lock().unwrap().push(body.0);
                    "ok"
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/hooks", listener.local_addr().unwrap());
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Receiver {
            url,
            got,
            _task: task,
        }
    }

    pub async fn wait_for(&self, n: usize) -> Vec<Value> {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let got = self.got.lock().unwrap().clone();
            if got.len() >= n {
                return got;
            }
            assert!(
                Instant::now() < deadline,
                "webhook got {} of {n}",
                got.len()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// A test deployment: several replicas (`None` while killed) on one PostgreSQL schema, all
/// started with the same extra flags.
pub struct Replicas {
    // Declared first so the servers stop before the schema is dropped under them.
    pub servers: Vec<Option<Server>>,
    pub backend: Backend,
    pub admin: String,
    extra: Vec<String>,
}

impl Replicas {
    /// Starts `n` replicas with `extra` flags; the first mints the admin token. None when
    /// PostgreSQL tests are skipped.
    pub async fn start(n: usize, extra: &[&str]) -> Option<Replicas> {
        Some(Replicas::start_on(Backend::postgres().await?, n, extra))
    }

    /// Starts `n` replicas on `backend` (a schema of another PostgreSQL, say).
    pub fn start_on(backend: Backend, n: usize, extra: &[&str]) -> Replicas {
        let first = Server::start_with(&backend, 0, extra);
        let admin = first.bootstrap_token.clone().unwrap();
        let mut servers = vec![Some(first)];
        for _ in 1..n {
            servers.push(Some(Server::start_with(&backend, 0, extra)));
        }
        Replicas {
            servers,
            backend,
            admin,
            extra: extra.iter().map(|a| (*a).to_owned()).collect(),
        }
    }

    pub fn restart(&mut self, i: usize) {
        let extra: Vec<&str> = self.extra.iter().map(String::as_str).collect();
        self.servers[i] = Some(Server::start_with(&self.backend, 0, &extra));
    }

    pub fn server(&self, i: usize) -> &Server {
        self.servers[i].as_ref().unwrap()
    }

    pub fn kill9(&mut self, i: usize) {
        self.servers[i].take().unwrap().kill9();
    }

    /// Each live replica's `/readyz` leader object (index, is_leader, epoch).
    pub async fn leadership(&self) -> Vec<(usize, bool, i64)> {
        let mut out = Vec::new();
        for (i, s) in self.servers.iter().enumerate() {
            let Some(s) = s else { continue };
            let (status, body) = s.http("").get("/readyz").await;
            assert_eq!(status, 200, "{body}");
            out.push((
                i,
                body["leader"]["is_leader"].as_bool().unwrap(),
                body["leader"]["epoch"].as_i64().unwrap(),
            ));
        }
        out
    }

    /// Waits until exactly one live replica leads; its index and epoch. (Two may believe
    /// they lead for a moment, while a deposed one has not yet noticed its lost session:
    /// the epoch, not this belief, keeps its writes out.)
    pub async fn leader(&self, within: Duration) -> (usize, i64) {
        let deadline = Instant::now() + within;
        loop {
            let all = self.leadership().await;
            let leading: Vec<_> = all.iter().filter(|(_, l, _)| *l).collect();
            if let [(i, _, epoch)] = leading.as_slice() {
                return (*i, *epoch);
            }
            assert!(
                Instant::now() < deadline,
                "no single leader within {within:?}: {all:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Opens the deployment's store directly (to find sessions and read rows).
    pub async fn store(&self) -> serin_store::Store {
        match &self.backend {
            Backend::Postgres(pg) => serin_store::Store::open_postgres(pg.url()).await.unwrap(),
            Backend::Sqlite(_) => unreachable!("failover runs on PostgreSQL"),
        }
    }
}
