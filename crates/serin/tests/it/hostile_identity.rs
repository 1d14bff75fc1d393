//! Identity attacks on the SDK-facing surface: who may speak for an SDK
//! instance, whose instance it is, what it may claim, how many it may hold,
//! what a drill without SDKs proves, how fast a revoked token loses its
//! stream, and what a stream resuming from a version the server never
//! published gets.

use std::time::{Duration, Instant};

use futures_util::StreamExt;
use serde_json::{Value, json};
use serin_sdk::Serin;

use crate::harness::{Backend, Cli, Http, Server, push_two_bundles, sample_bundle};

/// The id part of `serin_<id>_<secret>`.
fn token_id(token: &str) -> String {
    token.split('_').nth(1).unwrap().to_owned()
}

fn version_of(out: &crate::harness::Output) -> u64 {
    let v: Value = serde_json::from_str(&out.stdout).unwrap();
    v["version"].as_u64().unwrap()
}

/// support@1 then support@2 deployed in dev; returns the version of the second.
fn two_stables(cli: &Cli, work: &std::path::Path) -> u64 {
    push_two_bundles(cli, work);
    let mut last = 0;
    for n in ["1", "2"] {
        let out = cli
            .run(&[
                "deploy", "support", "--env", "dev", "--bundle", n, "--output", "json",
            ])
            .ok();
        last = version_of(&out);
    }
    last
}

/// A snapshot event as (id, data); `None` when the stream ended; `Err` when
/// nothing came in time.
type Read = Result<Option<(u64, Value)>, ()>;

/// Reads `stream` in the background until it ends or `wait` passes; yields
/// what ended the read and when.
fn watch_end(mut stream: RawStream, wait: Duration) -> tokio::task::JoinHandle<(Read, Instant)> {
    tokio::spawn(async move {
        let end = stream.next_event(wait).await;
        (end, Instant::now())
    })
}

/// An open snapshot stream read as raw SSE text.
struct RawStream {
    body: futures_util::stream::BoxStream<'static, reqwest::Result<Vec<u8>>>,
    buf: String,
}

impl RawStream {
    async fn open(http: &Http, path: &str, last_event_id: Option<u64>) -> (u16, RawStream) {
        let mut req = http
            .req(reqwest::Method::GET, path)
            .header("accept", "text/event-stream");
        if let Some(id) = last_event_id {
            req = req.header("last-event-id", id.to_string());
        }
        let resp = req.send().await.unwrap();
        let status = resp.status().as_u16();
        (
            status,
            RawStream {
                body: resp.bytes_stream().map(|r| r.map(|b| b.to_vec())).boxed(),
                buf: String::new(),
            },
        )
    }

    /// The next snapshot event as (id, data), `None` when the stream ended,
    /// `Err` when nothing came within `wait`.
    async fn next_event(&mut self, wait: Duration) -> Read {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            while let Some(end) = self.buf.find("\n\n") {
                let block: String = self.buf.drain(..end + 2).collect();
                let mut id = None;
                let mut data = String::new();
                let mut is_snapshot = false;
                for line in block.lines() {
                    if let Some(v) = line.strip_prefix("id:") {
                        id = v.trim().parse().ok();
                    } else if let Some(v) = line.strip_prefix("data:") {
                        data.push_str(v.strip_prefix(' ').unwrap_or(v));
                    } else if line.trim() == "event: snapshot" || line.trim() == "event:snapshot" {
                        is_snapshot = true;
                    }
                }
                if is_snapshot {
                    return Ok(Some((id.unwrap(), serde_json::from_str(&data).unwrap())));
                }
            }
            match tokio::time::timeout_at(deadline, self.body.next()).await {
                Err(_) => return Err(()),
                Ok(None | Some(Err(_))) => return Ok(None),
                Ok(Some(Ok(chunk))) => self.buf.push_str(&String::from_utf8_lossy(&chunk)),
            }
        }
    }
}

#[tokio::test]
async fn only_sdk_tokens_report_instances_or_follow_a_stream_as_one() {
    let backend = Backend::sqlite();
    let server = Server::start(&backend);
    let admin = server.bootstrap_token.clone().unwrap();
    let cli = server.cli(&admin);
    cli.run(&["bundle", "push", sample_bundle().to_str().unwrap()])
        .ok();
    let v = version_of(
        &cli.run(&[
            "deploy", "support", "--env", "dev", "--bundle", "1", "--output", "json",
        ])
        .ok(),
    );
    let report = json!({"env": "dev", "instance": "pod-1", "version": v});
    for role in ["viewer", "deployer", "approver"] {
        let http = server.http(&server.token(&admin, role).await);
        let (status, body) = http.post("/v1/sdk/applied", &report).await;
        assert_eq!(status, 403, "{role}: {body}");
        assert_eq!(body["error"]["code"], "forbidden", "{body}");
        assert!(
            body["error"]["message"]
                .as_str()
                .unwrap()
                .contains("sdk tokens"),
            "{body}"
        );
        let (status, _) =
            RawStream::open(&http, "/v1/envs/dev/snapshot/stream?instance=pod-1", None).await;
        assert_eq!(status, 403, "{role} opened a stream as an instance");
        // Following the stream without claiming an instance stays allowed.
        let (status, _) = RawStream::open(&http, "/v1/envs/dev/snapshot/stream", None).await;
        assert_eq!(status, 200, "{role}");
    }
    // Not even an admin token speaks for an SDK.
    let (status, body) = server.http(&admin).post("/v1/sdk/applied", &report).await;
    assert_eq!(status, 403, "{body}");
    let viewer = server.http(&server.token(&admin, "viewer").await);
    let body = viewer.get("/v1/envs/dev/sdks").await.1;
    assert_eq!(body["instances"], json!([]), "{body}");

    let sdk = server.http(&server.token(&admin, "sdk").await);
    let (status, body) = sdk.post("/v1/sdk/applied", &report).await;
    assert_eq!(status, 204, "{body}");
}

#[tokio::test]
async fn an_instance_belongs_to_the_token_that_opened_it() {
    let backend = Backend::sqlite();
    let server = Server::start(&backend);
    let admin = server.bootstrap_token.clone().unwrap();
    let cli = server.cli(&admin);
    let work = tempfile::tempdir().unwrap();
    let v = two_stables(&cli, work.path());
    let owner_token = server.token(&admin, "sdk").await;
    let owner = server.http(&owner_token);
    let other = server.http(&server.token(&admin, "sdk").await);
    let viewer = server.http(&server.token(&admin, "viewer").await);

    let (status, mut stream) =
        RawStream::open(&owner, "/v1/envs/dev/snapshot/stream?instance=pod-1", None).await;
    assert_eq!(status, 200);
    assert_eq!(
        stream
            .next_event(Duration::from_secs(5))
            .await
            .unwrap()
            .unwrap()
            .0,
        v
    );

    let forged = json!({"env": "dev", "instance": "pod-1", "version": v});
    let (status, body) = other.post("/v1/sdk/applied", &forged).await;
    assert_eq!(status, 409, "{body}");
    assert_eq!(body["error"]["code"], "conflict", "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("another token"),
        "{body}"
    );
    let (status, _) =
        RawStream::open(&other, "/v1/envs/dev/snapshot/stream?instance=pod-1", None).await;
    assert_eq!(status, 409);

    let listed = viewer.get("/v1/envs/dev/sdks").await.1;
    let pod = &listed["instances"][0];
    assert_eq!(pod["instance"], "pod-1", "{listed}");
    assert_eq!(pod["token_id"], token_id(&owner_token), "{listed}");
    assert_eq!(pod["applied_version"], Value::Null, "{listed}");
    assert_eq!(pod["streams"], 1, "{listed}");

    // The owner's own report is taken.
    let (status, body) = owner.post("/v1/sdk/applied", &forged).await;
    assert_eq!(status, 204, "{body}");
    let listed = viewer.get("/v1/envs/dev/sdks").await.1;
    assert_eq!(listed["instances"][0]["applied_version"], v, "{listed}");
}

#[tokio::test]
async fn a_report_may_claim_only_a_version_of_its_env() {
    let backend = Backend::sqlite();
    let server = Server::start(&backend);
    let admin = server.bootstrap_token.clone().unwrap();
    let cli = server.cli(&admin);
    let work = tempfile::tempdir().unwrap();
    let current = two_stables(&cli, work.path());
    let previous = current - 1;
    // A version of another env. Where envs are created explicitly, create it.
    let _ = cli.run(&["env", "create", "staging"]);
    let staging = version_of(
        &cli.run(&[
            "deploy", "support", "--env", "staging", "--bundle", "1", "--force", "--reason",
            "test", "--output", "json",
        ])
        .ok(),
    );
    let sdk = server.http(&server.token(&admin, "sdk").await);
    let viewer = server.http(&server.token(&admin, "viewer").await);
    for (version, why) in [
        (staging + 1, "a version from the future"),
        (staging, "another env's version"),
        (u64::MAX, "the largest version"),
        (1u64 << 63, "beyond the store's integers"),
    ] {
        let (status, body) = sdk
            .post(
                "/v1/sdk/applied",
                &json!({"env": "dev", "instance": "pod-1", "version": version}),
            )
            .await;
        assert_eq!(status, 422, "{why}: {body}");
        assert_eq!(body["error"]["field"], "/version", "{why}: {body}");
        assert!(
            body["error"]["message"]
                .as_str()
                .unwrap()
                .contains(&format!("current version is {current}")),
            "{why}: {body}"
        );
    }
    let body = viewer.get("/v1/envs/dev/sdks").await.1;
    assert_eq!(body["instances"], json!([]), "nothing recorded: {body}");

    for version in [previous, current] {
        let (status, body) = sdk
            .post(
                "/v1/sdk/applied",
                &json!({"env": "dev", "instance": "pod-1", "version": version}),
            )
            .await;
        assert_eq!(status, 204, "v{version}: {body}");
    }
    let body = viewer.get("/v1/envs/dev/sdks").await.1;
    assert_eq!(body["instances"][0]["applied_version"], current, "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forged_report_cannot_turn_a_failing_drill_into_a_success() {
    let backend = Backend::sqlite();
    let server = Server::start(&backend);
    let admin = server.bootstrap_token.clone().unwrap();
    let cli = server.cli(&admin);
    let work = tempfile::tempdir().unwrap();
    let before = two_stables(&cli, work.path());

    // A connected SDK that never reports what it applied: the drill must fail.
    let silent = server.http(&server.token(&admin, "sdk").await);
    let (status, _silent_stream) = RawStream::open(
        &silent,
        "/v1/envs/dev/snapshot/stream?instance=silent",
        None,
    )
    .await;
    assert_eq!(status, 200);

    let deployer = server.cli(&server.token(&admin, "deployer").await);
    let drill = std::thread::spawn(move || {
        deployer.run(&[
            "drill",
            "rollback",
            "support",
            "--env",
            "dev",
            "--timeout",
            "2s",
            "--output",
            "json",
        ])
    });

    // Forgers answer every new version in silent's name, as the viewer of
    // the original report did, and as another sdk token would.
    let forgers = [
        server.http(&server.token(&admin, "viewer").await),
        server.http(&server.token(&admin, "sdk").await),
    ];
    let viewer = server.http(&server.token(&admin, "viewer").await);
    let mut seen = before;
    let mut answers = Vec::new();
    while !drill.is_finished() {
        let (_, snap) = viewer.get("/v1/envs/dev/snapshot").await;
        let v = snap["version"].as_u64().unwrap();
        if v > seen {
            seen = v;
            for forger in &forgers {
                let (status, body) = forger
                    .post(
                        "/v1/sdk/applied",
                        &json!({"env": "dev", "instance": "silent", "version": v}),
                    )
                    .await;
                answers.push((status, body));
            }
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let out = drill.join().unwrap();
    assert!(seen >= before + 2, "both legs were seen: {seen}");
    let statuses: Vec<u16> = answers.iter().map(|(s, _)| *s).collect();
    assert!(
        statuses.chunks(2).all(|c| c == [403, 409]),
        "viewer 403, other sdk token 409: {answers:?}"
    );
    assert_eq!(out.code, 1, "{out:#?}");
    let d: Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(d["outcome"], "failed", "{d:#}");
    assert_eq!(d["rollback"]["lagging"], json!(["silent"]), "{d:#}");
    assert_eq!(d["rollback"]["confirmed"], 0, "{d:#}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_token_cannot_fill_the_registry_and_lock_other_sdks_out() {
    let backend = Backend::sqlite();
    let server = Server::start(&backend);
    let admin = server.bootstrap_token.clone().unwrap();
    let cli = server.cli(&admin);
    cli.run(&["bundle", "push", sample_bundle().to_str().unwrap()])
        .ok();
    let v = version_of(
        &cli.run(&[
            "deploy", "support", "--env", "dev", "--bundle", "1", "--output", "json",
        ])
        .ok(),
    );
    let flooder = server.http(&server.token(&admin, "sdk").await);
    let statuses = futures_util::stream::iter(0..1000)
        .map(|i| {
            let flooder = &flooder;
            async move {
                flooder
                    .post(
                        "/v1/sdk/applied",
                        &json!({"env": "dev", "instance": format!("fake-{i}"), "version": v}),
                    )
                    .await
                    .0
            }
        })
        .buffer_unordered(8)
        .collect::<Vec<u16>>()
        .await;
    assert!(statuses.iter().all(|s| *s == 204), "{statuses:?}");
    let resp = flooder
        .req(reqwest::Method::POST, "/v1/sdk/applied")
        .json(&json!({"env": "dev", "instance": "fake-1000", "version": v}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 429);
    assert!(resp.headers().contains_key("retry-after"));
    let body: Value = resp.json().await.unwrap();
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("per-token limit"),
        "{body}"
    );
    // The flooder's known instances still report.
    let (status, _) = flooder
        .post(
            "/v1/sdk/applied",
            &json!({"env": "dev", "instance": "fake-7", "version": v}),
        )
        .await;
    assert_eq!(status, 204);

    // A real SDK with its own token registers and reports.
    let fleet = server.token(&admin, "sdk").await;
    let sdk = Serin::builder(server.url.clone(), fleet.clone(), "dev")
        .instance("real-1")
        .backoff(Duration::from_millis(50), Duration::from_millis(250))
        .start_timeout(Duration::from_secs(10))
        .start()
        .await
        .unwrap();
    let viewer = server.http(&server.token(&admin, "viewer").await);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let body = viewer.get("/v1/envs/dev/sdks").await.1;
        let real = body["instances"]
            .as_array()
            .unwrap()
            .iter()
            .find(|i| i["instance"] == "real-1")
            .cloned();
        if let Some(real) = real
            && real["applied_version"] == v
        {
            assert_eq!(real["connected"], true, "{real}");
            assert_eq!(real["token_id"], token_id(&fleet), "{real}");
            break;
        }
        assert!(Instant::now() < deadline, "the real SDK never registered");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    sdk.shutdown().await;
}

#[tokio::test]
async fn a_drill_with_no_sdk_is_inconclusive_and_not_evidence() {
    let backend = Backend::sqlite();
    let server = Server::start(&backend);
    let admin = server.bootstrap_token.clone().unwrap();
    let cli = server.cli(&admin);
    let work = tempfile::tempdir().unwrap();
    two_stables(&cli, work.path());

    let deployer = server.cli(&server.token(&admin, "deployer").await);
    let out = deployer.run(&[
        "drill",
        "rollback",
        "support",
        "--env",
        "dev",
        "--timeout",
        "1s",
        "--output",
        "json",
    ]);
    assert_eq!(out.code, 1, "{out:#?}");
    let d: Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(d["outcome"], "inconclusive", "{d:#}");
    assert_eq!(d["rollback"]["sdks"], 0, "{d:#}");
    assert!(
        d["error"]
            .as_str()
            .unwrap()
            .contains("no SDK was connected"),
        "{d:#}"
    );
    assert!(
        out.stderr.contains("no SDK was connected"),
        "{}",
        out.stderr
    );
    // The human form says so too, and the env ends where it started.
    let out = deployer.run(&["drill", "rollback", "support", "--env", "dev"]);
    assert_eq!(out.code, 1, "{out:#?}");
    assert!(out.stdout.contains("inconclusive"), "{}", out.stdout);
    let snap = cli
        .run(&["snapshot", "--env", "dev", "--output", "json"])
        .ok();
    let snap: Value = serde_json::from_str(&snap.stdout).unwrap();
    assert_eq!(snap["agents"]["support"]["stable"]["id"], "support@2");

    let history = cli
        .run(&[
            "drill", "history", "support", "--env", "dev", "--output", "json",
        ])
        .ok();
    let history: Value = serde_json::from_str(&history.stdout).unwrap();
    assert_eq!(history["summary"]["succeeded"], 0, "{history:#}");

    let policy = work.path().join("readiness.yaml");
    std::fs::write(&policy, "require: [rollback_drill_recent]\n").unwrap();
    cli.run(&[
        "readiness",
        "apply",
        "support",
        "--env",
        "dev",
        policy.to_str().unwrap(),
    ])
    .ok();
    let out = cli.run(&[
        "readiness",
        "check",
        "support",
        "--env",
        "dev",
        "--bundle",
        "1",
        "--output",
        "json",
    ]);
    let v: Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(v["ready"], false, "{v:#}");
    let item = v["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["key"] == "rollback_drill_recent")
        .unwrap();
    assert_ne!(item["status"], "pass", "{item:#}");
    assert_eq!(out.code, 1, "{out:#?}");
}

/// Revokes through the API and checks the stream ends within a second with
/// no snapshot after the revocation, though a new version was published.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoked_token_loses_its_stream_within_a_second() {
    let backend = Backend::sqlite();
    let server = Server::start(&backend);
    let admin = server.bootstrap_token.clone().unwrap();
    let cli = server.cli(&admin);
    let work = tempfile::tempdir().unwrap();
    let v = two_stables(&cli, work.path());
    let token = server.token(&admin, "sdk").await;
    let sdk = server.http(&token);
    let viewer_token = server.token(&admin, "viewer").await;
    let viewer = server.http(&viewer_token);
    let (status, mut stream) =
        RawStream::open(&sdk, "/v1/envs/dev/snapshot/stream?instance=pod-1", None).await;
    assert_eq!(status, 200);
    assert_eq!(
        stream
            .next_event(Duration::from_secs(5))
            .await
            .unwrap()
            .unwrap()
            .0,
        v
    );
    // A plain viewer stream is closed the same way.
    let (_, mut viewer_stream) =
        RawStream::open(&viewer, "/v1/envs/dev/snapshot/stream", None).await;
    viewer_stream
        .next_event(Duration::from_secs(5))
        .await
        .unwrap()
        .unwrap();

    let http_admin = server.http(&admin);
    let revoked_at = Instant::now();
    for t in [&token, &viewer_token] {
        let (status, body) = http_admin
            .send(http_admin.req(
                reqwest::Method::DELETE,
                &format!("/v1/tokens/{}", token_id(t)),
            ))
            .await;
        assert_eq!(status, 204, "{body}");
    }
    let watchers = [
        watch_end(stream, Duration::from_secs(3)),
        watch_end(viewer_stream, Duration::from_secs(3)),
    ];
    // A change after the revocation must not reach the revoked streams.
    cli.run(&[
        "kill",
        "support",
        "--env",
        "dev",
        "--reason",
        "after revocation",
    ])
    .ok();
    for w in watchers {
        let (end, at) = w.await.unwrap();
        assert_eq!(
            end,
            Ok(None),
            "the stream must end with no further snapshot"
        );
        let took = at.duration_since(revoked_at);
        assert!(took < Duration::from_secs(1), "ended after {took:?}");
    }
    // Its instance id is free, and the token no longer opens a stream.
    let listed = server
        .http(&server.token(&admin, "viewer").await)
        .get("/v1/envs/dev/sdks")
        .await
        .1;
    assert_eq!(listed["instances"], json!([]), "{listed}");
    let (status, _) =
        RawStream::open(&sdk, "/v1/envs/dev/snapshot/stream?instance=pod-1", None).await;
    assert_eq!(status, 401);
}

/// Revocation written straight into the store by another process (another
/// replica, or an offline CLI) reaches the running server's streams within a
/// second.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_revoked_offline_loses_its_stream_within_a_second() {
    let backend = Backend::sqlite();
    let Backend::Sqlite(dir) = &backend else {
        unreachable!()
    };
    let server = Server::start(&backend);
    let admin = server.bootstrap_token.clone().unwrap();
    let cli = server.cli(&admin);
    cli.run(&["bundle", "push", sample_bundle().to_str().unwrap()])
        .ok();
    cli.run(&["deploy", "support", "--env", "dev", "--bundle", "1"])
        .ok();
    let token = server.token(&admin, "sdk").await;
    let sdk = server.http(&token);
    let (status, mut stream) =
        RawStream::open(&sdk, "/v1/envs/dev/snapshot/stream?instance=pod-1", None).await;
    assert_eq!(status, 200);
    stream
        .next_event(Duration::from_secs(5))
        .await
        .unwrap()
        .unwrap();

    // Another process writes the revocation into the store, as another
    // replica (or an offline CLI) would: this server hears nothing of it.
    let other = serin_store::Store::open_sqlite(dir.path()).await.unwrap();
    assert!(
        other
            .revoke_token(&token_id(&token), 1, "token:elsewhere")
            .await
            .unwrap()
    );
    let revoked_at = Instant::now();
    let watcher = watch_end(stream, Duration::from_secs(3));
    cli.run(&[
        "kill",
        "support",
        "--env",
        "dev",
        "--reason",
        "after revocation",
    ])
    .ok();
    let (end, at) = watcher.await.unwrap();
    assert_eq!(
        end,
        Ok(None),
        "the stream must end with no further snapshot"
    );
    let took = at.duration_since(revoked_at);
    assert!(took < Duration::from_secs(1), "ended after {took:?}");
    let (status, _) = RawStream::open(&sdk, "/v1/envs/dev/snapshot/stream", None).await;
    assert_eq!(status, 401);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_resuming_from_a_version_ahead_of_the_server_gets_the_full_snapshot() {
    let backend = Backend::sqlite();
    let server = Server::start(&backend);
    let admin = server.bootstrap_token.clone().unwrap();
    let cli = server.cli(&admin);
    let work = tempfile::tempdir().unwrap();
    let current = two_stables(&cli, work.path());
    let sdk = server.http(&server.token(&admin, "sdk").await);

    for ahead in [current + 1, current + 1000, u64::MAX] {
        let (status, mut stream) =
            RawStream::open(&sdk, "/v1/envs/dev/snapshot/stream", Some(ahead)).await;
        assert_eq!(status, 200);
        let (id, data) = stream
            .next_event(Duration::from_secs(2))
            .await
            .expect("an SDK ahead of the server must not be left silent")
            .unwrap();
        assert_eq!(id, current, "Last-Event-ID {ahead}");
        assert_eq!(data["version"], current);
        for b in ["support@1", "support@2"] {
            assert!(data["bundles"][b].is_object(), "{b} missing: {data:#}");
        }
    }
    // Up to date: nothing to send.
    let (_, mut stream) =
        RawStream::open(&sdk, "/v1/envs/dev/snapshot/stream", Some(current)).await;
    assert_eq!(stream.next_event(Duration::from_millis(500)).await, Err(()));
}

/// The real SDK, with a disk cache from a store that went further than the
/// one the server now runs on (a restore), adopts the server's snapshot and
/// follows its next changes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_sdk_ahead_of_a_restored_server_adopts_its_snapshot_and_follows_it() {
    let cache = tempfile::tempdir().unwrap();
    let work = tempfile::tempdir().unwrap();
    let start = |server: &Server, token: &str| {
        Serin::builder(server.url.clone(), token.to_owned(), "dev")
            .instance("pod-1")
            .cache_dir(cache.path())
            .backoff(Duration::from_millis(50), Duration::from_millis(250))
            .start_timeout(Duration::from_secs(10))
            .start()
    };

    let before = Backend::sqlite();
    let server = Server::start(&before);
    let admin = server.bootstrap_token.clone().unwrap();
    let cli = server.cli(&admin);
    let far = two_stables(&cli, work.path());
    let far = version_of(
        &cli.run(&[
            "kill", "support", "--env", "dev", "--reason", "far", "--output", "json",
        ])
        .ok(),
    )
    .max(far);
    let sdk = start(&server, &server.token(&admin, "sdk").await)
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while sdk.snapshot_version() != Some(far) {
        assert!(Instant::now() < deadline, "never reached v{far}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    sdk.shutdown().await;
    // Give the cache writer its moment.
    tokio::time::sleep(Duration::from_millis(200)).await;
    server.stop();

    // The "restored" store is behind: one deploy.
    let restored = Backend::sqlite();
    let server = Server::start(&restored);
    let admin = server.bootstrap_token.clone().unwrap();
    let cli = server.cli(&admin);
    cli.run(&["bundle", "push", sample_bundle().to_str().unwrap()])
        .ok();
    let behind = version_of(
        &cli.run(&[
            "deploy", "support", "--env", "dev", "--bundle", "1", "--output", "json",
        ])
        .ok(),
    );
    assert!(behind < far);
    let sdk = start(&server, &server.token(&admin, "sdk").await)
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while sdk.snapshot_version() != Some(behind) {
        assert!(
            Instant::now() < deadline,
            "the SDK kept v{:?}, ahead of the server's v{behind}",
            sdk.snapshot_version()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let next = version_of(
        &cli.run(&[
            "kill", "support", "--env", "dev", "--reason", "next", "--output", "json",
        ])
        .ok(),
    );
    assert!(next < far);
    let deadline = Instant::now() + Duration::from_secs(10);
    while sdk.snapshot_version() != Some(next) {
        assert!(Instant::now() < deadline, "the SDK missed v{next}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    sdk.shutdown().await;
}
