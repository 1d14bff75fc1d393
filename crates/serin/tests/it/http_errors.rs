//! Bad input over HTTP: always a 4xx in the error shape, never a panic, never
//! a partial write.

use reqwest::Method;
use serde_json::{Value, json};

use crate::harness::{Backend, Server, files_json, sample_bundle};

fn assert_error_shape(body: &Value, code: &str) {
    assert_eq!(body["error"]["code"], code, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()),
        "{body}"
    );
}

#[tokio::test]
async fn malformed_requests_answer_in_the_error_shape() {
    let backend = Backend::sqlite();
    let server = Server::start(&backend);
    let token = server.bootstrap_token.clone().unwrap();
    let http = server.http(&token);

    let (status, body) = http.get("/v1/nope").await;
    assert_eq!(status, 404);
    assert_error_shape(&body, "not_found");

    let (status, body) = http.send(http.req(Method::DELETE, "/v1/agents")).await;
    assert_eq!(status, 405);
    assert_error_shape(&body, "method_not_allowed");

    let (status, body) = http
        .send(
            http.req(Method::POST, "/v1/bundles")
                .body("{}")
                .header("content-type", "text/plain"),
        )
        .await;
    assert_eq!(status, 415);
    assert_error_shape(&body, "unsupported_media_type");

    let (status, body) = http
        .send(
            http.req(Method::POST, "/v1/bundles")
                .body("{\"files\": ")
                .header("content-type", "application/json"),
        )
        .await;
    assert_eq!(status, 400);
    assert_error_shape(&body, "invalid_json");

    let (status, body) = http
        .post("/v1/bundles", &json!({"files": {}, "colour": "blue"}))
        .await;
    assert_eq!(status, 422, "{body}");
    assert_error_shape(&body, "invalid_field");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("colour"),
        "{body}"
    );

    let (status, body) = http
        .post("/v1/bundles", &json!({"files": {"bundle.yaml": 7}}))
        .await;
    assert_eq!(status, 422, "{body}");
    assert_eq!(body["error"]["field"], "/files/bundle.yaml", "{body}");

    let (status, body) = http
        .post("/v1/bundles", &json!({"files": {}, "env": "../prod"}))
        .await;
    assert_eq!(status, 422, "{body}");
    assert_eq!(body["error"]["field"], "/env", "{body}");

    // Path traversal in an agent name never reaches the store.
    for path in [
        "/v1/agents/..%2F..%2Fetc/bundles",
        "/v1/agents/Support/bundles",
        "/v1/agents/a/bundles/x",
    ] {
        let (status, body) = http.get(path).await;
        assert_eq!(status, 400, "{path}: {body}");
        assert_error_shape(&body, "bad_request");
    }

    let (status, body) = http.get("/v1/agents/support/bundles?limit=0").await;
    assert_eq!(status, 400, "{body}");
    let (status, body) = http.get("/v1/agents/support/bundles?limit=many").await;
    assert_eq!(status, 400, "{body}");
    assert_error_shape(&body, "bad_request");

    // A 50 MB prompt is refused before it is parsed, and nothing is stored.
    let mut files = files_json(&sample_bundle());
    files["prompt.md"] = Value::String("x".repeat(50 * 1024 * 1024));
    if let Some((status, body)) = http
        .post_oversized("/v1/bundles", &json!({"files": files}))
        .await
    {
        assert_eq!(status, 413, "{body}");
        assert_error_shape(&body, "payload_too_large");
    }

    // A prompt over the prompt limit but within the body limit is a validation
    // problem naming the file.
    files["prompt.md"] = Value::String("x".repeat(3 * 1024 * 1024));
    let (status, body) = http.post("/v1/bundles", &json!({"files": files})).await;
    assert_eq!(status, 422, "{body}");
    let problems = body["error"]["details"]["problems"].as_array().unwrap();
    assert!(
        problems
            .iter()
            .any(|p| p["file"] == "prompt.md" && p["code"] == "too_large"),
        "{body}"
    );

    let (status, _) = http.get("/v1/agents/support/bundles").await;
    assert_eq!(status, 404, "nothing was stored");

    // The server is still healthy after all of that.
    let (status, body) = http.get("/readyz").await;
    assert_eq!(status, 200, "{body}");
    let resp = http.req(Method::GET, "/metrics").send().await.unwrap();
    assert_eq!(resp.status(), 200);
    let text = resp.text().await.unwrap();
    assert!(text.contains("serin_http_requests_total"), "{text}");
}

#[tokio::test]
async fn served_openapi_document_is_the_committed_one() {
    let backend = Backend::sqlite();
    let server = Server::start(&backend);
    let token = server.bootstrap_token.clone().unwrap();
    let (status, served) = server.http(&token).get("/openapi.json").await;
    assert_eq!(status, 200);
    let committed: Value = serde_json::from_str(
        &std::fs::read_to_string(crate::harness::repo_root().join("docs/openapi.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(
        served, committed,
        "docs/openapi.json is stale: run `SERIN_UPDATE_OPENAPI=1 cargo test -p serin-server`"
    );
}
