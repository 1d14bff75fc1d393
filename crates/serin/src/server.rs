//! `serin server`: open the store, bootstrap the first admin token, serve.

use std::path::{Path, PathBuf};

use anyhow::{Context, anyhow};
use serin_core::audit::SigningKey;
use serin_core::bundle::Limits;
use serin_core::catalog::ModelCatalog;
use serin_server::ServerConfig;
use serin_store::Store;
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
    let catalog = load_catalog(args.catalog.as_deref())?;
    let audit_key = audit_key_path(&args)?;
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

    let app = serin_server::app(ServerConfig {
        store: store.clone(),
        catalog,
        limits: Limits::DEFAULT,
        max_in_flight: args.max_in_flight,
        max_streams: args.max_streams,
        refresh_interval: std::time::Duration::from_millis(args.refresh_ms.max(50)),
        tick_interval: std::time::Duration::from_millis(args.tick_ms.max(50)),
        run_controller: !args.no_release_controller,
        audit: serin_server::audit::AuditConfig {
            signer: Some(signer),
            head_webhook: args.audit_head_webhook.clone(),
            head_interval: args.audit_head_interval,
        },
    })
    .await
    .map_err(|e| anyhow!("could not start: {}", e.message))?;
    serin_server::serve(listener, app, shutdown_signal())
        .await
        .context("the HTTP server failed")?;
    tracing::info!("draining done; closing the store");
    store.close().await;
    Ok(())
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
