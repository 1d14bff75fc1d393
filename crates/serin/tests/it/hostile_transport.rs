//! A hostile client against the transport: half-sent requests, connection floods, stalled
//! bodies, YAML bombs, oversized heads, a webhook receiver that always fails, and what the
//! server leaves on disk.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::harness::{
    Backend, Server, files_json, push_two_bundles, sample_bundle, stable_then_release,
};

/// Opens `n` connections that each send half a request line and then stall.
async fn half_sent(port: u16, n: usize) -> Vec<TcpStream> {
    let mut conns = Vec::with_capacity(n);
    for _ in 0..n {
        let mut s = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
        s.write_all(b"GET /heal").await.unwrap();
        conns.push(s);
    }
    conns
}

/// How many of `conns` the server has closed (a read sees end of stream or a reset), checked
/// without waiting so that hundreds of sockets take no time.
async fn closed(conns: &mut [TcpStream]) -> usize {
    // Let the FINs of anything just closed arrive.
    tokio::time::sleep(Duration::from_millis(50)).await;
    let mut n = 0;
    for s in conns.iter_mut() {
        let mut buf = [0u8; 64];
        match s.try_read(&mut buf) {
            Ok(0) => n += 1,
            Err(e) if e.kind() != std::io::ErrorKind::WouldBlock => n += 1,
            Ok(_) | Err(_) => {}
        }
    }
    n
}

/// `/healthz` on a fresh connection answers 200, and how long it took.
async fn healthz(server: &Server) -> Duration {
    let start = Instant::now();
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    let resp = client
        .get(format!("{}/healthz", server.url))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    start.elapsed()
}

/// Sends raw bytes and reads the whole answer (the server closes after it).
async fn raw(port: u16, request: &[u8]) -> String {
    let mut s = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    // The server may answer and close before it has read everything: ignore write errors.
    let _ = s.write_all(request).await;
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

/// The JSON body of a raw HTTP/1.1 answer.
fn body_of(answer: &str) -> Value {
    let (_, body) = answer.split_once("\r\n\r\n").unwrap_or_default();
    serde_json::from_str(body).unwrap_or(Value::Null)
}

/// An open snapshot stream of env `dev`, its first event already read.
async fn open_stream(server: &Server, token: &str) -> reqwest::Response {
    let mut resp = server
        .http(token)
        .req(reqwest::Method::GET, "/v1/envs/dev/snapshot/stream")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let first = tokio::time::timeout(Duration::from_secs(5), resp.chunk())
        .await
        .expect("the stream's first event within 5 s")
        .unwrap();
    assert!(first.is_some());
    resp
}

/// The stream delivers the next snapshot within a few seconds of a deploy.
async fn stream_gets_the_next_version(
    stream: &mut reqwest::Response,
    server: &Server,
    admin: &str,
    bundle: &str,
) {
    server
        .cli(admin)
        .run(&["deploy", "support", "--env", "dev", "--bundle", bundle])
        .ok();
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let chunk = tokio::time::timeout(left, stream.chunk())
            .await
            .expect("the open stream got no new snapshot within 5 s")
            .unwrap()
            .expect("the open stream ended");
        let text = String::from_utf8_lossy(&chunk);
        if text.contains(&format!("support@{bundle}")) {
            return;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_sent_requests_leave_healthz_and_streams_answering_and_are_closed_after_the_header_timeout()
 {
    let backend = Backend::sqlite();
    let server = Server::start_with(&backend, 0, &["--header-timeout-ms", "4000"]);
    let admin = server.bootstrap_token.clone().unwrap();
    let work = tempfile::tempdir().unwrap();
    push_two_bundles(&server.cli(&admin), work.path());
    let mut early = open_stream(&server, &admin).await;

    let opened = Instant::now();
    let mut stalled = half_sent(server.port(), 300).await;
    assert!(healthz(&server).await < Duration::from_secs(1));
    let _late = open_stream(&server, &admin).await;
    assert_eq!(
        closed(&mut stalled).await,
        0,
        "closed before the header timeout"
    );

    // Every stalled connection is closed once its head is 1.5 s late.
    let deadline = opened + Duration::from_secs(8);
    loop {
        let n = closed(&mut stalled).await;
        if n == stalled.len() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "only {n} of 300 stalled connections closed"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // A stream is a request in flight, not a late head: it is still open and served.
    stream_gets_the_next_version(&mut early, &server, &admin, "2").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn beyond_the_connection_cap_half_open_connections_are_evicted_and_healthz_still_answers() {
    let backend = Backend::sqlite();
    let server = Server::start_with(
        &backend,
        0,
        &["--max-connections", "50", "--header-timeout-ms", "60000"],
    );
    let admin = server.bootstrap_token.clone().unwrap();
    let work = tempfile::tempdir().unwrap();
    push_two_bundles(&server.cli(&admin), work.path());
    let mut stream = open_stream(&server, &admin).await;

    let mut flood = half_sent(server.port(), 400).await;
    for _ in 0..5 {
        assert!(healthz(&server).await < Duration::from_secs(1));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let n = closed(&mut flood).await;
    assert!(
        n >= 400 - 50,
        "only {n} of 400 flooding connections were closed"
    );
    // The newest ones, under the cap, are still waiting for their heads.
    assert!(n < 400, "every connection was closed");
    stream_gets_the_next_version(&mut stream, &server, &admin, "2").await;

    let metrics = server
        .http(&admin)
        .req(reqwest::Method::GET, "/metrics")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("serin_http_connections_evicted_total"),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_that_stalls_answers_408_after_the_body_timeout() {
    let backend = Backend::sqlite();
    let server = Server::start_with(&backend, 0, &["--body-timeout-ms", "800"]);
    let admin = server.bootstrap_token.clone().unwrap();
    let viewer = server.token(&admin, "viewer").await;
    let mut s = TcpStream::connect(("127.0.0.1", server.port()))
        .await
        .unwrap();
    let head = format!(
        "POST /v1/bundles/validate HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {viewer}\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{{\"files\":"
    );
    s.write_all(head.as_bytes()).await.unwrap();
    let start = Instant::now();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut out)).await;
    let answer = String::from_utf8_lossy(&out);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert_eq!(
        body_of(&answer)["error"]["code"],
        "request_timeout",
        "{answer}"
    );
    assert!(start.elapsed() < Duration::from_secs(5));
}

/// A billion-laughs example file: nine levels of nine aliases (9^9 nodes once expanded).
fn yaml_bomb() -> String {
    let mut s = String::from("a0: &a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]\n");
    for i in 1..9 {
        let refs = vec![format!("*a{}", i - 1); 9].join(",");
        s.push_str(&format!("a{i}: &a{i} [{refs}]\n"));
    }
    s.push_str("messages: [*a8]\n");
    s
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thirty_yaml_bombs_in_one_validate_body_answer_422_at_once_without_delaying_healthz() {
    let backend = Backend::sqlite();
    let server = Server::start(&backend);
    let admin = server.bootstrap_token.clone().unwrap();
    let viewer = server.token(&admin, "viewer").await;
    let mut files = files_json(&sample_bundle());
    for i in 0..30 {
        files[format!("examples/bomb-{i:02}.yaml")] = yaml_bomb().into();
    }
    let body = json!({ "files": files });
    assert!(body.to_string().len() < 20 * 1024);

    let probing = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let url = server.url.clone();
    let flag = probing.clone();
    let probe = tokio::spawn(async move {
        let client = reqwest::Client::new();
        let mut worst = Duration::ZERO;
        while flag.load(Ordering::Relaxed) {
            let t = Instant::now();
            let resp = client.get(format!("{url}/healthz")).send().await.unwrap();
            assert_eq!(resp.status(), 200);
            worst = worst.max(t.elapsed());
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        worst
    });
    let start = Instant::now();
    let (status, resp) = server
        .http(&viewer)
        .post("/v1/bundles/validate", &body)
        .await;
    let took = start.elapsed();
    probing.store(false, Ordering::Relaxed);
    let worst = probe.await.unwrap();

    assert_eq!(status, 422, "{resp}");
    assert_eq!(resp["error"]["code"], "invalid_bundle");
    assert!(
        resp["error"]["message"]
            .as_str()
            .unwrap()
            .contains("budget"),
        "{resp}"
    );
    let problems = resp["error"]["details"]["problems"].as_array().unwrap();
    assert!(
        problems.iter().any(|p| p["code"] == "budget_exceeded"),
        "{resp}"
    );
    assert!(took < Duration::from_secs(2), "validation took {took:?}");
    assert!(
        worst < Duration::from_millis(500),
        "/healthz took {worst:?}"
    );

    // The push route is bounded by the same budget.
    let (status, resp) = server.http(&admin).post("/v1/bundles", &body).await;
    assert_eq!(status, 422, "{resp}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn validations_beyond_the_concurrency_cap_answer_429_with_retry_after() {
    let backend = Backend::sqlite();
    let server = Server::start_with(&backend, 0, &["--max-validations", "1"]);
    let admin = server.bootstrap_token.clone().unwrap();
    // A valid but heavy bundle: 400 examples of about 15 KiB each.
    let mut files = files_json(&sample_bundle());
    let turn = format!("  - role: user\n    content: \"{}\"\n", "a".repeat(60));
    let example = format!("messages:\n{}", turn.repeat(180));
    for i in 0..400 {
        files[format!("examples/heavy-{i:03}.yaml")] = example.clone().into();
    }
    let body = Arc::new(json!({ "files": files }));
    let mut tasks = Vec::new();
    for _ in 0..6 {
        let http = server.http(&admin);
        let body = body.clone();
        tasks.push(tokio::spawn(async move {
            let resp = http
                .req(reqwest::Method::POST, "/v1/bundles/validate")
                .json(&*body)
                .send()
                .await
                .unwrap();
            let status = resp.status().as_u16();
            let retry = resp.headers().get("retry-after").is_some();
            let body: Value = resp.json().await.unwrap();
            (status, retry, body)
        }));
    }
    let mut ok = 0;
    let mut shed = 0;
    for t in tasks {
        let (status, retry, body) = t.await.unwrap();
        match status {
            200 => {
                assert_eq!(body["valid"], true, "{body}");
                ok += 1;
            }
            429 => {
                assert!(retry, "429 without Retry-After");
                assert_eq!(body["error"]["code"], "overloaded");
                shed += 1;
            }
            other => panic!("unexpected {other}: {body}"),
        }
    }
    assert!(ok >= 1 && shed >= 1, "{ok} validated, {shed} shed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_webhook_that_always_fails_is_given_up_after_its_attempts_and_never_retried() {
    let hits = Arc::new(AtomicUsize::new(0));
    let counter = hits.clone();
    let app = axum::Router::new().route(
        "/hooks",
        axum::routing::post(move || {
            let counter = counter.clone();
            async move {
                counter.fetch_add(1, Ordering::SeqCst);
                (axum::http::StatusCode::INTERNAL_SERVER_ERROR, "down")
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let hook = format!("http://{}/hooks", listener.local_addr().unwrap());
    let _receiver = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });

    let backend = Backend::sqlite();
    let server = Server::start_with(
        &backend,
        0,
        &[
            "--tick-ms",
            "100",
            "--webhook-max-attempts",
            "3",
            "--webhook-backoff-ms",
            "50",
            "--webhook-max-backoff-ms",
            "100",
        ],
    );
    let admin = server.bootstrap_token.clone().unwrap();
    server.create_envs(&admin);
    let cli = server.cli(&admin);
    let work = tempfile::tempdir().unwrap();
    push_two_bundles(&cli, work.path());
    stable_then_release(
        &cli,
        work.path(),
        format!(
            "steps:\n  - canary: {{weight: 5%, min_duration: 1h, min_requests: 100}}\n\
             promotion: manual\non_failure: rollback\n\
             guardrails:\n  error_rate: {{max: 5%}}\n  settings: {{min_requests: 100}}\n\
             notify: [{{webhook: \"{hook}\"}}]\n"
        ),
    );
    cli.run(&[
        "release", "abort", "support", "--env", "prod", "--reason", "test",
    ])
    .ok();

    let status = || {
        let out = cli
            .run(&[
                "release", "status", "support", "--env", "prod", "--output", "json",
            ])
            .ok();
        serde_json::from_str::<Value>(&out.stdout).unwrap()
    };
    let deadline = Instant::now() + Duration::from_secs(15);
    let rows = loop {
        let v = status();
        let rows = v["notifications"].as_array().cloned().unwrap_or_default();
        if !rows.is_empty() && rows.iter().all(|n| n["state"] == "failed") {
            break rows;
        }
        assert!(Instant::now() < deadline, "never gave up: {v}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    for n in &rows {
        assert_eq!(n["attempts"], 3, "{n}");
        assert!(n["failed_at"].is_string(), "{n}");
        assert!(n["delivered_at"].is_null(), "{n}");
        assert!(n["last_error"].as_str().unwrap().contains("500"), "{n}");
    }
    let seen = hits.load(Ordering::SeqCst);
    assert_eq!(seen, 3 * rows.len());
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(hits.load(Ordering::SeqCst), seen, "retried after giving up");

    let metrics = server
        .http(&admin)
        .req(reqwest::Method::GET, "/metrics")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("serin_webhook_deliveries_total{result=\"gave_up\"}"),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_uris_and_heads_answer_414_and_431_in_the_json_error_shape() {
    let backend = Backend::sqlite();
    let server = Server::start(&backend);
    let port = server.port();

    let long = format!(
        "GET /v1/agents?x={} HTTP/1.1\r\nHost: x\r\n\r\n",
        "a".repeat(16 * 1024)
    );
    let answer = raw(port, long.as_bytes()).await;
    assert!(answer.starts_with("HTTP/1.1 414"), "{answer}");
    assert!(
        answer.to_ascii_lowercase().contains("content-length: "),
        "{answer}"
    );
    assert_eq!(
        body_of(&answer)["error"]["code"],
        "uri_too_long",
        "{answer}"
    );
    assert!(
        answer
            .to_ascii_lowercase()
            .contains("x-content-type-options: nosniff")
    );

    // Longer than hyper will read at all: its own 414/431, rewritten.
    let huge = format!("GET /{} HTTP/1.1\r\nHost: x\r\n\r\n", "a".repeat(70 * 1024));
    let answer = raw(port, huge.as_bytes()).await;
    assert!(
        answer.starts_with("HTTP/1.1 431") || answer.starts_with("HTTP/1.1 414"),
        "{answer}"
    );
    let code = body_of(&answer)["error"]["code"].clone();
    assert!(
        code == "headers_too_large" || code == "uri_too_long",
        "{answer}"
    );

    let big_header = format!(
        "GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n",
        "b".repeat(80 * 1024)
    );
    let answer = raw(port, big_header.as_bytes()).await;
    assert!(answer.starts_with("HTTP/1.1 431"), "{answer}");
    assert_eq!(
        body_of(&answer)["error"]["code"],
        "headers_too_large",
        "{answer}"
    );

    let mut many = String::from("GET /healthz HTTP/1.1\r\nHost: x\r\n");
    for i in 0..150 {
        many.push_str(&format!("X-H{i}: v\r\n"));
    }
    many.push_str("\r\n");
    let answer = raw(port, many.as_bytes()).await;
    assert!(answer.starts_with("HTTP/1.1 431"), "{answer}");
    assert_eq!(
        body_of(&answer)["error"]["code"],
        "headers_too_large",
        "{answer}"
    );

    let answer = raw(port, b"NOT HTTP AT ALL\r\n\r\n").await;
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    assert_eq!(body_of(&answer)["error"]["code"], "bad_request", "{answer}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_answer_is_nosniff_and_answers_carrying_secrets_are_no_store() {
    let backend = Backend::sqlite();
    let server = Server::start(&backend);
    let admin = server.bootstrap_token.clone().unwrap();
    push_two_bundles(&server.cli(&admin), tempfile::tempdir().unwrap().path());
    let http = server.http(&admin);
    let stranger = server.http("");
    let check = |resp: &reqwest::Response, what: &str| {
        let h = resp.headers();
        assert_eq!(
            h.get("x-content-type-options").map(|v| v.to_str().unwrap()),
            Some("nosniff"),
            "{what}"
        );
        assert_eq!(
            h.get("cache-control").map(|v| v.to_str().unwrap()),
            Some("no-store"),
            "{what}"
        );
    };
    let r = http
        .req(reqwest::Method::POST, "/v1/tokens")
        .json(&json!({"role": "viewer", "name": "t"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    check(&r, "token create");
    for path in [
        "/healthz",
        "/v1/agents/support/bundles/1",
        "/v1/envs/dev/snapshot",
        "/v1/audit",
        "/no/such/route",
    ] {
        let r = http.req(reqwest::Method::GET, path).send().await.unwrap();
        check(&r, path);
    }
    let r = stranger
        .req(reqwest::Method::GET, "/v1/agents")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    check(&r, "401");
    let r = http
        .req(reqwest::Method::GET, "/v1/envs/dev/snapshot/stream")
        .send()
        .await
        .unwrap();
    check(&r, "snapshot stream");
}

#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sqlite_store_and_the_data_dir_it_creates_are_private_to_the_owner() {
    use std::os::unix::fs::PermissionsExt;
    let backend = Backend::sqlite();
    let Backend::Sqlite(dir) = &backend else {
        unreachable!()
    };
    // Serin creates the directory itself.
    std::fs::remove_dir(dir.path()).unwrap();
    let server = Server::start(&backend);
    let admin = server.bootstrap_token.clone().unwrap();
    server
        .cli(&admin)
        .run(&["bundle", "push", sample_bundle().to_str().unwrap()])
        .ok();
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(dir.path()), 0o700);
    let db = dir.path().join("serin.db");
    assert_eq!(mode(&db), 0o600);
    for ext in ["-wal", "-shm"] {
        let p = dir.path().join(format!("serin.db{ext}"));
        assert!(p.exists(), "{} missing", p.display());
        assert_eq!(mode(&p), 0o600, "{}", p.display());
    }
}
