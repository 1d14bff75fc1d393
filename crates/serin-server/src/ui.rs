//! The dashboard at `/ui`: static HTML, CSS and ES modules compiled into the binary
//! (`crates/serin-server/ui/`), so the server needs no asset directory and the browser
//! fetches nothing from anywhere else. The pages call the `/v1` API with the token the
//! user pasted, like any other client; nothing here reads or changes state.
//!
//! These routes are not API routes: they are left out of the OpenAPI document.

use axum::Router;
use axum::extract::Path;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use crate::AppState;
use crate::error::ApiError;

/// Every asset, by the name the pages load it under, with its content type.
const ASSETS: &[(&str, &str, &str)] = &[
    (
        "app.css",
        "text/css; charset=utf-8",
        include_str!("../ui/app.css"),
    ),
    (
        "app.js",
        "text/javascript; charset=utf-8",
        include_str!("../ui/app.js"),
    ),
    (
        "api.js",
        "text/javascript; charset=utf-8",
        include_str!("../ui/api.js"),
    ),
    (
        "views.js",
        "text/javascript; charset=utf-8",
        include_str!("../ui/views.js"),
    ),
    (
        "chart.js",
        "text/javascript; charset=utf-8",
        include_str!("../ui/chart.js"),
    ),
    (
        "favicon.svg",
        "image/svg+xml",
        include_str!("../ui/favicon.svg"),
    ),
];

const INDEX: &str = include_str!("../ui/index.html");

/// Only this origin's scripts, styles and connections; no inline script or style, no
/// plugins, no framing. The token lives in the page, so nothing else may run there.
const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; \
                   connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; \
                   frame-ancestors 'none'";

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/ui", get(index))
        .route("/ui/", get(index))
        .route("/ui/{file}", get(asset))
}

async fn index() -> Response {
    page("text/html; charset=utf-8", INDEX)
}

async fn asset(Path(file): Path<String>) -> Response {
    match ASSETS.iter().find(|(name, _, _)| *name == file) {
        Some((_, content_type, body)) => page(content_type, body),
        None => ApiError::not_found(format!("no dashboard asset {file}")).into_response(),
    }
}

fn page(content_type: &'static str, body: &'static str) -> Response {
    let mut resp = body.into_response();
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        "cross-origin-opener-policy",
        HeaderValue::from_static("same-origin"),
    );
    resp
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn the_page_loads_only_embedded_modules_and_no_inline_script() {
        for (name, _, body) in ASSETS {
            assert!(!body.is_empty(), "{name} is empty");
        }
        // Every script the page loads is one of the embedded assets.
        for src in INDEX.split("src=\"").skip(1) {
            let src = src.split('"').next().unwrap();
            let name = src.strip_prefix("/ui/").unwrap_or(src);
            assert!(
                ASSETS.iter().any(|(n, _, _)| *n == name),
                "index.html loads {src}, which is not embedded"
            );
        }
        // CSP forbids inline script and style; none may be written.
        assert!(!INDEX.contains("<script>"), "inline script in index.html");
        assert!(!INDEX.contains("style="), "inline style in index.html");
        assert!(!INDEX.contains("<style"), "inline style in index.html");
        // Every module import names an embedded module.
        for (name, _, body) in ASSETS.iter().filter(|(n, _, _)| n.ends_with(".js")) {
            for line in body.lines().filter(|l| l.starts_with("import ")) {
                let target = line.split('\'').nth(1).unwrap();
                let target = target.strip_prefix("./").unwrap();
                assert!(
                    ASSETS.iter().any(|(n, _, _)| *n == target),
                    "{name} imports {target}, which is not embedded"
                );
            }
        }
    }
}
