//! The committed OpenAPI document must match what the code generates, so the
//! contract cannot drift silently. Regenerate with
//! `SERIN_UPDATE_OPENAPI=1 cargo test -p serin-server --test openapi`.

#![allow(clippy::unwrap_used, clippy::panic)]

use std::path::Path;

#[test]
fn committed_openapi_document_is_current() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/openapi.json");
    let generated = serin_server::openapi_json();
    if std::env::var_os("SERIN_UPDATE_OPENAPI").is_some() {
        std::fs::write(&path, &generated).unwrap();
        return;
    }
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    if committed != generated {
        panic!(
            "docs/openapi.json is stale; run `SERIN_UPDATE_OPENAPI=1 cargo test -p serin-server --test openapi` and commit it"
        );
    }
}

#[test]
fn every_operation_documents_the_error_shape_for_its_failures() {
    let doc: serde_json::Value = serde_json::from_str(&serin_server::openapi_json()).unwrap();
    let paths = doc["paths"].as_object().unwrap();
    assert!(paths.contains_key("/v1/bundles"));
    for (path, item) in paths {
        for (method, op) in item.as_object().unwrap() {
            let responses = op["responses"].as_object().unwrap();
            let mut required = vec!["405", "429", "500"];
            if path != "/healthz" && path != "/readyz" {
                required.extend(["400", "401", "403"]);
                assert!(
                    op.get("security").is_some(),
                    "{method} {path} declares no security"
                );
            }
            if method == "post" {
                required.extend(["413", "415", "422"]);
            }
            for status in required {
                assert!(
                    responses.contains_key(status),
                    "{method} {path} lacks {status}"
                );
            }
        }
    }
}

#[test]
fn dashboard_pages_are_not_api_operations() {
    // `/ui` serves HTML and static modules to browsers; it takes no token and answers no
    // JSON, so it is deliberately outside the API document (and the contract table).
    let doc: serde_json::Value = serde_json::from_str(&serin_server::openapi_json()).unwrap();
    let paths = doc["paths"].as_object().unwrap();
    assert!(
        paths.keys().all(|p| !p.starts_with("/ui")),
        "{:?}",
        paths.keys()
    );
    for live in [
        "/v1/status",
        "/v1/status/stream",
        "/v1/envs/{env}/agents/{agent}/release/stream",
    ] {
        assert!(paths.contains_key(live), "{live} is not documented");
    }
}
