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
    /// API tokens.
    #[command(subcommand)]
    Token(TokenCommand),
    /// The audit log.
    #[command(subcommand)]
    Audit(AuditCommand),
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
    /// Revoke a token by id.
    Revoke {
        id: String,
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
    /// Recompute the audit hash chain; exit 1 if it is broken.
    Verify {
        #[command(flatten)]
        client: ClientArgs,
    },
}
