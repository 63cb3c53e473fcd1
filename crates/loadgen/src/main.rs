//! `axoneme-loadgen`: a load generator for memcached (text protocol), CQL (native protocol v4)
//! and Kafka (Produce and Fetch), to compare a server reached directly with the same server
//! behind proxies: `axoneme-loadgen memcache --target HOST:PORT ...`, `axoneme-loadgen cql
//! --target ...` or `axoneme-loadgen kafka --op produce --target ...`.
//!
//! It opens `--connections` connections to `--target`, each keeping `--pipeline` requests in
//! flight, and sends writes and reads in the `--ratio` over `--keys` keys for a warm-up and then
//! `--duration` seconds. Every reply is checked and the latency of each measured request (from
//! its write to its whole reply) is recorded in an HDR histogram. It prints ops/s, p50, p99 and
//! p99.9 in microseconds and the number of errors, as text or, with `--json`, as one JSON object.
//!
//! The load is closed-loop: a connection sends a new request only when a reply frees a place in
//! its pipeline, so a slower target gets fewer requests rather than a queue.
//!
//! [`load`] holds what the protocols share; [`memcache`], [`cql`] and [`kafka`] each own one
//! protocol's requests, replies and connections. The Kafka load also reports the bytes its
//! measured requests and responses carried, and MB/s.
//!
//! `axoneme-loadgen soak --target PROXY --server MEMCACHED --requests N` is not a load but a
//! check, run by `scripts/soak.sh`: see [`soak`].

mod cql;
#[allow(unsafe_code)] // getrlimit and setrlimit; each block says why it is sound
mod files;
mod kafka;
mod load;
mod memcache;
mod soak;
#[allow(unsafe_code)] // one setsockopt; its block says why it is sound
mod source_port;

use std::time::Duration;

use anyhow::bail;
use clap::{Parser, Subcommand};

use cql::CqlArgs;
use kafka::KafkaArgs;
use load::{JsonFields, LoadArgs, Outcome};
use memcache::MemcacheArgs;
use soak::SoakArgs;

/// A load generator for memcached, CQL and Kafka (pipelined, every reply checked, latency in HDR
/// histograms).
#[derive(Parser)]
#[command(name = "axoneme-loadgen")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// memcached text protocol: `set` and `get`.
    Memcache(MemcacheArgs),
    /// CQL, native protocol v4: INSERT and SELECT by primary key, prepared or as QUERY.
    Cql(CqlArgs),
    /// Kafka: Produce of a 1 KiB record (acks=1) or Fetch of up to 64 KiB, on one topic.
    Kafka(KafkaArgs),
    /// memcached through the proxy, every value read back and compared and every denied request
    /// checked, with faults beside; fails on any difference.
    Soak(SoakArgs),
}

impl Command {
    /// The load's command line, for the commands that run a load.
    fn load(&self) -> Option<&LoadArgs> {
        match self {
            Command::Memcache(args) => Some(&args.load),
            Command::Cql(args) => Some(&args.load),
            Command::Kafka(args) => Some(&args.load),
            Command::Soak(_) => None,
        }
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    if let Some(load) = cli.command.load() {
        files::raise_open_file_limit(load.connections)?;
    }
    let (load, total, (fields, words)) = match &cli.command {
        Command::Memcache(args) => (
            &args.load,
            memcache::run(args).await?,
            memcache::describe(args),
        ),
        Command::Cql(args) => (&args.load, cql::run(args).await?, cql::describe(args)),
        Command::Kafka(args) if matches!(args.op, kafka::Op::Fill) => {
            let held = kafka::fill(args).await?;
            println!(
                "{}: topic {} holds {held} records",
                args.load.target, args.topic
            );
            return Ok(());
        }
        Command::Kafka(args) => {
            let total = kafka::run(args).await?;
            let described = kafka::describe(args, &total);
            (&args.load, total, described)
        }
        Command::Soak(args) => return soak::run(args).await,
    };
    for error in &total.first_errors {
        eprintln!("axoneme-loadgen: {error}");
    }
    if total.ops == 0 {
        bail!("no request was answered in the measured time");
    }
    report(load, &total, fields, &words);
    Ok(())
}

/// Prints the result, as text or as JSON. `fields` and `words` describe what the protocol's
/// load sent.
fn report(args: &LoadArgs, total: &Outcome, fields: JsonFields, words: &str) {
    let duration = Duration::from_secs(args.duration);
    let ops_per_sec = total.ops as f64 / duration.as_secs_f64();
    let micros = |quantile: f64| total.latency.value_at_quantile(quantile) as f64 / 1000.0;
    let (p50, p99, p999) = (micros(0.50), micros(0.99), micros(0.999));
    let max = total.latency.max() as f64 / 1000.0;
    if args.json {
        let mut result = serde_json::json!({
            "target": args.target.to_string(),
            "connections": args.connections,
            "pipeline": args.pipeline,
            "keys": args.keys,
            "seconds": duration.as_secs_f64(),
            "ops": total.ops,
            "ops_per_sec": ops_per_sec.round(),
            "p50_us": p50,
            "p99_us": p99,
            "p99_9_us": p999,
            "max_us": max,
            "errors": total.errors,
        });
        result.as_object_mut().expect("an object").extend(fields);
        println!("{result}");
    } else {
        println!(
            "{}: {} connections x {} in flight, {words}, {} s",
            args.target,
            args.connections,
            args.pipeline,
            duration.as_secs()
        );
        println!(
            "ops/s {ops_per_sec:.0}  p50 {p50:.1} µs  p99 {p99:.1} µs  p99.9 {p999:.1} µs  \
             max {max:.1} µs  errors {}",
            total.errors
        );
    }
}
