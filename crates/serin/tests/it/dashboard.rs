//! The dashboard at `/ui` and the live views behind it: the pages' security headers, the
//! overview and release streams (changes sent, unknown names refused, the cap), and the
//! browser scenarios in real Chromium (`crates/serin/tests/browser/test_dashboard.py`,
//! driven by Playwright for Python from a virtualenv under `target/`).
//!
//! A second browser scenario follows a waved release driven by three real SDK instances in
//! three regions, one of which regresses, and the fleet page showing what each serves.
//!
//! A third decides approval requests (an unkill reserved by prod's policy) on the Approvals
//! page: approved, denied, and the requester's own attempt refused by the server.
//!
//! The browser test needs Debian's `/usr/bin/chromium` (`apt-get install chromium`) and
//! `python3` with `venv`; without them it fails saying so, unless
//! `SERIN_TEST_SKIP_BROWSER=1`. Screenshots of the main pages land in
//! `target/screenshots/`, and in `docs/screenshots/` with `SERIN_UPDATE_SCREENSHOTS=1`.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use serde_json::{Value, json};
use serin_core::decision::Arm;
use serin_core::outcome::{ErrorClass, OutcomeError, OutcomeEvent, ToolCalls};
use serin_sdk::{RequestContext, Serin};

use crate::harness::{Backend, Server, push_two_bundles, repo_root};

const CHROMIUM: &str = "/usr/bin/chromium";

/// Reads server-sent events from `resp` until `until` holds for one (`(event, data)`), or
/// panics after `within`.
async fn next_event<B: AsRef<[u8]>>(
    body: &mut (impl futures_util::Stream<Item = reqwest::Result<B>> + Unpin),
    buf: &mut String,
    within: Duration,
    until: impl Fn(&str, &Value) -> bool,
) -> (String, Value) {
    let deadline = Instant::now() + within;
    loop {
        while let Some(end) = buf.find("\n\n") {
            let block: String = buf.drain(..end + 2).collect();
            let mut event = "message".to_owned();
            let mut data = String::new();
            for line in block.lines() {
                if let Some(v) = line.strip_prefix("event:") {
                    event = v.trim().to_owned();
                } else if let Some(v) = line.strip_prefix("data:") {
                    data.push_str(v.trim_start());
                }
            }
            if data.is_empty() {
                continue;
            }
            let v: Value = serde_json::from_str(&data).unwrap();
            if until(&event, &v) {
                return (event, v);
            }
        }
        let left = deadline.saturating_duration_since(Instant::now());
        let chunk = tokio::time::timeout(left, body.next())
            .await
            .unwrap_or_else(|_| panic!("no matching event within {within:?}; last: {buf}"))
            .expect("the stream ended")
            .unwrap();
        buf.push_str(&String::from_utf8_lossy(chunk.as_ref()));
    }
}

fn agent<'a>(overview: &'a Value, env: &str, agent: &str) -> &'a Value {
    overview["envs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["env"] == env)
        .and_then(|e| {
            e["agents"]
                .as_array()
                .unwrap()
                .iter()
                .find(|a| a["agent"] == agent)
        })
        .unwrap_or(&Value::Null)
}

/// A server with prod created, support@1 and support@2 pushed and support@1 deployed in
/// prod; returns it with its admin token and the work directory.
async fn setup(extra: &[&str]) -> (Backend, Server, String, tempfile::TempDir) {
    let backend = Backend::sqlite();
    let server = Server::start_with(&backend, 0, extra);
    let admin = server.bootstrap_token.clone().unwrap();
    server.create_env(&admin, "prod", true);
    let work = tempfile::tempdir().unwrap();
    push_two_bundles(&server.cli(&admin), work.path());
    server
        .cli(&admin)
        .run(&[
            "deploy", "support", "--env", "prod", "--bundle", "1", "--force", "--reason", "initial",
        ])
        .ok();
    (backend, server, admin, work)
}

const PLAN: &str = r#"{"steps": [{"canary": {"weight": "5%", "min_duration": "1s", "min_requests": 100}},
    {"canary": {"weight": "50%", "min_duration": "1s", "min_requests": 100}}],
    "promotion": "manual", "on_failure": "rollback"}"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ui_pages_carry_strict_security_headers_and_stay_out_of_the_api_document() {
    let (_backend, server, admin, _work) = setup(&[]).await;
    // No token: the pages themselves are public; what they show comes from the API.
    let anonymous = server.http("");
    for path in ["/ui", "/ui/", "/ui/app.js", "/ui/app.css", "/ui/views.js"] {
        let resp = anonymous
            .req(reqwest::Method::GET, path)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200, "{path}");
        let h = resp.headers();
        let csp = h["content-security-policy"].to_str().unwrap();
        assert!(csp.contains("default-src 'self'"), "{path}: {csp}");
        assert!(csp.contains("frame-ancestors 'none'"), "{path}: {csp}");
        assert!(!csp.contains("unsafe-inline"), "{path}: {csp}");
        assert_eq!(h["x-content-type-options"], "nosniff", "{path}");
        assert_eq!(h["referrer-policy"], "no-referrer", "{path}");
        let ct = h["content-type"].to_str().unwrap().to_owned();
        let want = if path.ends_with(".js") {
            "text/javascript"
        } else if path.ends_with(".css") {
            "text/css"
        } else {
            "text/html"
        };
        assert!(ct.starts_with(want), "{path}: {ct}");
        let body = resp.text().await.unwrap();
        // Nothing is fetched from anywhere but this server.
        assert!(!body.contains("https://"), "{path} names another origin");
    }
    let resp = anonymous
        .req(reqwest::Method::GET, "/ui/nope.js")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 404);
    let (_, doc) = server.http(&admin).get("/openapi.json").await;
    let paths = doc["paths"].as_object().unwrap();
    assert!(paths.keys().all(|p| !p.starts_with("/ui")), "{paths:?}");
    assert!(paths.contains_key("/v1/status"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_live_streams_send_each_change_refuse_unknown_names_and_are_capped() {
    let (_backend, server, admin, _work) = setup(&["--max-ui-streams", "2"]).await;
    let viewer = server.token(&admin, "viewer").await;
    let sdk = server.token(&admin, "sdk").await;

    // The overview as JSON: support in prod, stable support@1, nothing killed.
    let (code, o) = server.http(&viewer).get("/v1/status").await;
    assert_eq!(code, 200, "{o}");
    let a = agent(&o, "prod", "support");
    assert_eq!(a["stable"], "support@1", "{o:#}");
    assert_eq!(a["kill"]["killed"], false);
    assert!(a["release"].is_null(), "{o:#}");
    assert!(o["replicas"].as_array().unwrap().len() == 1, "{o:#}");
    let (code, body) = server.http(&sdk).get("/v1/status").await;
    assert_eq!(
        code, 403,
        "sdk tokens do not read the control plane: {body}"
    );

    // The overview stream sends the current view at once, then each change.
    let resp = server
        .http(&viewer)
        .req(reqwest::Method::GET, "/v1/status/stream")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert!(
        resp.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/event-stream")
    );
    let mut overview = resp.bytes_stream();
    let mut obuf = String::new();
    let (event, _) = next_event(&mut overview, &mut obuf, Duration::from_secs(10), |_, o| {
        agent(o, "prod", "support")["stable"] == "support@1"
    })
    .await;
    assert_eq!(event, "overview");
    let (code, body) = server
        .http(&admin)
        .post(
            "/v1/envs/prod/agents/support/kill",
            &json!({"tenant": "acme", "reason": "incident"}),
        )
        .await;
    assert_eq!(code, 200, "{body}");
    next_event(&mut overview, &mut obuf, Duration::from_secs(10), |_, o| {
        agent(o, "prod", "support")["kill"]["tenants"] == json!(["acme"])
    })
    .await;

    // No release yet: its stream is refused; unknown names answer 404 with the nearest.
    let (code, body) = server
        .http(&viewer)
        .get("/v1/envs/prod/agents/support/release/stream")
        .await;
    assert_eq!(code, 404, "{body}");
    let (code, body) = server
        .http(&viewer)
        .get("/v1/envs/prod/agents/suport/release/stream")
        .await;
    assert_eq!(code, 404, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("did you mean support"),
        "{body}"
    );
    assert_eq!(body["error"]["field"], "agent");
    let (code, body) = server
        .http(&viewer)
        .get("/v1/envs/prdo/agents/support/release/stream")
        .await;
    assert_eq!(code, 404, "{body}");
    assert!(
        body["error"]["message"].as_str().unwrap().contains("prod"),
        "{body}"
    );

    // A release: the overview shows its step and verdicts, the release stream its view.
    let (code, body) = server
        .http(&admin)
        .post(
            "/v1/envs/prod/agents/support/releases",
            &json!({"bundle": 2, "plan": serde_json::from_str::<Value>(PLAN).unwrap()}),
        )
        .await;
    assert_eq!(code, 201, "{body}");
    let (_, o) = next_event(&mut overview, &mut obuf, Duration::from_secs(10), |_, o| {
        agent(o, "prod", "support")["release"].is_object()
    })
    .await;
    let r = &agent(&o, "prod", "support")["release"];
    assert_eq!(r["phase"], "canary", "{r:#}");
    assert_eq!(r["step_index"], 0);
    assert_eq!(r["steps"], 2);
    assert_eq!(r["weight"], "5%");
    assert_eq!(r["gate"]["min_requests"], 100, "{r:#}");
    assert_eq!(r["gate"]["min_duration_ms"], 1000, "{r:#}");

    let resp = server
        .http(&viewer)
        .req(
            reqwest::Method::GET,
            "/v1/envs/prod/agents/support/release/stream",
        )
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let mut release = resp.bytes_stream();
    let mut rbuf = String::new();
    let (event, v) = next_event(&mut release, &mut rbuf, Duration::from_secs(10), |_, _| {
        true
    })
    .await;
    assert_eq!(event, "release");
    assert_eq!(v["release"]["phase"], "canary", "{v:#}");

    // Two live streams are open: the cap (2) refuses a third with 429 and Retry-After.
    let resp = server
        .http(&viewer)
        .req(reqwest::Method::GET, "/v1/status/stream")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 429);
    assert_eq!(resp.headers()["retry-after"], "1");
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"]["code"], "overloaded", "{body}");

    // A pause is a change: the release stream sends it without being asked.
    let (code, body) = server
        .http(&admin)
        .post("/v1/envs/prod/agents/support/release/pause", &json!({}))
        .await;
    assert_eq!(code, 200, "{body}");
    next_event(&mut release, &mut rbuf, Duration::from_secs(10), |_, v| {
        v["release"]["phase"] == "paused"
    })
    .await;

    // A closed stream frees its place.
    drop(release);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let resp = server
            .http(&viewer)
            .req(reqwest::Method::GET, "/v1/status/stream")
            .send()
            .await
            .unwrap();
        if resp.status() == 200 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the closed stream's place was never freed"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Open live views end at shutdown: SIGTERM drains and exits instead of waiting on them.
    let stopped = tokio::time::timeout(
        Duration::from_secs(20),
        tokio::task::spawn_blocking(move || server.stop()),
    )
    .await;
    assert!(
        stopped.is_ok(),
        "the server did not exit within 20 s of SIGTERM with live streams open"
    );
    stopped.unwrap().unwrap();
    let rest = tokio::time::timeout(Duration::from_secs(5), async {
        while let Some(Ok(_)) = overview.next().await {}
    })
    .await;
    assert!(rest.is_ok(), "the overview stream did not end at shutdown");
}

/// The virtualenv's python with Playwright installed, or None when
/// `SERIN_TEST_SKIP_BROWSER=1`. Panics saying what to install when Chromium is missing.
fn browser_python() -> Option<PathBuf> {
    if std::env::var("SERIN_TEST_SKIP_BROWSER").is_ok_and(|v| v == "1") {
        return None;
    }
    assert!(
        Path::new(CHROMIUM).is_file(),
        "the dashboard's browser test needs Chromium at {CHROMIUM}: install it with \
         `apt-get install chromium` (.ci/run does), or set SERIN_TEST_SKIP_BROWSER=1"
    );
    let requirements = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser/requirements.txt");
    let pinned = std::fs::read_to_string(&requirements).unwrap();
    let venv = Path::new(env!("CARGO_TARGET_TMPDIR")).join("browser-venv");
    let ready = venv.join("serin-ready");
    // Tests of this binary run in parallel threads of one process: one builds the venv while
    // the others wait (the staging directory is named by process id).
    static BUILDING: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _building = BUILDING
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if std::fs::read_to_string(&ready).ok().as_deref() != Some(pinned.as_str()) {
        // Built in a private directory and renamed into place, so a concurrent run never
        // uses a half-installed one.
        let staging = venv.with_extension(format!("tmp-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&staging);
        let made = Command::new("python3")
            .args(["-m", "venv"])
            .arg(&staging)
            .output()
            .unwrap_or_else(|e| {
                panic!(
                    "python3 is needed for the dashboard's browser test ({e}); install it with \
                     venv, or set SERIN_TEST_SKIP_BROWSER=1"
                )
            });
        assert!(made.status.success(), "python3 -m venv: {made:?}");
        let pip = Command::new(staging.join("bin/python"))
            .args([
                "-m",
                "pip",
                "install",
                "--quiet",
                "--disable-pip-version-check",
                "-r",
            ])
            .arg(&requirements)
            // Playwright's own browsers are never downloaded: the test uses Debian's.
            .env("PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD", "1")
            .output()
            .unwrap();
        assert!(
            pip.status.success(),
            "pip install -r {}: {}",
            requirements.display(),
            String::from_utf8_lossy(&pip.stderr)
        );
        std::fs::write(staging.join("serin-ready"), &pinned).unwrap();
        let _ = std::fs::remove_dir_all(&venv);
        if std::fs::rename(&staging, &venv).is_err() {
            let _ = std::fs::remove_dir_all(&staging);
        }
    }
    Some(venv.join("bin/python"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_in_chromium_follows_a_release_live_and_shows_the_servers_refusals() {
    let Some(python) = browser_python() else {
        return;
    };
    let (_backend, server, admin, _work) = setup(&[]).await;
    let viewer = server.token(&admin, "viewer").await;
    let doomed = server.token(&admin, "viewer").await;
    let sdk = server.token(&admin, "sdk").await;

    // One SDK instance follows prod for the fleet page, and reports what it applied.
    let stream = server
        .http(&sdk)
        .req(
            reqwest::Method::GET,
            "/v1/envs/prod/snapshot/stream?instance=i-browser-1",
        )
        .send()
        .await
        .unwrap();
    assert_eq!(stream.status(), 200);
    let holder = tokio::spawn(async move {
        let mut body = stream.bytes_stream();
        while let Some(Ok(_)) = body.next().await {}
    });
    let (_, snap) = server.http(&admin).get("/v1/envs/prod/snapshot").await;
    let (code, body) = server
        .http(&sdk)
        .post(
            "/v1/sdk/applied",
            &json!({"env": "prod", "instance": "i-browser-1", "version": snap["version"], "sdk": "test/1"}),
        )
        .await;
    assert_eq!(code, 204, "{body}");

    let (shots, dirs) = screenshot_dirs();
    let script = browser_script();
    let url = server.url.clone();
    let out = tokio::task::spawn_blocking(move || {
        Command::new(python)
            .arg(script)
            .env("SERIN_URL", url)
            .env("SERIN_ADMIN_TOKEN", admin)
            .env("SERIN_VIEWER_TOKEN", viewer)
            .env("SERIN_DOOMED_TOKEN", doomed)
            .env("SERIN_SCREENSHOT_DIRS", dirs)
            .env("SERIN_CHROMIUM", CHROMIUM)
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    holder.abort();
    assert!(
        out.status.success(),
        "browser scenarios failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_pngs(
        &shots[0],
        &["overview", "release", "agent", "audit", "overview-phone"],
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_in_chromium_decides_approvals_and_shows_the_servers_refusals() {
    let Some(python) = browser_python() else {
        return;
    };
    let (_backend, server, admin, _work) = setup(&[]).await;
    let approver = server.token(&admin, "approver").await;
    let deployer = server.token(&admin, "deployer").await;
    let sdk = server.token(&admin, "sdk").await;
    let (shots, dirs) = screenshot_dirs();
    let script = browser_script();
    let url = server.url.clone();
    let out = tokio::task::spawn_blocking(move || {
        Command::new(python)
            .arg(script)
            .arg("approvals")
            .env("SERIN_URL", url)
            .env("SERIN_ADMIN_TOKEN", admin)
            .env("SERIN_APPROVER_TOKEN", approver)
            .env("SERIN_DEPLOYER_TOKEN", deployer)
            .env("SERIN_SDK_TOKEN", sdk)
            .env("SERIN_SCREENSHOT_DIRS", dirs)
            .env("SERIN_CHROMIUM", CHROMIUM)
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    assert!(
        out.status.success(),
        "the approvals browser scenario failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_pngs(&shots[0], &["approvals"]);
}

/// Where the browser scenarios save screenshots: `target/screenshots/`, and
/// `docs/screenshots/` with `SERIN_UPDATE_SCREENSHOTS=1`; and the list as one variable.
fn screenshot_dirs() -> (Vec<PathBuf>, OsString) {
    let target = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .parent()
        .unwrap()
        .to_path_buf();
    let mut shots = vec![target.join("screenshots")];
    if std::env::var_os("SERIN_UPDATE_SCREENSHOTS").is_some() {
        shots.push(repo_root().join("docs/screenshots"));
    }
    let dirs = std::env::join_paths(&shots).unwrap();
    (shots, dirs)
}

fn browser_script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser/test_dashboard.py")
}

fn assert_pngs(dir: &Path, names: &[&str]) {
    for name in names {
        let png = dir.join(format!("{name}.png"));
        let bytes = std::fs::read(&png).unwrap_or_else(|e| panic!("{}: {e}", png.display()));
        assert!(
            bytes.starts_with(b"\x89PNG"),
            "{} is not a PNG",
            png.display()
        );
    }
}

const REGIONS: [&str; 3] = ["us-east", "eu-west", "ap-south"];

/// A real SDK instance `pod-<region>` following prod from `region`.
async fn regional_sdk(server: &Server, token: &str, region: &str) -> Serin {
    Serin::builder(server.url.clone(), token.to_owned(), "prod")
        .instance(format!("pod-{region}"))
        .region(region)
        .backoff(Duration::from_millis(50), Duration::from_millis(250))
        .start_timeout(Duration::from_secs(10))
        .start()
        .await
        .unwrap()
}

/// Sixty requests through each instance, decided locally and recorded through its own
/// recorder; the candidate fails one request in three in eu-west only.
fn regional_traffic(fleet: &[Serin], round: usize) {
    for (sdk, region) in fleet.iter().zip(REGIONS) {
        for i in 0..60 {
            let user = format!("u{}", (round * 60 + i) % 3_000);
            let ctx = RequestContext {
                request_id: format!("{region}-{round}-{i}"),
                user: Some(user.clone()),
                region: Some(region.to_owned()),
                ..RequestContext::default()
            };
            let d = sdk.decide("support", &ctx).unwrap();
            let err = if d.arm == Arm::Canary && region == "eu-west" {
                i.is_multiple_of(3)
            } else {
                (round * 60 + i).is_multiple_of(100)
            };
            let mut e: OutcomeEvent = serde_json::from_value(json!({
                "request_id": ctx.request_id, "agent": "support", "env": "prod",
                "snapshot_version": d.snapshot_version,
                "bundle": d.bundle.as_ref().map(|b| b.id.clone()).unwrap_or_default(),
                "arm": d.arm, "user": user, "region": region,
                "latency_ms": 400.0, "cost_usd": 0.01,
            }))
            .unwrap();
            e.tool_calls = ToolCalls { ok: 1, failed: 0 };
            if err {
                e.error = Some(OutcomeError {
                    class: ErrorClass::Permanent,
                    code: None,
                });
            }
            assert!(sdk.record(e));
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_in_chromium_shows_rolling_waves_and_what_each_instance_serves() {
    let Some(python) = browser_python() else {
        return;
    };
    let (_backend, server, admin, work) = setup(&[]).await;
    let sdk_token = server.token(&admin, "sdk").await;
    let fleet = [
        regional_sdk(&server, &sdk_token, REGIONS[0]).await,
        regional_sdk(&server, &sdk_token, REGIONS[1]).await,
        regional_sdk(&server, &sdk_token, REGIONS[2]).await,
    ];
    // Three waves, one region each; eu-west (the second) regresses.
    let plan = json!({
        "steps": [
            {"canary": {"weight": "50%", "min_duration": "1s", "min_requests": 150, "require": "no_fail"}},
            {"canary": {"weight": "100%", "min_duration": "1s", "min_requests": 100}}],
        "promotion": "auto", "stickiness": "user",
        "guardrails": {"error_rate": {"max_increase": "2pp"}, "settings": {"min_requests": 100}},
        "on_failure": "rollback",
        "waves": {"by": "region", "bake": "1s", "min_outcomes": 100, "list": [
            {"name": "us", "members": ["us-east"]},
            {"name": "eu", "members": ["eu-west"]},
            {"name": "ap", "members": ["ap-south"]}]}
    });
    let http = server.http(&admin);
    let (code, body) = http
        .post(
            "/v1/envs/prod/agents/support/releases",
            &json!({"bundle": 2, "plan": plan}),
        )
        .await;
    assert_eq!(code, 201, "{body}");
    assert!(
        body["warnings"].is_null(),
        "every region is reported: {body}"
    );

    // The browser opens the live page, checks the waves before any traffic, then says so.
    let ready = work.path().join("browser-ready");
    let (shots, dirs) = screenshot_dirs();
    let child = Command::new(python)
        .arg(browser_script())
        .arg("waves")
        .env("SERIN_URL", server.url.clone())
        .env("SERIN_ADMIN_TOKEN", admin.clone())
        .env("SERIN_READY_FILE", &ready)
        .env("SERIN_SCREENSHOT_DIRS", dirs)
        .env("SERIN_CHROMIUM", CHROMIUM)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let browser = tokio::task::spawn_blocking(move || child.wait_with_output());

    let deadline = Instant::now() + Duration::from_secs(60);
    while !ready.exists() && !browser.is_finished() {
        assert!(Instant::now() < deadline, "the browser never got ready");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Traffic until the release stops canarying (or the browser gave up).
    let deadline = Instant::now() + Duration::from_secs(150);
    let mut round = 0usize;
    while ready.exists() && !browser.is_finished() {
        let (code, v) = http.get("/v1/envs/prod/agents/support/release").await;
        assert_eq!(code, 200, "{v}");
        if v["release"]["phase"] != "canary" {
            assert_eq!(v["release"]["phase"], "halted", "{v}");
            break;
        }
        assert!(Instant::now() < deadline, "the waved release is stuck: {v}");
        regional_traffic(&fleet, round);
        round += 1;
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    let out = browser.await.unwrap().unwrap();
    assert!(
        out.status.success(),
        "the waves browser scenario failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_pngs(&shots[0], &["waves", "fleet"]);
    for sdk in &fleet {
        sdk.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_overview_stream_on_one_replica_shows_a_change_committed_on_another() {
    let Some(backend) = Backend::postgres().await else {
        return;
    };
    let a = Server::start(&backend);
    let admin = a.bootstrap_token.clone().unwrap();
    let b = Server::start(&backend);
    a.create_env(&admin, "prod", true);
    let work = tempfile::tempdir().unwrap();
    push_two_bundles(&a.cli(&admin), work.path());
    let resp = b
        .http(&admin)
        .req(reqwest::Method::GET, "/v1/status/stream")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let mut body = resp.bytes_stream();
    let mut buf = String::new();
    next_event(&mut body, &mut buf, Duration::from_secs(10), |e, o| {
        e == "overview" && o["envs"].as_array().is_some_and(|e| e.len() == 2)
    })
    .await;
    // Committed through A; B's stream has it without any event of its own.
    a.cli(&admin)
        .run(&[
            "deploy", "support", "--env", "prod", "--bundle", "2", "--force", "--reason", "on a",
        ])
        .ok();
    let (_, o) = next_event(&mut body, &mut buf, Duration::from_secs(10), |_, o| {
        agent(o, "prod", "support")["stable"] == "support@2"
    })
    .await;
    assert_eq!(o["replicas"].as_array().unwrap().len(), 2, "{o:#}");
    drop(body);
    b.stop();
    a.stop();
    if let Backend::Postgres(db) = backend {
        db.cleanup().await.unwrap();
    }
}
