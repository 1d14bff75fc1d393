//! Shared fleet state: SDKs connected to different replicas on one PostgreSQL schema are listed
//! by every replica, and a rollback drill run through one replica waits for all of them (and
//! names a laggard on another replica with that replica). Skipped, like every PostgreSQL test,
//! with `SERIN_TEST_SKIP_POSTGRES=1`.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::drills::{drill_json, sdk, stable, two_stables};
use crate::harness::{Replicas, Server};

/// Waits until `server` lists exactly `want` as the connected instances of prod (each other
/// replica's flusher publishes within a fraction of a second); answers the listing.
async fn wait_connected(server: &Server, token: &str, want: &[&str]) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (status, body) = server.http(token).get("/v1/envs/prod/sdks").await;
        assert_eq!(status, 200, "{body}");
        let list = body["instances"].as_array().cloned().unwrap_or_default();
        let connected: Vec<&str> = list
            .iter()
            .filter(|i| i["connected"] == true)
            .map(|i| i["instance"].as_str().unwrap_or_default())
            .collect();
        if connected == want {
            return list;
        }
        assert!(Instant::now() < deadline, "never listed {want:?}: {body:#}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn replica_of<'a>(list: &'a [Value], instance: &str) -> &'a str {
    list.iter()
        .find(|i| i["instance"] == instance)
        .and_then(|i| i["replica"].as_str())
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drill_through_one_replica_waits_for_the_sdks_on_every_replica() {
    let Some(r) = Replicas::start(3, &[]).await else {
        return;
    };
    let (s0, s1, s2) = (r.server(0), r.server(1), r.server(2));
    s0.create_env(&r.admin, "prod", true);
    let cli = s0.cli(&r.admin);
    let work = tempfile::tempdir().unwrap();
    two_stables(&cli, work.path());
    assert_eq!(stable(&cli), "support@2");
    let sdk_token = s0.token(&r.admin, "sdk").await;
    let a = sdk(s0, &sdk_token, "fleet-a").await;
    let b = sdk(s1, &sdk_token, "fleet-b").await;
    let c = sdk(s2, &sdk_token, "fleet-c").await;

    // Every replica lists the whole fleet, each instance with the replica it is on.
    let all = ["fleet-a", "fleet-b", "fleet-c"];
    let from0 = wait_connected(s0, &r.admin, &all).await;
    let from2 = wait_connected(s2, &r.admin, &all).await;
    for i in all {
        let on = replica_of(&from0, i);
        assert!(!on.is_empty(), "{from0:#?}");
        assert_eq!(on, replica_of(&from2, i), "{i}");
    }
    assert_ne!(replica_of(&from0, "fleet-a"), replica_of(&from0, "fleet-b"));
    assert_ne!(replica_of(&from0, "fleet-b"), replica_of(&from0, "fleet-c"));

    // The drill runs on replica 0 and is confirmed by all three SDKs, on three replicas.
    let deployer = s0.cli(&s0.token(&r.admin, "deployer").await);
    let (code, d) = drill_json(&deployer, "10s");
    assert_eq!(code, 0, "{d:#}");
    assert_eq!(d["outcome"], "succeeded", "{d:#}");
    for leg in ["rollback", "forward"] {
        assert_eq!(d[leg]["sdks"], 3, "{leg}: {d:#}");
        assert_eq!(d[leg]["confirmed"], 3, "{leg}: {d:#}");
        let mut confirmed: Vec<&str> = d[leg]["confirmations"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["instance"].as_str().unwrap())
            .collect();
        confirmed.sort_unstable();
        assert_eq!(confirmed, all, "{leg}: {d:#}");
    }
    assert_eq!(stable(&cli), "support@2");

    // Another token may not take over an id registered on another replica.
    let intruder = s0.token(&r.admin, "sdk").await;
    let (_, snap) = s0.http(&r.admin).get("/v1/envs/prod/snapshot").await;
    let version = snap["version"].as_u64().unwrap();
    let (status, body) = s0
        .http(&intruder)
        .post(
            "/v1/sdk/applied",
            &json!({"env": "prod", "instance": "fleet-b", "version": version}),
        )
        .await;
    assert_eq!(status, 409, "{body}");

    // An SDK on replica 1 that never reports what it applied fails a drill run on replica 0,
    // named with its replica.
    let silent = s1
        .http(&sdk_token)
        .req(
            reqwest::Method::GET,
            "/v1/envs/prod/snapshot/stream?instance=silent",
        )
        .send()
        .await
        .unwrap();
    assert_eq!(silent.status(), 200);
    let listed = wait_connected(s0, &r.admin, &["fleet-a", "fleet-b", "fleet-c", "silent"]).await;
    let on = replica_of(&listed, "silent").to_owned();
    assert_eq!(on, replica_of(&from0, "fleet-b"));
    let (code, d) = drill_json(&deployer, "2s");
    assert_eq!(code, 1, "{d:#}");
    assert_eq!(d["outcome"], "failed", "{d:#}");
    assert_eq!(d["rollback"]["sdks"], 4, "{d:#}");
    assert_eq!(d["rollback"]["confirmed"], 3, "{d:#}");
    assert_eq!(d["rollback"]["lagging"], json!(["silent"]), "{d:#}");
    assert_eq!(
        d["rollback"]["laggards"][0]["replica"],
        on.as_str(),
        "{d:#}"
    );
    let error = d["error"].as_str().unwrap();
    assert!(error.contains("silent") && error.contains(&on), "{d:#}");
    assert_eq!(stable(&cli), "support@2");
    // The human form names the replica too.
    let out = deployer.run(&[
        "drill",
        "rollback",
        "support",
        "--env",
        "prod",
        "--timeout",
        "1s",
    ]);
    assert_eq!(out.code, 1, "{out:#?}");
    assert!(
        out.stdout
            .contains(&format!("lagging: silent (on replica {on})")),
        "{out:#?}"
    );

    // Once its stream closes, the other replicas stop counting it.
    drop(silent);
    wait_connected(s0, &r.admin, &all).await;
    a.shutdown().await;
    b.shutdown().await;
    c.shutdown().await;
}
