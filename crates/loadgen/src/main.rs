//! `axoneme-loadgen`: a memcached text-protocol load generator.
//!
//! It opens `--connections` connections to `--target`, each keeping `--pipeline` requests in
//! flight, and sends `set` and `get` in the `--ratio` over `--keys` keys for a warm-up and then
//! `--duration` seconds. Every reply is checked and the latency of each measured request (from
//! its write to its whole reply) is recorded in an HDR histogram. It prints ops/s, p50, p99 and
//! p99.9 in microseconds and the number of errors, as text or, with `--json`, as one JSON object.
//!
//! The load is closed-loop: a connection sends a new request only when a reply frees a place in
//! its pipeline, so a slower target gets fewer requests rather than a queue.

mod connection;
mod protocol;

use std::io::{IsTerminal, Write};
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::Parser;
use hdrhistogram::Histogram;
use tokio::time::Instant;

use connection::{Load, Outcome};

/// A memcached text-protocol load generator (set/get, pipelined, latency in HDR histograms).
#[derive(Parser)]
#[command(name = "axoneme-loadgen")]
struct Args {
    /// HOST:PORT of memcached or of a proxy in front of it.
    #[arg(long)]
    target: SocketAddr,
    /// Connections, each run by its own tasks.
    #[arg(long, default_value_t = 20)]
    connections: usize,
    /// Requests in flight per connection (1: request/response).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..))]
    pipeline: u16,
    /// Seconds measured, after the warm-up.
    #[arg(long, default_value_t = 10)]
    duration: u64,
    /// Seconds of load before measuring.
    #[arg(long, default_value_t = 1)]
    warmup: u64,
    /// Bytes of every value set and got.
    #[arg(long, default_value_t = 64)]
    value_size: usize,
    /// Sets to gets, as SETS:GETS.
    #[arg(long, default_value = "1:4", value_parser = parse_ratio)]
    ratio: (u32, u32),
    /// Keys in use: alliance/fleet/key-0 .. key-(N-1), all stored before the load starts.
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u32).range(1..))]
    keys: u32,
    /// Source address to connect from, the identity a proxy sees (e.g. 127.0.0.11).
    #[arg(long)]
    source: Option<IpAddr>,
    /// Print the result as one JSON object.
    #[arg(long)]
    json: bool,
}

/// Parses `SETS:GETS`, e.g. `1:4`.
fn parse_ratio(text: &str) -> Result<(u32, u32), String> {
    let parsed = text
        .split_once(':')
        .and_then(|(sets, gets)| Some((sets.parse().ok()?, gets.parse().ok()?)));
    match parsed {
        Some((sets, gets)) if sets + gets > 0 => Ok((sets, gets)),
        _ => Err(format!("expected SETS:GETS such as 1:4, got {text:?}")),
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let value: Vec<u8> = (0..args.value_size)
        .map(|i| b'a' + (i % 26) as u8)
        .collect();

    // Connect everything first, so a refused connection stops the run before any load.
    let mut streams = Vec::with_capacity(args.connections);
    for _ in 0..args.connections {
        streams.push(connection::connect(args.target, args.source).await?);
    }
    let warmup = Duration::from_secs(args.warmup);
    let duration = Duration::from_secs(args.duration);
    let mut load = Load {
        value,
        keys: args.keys,
        sets: args.ratio.0,
        gets: args.ratio.1,
        pipeline: usize::from(args.pipeline),
        measure_from: Instant::now(),
        stop_at: Instant::now(),
        replies: AtomicU64::new(0),
    };
    let preload = connection::connect(args.target, args.source).await?;
    connection::preload(preload, &load)
        .await
        .context("storing the keys before the load")?;

    let start = Instant::now();
    load.measure_from = start + warmup;
    load.stop_at = load.measure_from + duration;
    let load = Arc::new(load);
    let progress = std::io::stderr()
        .is_terminal()
        .then(|| tokio::spawn(show_progress(load.clone())));
    let tasks: Vec<_> = streams
        .into_iter()
        .enumerate()
        .map(|(i, stream)| {
            // A distinct, non-zero seed per connection.
            let seed = 0x9E37_79B9_7F4A_7C15u64.wrapping_mul(i as u64 + 1);
            tokio::spawn(connection::run(stream, load.clone(), seed))
        })
        .collect();
    let mut total = Outcome {
        latency: Histogram::new_with_bounds(1, 100_000_000_000, 3)?,
        ops: 0,
        errors: 0,
        first_error: None,
    };
    let mut first_errors = Vec::new();
    for task in tasks {
        let outcome = task.await?;
        total.latency.add(&outcome.latency)?;
        total.ops += outcome.ops;
        total.errors += outcome.errors;
        first_errors.extend(outcome.first_error);
    }
    if let Some(progress) = progress {
        progress.abort();
        eprint!("\r\x1b[K");
    }
    for error in first_errors.iter().take(3) {
        eprintln!("axoneme-loadgen: {error}");
    }
    if total.ops == 0 {
        bail!("no request was answered in the measured time");
    }
    report(&args, &total, duration);
    Ok(())
}

/// Prints the result, as text or as JSON.
fn report(args: &Args, total: &Outcome, duration: Duration) {
    let ops_per_sec = total.ops as f64 / duration.as_secs_f64();
    let micros = |quantile: f64| total.latency.value_at_quantile(quantile) as f64 / 1000.0;
    let (p50, p99, p999) = (micros(0.50), micros(0.99), micros(0.999));
    let max = total.latency.max() as f64 / 1000.0;
    if args.json {
        let result = serde_json::json!({
            "target": args.target.to_string(),
            "connections": args.connections,
            "pipeline": args.pipeline,
            "value_size": args.value_size,
            "ratio": format!("{}:{}", args.ratio.0, args.ratio.1),
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
        println!("{result}");
    } else {
        println!(
            "{}: {} connections x {} in flight, {} B values, set:get {}:{}, {} s",
            args.target,
            args.connections,
            args.pipeline,
            args.value_size,
            args.ratio.0,
            args.ratio.1,
            duration.as_secs()
        );
        println!(
            "ops/s {ops_per_sec:.0}  p50 {p50:.1} µs  p99 {p99:.1} µs  p99.9 {p999:.1} µs  \
             max {max:.1} µs  errors {}",
            total.errors
        );
    }
}

/// Rewrites one status line on stderr every second: phase, time and the current rate.
async fn show_progress(load: Arc<Load>) {
    let start = Instant::now();
    let total = load.stop_at - start;
    let mut last = 0;
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.tick().await;
    loop {
        tick.tick().await;
        let now = Instant::now();
        let replies = load.replies.load(Ordering::Relaxed);
        let phase = if now < load.measure_from {
            "warm-up"
        } else {
            "measuring"
        };
        let elapsed = (now - start).min(total).as_secs();
        eprint!(
            "\r\x1b[K{phase} {elapsed}/{} s  {} ops/s",
            total.as_secs(),
            replies - last
        );
        let _ = std::io::stderr().flush();
        last = replies;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_ratios() {
        assert_eq!(parse_ratio("1:4"), Ok((1, 4)));
        assert_eq!(parse_ratio("0:1"), Ok((0, 1)));
        assert!(parse_ratio("0:0").is_err());
        assert!(parse_ratio("1-4").is_err());
        assert!(parse_ratio("a:4").is_err());
    }
}
