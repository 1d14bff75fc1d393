//! `serin`: the server, the CLI and the demo in one binary.
//!
//! Thin by design: arguments are parsed here, each verb lives in `commands`,
//! and all domain logic sits in the library crates.

use std::process::ExitCode;

use clap::Parser;

mod approvals;
mod audit;
mod bench;
mod bench_interop;
mod bench_judge;
mod bench_propagation;
mod bundle_dir;
mod capabilities;
mod cli;
mod client;
mod commands;
mod demo;
mod effects;
mod fleet;
mod guardrails;
mod out;
mod readiness;
mod release;
mod routing;
mod server;
mod status;

/// The check a verb ran said no (invalid bundle, broken audit chain): exit 1.
/// A refusal from the server exits 1 too (see [`client::ApiFailure::exit_code`]);
/// everything else that fails is a usage or connection error: exit 2.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct CheckFailed(pub String);

/// SPEC exit codes: 1 when a check or the server said no, 2 for usage and
/// connection errors. The cause may sit under `anyhow` context, so the whole
/// chain is searched.
fn exit_code(err: &anyhow::Error) -> u8 {
    if err.chain().any(|e| e.is::<CheckFailed>()) {
        return 1;
    }
    err.chain()
        .find_map(|e| e.downcast_ref::<client::ApiFailure>())
        .map_or(2, client::ApiFailure::exit_code)
}

fn main() -> ExitCode {
    let cli = match cli::Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            // clap prints help/version on stdout and usage errors on stderr,
            // and knows which exit code each deserves (0 or 2).
            let _ = e.print();
            return ExitCode::from(u8::try_from(e.exit_code()).unwrap_or(2));
        }
    };
    // HTTPS for client verbs: reqwest is built on rustls without a bundled
    // provider; ring is ours.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            out::error(&format!("could not start the async runtime: {e}"));
            return ExitCode::from(2);
        }
    };
    match runtime.block_on(commands::run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            if let Some(check) = err.downcast_ref::<CheckFailed>() {
                out::error(&check.0);
            } else if let Some(refused) = err
                .downcast_ref::<client::ApiFailure>()
                .filter(|f| f.status == 404)
            {
                // A name that does not exist is the server saying no: its
                // one-line message ("did you mean support?").
                out::error(&refused.to_string());
            } else {
                out::error(&format!("{err:#}"));
            }
            ExitCode::from(exit_code(&err))
        }
    }
}
