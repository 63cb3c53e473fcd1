//! The memcached load: `set` and `get` in the text protocol over keys `alliance/fleet/key-N`,
//! every value the same. [`protocol`] (text) and [`binary`] encode requests and cut replies, for
//! this load and for the soak; [`connection`] runs one connection of the load.

pub(crate) mod binary;
mod connection;
pub(crate) mod protocol;

use std::sync::Arc;

use anyhow::Context;
use clap::Args;

use crate::load::{self, JsonFields, LoadArgs, Outcome};

/// The memcached load's command line.
#[derive(Args)]
pub(crate) struct MemcacheArgs {
    #[command(flatten)]
    pub load: LoadArgs,
    /// Bytes of every value set and got.
    #[arg(long, default_value_t = 64)]
    pub value_size: usize,
}

/// Connects, stores every key, then runs the load and returns what it measured.
pub(crate) async fn run(args: &MemcacheArgs) -> anyhow::Result<Outcome> {
    let value: Arc<[u8]> = (0..args.value_size)
        .map(|i| b'a' + (i % 26) as u8)
        .collect();
    let target = args.load.target;
    // Connect everything first, so a refused connection stops the run before any load.
    let mut streams = Vec::with_capacity(args.load.connections);
    for _ in 0..args.load.connections {
        streams.push(load::connect(target, args.load.source).await?);
    }
    let preload = load::connect(target, args.load.source).await?;
    connection::preload(preload, args.load.keys, &value)
        .await
        .context("storing the keys before the load")?;
    let load = Arc::new(args.load.start());
    load::drive(load, streams, |stream, load, seed| {
        connection::run(stream, load, value.clone(), seed)
    })
    .await
}

/// The JSON fields and the words that describe this load in the report.
pub(crate) fn describe(args: &MemcacheArgs) -> (JsonFields, String) {
    let (sets, gets) = args.load.ratio;
    let mut fields = JsonFields::new();
    fields.insert("value_size".into(), args.value_size.into());
    fields.insert("ratio".into(), format!("{sets}:{gets}").into());
    let words = format!("{} B values, set:get {sets}:{gets}", args.value_size);
    (fields, words)
}
