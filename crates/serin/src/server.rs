//! `serin server`: open the store, bootstrap the first admin token, serve.

use std::path::Path;

use anyhow::{Context, anyhow};
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

pub async fn run(args: ServerArgs) -> anyhow::Result<()> {
    init_logging(args.log_format);
    if args.adjustable_clock {
        serin_server::clock::make_adjustable();
        tracing::warn!("the clock is adjustable (--adjustable-clock): for tests only");
    }
    let catalog = load_catalog(args.catalog.as_deref())?;
    let store = open_store(&args.store).await?;
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
