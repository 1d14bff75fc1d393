//! A small client for Serin's HTTP API, used by the CLI verbs.

use std::time::Duration;

use anyhow::{Context, anyhow};
use reqwest::{Method, StatusCode};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::cli::ClientArgs;

/// An error answer from the server, in Serin's error shape.
#[derive(Debug, thiserror::Error)]
#[error("{message} ({code}, HTTP {status})")]
pub struct ApiFailure {
    pub status: u16,
    pub code: String,
    pub message: String,
    pub field: Option<String>,
    pub details: Option<Value>,
}

impl ApiFailure {
    /// 1 when the server understood the request and said no: the token's role
    /// may not (403), the named thing does not exist (404), the current state
    /// conflicts or the readiness gate refuses (409), the content is too large
    /// (413) or invalid (422). 2 otherwise: a malformed request is a usage
    /// error (400, 405, 415), a missing or unknown token is a credentials
    /// problem the user fixes in their setup (401), and 429/5xx mean the
    /// server could not answer now (retry), like a connection error.
    pub fn exit_code(&self) -> u8 {
        match self.status {
            403 | 404 | 409 | 413 | 422 => 1,
            _ => 2,
        }
    }
}

/// Every API route but `/healthz` and `/readyz` needs a token; say how to
/// give one instead of sending a request the server can only refuse.
pub const NO_TOKEN: &str = "no API token: set SERIN_TOKEN or pass --token (an admin creates one with `serin token create`)";

#[derive(Debug)]
pub struct Client {
    http: reqwest::Client,
    base: String,
    token: Option<String>,
}

impl Client {
    pub fn new(args: &ClientArgs) -> anyhow::Result<Client> {
        Client::with_timeout(args, Duration::from_secs(60))
    }

    /// A client whose requests may take up to `timeout` (a drill waits on SDKs server-side).
    pub fn with_timeout(args: &ClientArgs, timeout: Duration) -> anyhow::Result<Client> {
        let base = args.server.trim_end_matches('/').to_owned();
        if !(base.starts_with("http://") || base.starts_with("https://")) {
            return Err(anyhow!(
                "--server must be an http:// or https:// URL, got {base:?}"
            ));
        }
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .timeout(timeout)
            .user_agent(concat!("serin-cli/", env!("CARGO_PKG_VERSION")))
            .build()
            .context("could not build the HTTP client")?;
        Ok(Client {
            http,
            base,
            token: args.token.clone().filter(|t| !t.trim().is_empty()),
        })
    }

    /// A client for long-lived streams: no deadline on the whole answer, but one on each
    /// read, so a connection that went silent (no event or heartbeat, which the server
    /// sends every 15 s) is noticed.
    pub fn streaming(args: &ClientArgs) -> anyhow::Result<Client> {
        let mut c = Client::with_timeout(args, Duration::from_secs(60))?;
        c.http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .read_timeout(Duration::from_secs(45))
            .user_agent(concat!("serin-cli/", env!("CARGO_PKG_VERSION")))
            .build()
            .context("could not build the HTTP client")?;
        Ok(c)
    }

    /// A GET of an event stream: the open response, or the server's refusal.
    pub async fn stream(&self, path: &str) -> anyhow::Result<reqwest::Response> {
        let resp = self.request(Method::GET, path, None::<&()>).await?;
        if !resp.status().is_success() {
            return Err(failure(resp).await.into());
        }
        Ok(resp)
    }

    pub async fn get<T: DeserializeOwned>(&self, path: &str) -> anyhow::Result<T> {
        let (_, v) = self.send::<(), T>(Method::GET, path, None).await?;
        Ok(v)
    }

    pub async fn post<B: Serialize, T: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
    ) -> anyhow::Result<(StatusCode, T)> {
        self.send(Method::POST, path, Some(body)).await
    }

    /// A GET whose answer is text (e.g. Markdown).
    pub async fn get_text(&self, path: &str) -> anyhow::Result<String> {
        let resp = self.request(Method::GET, path, None::<&()>).await?;
        if !resp.status().is_success() {
            return Err(failure(resp).await.into());
        }
        resp.text()
            .await
            .with_context(|| format!("reading the answer from {}", self.base))
    }

    /// Any method with a JSON body (omitted when `body` is null).
    pub async fn send_json<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: &Value,
    ) -> anyhow::Result<T> {
        let body = if body.is_null() { None } else { Some(body) };
        let (_, v) = self.send(method, path, body).await?;
        Ok(v)
    }

    pub async fn delete(&self, path: &str) -> anyhow::Result<()> {
        let resp = self.request(Method::DELETE, path, None::<&()>).await?;
        if resp.status().is_success() {
            Ok(())
        } else {
            Err(failure(resp).await.into())
        }
    }

    async fn send<B: Serialize, T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<&B>,
    ) -> anyhow::Result<(StatusCode, T)> {
        let resp = self.request(method, path, body).await?;
        let status = resp.status();
        if !status.is_success() {
            return Err(failure(resp).await.into());
        }
        let bytes = resp
            .bytes()
            .await
            .with_context(|| format!("reading the answer from {}", self.base))?;
        let value = serde_json::from_slice(&bytes).with_context(|| {
            format!("the server's answer to {path} is not what this CLI expects")
        })?;
        Ok((status, value))
    }

    async fn request<B: Serialize>(
        &self,
        method: Method,
        path: &str,
        body: Option<&B>,
    ) -> anyhow::Result<reqwest::Response> {
        let Some(token) = &self.token else {
            return Err(anyhow!(NO_TOKEN));
        };
        let url = format!("{}{}", self.base, path);
        let mut req = self.http.request(method, &url).bearer_auth(token);
        if let Some(body) = body {
            req = req.json(body);
        }
        req.send()
            .await
            .with_context(|| format!("could not reach the Serin server at {}", self.base))
    }
}

async fn failure(resp: reqwest::Response) -> ApiFailure {
    let status = resp.status().as_u16();
    let body: Option<Value> = resp.json().await.ok();
    let err = body.as_ref().and_then(|b| b.get("error"));
    let text = |k: &str| {
        err.and_then(|e| e.get(k))
            .and_then(Value::as_str)
            .map(str::to_owned)
    };
    ApiFailure {
        status,
        code: text("code").unwrap_or_else(|| "http_error".to_owned()),
        message: text("message").unwrap_or_else(|| format!("the server answered HTTP {status}")),
        field: text("field"),
        details: err.and_then(|e| e.get("details")).cloned(),
    }
}
