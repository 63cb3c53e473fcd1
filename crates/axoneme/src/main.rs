//! The `axoneme` command line.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use axoneme::config::Config;
use axoneme::{builtin_protocols, Proxy};
use clap::{Parser, Subcommand};

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
        let proxy = Proxy::start(&config, builtin_protocols()).await?;
        let mut terminate =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
                .context("installing the SIGTERM handler")?;
        tokio::select! {
            signal = tokio::signal::ctrl_c() => signal.context("waiting for SIGINT")?,
            _ = terminate.recv() => {}
        }
        tracing::info!("stopping");
        proxy.shutdown();
        Ok(())
    })
}
