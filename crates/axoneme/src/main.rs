//! The `axoneme` command line.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use axoneme::config::Config;
use axoneme::{builtin_protocols, Proxy};
use clap::{Parser, Subcommand};
use tokio::signal::unix::{signal, SignalKind};

/// Axoneme: an L7 policy proxy for non-HTTP protocols, enforcing CiliumNetworkPolicy L7 rules.
#[derive(Parser)]
#[command(version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Runs the proxy with a configuration file.
    Run {
        /// The configuration file (YAML).
        #[arg(long, short)]
        config: PathBuf,
    },
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("AXONEME_LOG")
                .unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Run { config } => run(config),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("axoneme: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(config_path: PathBuf) -> anyhow::Result<()> {
    let config = Config::load(&config_path)?;
    let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    runtime.block_on(async {
        let proxy = Proxy::start(&config, builtin_protocols(&config.protocols)).await?;
        let mut terminate = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
        let mut interrupt = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
        let mut hangup = signal(SignalKind::hangup()).context("installing the SIGHUP handler")?;
        loop {
            tokio::select! {
                _ = terminate.recv() => break,
                _ = interrupt.recv() => break,
                _ = hangup.recv() => match proxy.reload_policy() {
                    Ok(revision) => tracing::info!(revision, "policy reloaded"),
                    Err(error) => tracing::error!(%error, "policy reload rejected; the policy in force stays"),
                },
            }
        }
        tracing::info!(dropped_access_log_entries = proxy.access_log_dropped(), "stopping");
        proxy.shutdown();
        Ok(())
    })
}
