//! Bundle push through the real router and a real SQLite store (in-process,
//! no sockets): what one `serin bundle push` costs the server.
//!
//! Reported per push: `new` stores a fresh bundle (validation, canonical
//! form, digest, one transaction with its audit row); `repush` sends content
//! already stored (validation and one indexed lookup, no write). `repush` is
//! the in-run baseline for `new`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::path::Path;

use axum::body::Body;
use axum::http::Request;
use criterion::{Criterion, criterion_group, criterion_main};
use serin_core::bundle::Limits;
use serin_core::catalog::ModelCatalog;
use serin_server::{ServerConfig, app};
use serin_store::Store;
use tower::ServiceExt;

fn sample_files() -> serde_json::Map<String, serde_json::Value> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/bundles/support");
    let mut files = serde_json::Map::new();
    for rel in ["bundle.yaml", "prompt.md"] {
        files.insert(
            rel.into(),
            std::fs::read_to_string(root.join(rel)).unwrap().into(),
        );
    }
    for dir in ["examples", "tools"] {
        for entry in std::fs::read_dir(root.join(dir)).unwrap() {
            let p = entry.unwrap().path();
            let rel = format!("{dir}/{}", p.file_name().unwrap().to_string_lossy());
            files.insert(rel, std::fs::read_to_string(&p).unwrap().into());
        }
    }
    files
}

fn bench_push(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (router, token) = rt.block_on(async {
        let store = Store::open_sqlite(dir.path()).await.unwrap();
        let token = store.bootstrap_admin(0).await.unwrap().unwrap().token;
        let router = app(ServerConfig {
            store,
            catalog: ModelCatalog::builtin(),
            limits: Limits::DEFAULT,
            max_in_flight: 1024,
            max_streams: 1024,
            max_ui_streams: 64,
            refresh_interval: std::time::Duration::from_secs(1),
            tick_interval: std::time::Duration::from_secs(1),
            run_controller: false,
            max_validations: 4,
            webhook_retry: serin_server::releases::RetryPolicy::DEFAULT,
            audit: Default::default(),
        })
        .await
        .unwrap()
        .router;
        (router, token)
    });
    let files = sample_files();
    let push = |body: String| {
        let router = router.clone();
        let token = token.clone();
        async move {
            let req = Request::post("/v1/bundles")
                .header("content-type", "application/json")
                .header("authorization", format!("Bearer {token}"))
                .body(Body::from(body))
                .unwrap();
            let resp = router.oneshot(req).await.unwrap();
            assert!(resp.status().is_success(), "{}", resp.status());
        }
    };

    let mut group = c.benchmark_group("bundle_push");
    let same = serde_json::json!({ "files": files }).to_string();
    rt.block_on(push(same.clone()));
    group.bench_function("repush", |b| b.to_async(&rt).iter(|| push(same.clone())));
    let mut n = 0u64;
    group.bench_function("new", |b| {
        b.to_async(&rt).iter(|| {
            n += 1;
            let mut f = files.clone();
            let prompt = format!("{}\nRevision {n}.\n", f["prompt.md"].as_str().unwrap());
            f.insert("prompt.md".into(), prompt.into());
            push(serde_json::json!({ "files": f }).to_string())
        })
    });
    group.finish();
}

criterion_group!(benches, bench_push);
criterion_main!(benches);
