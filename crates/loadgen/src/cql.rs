//! The CQL load: native protocol v4, uncompressed, INSERT and SELECT by primary key on the
//! Empire example's table `attendance.daily_records`, as EXECUTE of prepared statements or as
//! QUERY. [`frame`] encodes requests and reads responses, [`statements`] says what the load
//! sends and what it expects back, and [`connection`] runs one connection.

mod connection;
mod frame;
mod statements;

use std::sync::Arc;

use anyhow::{bail, Context};
use clap::{Args, ValueEnum};

use crate::load::{self, JsonFields, LoadArgs, Outcome};
use connection::{Connection, ServerError};
use statements::Statements;

/// The CQL load's command line.
#[derive(Args)]
pub(crate) struct CqlArgs {
    #[command(flatten)]
    pub load: LoadArgs,
    /// How INSERT and SELECT are sent.
    #[arg(long, value_enum, default_value_t = Mode::Prepared)]
    pub mode: Mode,
}

/// How INSERT and SELECT are sent.
#[derive(Clone, Copy, ValueEnum)]
pub(crate) enum Mode {
    /// EXECUTE of statements each connection prepares when it opens, values bound.
    Prepared,
    /// QUERY, the values written into the text of each statement.
    Query,
}

impl Mode {
    fn name(self) -> &'static str {
        match self {
            Mode::Prepared => "prepared",
            Mode::Query => "query",
        }
    }
}

/// Writes every row (creating the keyspace and table first if they do not exist), opens every
/// connection, then runs the load and returns what it measured.
pub(crate) async fn run(args: &CqlArgs) -> anyhow::Result<Outcome> {
    // A request in flight per stream id, and v4 stream ids of requests are 0..=i16::MAX.
    if args.load.pipeline > 1 << 15 {
        bail!("CQL v4 keeps at most 32768 requests in flight on a connection");
    }
    let (target, source) = (args.load.target, args.load.source);
    let mut setup = Connection::open(target, source).await?;
    write_rows(&mut setup, args.load.keys)
        .await
        .context("writing the rows before the load")?;
    drop(setup); // closed: it takes no part in the load

    // Open and prepare everything before the load, so a refused connection stops the run.
    let mut connections = Vec::with_capacity(args.load.connections);
    for _ in 0..args.load.connections {
        let mut connection = Connection::open(target, source).await?;
        let statements = match args.mode {
            Mode::Query => Statements::Query,
            Mode::Prepared => {
                let [insert, select] = Statements::TO_PREPARE;
                Statements::Prepared {
                    insert: connection.prepare(insert).await?,
                    select: connection.prepare(select).await?,
                }
            }
        };
        connections.push((connection, statements));
    }
    let load = Arc::new(args.load.start());
    load::drive(load, connections, |(connection, statements), load, seed| {
        connection.run(load, statements, seed)
    })
    .await
}

/// Writes the rows of every key. When the first write finds no table (Invalid: unconfigured
/// table, or no such keyspace), creates the keyspace and the table first.
async fn write_rows(connection: &mut Connection, keys: u32) -> anyhow::Result<()> {
    match connection.write_rows(0..1).await {
        Err(error)
            if error
                .downcast_ref::<ServerError>()
                .is_some_and(|error| error.code == statements::INVALID) =>
        {
            connection.query(statements::CREATE_KEYSPACE).await?;
            connection.query(statements::CREATE_TABLE).await?;
        }
        written => written?,
    }
    connection.write_rows(0..keys).await
}

/// The JSON fields and the words that describe this load in the report.
pub(crate) fn describe(args: &CqlArgs) -> (JsonFields, String) {
    let (inserts, selects) = args.load.ratio;
    let mut fields = JsonFields::new();
    fields.insert("protocol".into(), "cql".into());
    fields.insert("mode".into(), args.mode.name().into());
    fields.insert("ratio".into(), format!("{inserts}:{selects}").into());
    let words = format!(
        "CQL v4 {}, INSERT:SELECT {inserts}:{selects}",
        args.mode.name()
    );
    (fields, words)
}
