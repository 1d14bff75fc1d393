//! Serin's HTTP control plane.
//!
//! Handlers are thin: they authenticate (each declares the least [`Action`] it
//! needs through an [`extract::Auth`] marker), call pure logic in `serin-core`,
//! persist through `serin-store`, and answer in the error shape of [`error`].
//! The OpenAPI document is generated from the same route definitions.
//!
//! [`Action`]: serin_core::auth::Action

use std::future::Future;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{DefaultBodyLimit, MatchedPath, Request};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use serin_core::bundle::Limits;
use serin_core::catalog::ModelCatalog;
use serin_store::Store;
use tokio::sync::Semaphore;
use tower::ServiceBuilder;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::trace::TraceLayer;
use utoipa::openapi::OpenApi;
use utoipa_axum::router::OpenApiRouter;

pub mod approvals;
pub mod audit;
pub mod clock;
pub mod drills;
pub mod effects;
pub mod envs;
pub mod error;
pub mod extract;
pub mod fanout;
pub mod guardrails;
pub mod hub;
pub mod journal;
pub mod leader;
mod openapi;
pub mod otlp;
pub mod overview;
pub mod quarantine;
pub mod readiness;
pub mod releases;
pub mod replicas;
mod report;
pub mod revocation;
mod routes;
pub mod sdks;
pub mod servable;
pub mod telemetry;
pub mod transport;
mod ui;
pub mod watch;

use error::{ApiError, ErrorCode};

/// Everything a handler may reach. Cheap to clone: all shared parts are `Arc`s.
#[derive(Clone, Debug)]
pub struct AppState {
    pub store: Store,
    pub catalog: Arc<ModelCatalog>,
    pub limits: Limits,
    pub metrics: PrometheusHandle,
    pub openapi_json: Arc<String>,
    pub hub: Arc<hub::Hub>,
    pub guardrails: Arc<guardrails::Guardrails>,
    pub releases: Arc<releases::Releases>,
    pub readiness: Arc<readiness::Readiness>,
    pub drills: Arc<drills::Drills>,
    /// The env registry every env-scoped route checks first.
    pub envs: Arc<envs::Envs>,
    /// The SDK instances following this replica's snapshot streams and the
    /// versions they report applied.
    pub sdks: Arc<sdks::SdkRegistry>,
    /// Permits for bundle validations running at once (they are CPU-bound and run on the
    /// blocking pool); a request finding none answers 429.
    pub validations: Arc<Semaphore>,
    /// Ends the snapshot streams of revoked tokens.
    pub revocations: Arc<revocation::Revocations>,
    /// Stored rows this server could not read (`GET /v1/system/quarantine`).
    pub quarantine: Arc<quarantine::Quarantine>,
    /// Signs audit tree heads (None only for embedded servers without a key).
    pub audit_signer: Option<Arc<serin_core::audit::SigningKey>>,
    /// This replica's part in the snapshot fan-out, for `/readyz`.
    pub replica: Arc<fanout::ReplicaStatus>,
    /// Whether this replica runs the once-per-deployment jobs, and under which epoch.
    pub leader: Arc<leader::Leader>,
    /// This replica's row in the replica registry.
    pub heartbeat: Arc<replicas::Heartbeat>,
    /// Permits for open live views (`/v1/status/stream`, release streams); a request
    /// finding none answers 429.
    pub ui_streams: Arc<Semaphore>,
    /// The overview shared by every open overview stream.
    pub overview: Arc<overview::Shared>,
    /// The per-token bound on side-effect intents.
    pub effect_intents: Arc<effects::IntentLimiter>,
    /// The per-token bound on agent-side approval requests.
    pub approval_requests: Arc<effects::IntentLimiter>,
}

/// What the binary hands the server.
#[derive(Debug)]
pub struct ServerConfig {
    pub store: Store,
    pub catalog: ModelCatalog,
    pub limits: Limits,
    /// Requests in flight beyond this are shed with 429 and `Retry-After`.
    /// Snapshot streams are long-lived and counted separately.
    pub max_in_flight: usize,
    /// Open snapshot streams beyond this are refused with 429.
    pub max_streams: usize,
    /// Open live views (the dashboard's and `serin status --watch`'s streams) beyond this
    /// are refused with 429. Each recomputes its view every second, so they are far fewer
    /// than snapshot streams.
    pub max_ui_streams: usize,
    /// How often the store is checked for env versions committed elsewhere
    /// (another replica, an offline CLI). On PostgreSQL, other replicas' commits
    /// arrive at once through the store's announcements; this poll is the fallback.
    pub refresh_interval: Duration,
    /// How often the release controller looks at every active release (and
    /// the webhook outbox is drained).
    pub tick_interval: Duration,
    /// Contend for the leadership, which runs the release controller, the webhook
    /// notifier, the audit head webhook and the orphaned-drill sweep (on one replica at a
    /// time). Without it this process never leads.
    pub run_controller: bool,
    /// Bundle validations (push and validate) running at once; beyond, 429.
    pub max_validations: usize,
    /// When the webhook notifier gives up on a notification.
    pub webhook_retry: releases::RetryPolicy,
    /// The audit head signing key and where to send heads.
    pub audit: audit::AuditConfig,
}

/// Bodies of routes other than bundle push are small; a low default limit
/// keeps a hostile client from making the server buffer megabytes.
pub const DEFAULT_BODY_LIMIT: usize = 1024 * 1024;

/// OFREP contexts are small, but a client sending a 1 MB targeting key should hear
/// `INVALID_CONTEXT` in the protocol's shape rather than a bare 413.
pub const OFREP_BODY_LIMIT: usize = 2 * 1024 * 1024;

/// A bundle push carries the files as JSON strings; escaping can inflate text,
/// so the body may be up to twice the bundle's total size limit.
pub fn bundle_body_limit(limits: &Limits) -> usize {
    limits
        .total_bytes
        .saturating_mul(2)
        .saturating_add(64 * 1024)
}

fn api_router(limits: &Limits) -> OpenApiRouter<AppState> {
    OpenApiRouter::with_openapi(openapi::base())
        .merge(routes::bundles::router().layer(DefaultBodyLimit::max(bundle_body_limit(limits))))
        .merge(routes::decisions::router())
        .merge(routes::ofrep::router().layer(DefaultBodyLimit::max(OFREP_BODY_LIMIT)))
        .merge(routes::outcomes::router())
        .merge(routes::traces::router())
        .merge(routes::releases::router())
        .merge(routes::readiness::router())
        .merge(routes::sdks::router())
        .merge(routes::tokens::router())
        .merge(routes::audit::router())
        .merge(routes::system::router())
        .merge(routes::live::router())
        .merge(routes::effects::router())
        .merge(routes::approvals::router())
}

/// The OpenAPI document of every route, as served at `/openapi.json`.
pub fn openapi() -> OpenApi {
    let (_, api) = api_router(&Limits::DEFAULT).split_for_parts();
    openapi::complete(api)
}

/// The OpenAPI document rendered as the committed `docs/openapi.json`.
pub fn openapi_json() -> String {
    let mut s = openapi()
        .to_pretty_json()
        .unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"));
    s.push('\n');
    s
}

/// The process-wide metrics handle. The `metrics` facade has one global
/// recorder, so every server in this process shares it.
fn metrics_handle() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            PrometheusBuilder::new()
                .set_buckets(&[
                    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                ])
                .and_then(|b| b.install_recorder())
                .inspect(|_| telemetry::describe())
                .unwrap_or_else(|_| PrometheusBuilder::new().build_recorder().handle())
        })
        .clone()
}

/// The application: its router, and the hub that must be told when the
/// server shuts down (snapshot streams never end on their own).
#[derive(Debug, Clone)]
pub struct App {
    pub router: Router,
    pub hub: Arc<hub::Hub>,
    /// The SDK instance registry (the same one the routes use), for in-process
    /// callers such as a rollback drill waiting on [`sdks::SdkRegistry::wait_applied`].
    pub sdks: Arc<sdks::SdkRegistry>,
    /// The release controller and webhook notifier; stopped when the last
    /// clone of the app is dropped.
    pub tasks: Arc<BackgroundTasks>,
    /// This replica's heartbeat in the replica registry; [`replicas::Heartbeat::mark_gone`]
    /// on shutdown.
    pub heartbeat: Arc<replicas::Heartbeat>,
}

#[derive(Debug)]
pub struct BackgroundTasks(Vec<tokio::task::JoinHandle<()>>);

impl Drop for BackgroundTasks {
    fn drop(&mut self) {
        for t in &self.0 {
            t.abort();
        }
    }
}

/// Builds the whole application: routes, fallbacks and middleware. Loads the
/// persisted guardrail monitors, so it needs the store.
pub async fn app(config: ServerConfig) -> Result<App, error::ApiError> {
    let (router, api) = api_router(&config.limits).split_for_parts();
    let api = openapi::complete(api);
    let hub = hub::Hub::new(config.store.clone());
    if tokio::runtime::Handle::try_current().is_ok() {
        hub.spawn_poller(config.refresh_interval);
    }
    // Install the recorder first: loading may already count quarantined rows.
    let metrics = metrics_handle();
    let quarantine = Arc::new(quarantine::Quarantine::new());
    let guardrails = Arc::new(
        guardrails::Guardrails::load(
            config.store.clone(),
            hub.clone(),
            quarantine.clone(),
            clock::now_ms(),
        )
        .await?,
    );
    let catalog = Arc::new(config.catalog);
    let readiness = Arc::new(readiness::Readiness::new(
        config.store.clone(),
        catalog.clone(),
    ));
    let sdks = Arc::new(sdks::SdkRegistry::new());
    let releases = Arc::new(releases::Releases::new(
        config.store.clone(),
        hub.clone(),
        guardrails.clone(),
        catalog.clone(),
        readiness.clone(),
        sdks.clone(),
    ));
    let drills = Arc::new(drills::Drills::new(
        config.store.clone(),
        hub.clone(),
        sdks.clone(),
    ));
    let single_node = config.store.backend_name() == "sqlite";
    if single_node {
        // One process per data directory: any drill still running was left by a dead one.
        finish_orphaned_drills(&drills, &quarantine, None).await?;
    }
    let replica = Arc::new(fanout::ReplicaStatus::new(&config.store));
    let mut tasks = Vec::new();
    let (leader, contention) = leader::Leader::start(
        config.store.clone(),
        config.run_controller,
        on_elected(
            guardrails.clone(),
            releases.clone(),
            (!single_node).then(|| (drills.clone(), quarantine.clone())),
        ),
    )
    .await?;
    tasks.extend(contention);
    guardrails.attach_leader(leader.clone());
    if tokio::runtime::Handle::try_current().is_ok()
        && let Some(journal) =
            journal::spawn(config.store.clone(), guardrails.clone(), leader.clone())
    {
        tasks.extend(journal);
    }
    let revocations = revocation::Revocations::new(config.store.clone(), sdks.clone());
    let heartbeat = Arc::new(replicas::Heartbeat::new(
        config.store.clone(),
        hub.clone(),
        replica.clone(),
        leader.clone(),
        sdks.clone(),
    ));
    if !single_node {
        // Several replicas serve one fleet: publish this one's SDK instances
        // and read the others' (SQLite's single server keeps them in memory).
        sdks.share(config.store.clone(), heartbeat.identity.id.clone());
    }
    if tokio::runtime::Handle::try_current().is_ok() {
        tasks.extend(sdks.clone().spawn_flusher());
        tasks.push(heartbeat.clone().spawn());
        tasks.push(revocations.spawn_poller());
        tasks.extend(fanout::spawn_listener(
            config.store.clone(),
            &hub,
            replica.clone(),
        ));
    }
    if config.run_controller && tokio::runtime::Handle::try_current().is_ok() {
        tasks.push(releases.spawn(config.tick_interval, leader.clone()));
        tasks.push(releases::spawn_notifier(
            config.store.clone(),
            config.tick_interval,
            config.webhook_retry,
            leader.clone(),
        ));
        // Overdue intents become `unknown` within a tick of their deadline.
        tasks.push(effects::spawn_sweep(
            config.store.clone(),
            config.tick_interval,
            leader.clone(),
        ));
        // Undecided approval requests expire (a denial) within a tick of their expiry.
        tasks.push(approvals::spawn_sweep(
            config.store.clone(),
            guardrails.clone(),
            config.tick_interval,
            leader.clone(),
        ));
        if !single_node {
            tasks.push(spawn_drill_sweep(
                drills.clone(),
                quarantine.clone(),
                leader.clone(),
            ));
        }
    }
    if let (Some(signer), Some(url)) = (&config.audit.signer, &config.audit.head_webhook)
        && tokio::runtime::Handle::try_current().is_ok()
    {
        tasks.push(audit::spawn_head_webhook(
            config.store.clone(),
            signer.clone(),
            url.clone(),
            config.audit.head_interval,
            leader.clone(),
        ));
    }
    let state = AppState {
        leader,
        heartbeat: heartbeat.clone(),
        envs: Arc::new(envs::Envs::new(config.store.clone())),
        quarantine,
        audit_signer: config.audit.signer.clone(),
        replica,
        releases,
        readiness,
        drills,
        sdks: sdks.clone(),
        revocations,
        guardrails,
        hub: hub.clone(),
        store: config.store,
        catalog,
        limits: config.limits,
        metrics,
        openapi_json: Arc::new(api.to_pretty_json().unwrap_or_default()),
        validations: Arc::new(Semaphore::new(config.max_validations.max(1))),
        ui_streams: Arc::new(Semaphore::new(config.max_ui_streams.max(1))),
        overview: Arc::new(overview::Shared::default()),
        effect_intents: Arc::new(effects::IntentLimiter::default()),
        approval_requests: Arc::new(effects::IntentLimiter::default()),
    };
    // The dashboard is not part of the API: its pages stay out of the OpenAPI document.
    let routes = router
        .merge(ui::router())
        .method_not_allowed_fallback(method_not_allowed)
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(DEFAULT_BODY_LIMIT))
        .layer(middleware::from_fn(record_metrics))
        .with_state(state);
    let limits = Arc::new(InFlight {
        requests: Arc::new(Semaphore::new(config.max_in_flight.max(1))),
        streams: Arc::new(Semaphore::new(config.max_streams.max(1))),
    });
    // `Router::layer` wraps each route separately; the load shedder must count
    // requests across all routes, so it wraps the router as one service.
    let guarded = ServiceBuilder::new()
        .layer(middleware::from_fn(security_headers))
        .layer(CatchPanicLayer::custom(panicked))
        .layer(middleware::from_fn(refuse_long_uri))
        .layer(TraceLayer::new_for_http())
        .layer(middleware::from_fn_with_state(limits, shed_load))
        .service(routes);
    Ok(App {
        router: Router::new().fallback_service(guarded),
        hub,
        sdks,
        tasks: Arc::new(BackgroundTasks(tasks)),
        heartbeat,
    })
}

/// What a replica does on taking the leadership, before its first tick: reads the stored
/// monitors over its possibly older copies, applies the outcomes journalled by replicas that
/// did not lead, resumes every active release from the store,
/// and (with replicas) finishes drills whose replica died.
fn on_elected(
    guardrails: Arc<guardrails::Guardrails>,
    releases: Arc<releases::Releases>,
    drills: Option<(Arc<drills::Drills>, Arc<quarantine::Quarantine>)>,
) -> leader::OnElected {
    Arc::new(move |epoch| {
        let (guardrails, releases, drills) = (guardrails.clone(), releases.clone(), drills.clone());
        Box::pin(async move {
            guardrails.reload_monitors().await?;
            // Evidence other replicas journalled up to now is counted before any release is
            // judged under this epoch.
            guardrails.catch_up_journal(epoch).await?;
            let resumed = releases.resume_all().await?;
            if resumed > 0 {
                tracing::info!(releases = resumed, epoch, "resuming active releases");
            }
            if let Some((drills, quarantine)) = drills {
                finish_orphaned_drills(&drills, &quarantine, Some(clock::now_ms())).await?;
            }
            Ok(())
        })
    })
}

async fn finish_orphaned_drills(
    drills: &drills::Drills,
    quarantine: &quarantine::Quarantine,
    overdue_at: Option<i64>,
) -> Result<(), ApiError> {
    let finished = drills.resume_all(quarantine, overdue_at).await?;
    if finished > 0 {
        tracing::warn!(
            drills = finished,
            "finished drills their server left running"
        );
    }
    Ok(())
}

/// How often the leader looks for drills a dead replica left running.
const DRILL_SWEEP: Duration = Duration::from_secs(30);

fn spawn_drill_sweep(
    drills: Arc<drills::Drills>,
    quarantine: Arc<quarantine::Quarantine>,
    leader: Arc<leader::Leader>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(DRILL_SWEEP);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            if !leader.is_leader() {
                continue;
            }
            if let Err(e) =
                finish_orphaned_drills(&drills, &quarantine, Some(clock::now_ms())).await
            {
                tracing::warn!(error = %e.message, "could not finish orphaned drills");
            }
        }
    })
}

/// Permits for requests in flight. Snapshot streams live for hours, so they
/// draw from their own pool and hold their permit as long as they are open.
#[derive(Debug)]
struct InFlight {
    requests: Arc<Semaphore>,
    streams: Arc<Semaphore>,
}

async fn shed_load(
    axum::extract::State(limits): axum::extract::State<Arc<InFlight>>,
    req: Request,
    next: Next,
) -> Response {
    let is_stream = req.uri().path().ends_with("/snapshot/stream");
    let pool = if is_stream {
        &limits.streams
    } else {
        &limits.requests
    };
    let Ok(permit) = pool.clone().try_acquire_owned() else {
        metrics::counter!("serin_http_shed_total").increment(1);
        return overloaded().into_response();
    };
    let resp = next.run(req).await;
    if is_stream {
        // The body outlives this function: keep the permit until it ends.
        let (parts, body) = resp.into_parts();
        let body = axum::body::Body::new(http_body_util::BodyExt::map_frame(body, move |f| {
            let _held = &permit;
            f
        }));
        Response::from_parts(parts, body)
    } else {
        drop(permit);
        resp
    }
}

/// Serves with the default transport limits until `shutdown` resolves, then ends snapshot
/// streams and drains in-flight requests. See [`transport::serve`] to choose the limits.
pub async fn serve(
    listener: tokio::net::TcpListener,
    app: App,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    transport::serve(listener, app, transport::TransportConfig::DEFAULT, shutdown).await
}

/// A request URI (path and query) over this answers 414 `uri_too_long`. No route needs more;
/// hyper's own limit (64 KiB) is far above what any proxy forwards.
pub const MAX_URI_BYTES: usize = 8 * 1024;

async fn refuse_long_uri(req: Request, next: Next) -> Response {
    let len = req
        .uri()
        .path_and_query()
        .map(|p| p.as_str().len())
        .unwrap_or(0);
    if len > MAX_URI_BYTES {
        return ApiError::new(
            ErrorCode::UriTooLong,
            format!("the request URI is {len} bytes, over the limit of {MAX_URI_BYTES} bytes"),
        )
        .into_response();
    }
    next.run(req).await
}

/// Every answer: never sniffed as another content type, and never stored by a cache. Almost
/// every answer carries something a cache must not keep (a new token's secret, bundle
/// contents in bundles, snapshots and streams, audit entries, deliveries' payloads), and a
/// list of exceptions would drift, so `no-store` goes on all of them, replacing the
/// `no-cache` of event streams.
async fn security_headers(req: Request, next: Next) -> Response {
    let mut resp = next.run(req).await;
    let headers = resp.headers_mut();
    headers.insert(
        axum::http::header::X_CONTENT_TYPE_OPTIONS,
        axum::http::HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        axum::http::header::CACHE_CONTROL,
        axum::http::HeaderValue::from_static("no-store"),
    );
    resp
}

async fn not_found() -> ApiError {
    ApiError::new(ErrorCode::NotFound, "no such route")
}

async fn method_not_allowed() -> ApiError {
    ApiError::new(
        ErrorCode::MethodNotAllowed,
        "this route does not accept this method",
    )
}

fn overloaded() -> ApiError {
    ApiError::new(
        ErrorCode::Overloaded,
        "the server has too many requests in flight; retry shortly",
    )
}

fn panicked(_: Box<dyn std::any::Any + Send + 'static>) -> Response {
    tracing::error!("a handler panicked");
    ApiError::new(ErrorCode::Internal, "internal error; see the server log").into_response()
}

async fn record_metrics(req: Request, next: Next) -> Response {
    let start = Instant::now();
    let method = req.method().as_str().to_owned();
    // The matched route template, never the raw path: raw paths would give
    // every agent and bundle number its own time series.
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| "unmatched".to_owned());
    let seen = RequestLog::of(&req, &route);
    let resp = next.run(req).await;
    let status_code = resp.status().as_u16();
    let status = status_code.to_string();
    let elapsed: Duration = start.elapsed();
    tracing::info!(
        target: "serin::request",
        method = %method,
        route = %route,
        status = status_code,
        latency_ms = elapsed.as_secs_f64() * 1000.0,
        token = seen.token.as_deref().unwrap_or(""),
        agent = seen.agent.as_deref().unwrap_or(""),
        env = seen.env.as_deref().unwrap_or(""),
        "request"
    );
    metrics::counter!("serin_http_requests_total", "method" => method.clone(), "route" => route.clone(), "status" => status).increment(1);
    metrics::histogram!("serin_http_request_duration_seconds", "method" => method, "route" => route)
        .record(elapsed.as_secs_f64());
    resp
}

/// What the request log says about who asked and about what, read before the handler runs.
#[derive(Debug, Default, PartialEq, Eq)]
struct RequestLog {
    /// The token's public id (`serin_<id>_<secret>`): never the secret.
    token: Option<String>,
    agent: Option<String>,
    env: Option<String>,
}

impl RequestLog {
    fn of(req: &Request, template: &str) -> RequestLog {
        let token = req
            .headers()
            .get(axum::http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(token_id);
        // Path parameters by position in the template; only well-formed names are logged,
        // so a hostile path cannot write arbitrary text into the log.
        let mut agent = None;
        let mut env = None;
        for (t, seg) in template.split('/').zip(req.uri().path().split('/')) {
            match t {
                "{agent}" if serin_core::slug::validate_agent(seg).is_ok() => {
                    agent = Some(seg.to_owned())
                }
                "{env}" if serin_core::slug::validate_env(seg).is_ok() => {
                    env = Some(seg.to_owned())
                }
                _ => {}
            }
        }
        if env.is_none() {
            env = req
                .headers()
                .get(routes::ofrep::ENV_HEADER)
                .and_then(|v| v.to_str().ok())
                .filter(|e| serin_core::slug::validate_env(e).is_ok())
                .map(str::to_owned);
        }
        RequestLog { token, agent, env }
    }
}

/// The id part of `Bearer serin_<id>_<secret>`, or `malformed`.
fn token_id(header: &str) -> Option<String> {
    let token = header
        .strip_prefix("Bearer ")
        .or_else(|| header.strip_prefix("bearer "))?
        .trim();
    let id = token
        .strip_prefix("serin_")
        .and_then(|rest| rest.split_once('_'))
        .map(|(id, _)| id)
        .filter(|id| {
            !id.is_empty() && id.len() <= 32 && id.bytes().all(|b| b.is_ascii_alphanumeric())
        });
    Some(id.unwrap_or("malformed").to_owned())
}

#[cfg(test)]
mod request_log_tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn the_request_log_names_the_token_id_never_its_secret() {
        assert_eq!(
            token_id("Bearer serin_abc123_s3cr3t").as_deref(),
            Some("abc123")
        );
        assert_eq!(token_id("Bearer s3cr3t").as_deref(), Some("malformed"));
        assert_eq!(token_id("Basic x"), None);
        let req = Request::builder()
            .uri("/v1/envs/prod/agents/support/kill")
            .header("authorization", "Bearer serin_abc123_s3cr3t")
            .body(axum::body::Body::empty())
            .unwrap();
        let seen = RequestLog::of(&req, "/v1/envs/{env}/agents/{agent}/kill");
        assert_eq!(
            seen,
            RequestLog {
                token: Some("abc123".into()),
                agent: Some("support".into()),
                env: Some("prod".into())
            }
        );
        let hostile = Request::builder()
            .uri("/v1/envs/BAD%0Aline/snapshot")
            .body(axum::body::Body::empty())
            .unwrap();
        assert_eq!(
            RequestLog::of(&hostile, "/v1/envs/{env}/snapshot").env,
            None
        );
    }
}
