//! The side-effect ledger against a real server: retries never act twice, results settle
//! once, roles hold, and an intent whose process died shows `unknown` after the sweep.

use std::time::{Duration, Instant};

use serde_json::json;

use crate::harness::{Backend, Server, push_two_bundles, stable_then_release};

fn intent(key: &str, timeout_ms: Option<i64>) -> serde_json::Value {
    let mut v = json!({"key": key, "agent": "support", "bundle": 2, "request_id": "req-1",
        "tool": "refund", "args_digest": "sha256:abc"});
    if let Some(t) = timeout_ms {
        v["timeout_ms"] = json!(t);
    }
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_run_once_results_settle_once_and_dead_intents_become_unknown() {
    let backend = Backend::sqlite();
    let server = Server::start_with(&backend, 0, &["--tick-ms", "100"]);
    let admin = server.bootstrap_token.clone().unwrap();
    let work = tempfile::tempdir().unwrap();
    push_two_bundles(&server.cli(&admin), work.path());
    let sdk = server.http(&server.token(&admin, "sdk").await);
    let viewer_token = server.token(&admin, "viewer").await;
    let viewer = server.http(&viewer_token);

    // A retried intent with the same key returns the first record and does not create one.
    let (status, first) = sdk
        .post("/v1/effects", &intent("support/2/req-1/refund", None))
        .await;
    assert_eq!(status, 201, "{first}");
    assert_eq!(first["created"], true);
    assert_eq!(first["effect"]["status"], "intent");
    assert_eq!(first["effect"]["timeout_ms"], 300_000);
    let (status, again) = sdk
        .post("/v1/effects", &intent("support/2/req-1/refund", None))
        .await;
    assert_eq!(status, 200, "{again}");
    assert_eq!(again["created"], false);
    assert_eq!(again["effect"], first["effect"]);
    // The same key for another call is a conflict, not a silent overwrite.
    let mut reused = intent("support/2/req-1/refund", None);
    reused["args_digest"] = json!("sha256:other");
    let (status, body) = sdk.post("/v1/effects", &reused).await;
    assert_eq!(status, 409, "{body}");

    // One result; the same again is fine; a different one is 409.
    let path = "/v1/effects/support%2F2%2Freq-1%2Frefund/result";
    let key_path = "/v1/effects/support:2:req-1/result";
    sdk.post("/v1/effects", &intent("support:2:req-1", None))
        .await;
    let (status, body) = sdk
        .post(
            key_path,
            &json!({"status": "committed", "detail": "refunded"}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["status"], "committed");
    let (status, body) = sdk.post(key_path, &json!({"status": "committed"})).await;
    assert_eq!(
        (status, &body["detail"]),
        (200, &json!("refunded")),
        "{body}"
    );
    let (status, body) = sdk.post(key_path, &json!({"status": "failed"})).await;
    assert_eq!(status, 409, "{body}");
    assert_eq!(body["error"]["field"], "/status", "{body}");
    // A key with slashes is addressed percent-encoded as one path segment.
    let (status, body) = sdk.post(path, &json!({"status": "failed"})).await;
    assert_eq!(
        (status, &body["key"]),
        (200, &json!("support/2/req-1/refund")),
        "{body}"
    );
    let (status, body) = sdk
        .post(
            "/v1/effects/never-recorded/result",
            &json!({"status": "failed"}),
        )
        .await;
    assert_eq!(status, 404, "{body}");
    assert_eq!(body["error"]["field"], "key", "{body}");

    // Bad fields and unknown agents or bundles are named.
    let mut bad = intent("k-bad", Some(25 * 3_600_000));
    let (status, body) = sdk.post("/v1/effects", &bad).await;
    assert_eq!(
        (status, body["error"]["field"].clone()),
        (422, json!("/timeout_ms")),
        "{body}"
    );
    bad = intent("k bad", None);
    let (status, body) = sdk.post("/v1/effects", &bad).await;
    assert_eq!(
        (status, body["error"]["field"].clone()),
        (422, json!("/key")),
        "{body}"
    );
    bad = intent("k-ghost", None);
    bad["agent"] = json!("suport");
    let (status, body) = sdk.post("/v1/effects", &bad).await;
    assert_eq!(status, 404, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("support"),
        "{body}"
    );
    bad["agent"] = json!("support");
    bad["bundle"] = json!(9);
    let (status, body) = sdk.post("/v1/effects", &bad).await;
    assert_eq!(
        (status, body["error"]["field"].clone()),
        (404, json!("/bundle")),
        "{body}"
    );

    // Roles: a viewer cannot record, an sdk token cannot read the ledger.
    let (status, _) = viewer.post("/v1/effects", &intent("k-viewer", None)).await;
    assert_eq!(status, 403);
    let (status, _) = sdk.get("/v1/agents/support/effects?bundle=2").await;
    assert_eq!(status, 403);

    // A process that recorded its intent and was killed never posts a result: once its
    // timeout has passed, the sweep marks it unknown.
    let (status, body) = sdk
        .post("/v1/effects", &intent("dead-proc", Some(60_000)))
        .await;
    assert_eq!(status, 201, "{body}");
    let (_, listed) = viewer
        .get("/v1/agents/support/effects?bundle=2&status=unknown")
        .await;
    assert_eq!(listed, json!([]), "nothing is unknown before the timeout");
    server.advance_clock(&admin, Duration::from_secs(61)).await;
    let deadline = Instant::now() + Duration::from_secs(20);
    let unknown = loop {
        let (status, listed) = viewer
            .get("/v1/agents/support/effects?bundle=2&status=unknown")
            .await;
        assert_eq!(status, 200, "{listed}");
        if listed.as_array().is_some_and(|a| !a.is_empty()) {
            break listed;
        }
        assert!(
            Instant::now() < deadline,
            "the sweep never marked the dead intent unknown"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    // Only the dead intent is unknown; the settled ones kept their results.
    let keys: Vec<&str> = unknown
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["key"].as_str().unwrap())
        .collect();
    assert_eq!(keys, ["dead-proc"]);

    let out = server
        .cli(&viewer_token)
        .run(&["effects", "support", "--bundle", "2", "--status", "unknown"])
        .ok();
    assert!(out.stdout.contains("dead-proc"), "{}", out.stdout);
    assert!(out.stdout.contains("1 unknown; WARNING"), "{}", out.stdout);
    let out = server
        .cli(&viewer_token)
        .run(&["effects", "support", "--bundle", "2", "--output", "json"])
        .ok();
    let all: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(all.as_array().unwrap().len(), 3, "{all}");

    // The ledger's writes are in the audit log.
    let (_, audit) = server.http(&admin).get("/v1/audit?limit=100").await;
    let text = audit.to_string();
    for action in ["effect.intent", "effect.result", "effect.expire"] {
        assert!(text.contains(action), "{action} missing from {text}");
    }

    // The release report of support@2 against support@1 counts each arm's effects and flags
    // the unknown one where nobody can miss it.
    server.create_envs(&admin);
    stable_then_release(
        &server.cli(&admin),
        work.path(),
        "steps:\n  - canary: {weight: 10%, min_duration: 1h, min_requests: 100000}\n",
    );
    let report = server
        .http(&viewer_token)
        .req(
            reqwest::Method::GET,
            "/v1/envs/prod/agents/support/release/report",
        )
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let warning = "> **Warning: 1 effect of support@2 is unknown: run `serin effects support --bundle 2 --status unknown`**";
    let title_end = report.find("\n\n").unwrap() + 2;
    assert!(report[title_end..].starts_with(warning), "{report}");
    assert!(
        report.contains("| stable | support@1 | 0 | 0 | 0 | 0 |"),
        "{report}"
    );
    assert!(
        report.contains("| candidate | support@2 | 0 | 1 | 1 | 1 |"),
        "{report}"
    );
    let (status, json_report) = viewer
        .get("/v1/envs/prod/agents/support/release/report?format=json")
        .await;
    assert_eq!(status, 200, "{json_report}");
    assert_eq!(json_report["effects"]["unknown"], 1, "{json_report}");
    assert_eq!(
        json_report["effects"]["arms"][1],
        json!({"arm": "candidate", "bundle": "support@2", "intent": 0, "committed": 1,
            "failed": 1, "unknown": 1}),
        "{json_report}"
    );
}

/// What [`FaultyProxy`] does to the next ledger post it sees.
const PASS: u8 = 0;
/// Forwards the next result post, lets the server answer, and loses the answer.
const LOSE_RESULT_ANSWER: u8 = 1;
/// Drops the next result post before the server sees it.
const DROP_RESULT: u8 = 2;
/// Drops every intent post.
const DROP_INTENTS: u8 = 3;

/// A TCP pipe between the SDK and the server that breaks ledger posts on demand: a network
/// fault, not a stand-in for either side. Each connection is piped as bytes; the request line
/// of each request on it (HTTP/1.1, so one at a time) picks the fault.
struct FaultyProxy {
    url: String,
    mode: std::sync::Arc<std::sync::atomic::AtomicU8>,
}

impl FaultyProxy {
    async fn start(upstream: &str) -> FaultyProxy {
        use std::sync::atomic::{AtomicU8, Ordering};
        use tokio::io::{AsyncReadExt, AsyncWriteExt};

        let upstream = upstream.trim_start_matches("http://").to_owned();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let mode = std::sync::Arc::new(AtomicU8::new(PASS));
        let modes = mode.clone();
        tokio::spawn(async move {
            loop {
                let Ok((client, _)) = listener.accept().await else {
                    return;
                };
                let Ok(server) = tokio::net::TcpStream::connect(&upstream).await else {
                    continue;
                };
                let mode = modes.clone();
                tokio::spawn(async move {
                    let (mut cr, mut cw) = client.into_split();
                    let (mut sr, mut sw) = server.into_split();
                    // Set once a request on this connection is to lose its answer.
                    let lose = std::sync::Arc::new(AtomicU8::new(0));
                    let lose_up = lose.clone();
                    let up = async move {
                        let mut buf = vec![0u8; 64 * 1024];
                        loop {
                            let n = match cr.read(&mut buf).await {
                                Ok(0) | Err(_) => return,
                                Ok(n) => n,
                            };
                            let head = String::from_utf8_lossy(&buf[..n.min(512)]).into_owned();
                            let result = head.starts_with("POST /v1/effects/")
                                && head.contains("/result HTTP/1.1");
                            let intent = head.starts_with("POST /v1/effects HTTP/1.1");
                            let m = mode.load(Ordering::SeqCst);
                            if (result && m == DROP_RESULT) || (intent && m == DROP_INTENTS) {
                                if m == DROP_RESULT {
                                    mode.store(PASS, Ordering::SeqCst);
                                }
                                return;
                            }
                            if result && m == LOSE_RESULT_ANSWER {
                                mode.store(PASS, Ordering::SeqCst);
                                lose_up.store(1, Ordering::SeqCst);
                            }
                            if sw.write_all(&buf[..n]).await.is_err() {
                                return;
                            }
                        }
                    };
                    let down = async move {
                        let mut buf = vec![0u8; 64 * 1024];
                        loop {
                            let n = match sr.read(&mut buf).await {
                                Ok(0) | Err(_) => return,
                                Ok(n) => n,
                            };
                            // The server has answered: the post took effect; its answer is lost.
                            if lose.load(Ordering::SeqCst) == 1 {
                                return;
                            }
                            if cw.write_all(&buf[..n]).await.is_err() {
                                return;
                            }
                        }
                    };
                    // Either direction ending closes both: the client sees the connection drop.
                    tokio::select! { _ = up => {}, _ = down => {} }
                });
            }
        });
        FaultyProxy { url, mode }
    }

    fn set(&self, mode: u8) {
        self.mode.store(mode, std::sync::atomic::Ordering::SeqCst);
    }
}

#[derive(Debug)]
struct PaymentError(&'static str);

impl std::fmt::Display for PaymentError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.0)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sdk_helper_runs_a_retried_effect_exactly_once() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU32, Ordering};

    use serin_sdk::{
        CallError, EffectError, EffectKey, EffectOptions, EffectOutcome, EffectStatus, Serin,
        UnknownCause, args_digest,
    };

    let backend = Backend::sqlite();
    let server = Server::start_with(&backend, 0, &["--tick-ms", "100"]);
    let admin = server.bootstrap_token.clone().unwrap();
    let work = tempfile::tempdir().unwrap();
    push_two_bundles(&server.cli(&admin), work.path());
    server
        .cli(&admin)
        .run(&["deploy", "support", "--env", "dev", "--bundle", "2"])
        .ok();
    let sdk_token = server.token(&admin, "sdk").await;
    let viewer = server.http(&server.token(&admin, "viewer").await);
    let proxy = FaultyProxy::start(&server.url).await;
    let serin = Serin::builder(proxy.url.clone(), sdk_token, "dev")
        .backoff(Duration::from_millis(50), Duration::from_millis(250))
        .start_timeout(Duration::from_secs(10))
        .start()
        .await
        .unwrap();
    let status_of = |key: String| {
        let viewer = &viewer;
        async move {
            let (status, listed) = viewer.get("/v1/agents/support/effects?bundle=2").await;
            assert_eq!(status, 200, "{listed}");
            listed
                .as_array()
                .unwrap()
                .iter()
                .find(|e| e["key"] == key.as_str())
                .map(|e| e["status"].as_str().unwrap().to_owned())
        }
    };
    let fast = || {
        EffectOptions::<&'static str>::default()
            .timeout(Duration::from_secs(30))
            .retry(4, Duration::from_millis(10), Duration::from_millis(50))
            .ledger_retry(3, Duration::from_millis(10), Duration::from_millis(50))
            .detail(|id: &&str| format!("refund {id}"))
    };
    let key = |request: &str| {
        let args = json!({"order": "o-17", "amount_cents": 1200});
        EffectKey::new("support", 2, request, "refund", args_digest(&args).unwrap())
    };
    // Every attempt of the call counts here; `happened` only the ones that acted.
    let attempts = Arc::new(AtomicU32::new(0));
    let happened = Arc::new(AtomicU32::new(0));
    let refund = |transient_failures: u32| {
        let (attempts, happened) = (attempts.clone(), happened.clone());
        move || {
            let (attempts, happened) = (attempts.clone(), happened.clone());
            async move {
                if attempts.fetch_add(1, Ordering::SeqCst) < transient_failures {
                    return Err(CallError::Transient(PaymentError("503 from payments")));
                }
                happened.fetch_add(1, Ordering::SeqCst);
                Ok("re_1")
            }
        }
    };

    // Transient errors are retried under one key; the ledger stays `intent` between attempts
    // and records one `committed` with the detail.
    let k1 = key("req-1");
    let out = serin.effect_with(&k1, &fast(), refund(2)).await.unwrap();
    let EffectOutcome::Ran {
        value,
        attempts: n,
        record,
    } = out
    else {
        panic!("the first run must run the call")
    };
    assert_eq!((value, n), ("re_1", 3));
    let record = record.unwrap();
    assert_eq!(record.status, EffectStatus::Committed);
    assert_eq!(record.detail.as_deref(), Some("refund re_1"));
    assert_eq!(record.key, k1.idempotency_key());
    assert!(record.key.starts_with("support/2/"), "{}", record.key);
    // The same call again (a retry of the request, another process): not called again.
    let again = serin.effect_with(&k1, &fast(), refund(0)).await.unwrap();
    assert!(!again.ran());
    assert_eq!(
        again.record().unwrap().detail.as_deref(),
        Some("refund re_1")
    );
    assert_eq!(happened.load(Ordering::SeqCst), 1);
    assert_eq!(attempts.load(Ordering::SeqCst), 3);

    // The committed result reaches the server but its answer is lost, and the ledger post is
    // not retried: the process does not know it was recorded and retries the whole effect.
    // The server has the committed record, so the second run does not call.
    let k2 = key("req-2");
    let once = fast().ledger_retry(1, Duration::from_millis(10), Duration::from_millis(10));
    proxy.set(LOSE_RESULT_ANSWER);
    let out = serin.effect_with(&k2, &once, refund(0)).await.unwrap();
    let EffectOutcome::Ran { record, .. } = out else {
        panic!("the call runs once")
    };
    assert!(record.is_err(), "the answer was lost: {record:?}");
    assert_eq!(happened.load(Ordering::SeqCst), 2);
    let retried = serin.effect_with(&k2, &once, refund(0)).await.unwrap();
    assert!(
        matches!(retried, EffectOutcome::AlreadyCommitted { ref record } if record.status == EffectStatus::Committed),
        "{retried:?}"
    );
    assert_eq!(happened.load(Ordering::SeqCst), 2, "the retry acted twice");

    // The result post never reaches the server: the ledger still says `intent`, so a retry of
    // the whole effect cannot tell and refuses to act; reconciling settles it.
    let k3 = key("req-3");
    proxy.set(DROP_RESULT);
    let out = serin.effect_with(&k3, &once, refund(0)).await.unwrap();
    assert!(out.ran() && out.record().is_none(), "{out:?}");
    assert_eq!(happened.load(Ordering::SeqCst), 3);
    let err = serin.effect_with(&k3, &once, refund(0)).await.unwrap_err();
    assert!(
        matches!(
            err,
            EffectError::EffectUnknown {
                cause: UnknownCause::Earlier,
                ..
            }
        ),
        "{err}"
    );
    assert_eq!(happened.load(Ordering::SeqCst), 3);
    serin
        .effects()
        .record_result(
            &k3.idempotency_key(),
            EffectStatus::Committed,
            Some("reconciled: re_1 exists".into()),
            &serin_sdk::RetryPolicy::new(3, Duration::from_millis(10), Duration::from_millis(50)),
        )
        .await
        .unwrap();
    let settled = serin.effect_with(&k3, &once, refund(0)).await.unwrap();
    assert!(!settled.ran());
    assert_eq!(happened.load(Ordering::SeqCst), 3);

    // A permanent error is recorded `failed` and not run again under the key.
    let k4 = key("req-4");
    let err = serin
        .effect_with(&k4, &fast(), || async {
            Err::<&str, _>(CallError::Permanent(PaymentError("card declined")))
        })
        .await
        .unwrap_err();
    assert!(
        matches!(&err, EffectError::Failed { attempts: 1, record: Ok(r), .. } if r.status == EffectStatus::Failed),
        "{err}"
    );
    assert_eq!(
        status_of(k4.idempotency_key()).await.as_deref(),
        Some("failed")
    );
    let err = serin
        .effect_with(&k4, &fast(), refund(0))
        .await
        .unwrap_err();
    assert!(matches!(err, EffectError::PreviouslyFailed { .. }), "{err}");
    // Transient errors until the attempts run out are a failure too (nothing happened).
    let k5 = key("req-5");
    let before = attempts.load(Ordering::SeqCst);
    let err = serin
        .effect_with(&k5, &fast(), refund(u32::MAX))
        .await
        .unwrap_err();
    assert!(
        matches!(err, EffectError::Failed { attempts: 4, .. }),
        "{err}"
    );
    assert_eq!(attempts.load(Ordering::SeqCst) - before, 4);
    assert_eq!(happened.load(Ordering::SeqCst), 3);

    // A call still running at the timeout is dropped and recorded `unknown`, not `failed`.
    let k6 = key("req-6");
    let slow = fast().timeout(Duration::from_millis(300));
    let err = serin
        .effect_with(&k6, &slow, || async {
            tokio::time::sleep(Duration::from_secs(30)).await;
            Ok::<_, CallError<PaymentError>>("never")
        })
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            EffectError::EffectUnknown {
                cause: UnknownCause::TimedOut,
                record: Some(ref r),
                ..
            } if r.status == EffectStatus::Unknown
        ),
        "{err}"
    );
    // The caller saying it cannot tell is `unknown` too.
    let k7 = key("req-7");
    let err = serin
        .effect_with(&k7, &fast(), || async {
            Err::<&str, _>(CallError::Unknown(PaymentError(
                "read timeout after sending",
            )))
        })
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            EffectError::EffectUnknown {
                cause: UnknownCause::Call,
                ..
            }
        ),
        "{err}"
    );
    assert_eq!(
        status_of(k7.idempotency_key()).await.as_deref(),
        Some("unknown")
    );

    // No intent, no call: with the ledger unreachable the call never runs.
    proxy.set(DROP_INTENTS);
    let before = attempts.load(Ordering::SeqCst);
    let err = serin
        .effect_with(&key("req-8"), &fast(), refund(0))
        .await
        .unwrap_err();
    assert!(matches!(err, EffectError::NotRecorded(_)), "{err}");
    assert_eq!(attempts.load(Ordering::SeqCst), before);
    proxy.set(PASS);
    // A key reused for another call is refused by the server and does not run either.
    let mut reused = key("req-1");
    reused.args_digest = "sha256:other".into();
    reused.key = Some(k1.idempotency_key());
    let err = serin
        .effect_with(&reused, &fast(), refund(0))
        .await
        .unwrap_err();
    assert!(
        matches!(
            &err,
            EffectError::NotRecorded(serin_sdk::LedgerError::Refused { status: 409, .. })
        ),
        "{err}"
    );
    assert_eq!(attempts.load(Ordering::SeqCst), before);
    assert_eq!(happened.load(Ordering::SeqCst), 3);
    serin.shutdown().await;
}
