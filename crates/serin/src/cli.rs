//! Command-line grammar. Doc comments here are the `--help` text.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

#[derive(Debug, Parser)]
#[command(
    name = "serin",
    version,
    about = "Serin: a release control plane for AI agents",
    propagate_version = true
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

/// Where the server is and who we are; shared by every client verb.
#[derive(Debug, Args, Clone)]
pub struct ClientArgs {
    /// Serin server URL.
    #[arg(long, env = "SERIN_SERVER", default_value = "http://127.0.0.1:7070")]
    pub server: String,
    /// API token (create one with `serin token create`).
    #[arg(long, env = "SERIN_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Output format of read verbs.
    #[arg(long, short = 'o', value_enum, default_value_t = Output::Human)]
    pub output: Output,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Output {
    Human,
    Json,
}

/// Where the store lives, for the server and offline verbs.
#[derive(Debug, Args, Clone)]
pub struct StoreArgs {
    /// Data directory of the embedded SQLite store.
    #[arg(
        long,
        env = "SERIN_DATA",
        default_value = ".serin",
        conflicts_with = "database_url"
    )]
    pub data: PathBuf,
    /// PostgreSQL URL (multi-replica deployments), e.g. postgres://user@host/db.
    #[arg(long, env = "SERIN_DATABASE_URL", hide_env_values = true)]
    pub database_url: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the Serin server.
    Server(ServerArgs),
    /// The whole loop on an embedded server: bundles, a simulated fleet on the
    /// SDK, a release, a guardrail breach and automatic rollback, a webhook,
    /// and the deploy report (about a minute).
    Demo {
        /// A candidate without the regression: it ramps to 100%.
        #[arg(long)]
        healthy: bool,
    },
    /// Validate, push and inspect bundles.
    #[command(subcommand)]
    Bundle(BundleCommand),
    /// Pinned model snapshots against the newest ones the model catalog knows.
    Pins {
        /// Only this agent.
        agent: Option<String>,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Make bundle N the stable directly (dev; strict envs need --force --reason).
    Deploy {
        agent: String,
        #[arg(long)]
        env: String,
        /// N of AGENT@N.
        #[arg(long)]
        bundle: u64,
        /// Deploy into a strict env without a release.
        #[arg(long, requires = "reason")]
        force: bool,
        #[arg(long)]
        reason: Option<String>,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Roll back in one step: drain a running release, or restore the previous stable.
    Rollback {
        agent: String,
        #[arg(long)]
        env: String,
        #[arg(long)]
        reason: String,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Switch an agent off (every request decides `killed`), for all or one tenant.
    Kill(KillArgs),
    /// Lift a kill switch.
    Unkill(KillArgs),
    /// Flags evaluated per request by the SDK.
    #[command(subcommand)]
    Flag(FlagCommand),
    /// Environments: they exist only once created (`dev` exists from the start).
    #[command(subcommand)]
    Env(EnvCommand),
    /// Replay a request context against a past snapshot: arm, rule and why.
    Explain {
        /// Snapshot version the decision was made under.
        #[arg(long)]
        snapshot: u64,
        #[arg(long)]
        request_id: String,
        /// Needed when the snapshot routes several agents.
        #[arg(long)]
        agent: Option<String>,
        #[arg(long)]
        user: Option<String>,
        #[arg(long)]
        tenant: Option<String>,
        #[arg(long)]
        workload: Option<String>,
        #[arg(long)]
        region: Option<String>,
        #[arg(long)]
        instance: Option<String>,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Show an env's routing: stable, previous, release, kill switches, flags.
    // `--version` here is the snapshot's; the binary's own version flag stays at the top.
    #[command(disable_version_flag = true)]
    Snapshot {
        #[arg(long)]
        env: String,
        /// A past version instead of the current one.
        #[arg(long)]
        version: Option<u64>,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Readiness gates: write, apply and check a policy.
    #[command(subcommand)]
    Readiness(ReadinessCommand),
    /// Attested readiness evidence: an owner's word on one item, with an optional expiry.
    #[command(subcommand)]
    Evidence(EvidenceCommand),
    /// Offline eval results, tied to a bundle's digest.
    #[command(subcommand)]
    Eval(EvalCommand),
    /// Rollback drills: rehearse a rollback and time it across connected SDKs.
    #[command(subcommand)]
    Drill(DrillCommand),
    /// Canary releases: start, watch, promote, pause, resume, abort, report.
    #[command(subcommand)]
    Release(ReleaseCommand),
    /// Live guardrail verdicts of an agent's canaries against stable, and its burn rate.
    Guardrails {
        agent: String,
        #[arg(long)]
        env: String,
        /// Daily budget in USD, for the projected-spend warning.
        #[arg(long)]
        budget: Option<f64>,
        /// Set the agent's guardrail thresholds from a YAML/JSON file (the
        /// `guardrails:` block of a plan) instead of showing verdicts.
        #[arg(long, value_name = "FILE")]
        set: Option<PathBuf>,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// API tokens.
    #[command(subcommand)]
    Token(TokenCommand),
    /// Benchmarks that need a running server.
    #[command(subcommand)]
    Bench(BenchCommand),
    /// The audit log.
    #[command(subcommand)]
    Audit(AuditCommand),
    /// Every env and agent (stable, previous, release step/weight/phase, verdicts, kill
    /// switches, SDKs and their lag), then the server replicas sharing the store: which are
    /// alive, which one leads (and under which epoch), their fan-out listener, how far
    /// behind each is, and their SDK streams.
    Status {
        /// Redraw on every change (the server's `/v1/status/stream`) until Ctrl-C,
        /// reconnecting with backoff when the connection drops.
        #[arg(long)]
        watch: bool,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Every SDK instance following ENV: the bundle it serves of AGENT under the snapshot
    /// version it applied, how far behind it is, its region and pool, and its wave.
    Fleet {
        #[command(flatten)]
        target: ReleaseTarget,
        /// Redraw every 2 seconds until interrupted (plain lines when not a terminal).
        #[arg(long)]
        watch: bool,
    },
    /// The approval queue: actions an env's policy reserves for a second person (releases
    /// adding risky capabilities, promotions to 100%, readiness overrides, unkills) and
    /// agents' risky tool calls.
    #[command(subcommand)]
    Approvals(ApprovalsCommand),
    /// What AGENT can do in ENV: each tool of the stable and of the running release's
    /// candidate with its effect class, owner and limits, then the capability changes
    /// between them (`!` marks those needing approval).
    Capabilities {
        #[command(flatten)]
        target: ReleaseTarget,
    },
    /// The side-effect ledger of AGENT@N: every recorded tool call, its result, and a count
    /// per status that flags calls nobody can tell happened (`unknown`).
    Effects {
        agent: String,
        /// N of AGENT@N.
        #[arg(long)]
        bundle: u64,
        /// Only effects in this status: intent, committed, failed or unknown.
        #[arg(long, value_parser = ["intent", "committed", "failed", "unknown"])]
        status: Option<String>,
        #[command(flatten)]
        client: ClientArgs,
    },
}

#[derive(Debug, Args)]
pub struct ServerArgs {
    #[command(flatten)]
    pub store: StoreArgs,
    /// Address to listen on (port 0 picks a free port).
    #[arg(long, env = "SERIN_LISTEN", default_value = "127.0.0.1:7070")]
    pub listen: SocketAddr,
    /// A model catalog YAML merged over the built-in one.
    #[arg(long, env = "SERIN_MODEL_CATALOG")]
    pub catalog: Option<PathBuf>,
    /// Log format.
    #[arg(long, env = "SERIN_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// Requests in flight beyond this are answered 429 with Retry-After.
    #[arg(long, env = "SERIN_MAX_IN_FLIGHT", default_value_t = 1024)]
    pub max_in_flight: usize,
    /// Open snapshot streams (SDK connections) beyond this are answered 429.
    #[arg(long, env = "SERIN_MAX_STREAMS", default_value_t = 20_000)]
    pub max_streams: usize,
    /// Open live views (dashboard and `serin status --watch` streams, each recomputed every
    /// second) beyond this are answered 429.
    #[arg(long, env = "SERIN_MAX_UI_STREAMS", default_value_t = 64)]
    pub max_ui_streams: usize,
    /// How often (ms) to look for env changes committed by another replica.
    #[arg(long, env = "SERIN_REFRESH_MS", default_value_t = 1000)]
    pub refresh_ms: u64,
    /// How often (ms) the release controller evaluates every active release.
    #[arg(long, env = "SERIN_TICK_MS", default_value_t = 500)]
    pub tick_ms: u64,
    /// Never lead: serve the API without contending for the release controller's
    /// leadership (which runs the controller, the webhook notifier, the audit head
    /// webhook and the orphaned-drill sweep on one replica at a time). Replicas on
    /// PostgreSQL elect their leader themselves, so this is only for replicas that
    /// must never run those jobs.
    #[arg(long, env = "SERIN_NO_RELEASE_CONTROLLER")]
    pub no_release_controller: bool,
    /// Let an admin move this server's clock forward (`POST /v1/system/clock`),
    /// so tests and rehearsals step over step durations and expiries instead of
    /// waiting for them. Never in production.
    #[arg(long, env = "SERIN_ADJUSTABLE_CLOCK")]
    pub adjustable_clock: bool,
    /// Open connections at most. Beyond, the oldest connection with no request
    /// in flight (idle or half-sent) is closed; if every one is serving a
    /// request, the new one gets 429. Clamped below the open-file limit.
    #[arg(long, env = "SERIN_MAX_CONNECTIONS", default_value_t = 4096)]
    pub max_connections: usize,
    /// A request's head must arrive within this (ms); also how long a kept-alive
    /// connection may stay idle between requests.
    #[arg(long, env = "SERIN_HEADER_TIMEOUT_MS", default_value_t = 10_000)]
    pub header_timeout_ms: u64,
    /// A request's body must be complete this long (ms) after its head, or 408.
    #[arg(long, env = "SERIN_BODY_TIMEOUT_MS", default_value_t = 30_000)]
    pub body_timeout_ms: u64,
    /// Bundle validations (push, validate) running at once; beyond, 429.
    #[arg(long, env = "SERIN_MAX_VALIDATIONS", default_value_t = 4)]
    pub max_validations: usize,
    /// Webhook delivery attempts before a notification is marked failed.
    #[arg(long, env = "SERIN_WEBHOOK_MAX_ATTEMPTS", default_value_t = 20)]
    pub webhook_max_attempts: u32,
    /// A webhook notification older than this (s) is marked failed at its next failure.
    #[arg(long, env = "SERIN_WEBHOOK_MAX_AGE_SECS", default_value_t = 86_400)]
    pub webhook_max_age_secs: u64,
    /// Wait (ms) after a failed webhook delivery, doubled after each further failure...
    #[arg(long, env = "SERIN_WEBHOOK_BACKOFF_MS", default_value_t = 1_000)]
    pub webhook_backoff_ms: u64,
    /// ...up to this (ms).
    #[arg(
        long,
        env = "SERIN_WEBHOOK_MAX_BACKOFF_MS",
        default_value_t = 7_200_000
    )]
    pub webhook_max_backoff_ms: u64,
    /// File holding the Ed25519 seed (64 hex characters) that signs audit tree heads; kept
    /// outside the database so whoever can write the database cannot re-sign a rewritten log.
    /// Created with mode 0600 when missing. Default with SQLite: <data>/audit-signing.key;
    /// required with --database-url (every replica must use the same file).
    #[arg(long, env = "SERIN_AUDIT_KEY")]
    pub audit_key: Option<PathBuf>,
    /// POST every new signed audit tree head to this URL.
    #[arg(long, env = "SERIN_AUDIT_HEAD_WEBHOOK")]
    pub audit_head_webhook: Option<String>,
    /// How often to look for a new audit tree head to POST (e.g. 30s, 10m, 1h).
    #[arg(long, env = "SERIN_AUDIT_HEAD_INTERVAL", default_value = "10m", value_parser = parse_interval)]
    pub audit_head_interval: std::time::Duration,
}

fn parse_interval(s: &str) -> Result<std::time::Duration, String> {
    let d = serin_core::release::DurationSpec::parse(s).map_err(|e| e.to_string())?;
    if d.as_ms() < 100 {
        return Err(format!("{s:?} is too short; use at least 100ms"));
    }
    Ok(std::time::Duration::from_millis(d.as_ms()))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum BundleCommand {
    /// Validate a bundle directory locally; exit 1 if any problem is an error.
    Validate {
        /// The bundle directory (holding bundle.yaml).
        dir: PathBuf,
        /// Validate under this env's pin policy (`dev` allows moving aliases).
        #[arg(long)]
        env: Option<String>,
        /// A model catalog YAML merged over the built-in one.
        #[arg(long, env = "SERIN_MODEL_CATALOG")]
        catalog: Option<PathBuf>,
        /// Output format.
        #[arg(long, short = 'o', value_enum, default_value_t = Output::Human)]
        output: Output,
    },
    /// Validate and push a bundle directory; prints agent@N.
    Push {
        dir: PathBuf,
        /// Validate under this env's pin policy (`dev` allows moving aliases).
        #[arg(long)]
        env: Option<String>,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// List agents, or one agent's bundles (newest first).
    List {
        agent: Option<String>,
        /// At most this many bundles.
        #[arg(long, default_value_t = 50)]
        limit: i64,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Show one bundle: AGENT@N.
    Show {
        id: String,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// What changed between two bundles: AGENT@N AGENT@M.
    Diff {
        old: String,
        new: String,
        #[command(flatten)]
        client: ClientArgs,
    },
}

#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Create an API token; the secret is printed once.
    Create {
        /// admin, deployer, approver, viewer or sdk.
        #[arg(long)]
        role: String,
        /// A label to recognise the token by.
        #[arg(long)]
        name: Option<String>,
        /// `--data`/`--database-url`: write straight into that store instead of
        /// asking a server (bootstrap, or recovery when no admin token is left).
        #[command(flatten)]
        store: OfflineStoreArgs,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// List tokens (never their secrets).
    List {
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Revoke a token by id. Its open snapshot streams end within a second,
    /// on every replica.
    Revoke {
        id: String,
        /// `--data`/`--database-url`: revoke straight in that store (a leaked
        /// admin token with no other admin left, or no server running).
        #[command(flatten)]
        store: OfflineStoreArgs,
        #[command(flatten)]
        client: ClientArgs,
    },
}

/// `--data` or `--database-url` given to a client verb means "offline".
#[derive(Debug, Args, Clone)]
pub struct OfflineStoreArgs {
    /// Data directory of an embedded SQLite store (implies offline).
    #[arg(long, conflicts_with = "database_url")]
    pub data: Option<PathBuf>,
    /// PostgreSQL URL (implies offline).
    #[arg(long, hide_env_values = true)]
    pub database_url: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Newest audit entries.
    List {
        #[arg(long, default_value_t = 50)]
        limit: i64,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Recompute the audit hash chain; with --head, also prove the log still holds, unchanged
    /// and in order, every entry a saved signed head covers. Exit 1 naming the first bad entry.
    Verify {
        /// A head saved earlier with `serin audit head > FILE`.
        #[arg(long)]
        head: Option<PathBuf>,
        /// The audit public key to trust (64 hex characters, or a file holding them). Without
        /// it the key named in the head file is used, which proves integrity since that head
        /// only if the file itself was kept safe.
        #[arg(long, requires = "head")]
        public_key: Option<String>,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Print the current signed tree head of the audit log as JSON (save it elsewhere; pass
    /// it to `audit verify --head` later).
    Head {
        #[command(flatten)]
        client: ClientArgs,
    },
}

#[derive(Debug, Subcommand)]
pub enum EnvCommand {
    /// Create an env (admin). Strict unless it is named dev: moving model aliases are
    /// refused and direct deploys need --force --reason.
    Create {
        name: String,
        /// Strict pin policy (the default for every env but dev).
        #[arg(long, conflicts_with = "lenient")]
        strict: bool,
        /// Lenient pin policy, like dev: moving aliases and direct deploys are allowed.
        #[arg(long)]
        lenient: bool,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Every env with its pin policy and newest snapshot version.
    List {
        #[command(flatten)]
        client: ClientArgs,
    },
    /// One env.
    Show {
        name: String,
        #[command(flatten)]
        client: ClientArgs,
    },
}

#[derive(Debug, Args)]
pub struct KillArgs {
    pub agent: String,
    #[arg(long)]
    pub env: String,
    /// Only this tenant.
    #[arg(long)]
    pub tenant: Option<String>,
    #[arg(long)]
    pub reason: String,
    #[command(flatten)]
    pub approval: ApprovalArgs,
    #[command(flatten)]
    pub client: ClientArgs,
}

/// How an action the env's approval policy reserves waits for its approver.
#[derive(Debug, Args)]
pub struct ApprovalArgs {
    /// Spend this approved request (apr-…) on the action.
    #[arg(long)]
    pub approval: Option<String>,
    /// When the action needs an approver, file the request and exit instead of waiting for
    /// the decision (repeat the action later with --approval).
    #[arg(long)]
    pub no_wait: bool,
}

#[derive(Debug, Subcommand)]
pub enum ApprovalsCommand {
    /// The queue, newest first.
    List {
        #[arg(long)]
        env: Option<String>,
        #[arg(long)]
        agent: Option<String>,
        #[arg(long, default_value = "pending", value_parser = ["pending", "approved", "denied", "expired", "all"])]
        status: String,
        #[arg(long, value_parser = ["release_start", "promote_full", "readiness_override", "unkill", "tool_call"])]
        kind: Option<String>,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// One request: who asked, why, the capability changes and readiness it carries.
    Show {
        id: String,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Approve a pending request (not your own).
    Approve {
        id: String,
        #[arg(long)]
        reason: String,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Deny a pending request.
    Deny {
        id: String,
        #[arg(long)]
        reason: String,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Show ENV's approval policy, or apply a new version from a YAML file (admin).
    Policy {
        #[arg(long)]
        env: String,
        /// The policy to apply (YAML); without it, show the one in force.
        #[arg(long)]
        file: Option<PathBuf>,
        #[command(flatten)]
        client: ClientArgs,
    },
}

// Parsed once per process; boxing the big variant would buy nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Subcommand)]
pub enum FlagCommand {
    /// Create or replace a flag, from a YAML/JSON file or from options.
    Set {
        key: String,
        #[arg(long)]
        env: String,
        /// A flag definition (YAML or JSON); options below override its fields.
        #[arg(long)]
        file: Option<PathBuf>,
        /// Share of units that get `on` when no rule matches, e.g. 25%.
        #[arg(long)]
        rollout: Option<String>,
        /// Value served when on (JSON; bare words are strings).
        #[arg(long)]
        on: Option<String>,
        /// Value served when off (JSON; bare words are strings).
        #[arg(long)]
        off: Option<String>,
        /// Serve `off` to everyone.
        #[arg(long, conflicts_with = "enable")]
        disable: bool,
        /// Evaluate normally (the default for a new flag).
        #[arg(long)]
        enable: bool,
        #[arg(long, value_name = "USER")]
        allow_user: Vec<String>,
        #[arg(long, value_name = "TENANT")]
        allow_tenant: Vec<String>,
        #[arg(long, value_name = "WORKLOAD")]
        allow_workload: Vec<String>,
        #[arg(long, value_name = "USER")]
        deny_user: Vec<String>,
        #[arg(long, value_name = "TENANT")]
        deny_tenant: Vec<String>,
        #[arg(long, value_name = "WORKLOAD")]
        deny_workload: Vec<String>,
        /// user, tenant or request.
        #[arg(long)]
        stickiness: Option<String>,
        #[arg(long)]
        description: Option<String>,
        #[arg(long)]
        reason: Option<String>,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Show one flag.
    Get {
        key: String,
        #[arg(long)]
        env: String,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// List an env's flags.
    List {
        #[arg(long)]
        env: String,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Delete a flag.
    Delete {
        key: String,
        #[arg(long)]
        env: String,
        #[arg(long)]
        reason: Option<String>,
        #[command(flatten)]
        client: ClientArgs,
    },
}

#[derive(Debug, Subcommand)]
pub enum BenchCommand {
    /// Rollback propagation: change acknowledged -> every stream subscriber has it, on
    /// real server processes (their memory reported too); with --database-url across
    /// --replicas replicas, then on one replica as the baseline.
    Propagation {
        /// Concurrent snapshot-stream subscribers, split evenly over the replicas.
        #[arg(long, default_value_t = 1000)]
        subscribers: usize,
        /// Rollbacks (alternating with redeploys) to time.
        #[arg(long, default_value_t = 40)]
        rollbacks: usize,
        /// PostgreSQL to run the replicas on (in a private schema, dropped afterwards);
        /// without it one server runs on a temporary SQLite store.
        #[arg(long)]
        database_url: Option<String>,
        /// Server processes sharing the store (more than 1 needs --database-url).
        #[arg(long, default_value_t = 1)]
        replicas: usize,
        /// Agents deployed (in env `fleet`) before reading the servers' idle memory.
        #[arg(long, default_value_t = 100)]
        agents: usize,
        #[arg(long, short = 'o', value_enum, default_value_t = Output::Human)]
        output: Output,
    },
    /// The interop endpoints beside their native twins, in one run: OFREP single and bulk
    /// evaluation latency against POST /v1/decide, and OTLP trace ingestion (spans/s and
    /// outcomes/s) against POST /v1/outcomes with the same outcomes.
    Interop {
        /// Evaluations per kind (single, bulk, decide).
        #[arg(long, default_value_t = 20_000)]
        requests: usize,
        /// Outcomes to ingest per path (each is 3 spans over OTLP).
        #[arg(long, default_value_t = 100_000)]
        events: usize,
        /// Outcomes per batch (per export for OTLP).
        #[arg(long, default_value_t = 1000)]
        batch: usize,
        /// Concurrent clients.
        #[arg(long, visible_alias = "clients", default_value_t = 4)]
        concurrency: usize,
        #[arg(long, short = 'o', value_enum, default_value_t = Output::Human)]
        output: Output,
    },
    /// Outcome ingestion throughput through POST /v1/outcomes.
    Ingest {
        #[arg(long, default_value_t = 200_000)]
        events: usize,
        #[arg(long, default_value_t = 1000)]
        batch: usize,
        /// Concurrent clients, each sending one batch at a time.
        #[arg(long, visible_alias = "clients", default_value_t = 4)]
        concurrency: usize,
        /// Send the outcomes as windows (`POST /v1/outcomes/windows`), one window of
        /// `--batch` requests per body, as an SDK with outcome windows on does.
        #[arg(long)]
        windows: bool,
        #[arg(long, short = 'o', value_enum, default_value_t = Output::Human)]
        output: Output,
    },
    /// Detection quality: Serin's sequential tests against a fixed threshold,
    /// per-interval Mann-Whitney and the SPRT oracle, on simulated canaries.
    Detect {
        /// Seeded runs per scenario and method.
        #[arg(long, default_value_t = 1000)]
        runs: usize,
        #[arg(long, default_value_t = 1)]
        seed: u64,
        #[arg(long, short = 'o', value_enum, default_value_t = Output::Human)]
        output: Output,
    },
    /// The judgement end to end: real releases (1% -> 5% -> 25% -> 50% -> 100%, auto
    /// promotion) through an embedded server, sticky users, late batched outcomes; false
    /// rollbacks and requests to detect beside the simulator's figures for the same setup.
    Judge {
        /// Releases to run (one agent each).
        #[arg(long, default_value_t = 40)]
        releases: usize,
        /// Outcomes per POST /v1/outcomes (1 to 10,000).
        #[arg(long, default_value_t = 10)]
        batch: usize,
        #[arg(long, value_enum, default_value_t = JudgeGuardrails::Spec)]
        guardrails: JudgeGuardrails,
        #[arg(long, value_enum, default_value_t = JudgeScenarioArg::Aa)]
        scenario: JudgeScenarioArg,
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Releases running at once (in waves of this many agents).
        #[arg(long, default_value_t = 10)]
        concurrency: usize,
        /// Least canary outcomes per step, one number per step (1%, 5%, 25%, 50%, 100%).
        #[arg(long, value_delimiter = ',', default_value = "100,500,2500,10000,1000")]
        min_requests: Vec<u64>,
        /// Sticky users in the population.
        #[arg(long, default_value_t = 10_000)]
        users: u32,
        /// Pareto shape of per-user volumes (1.16: 80/20; larger: milder; inf: equal).
        #[arg(long, default_value_t = 1.16)]
        volume_shape: f64,
        /// Mean delay of an outcome, in later requests of the same agent.
        #[arg(long, default_value_t = 200.0)]
        delay: f64,
        /// Simulated releases of the same configuration, for the side-by-side figures.
        #[arg(long, default_value_t = 1000)]
        sim_runs: usize,
        /// The release controller's tick.
        #[arg(long, default_value_t = 500)]
        tick_ms: u64,
        #[arg(long, short = 'o', value_enum, default_value_t = Output::Human)]
        output: Output,
    },
}

/// Guardrails of `serin bench judge`'s plans.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum JudgeGuardrails {
    /// SPEC.md's example block (GuardrailConfig::spec_default).
    Spec,
    /// Any degradation on any axis is a violation (GuardrailConfig::no_regression).
    Zero,
}

/// What the candidate does in `serin bench judge`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum JudgeScenarioArg {
    /// Identical arms.
    Aa,
    /// Error rate 1% -> 2%.
    Errors2x,
    /// p95 latency +200 ms.
    Latency200,
    /// Error rate up by half the error_rate.max_increase margin (SPEC guardrails).
    BelowMargin,
    /// Error rate up by twice that margin (SPEC guardrails).
    AboveMargin,
}

#[derive(Debug, Args)]
pub struct ReleaseTarget {
    pub agent: String,
    #[arg(long)]
    pub env: String,
    #[command(flatten)]
    pub client: ClientArgs,
}

#[derive(Debug, Subcommand)]
pub enum ReleaseCommand {
    /// Start a release of AGENT@N under a plan.
    Start {
        #[command(flatten)]
        target: ReleaseTarget,
        /// N of AGENT@N, the candidate.
        #[arg(long)]
        bundle: u64,
        /// The plan (YAML), as in SPEC.md.
        #[arg(long)]
        plan: PathBuf,
        /// Start although the readiness gate refuses (admin token; needs --reason; audited
        /// and shown in the deploy report).
        #[arg(long, requires = "reason")]
        override_readiness: bool,
        #[arg(long, requires = "override_readiness")]
        reason: Option<String>,
        #[command(flatten)]
        approval: ApprovalArgs,
    },
    /// Where the release stands: step, weight, gate, verdicts.
    Status {
        #[command(flatten)]
        target: ReleaseTarget,
        /// Refresh every second until the release ends (plain lines when not a terminal).
        #[arg(long)]
        watch: bool,
    },
    /// Advance one step when the gate holds (or --force with --reason).
    Promote {
        #[command(flatten)]
        target: ReleaseTarget,
        #[arg(long, requires = "reason")]
        force: bool,
        #[arg(long)]
        reason: Option<String>,
        #[command(flatten)]
        approval: ApprovalArgs,
    },
    /// Hold the current weight.
    Pause {
        #[command(flatten)]
        target: ReleaseTarget,
        #[arg(long)]
        reason: Option<String>,
    },
    /// Continue a paused or halted release.
    Resume {
        #[command(flatten)]
        target: ReleaseTarget,
    },
    /// Abandon the release; the candidate is drained at once.
    Abort {
        #[command(flatten)]
        target: ReleaseTarget,
        #[arg(long)]
        reason: String,
    },
    /// The deploy report (Markdown; --output json for JSON).
    Report {
        #[command(flatten)]
        target: ReleaseTarget,
        /// A specific release id (default: the active or newest one).
        #[arg(long)]
        release: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
pub enum ReadinessCommand {
    /// Write a readiness policy from a template into FILE (default readiness.yaml here).
    Init {
        /// The template: seed-checklist (30 checks in six categories).
        #[arg(long, default_value = "seed-checklist")]
        template: String,
        #[arg(long, default_value = "readiness.yaml")]
        file: PathBuf,
        /// Overwrite FILE if it exists.
        #[arg(long)]
        force: bool,
    },
    /// Validate POLICY (YAML) and store it as the agent's next policy version in the env.
    Apply {
        #[command(flatten)]
        target: ReleaseTarget,
        policy: PathBuf,
    },
    /// Evaluate the policy for AGENT@N: a table and a verdict; exit 0 ready, 1 not ready.
    Check {
        #[command(flatten)]
        target: ReleaseTarget,
        /// N of AGENT@N, the candidate.
        #[arg(long)]
        bundle: u64,
        /// The release plan, so plan items (guardrail axes, first exposure, auto-rollback,
        /// exclusions) are computed instead of missing.
        #[arg(long)]
        plan: Option<PathBuf>,
        /// Also show items the policy only lists for context.
        #[arg(long)]
        all: bool,
    },
    /// The policy in force (or --version V), as applied.
    #[command(disable_version_flag = true)]
    Show {
        #[command(flatten)]
        target: ReleaseTarget,
        #[arg(long)]
        version: Option<i64>,
    },
    /// Every policy version: when, by whom.
    History {
        #[command(flatten)]
        target: ReleaseTarget,
    },
}

#[derive(Debug, Subcommand)]
pub enum EvidenceCommand {
    /// Record evidence for KEY (the newest record wins; earlier ones are kept).
    Set {
        #[command(flatten)]
        target: ReleaseTarget,
        /// The item key, e.g. oncall_owner.
        key: String,
        /// pass, fail, partial or n/a.
        #[arg(long)]
        status: String,
        /// Who owns the item.
        #[arg(long)]
        owner: String,
        /// Evidence text or a link.
        #[arg(long)]
        evidence: Option<String>,
        #[arg(long)]
        next_action: Option<String>,
        /// How long it holds, e.g. 7d, 12h, 30m; expired evidence counts as missing.
        #[arg(long)]
        expires: Option<String>,
    },
    /// The newest evidence of every item, or every record of KEY.
    List {
        #[command(flatten)]
        target: ReleaseTarget,
        key: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
pub enum EvalCommand {
    /// Record an offline eval result of AGENT@N (passes at score >= threshold).
    Record {
        agent: String,
        #[arg(long)]
        bundle: u64,
        /// The eval set, e.g. golden-v3.
        #[arg(long)]
        set: String,
        #[arg(long, allow_negative_numbers = true)]
        score: f64,
        #[arg(long, allow_negative_numbers = true)]
        threshold: f64,
        /// A link to the run, or a note.
        #[arg(long)]
        evidence: Option<String>,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// The evals recorded for AGENT@N.
    List {
        agent: String,
        #[arg(long)]
        bundle: u64,
        #[command(flatten)]
        client: ClientArgs,
    },
}

#[derive(Debug, Subcommand)]
pub enum DrillCommand {
    /// Roll back, wait until every connected SDK serves the previous bundle, roll forward,
    /// and record both timings. Refused while a release is active. Exit 1 if it failed.
    Rollback {
        #[command(flatten)]
        target: ReleaseTarget,
        /// How long to wait for SDKs on each leg, e.g. 10s (at most 120s).
        #[arg(long, default_value = "10s")]
        timeout: String,
    },
    /// Past drills, newest first, with the median rollback time and its trend.
    History {
        #[command(flatten)]
        target: ReleaseTarget,
    },
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    /// clap checks the grammar (unique names, valid requirements) only when asked; a clash
    /// otherwise surfaces as a panic the first time someone runs the verb.
    #[test]
    fn the_grammar_is_consistent() {
        super::Cli::command().debug_assert();
    }
}
