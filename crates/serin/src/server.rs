//! `serin server`: open the store, bootstrap the first admin token, serve.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, anyhow};
use serin_core::audit::SigningKey;
use serin_core::bundle::Limits;
use serin_core::catalog::ModelCatalog;
use serin_server::ServerConfig;
use serin_server::releases::RetryPolicy;
use serin_server::transport::TransportConfig;
use serin_store::{DataDirLock, DirLockError, Store};
use tracing_subscriber::EnvFilter;

use crate::cli::{LogFormat, ServerArgs, StoreArgs};
use crate::out;

pub async fn open_store(args: &StoreArgs) -> anyhow::Result<Store> {
    match &args.database_url {
        Some(url) => Store::open_postgres(url)
            .await
            .context("could not open the PostgreSQL store"),
        None => Store::open_sqlite(&args.data)
            .await
            .with_context(|| format!("could not open the SQLite store in {}", args.data.display())),
    }
}

/// Takes the data directory's lock for this server's lifetime: a second server on the same
/// SQLite directory would run a second controller and second copy of the in-memory evidence
/// over one database. Offline CLI verbs do not take it (see `serin_store::DataDirLock`).
fn lock_data_dir(dir: &Path) -> anyhow::Result<DataDirLock> {
    DataDirLock::acquire(dir).map_err(|e| match e {
        DirLockError::Held { .. } => anyhow!(
            "{e}: one server per SQLite data directory. Stop that server first, or give this \
             one its own --data (several replicas share PostgreSQL through --database-url)"
        ),
        DirLockError::Io { .. } => anyhow!(e),
    })
}

pub fn load_catalog(path: Option<&Path>) -> anyhow::Result<ModelCatalog> {
    let builtin = ModelCatalog::builtin();
    let Some(path) = path else {
        return Ok(builtin);
    };
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("could not read the model catalog {}", path.display()))?;
    let custom = ModelCatalog::from_yaml(&text)
        .map_err(|e| anyhow!("model catalog {}: {e}", path.display()))?;
    Ok(builtin.merged_with(custom))
}

fn init_logging(format: LogFormat) {
    let filter = EnvFilter::try_from_env("SERIN_LOG")
        .or_else(|_| EnvFilter::try_from_default_env())
        .unwrap_or_else(|_| EnvFilter::new("info,tower_http=info,sqlx=warn"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    // A second init (tests running servers in-process) is harmless; ignore it.
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
}

/// Where the audit signing key lives: the flag, else beside the SQLite file. A PostgreSQL
/// deployment must name it, because its replicas must share one key and no default directory
/// is shared between them.
fn audit_key_path(args: &ServerArgs) -> anyhow::Result<PathBuf> {
    match (&args.audit_key, &args.store.database_url) {
        (Some(path), _) => Ok(path.clone()),
        (None, None) => Ok(args.store.data.join(AUDIT_KEY_FILE)),
        (None, Some(_)) => Err(anyhow!(
            "--audit-key (or SERIN_AUDIT_KEY) is required with --database-url: a file outside \
             the database holding the audit signing key, the same file on every replica \
             (created if missing)"
        )),
    }
}

/// Default file name of the audit signing key in the SQLite data directory.
pub const AUDIT_KEY_FILE: &str = "audit-signing.key";

/// Reads the audit signing key, creating a new random one (mode 0600) if the file is missing.
fn load_or_create_audit_key(path: &Path) -> anyhow::Result<SigningKey> {
    match std::fs::read_to_string(path) {
        Ok(text) => SigningKey::from_key_file(&text)
            .map_err(|e| anyhow!("audit signing key {}: {e}", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            // ThreadRng is a CSPRNG seeded from the operating system.
            let seed: [u8; 32] = rand::random();
            let key =
                SigningKey::from_seed(&seed).map_err(|e| anyhow!("new audit signing key: {e}"))?;
            if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                std::fs::create_dir_all(dir)
                    .with_context(|| format!("could not create {}", dir.display()))?;
            }
            let mut options = std::fs::OpenOptions::new();
            options.write(true).create_new(true);
            #[cfg(unix)]
            std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
            let mut file = options
                .open(path)
                .with_context(|| format!("could not create {}", path.display()))?;
            std::io::Write::write_all(&mut file, SigningKey::key_file_text(&seed).as_bytes())
                .and_then(|()| file.sync_all())
                .with_context(|| format!("could not write {}", path.display()))?;
            tracing::info!(path = %path.display(), key_id = %key.key_id(), "created the audit signing key");
            Ok(key)
        }
        Err(e) => Err(e)
            .with_context(|| format!("could not read the audit signing key {}", path.display())),
    }
}

pub async fn run(args: ServerArgs) -> anyhow::Result<()> {
    init_logging(args.log_format);
    if args.adjustable_clock {
        serin_server::clock::make_adjustable();
        tracing::warn!("the clock is adjustable (--adjustable-clock): for tests only");
    }
    let catalog = load_catalog(args.catalog.as_deref())?;
    let audit_key = audit_key_path(&args)?;
    // Held until `run` returns; the kernel releases it if the process dies first.
    let _data_lock = match &args.store.database_url {
        Some(_) => None,
        None => Some(lock_data_dir(&args.store.data)?),
    };
    let store = open_store(&args.store).await?;
    // After the store: opening it creates the data directory the default key lives in.
    let signer = std::sync::Arc::new(load_or_create_audit_key(&audit_key)?);
    tracing::info!(key_id = %signer.key_id(), "audit heads signed with this key");
    tracing::info!(
        store = store.backend_name(),
        "store open, migrations applied"
    );

    if let Some(issued) = store
        .bootstrap_admin(serin_server::clock::now_ms())
        .await
        .context("could not create the first admin token")?
    {
        out::line("This store had no API token, so Serin created the first admin token.");
        out::line("It is shown only now; keep it in a secret manager:");
        out::line(&format!("  SERIN_TOKEN={}", issued.token));
    }

    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("could not listen on {}", args.listen))?;
    let addr = listener
        .local_addr()
        .context("could not read the listening address")?;
    // Tests and scripts wait for this exact line to learn the port.
    out::line(&format!("serin listening on http://{addr}"));
    tracing::info!(%addr, "listening");

    let max_connections = connection_cap(args.max_connections, open_file_limit());
    let max_streams = stream_cap(args.max_streams, max_connections);
    let app = serin_server::app(ServerConfig {
        store: store.clone(),
        catalog,
        limits: Limits::DEFAULT,
        max_in_flight: args.max_in_flight,
        max_streams,
        max_ui_streams: args.max_ui_streams,
        refresh_interval: Duration::from_millis(args.refresh_ms.max(50)),
        tick_interval: Duration::from_millis(args.tick_ms.max(50)),
        run_controller: !args.no_release_controller,
        max_validations: args.max_validations.max(1),
        webhook_retry: RetryPolicy {
            max_attempts: args.webhook_max_attempts.max(1),
            max_age: Duration::from_secs(args.webhook_max_age_secs),
            backoff: Duration::from_millis(args.webhook_backoff_ms),
            max_backoff: Duration::from_millis(args.webhook_max_backoff_ms),
        },
        audit: serin_server::audit::AuditConfig {
            signer: Some(signer),
            head_webhook: args.audit_head_webhook.clone(),
            head_interval: args.audit_head_interval,
        },
    })
    .await
    .map_err(|e| anyhow!("could not start: {}", e.message))?;
    let transport = TransportConfig {
        max_connections,
        header_timeout: Duration::from_millis(args.header_timeout_ms.max(1)),
        body_timeout: Duration::from_millis(args.body_timeout_ms.max(1)),
    };
    let heartbeat = app.heartbeat.clone();
    serin_server::transport::serve(listener, app, transport, shutdown_signal())
        .await
        .context("the HTTP server failed")?;
    heartbeat.mark_gone().await;
    tracing::info!("draining done; closing the store");
    store.close().await;
    Ok(())
}

/// Descriptors kept for everything but client connections: the store's files and pool,
/// webhook and log output, the listener.
const FD_RESERVE: u64 = 128;

/// The soft limit on open files, where the platform says (Linux `/proc`).
fn open_file_limit() -> Option<u64> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    let soft = line.split_whitespace().nth(3)?;
    soft.parse().ok()
}

/// The connection cap: at most what the open-file limit leaves after [`FD_RESERVE`], so
/// the cap (which keeps `/healthz` answering) bites before accept fails for want of
/// descriptors.
fn connection_cap(wanted: usize, fd_limit: Option<u64>) -> usize {
    let wanted = wanted.max(1);
    let Some(limit) = fd_limit else {
        return wanted;
    };
    let room = usize::try_from(limit.saturating_sub(FD_RESERVE).max(16)).unwrap_or(usize::MAX);
    if wanted > room {
        tracing::warn!(
            wanted,
            open_file_limit = limit,
            max_connections = room,
            "--max-connections is above the open-file limit (ulimit -n); lowering it. Raise the limit to serve more connections"
        );
        return room;
    }
    wanted
}

/// Snapshot streams hold their connection (they are never evicted), so they may take at most
/// seven eighths of the connections: the rest stays for `/healthz` and the API.
fn stream_cap(wanted: usize, max_connections: usize) -> usize {
    let headroom = (max_connections / 8).max(1);
    let room = max_connections.saturating_sub(headroom).max(1);
    if wanted > room {
        tracing::info!(
            max_streams = room,
            "snapshot streams capped at 7/8 of --max-connections"
        );
        return room;
    }
    wanted
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
    tracing::info!("shutdown signal received; finishing in-flight requests");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_connection_cap_stays_under_the_open_file_limit() {
        assert_eq!(connection_cap(4096, Some(1024)), 1024 - FD_RESERVE as usize);
        assert_eq!(connection_cap(4096, Some(65_536)), 4096);
        assert_eq!(connection_cap(4096, None), 4096);
        assert_eq!(connection_cap(0, None), 1);
        // A tiny limit still leaves a few connections rather than none.
        assert_eq!(connection_cap(4096, Some(20)), 16);
    }

    #[test]
    fn streams_leave_an_eighth_of_the_connections_free() {
        assert_eq!(stream_cap(20_000, 4096), 4096 - 512);
        assert_eq!(stream_cap(100, 4096), 100);
        assert_eq!(stream_cap(10, 1), 1);
    }
}
