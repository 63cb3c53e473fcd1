//! `cql-fixture --listen ADDR [--journal FILE]`: serves CQL (protocol v4 and v5) from memory,
//! logging to stderr.

use std::io::IsTerminal;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use anyhow::Context;
use clap::Parser;
use cql_fixture::journal::Journal;
use cql_fixture::server;
use cql_fixture::store::Store;
use tracing_subscriber::EnvFilter;

/// An in-memory CQL server for tests and demos; not a database.
#[derive(Parser)]
#[command(name = "cql-fixture", version)]
struct Args {
    /// The address to listen on.
    #[arg(long, default_value = "127.0.0.1:9042")]
    listen: SocketAddr,
    /// A file to write the journal to: per request, the actions and tables the fixture read,
    /// or why it refused the request.
    #[arg(long)]
    journal: Option<PathBuf>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .init();
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    tracing::info!(address = %listener.local_addr()?, "cql-fixture listening");
    let journal = match &args.journal {
        Some(path) => Journal::to_file(path)
            .with_context(|| format!("cannot write the journal to {}", path.display()))?,
        None => Journal::off(),
    };
    server::serve(
        listener,
        Arc::new(Mutex::new(Store::new())),
        Arc::new(journal),
    )
    .await?;
    Ok(())
}
