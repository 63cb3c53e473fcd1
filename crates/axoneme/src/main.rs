//! The `axoneme` command line: `axoneme run` starts the agent; the other commands talk to a
//! running agent's API.

use std::io::IsTerminal as _;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use axoneme::config::Config;
use axoneme::control::cli::{self, ApiArgs, ClientCommand};
use axoneme::control::{api, watch, web};
use axoneme::{builtin_protocols, Agent};
use clap::{CommandFactory as _, FromArgMatches as _, Parser, Subcommand, ValueEnum};
use tokio::signal::unix::{signal, SignalKind};

/// jemalloc, whose background threads give memory that stays free back to the system within
/// seconds, where glibc's allocator keeps most of what a burst of requests took (BENCHMARKS.md,
/// "Allocator"). The default feature `jemalloc`; without it, the system's allocator.
#[cfg(feature = "jemalloc")]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// Examples shown under `axoneme --help`.
const EXAMPLES: &str = "\
Examples:
  axoneme run --config /etc/axoneme/config.yaml
  axoneme policy import deathstar.yaml
  axoneme endpoint list
  axoneme observe --verdict DENIED
  axoneme status";

/// Axoneme: an L7 policy proxy for non-HTTP protocols, enforcing CiliumNetworkPolicy L7 rules.
#[derive(Parser)]
#[command(version, after_help = EXAMPLES)]
struct Cli {
    #[command(flatten)]
    api: ApiArgs,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Runs the agent with a configuration file.
    Run {
        /// The configuration file (YAML).
        #[arg(long, short)]
        config: PathBuf,
        /// How the agent's own log (standard error) is written: lines of text, coloured only
        /// on a terminal, or one JSON object per event.
        #[arg(long, value_enum, default_value_t = LogFormat::Text)]
        log_format: LogFormat,
    },
    /// Prints a shell completion script, e.g. `source <(axoneme completion bash)`.
    Completion {
        /// The shell.
        shell: clap_complete::Shell,
    },
    #[command(flatten)]
    Client(ClientCommand),
}

/// The format of the agent's operational log.
#[derive(Clone, Copy, Debug, ValueEnum)]
enum LogFormat {
    /// A line of text per event.
    Text,
    /// A JSON object per event: `timestamp`, `level`, `target` and `fields` (with `message`).
    Json,
}

/// The command line, its global options described once, under `axoneme --help`: each
/// subcommand takes them (a hidden copy, which clap then hands down to the subcommands below
/// it) but lists them no more, and says where they are described.
fn command() -> clap::Command {
    let command = Cli::command();
    let global: Vec<clap::Arg> = command
        .get_arguments()
        .filter(|arg| arg.is_global_set())
        .map(|arg| arg.clone().hide(true))
        .collect();
    let names: Vec<String> = command
        .get_subcommands()
        .map(|sub| sub.get_name().to_owned())
        .collect();
    let note = "Global options (--api, --token, -o/--output, --no-headers): see `axoneme --help`.";
    names.iter().fold(command, |command, name| {
        command.mut_subcommand(name, |sub| {
            let after = match sub.get_after_help() {
                Some(examples) => format!("{examples}\n\n{note}"),
                None => note.to_owned(),
            };
            sub.args(global.iter().cloned()).after_help(after)
        })
    })
}

fn main() -> ExitCode {
    let cli = match Cli::from_arg_matches(&command().get_matches()) {
        Ok(cli) => cli,
        Err(error) => error.exit(),
    };
    let result = match cli.command {
        Command::Run { config, log_format } => run(config, log_format),
        Command::Completion { shell } => {
            let mut script = Vec::new();
            clap_complete::generate(shell, &mut command(), "axoneme", &mut script);
            std::io::Write::write_all(&mut std::io::stdout(), &script)
                .context("writing the completion script")
        }
        Command::Client(command) => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("starting the async runtime")
            .and_then(|runtime| runtime.block_on(cli::run(cli.api, command))),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("axoneme: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(config_path: PathBuf, log_format: LogFormat) -> anyhow::Result<()> {
    let log = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("AXONEME_LOG")
                .unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr);
    match log_format {
        // Colours are for people at a terminal; in a file or a pipe they are noise.
        LogFormat::Text => log.with_ansi(std::io::stderr().is_terminal()).init(),
        LogFormat::Json => log.json().init(),
    }
    let config = Config::load(&config_path)?;
    let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    runtime.block_on(async {
        let registry = builtin_protocols(&config.protocols);
        let agent = Agent::start(&config, registry, Some(config_path.clone())).await?;
        let mut tasks = tokio::task::JoinSet::new();
        let socket = config.api.socket.clone();
        let api_agent = Arc::clone(&agent);
        tasks.spawn(async move { api::serve_unix(api_agent, &socket).await });
        if let (Some(address), Some(token)) = (config.api.listen, config.api.token.clone()) {
            let listener = tokio::net::TcpListener::bind(address)
                .await
                .with_context(|| format!("api.listen: cannot listen on {address}"))?;
            tasks.spawn(api::serve_tcp(Arc::clone(&agent), listener, token));
        }
        if let Some(metrics) = &config.metrics {
            let listener = tokio::net::TcpListener::bind(metrics.listen)
                .await
                .with_context(|| format!("metrics.listen: cannot listen on {}", metrics.listen))?;
            tasks.spawn(api::serve_metrics(Arc::clone(&agent), listener));
        }
        if let Some(web) = &config.web {
            let listener = tokio::net::TcpListener::bind(web.listen)
                .await
                .with_context(|| format!("web.listen: cannot listen on {}", web.listen))?;
            tasks.spawn(web::serve_local(Arc::clone(&agent), listener));
        }
        let watcher = tokio::spawn(watch::watch_files(Arc::clone(&agent), config_path.clone(), config.clone()));
        let mut terminate = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
        let mut interrupt = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
        let mut hangup = signal(SignalKind::hangup()).context("installing the SIGHUP handler")?;
        let outcome = loop {
            tokio::select! {
                _ = terminate.recv() => break Ok(()),
                _ = interrupt.recv() => break Ok(()),
                // SIGHUP opens the access-log file anew (for rotation) and re-reads policy.
                // Both are blocking work, done off the runtime and off this loop, so that a
                // slow reload delays no signal.
                _ = hangup.recv() => {
                    let agent = Arc::clone(&agent);
                    tokio::spawn(async move {
                        let reload = move || {
                            match agent.reopen_access_log() {
                                Ok(Some(path)) => tracing::info!(path = %path.display(), "access log reopened"),
                                Ok(None) => {}
                                Err(error) => tracing::error!(%error, "reopening the access log failed; it stays where it was"),
                            }
                            agent.state().reload_files()
                        };
                        match tokio::task::spawn_blocking(reload).await {
                            Ok(Ok(revision)) => tracing::info!(revision, "policy reloaded"),
                            Ok(Err(error)) => tracing::error!(%error, "policy reload rejected; the policy in force stays"),
                            Err(error) => tracing::error!(%error, "policy reload failed"),
                        }
                    });
                }
                Some(ended) = tasks.join_next() => {
                    break ended.context("a server task failed").and_then(|result| result);
                }
            }
        };
        watcher.abort();
        tracing::info!("stopping: draining open connections");
        agent.shutdown().await;
        tracing::info!(dropped_access_log_entries = agent.access_log_dropped(), "stopped");
        let _ = std::fs::remove_file(&config.api.socket);
        tokio::time::sleep(Duration::from_millis(10)).await;
        outcome
    })
}
