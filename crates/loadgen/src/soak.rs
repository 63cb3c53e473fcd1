//! The memcached soak: `axoneme-loadgen soak --target PROXY --server MEMCACHED --requests N`.
//!
//! Verifying connections of the writing identity (text and meta commands, and binary ones)
//! write values of varied sizes under keys each connection owns and read every one back through
//! the proxy, byte for byte; about one of their requests in seven is one the policy denies and
//! must get the denial. A connection of the reading identity reads shelf keys seeded directly
//! in memcached, byte for byte, and tries sets and deletes of the shelf and of the writers' keys,
//! which must be denied. Fault clients reset, cut and garble connections beside them, and
//! clients of a second listener see its upstream die. At the end a direct connection to
//! memcached checks that no denied request reached it (denied sets absent, sentinels and shelf
//! intact) and that every key holds what was last written. It prints one summary line and fails
//! on any lost or corrupted value, any denied request answered otherwise or found in memcached,
//! and any other wrong reply.
//!
//! It flushes the server it is given at the start. Policy churn and the upstream's deaths are
//! `scripts/soak.sh`'s; this driver must not assume any policy beyond the one it documents:
//! its `--source` may write and read `alliance/fleet/` keys, its `--reader-source` only read
//! them, and nothing else is allowed. [`plan`] decides what to send, [`check`] judges replies,
//! [`verify`] runs a verifying connection and [`faults`] the fault clients.

mod check;
mod faults;
mod plan;
mod verify;

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::Args;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use crate::load::{self, ReadBuffer};
use crate::memcache::protocol::{self, AnyReply};
use check::Tally;
use faults::{FaultCounts, FaultTargets};
use plan::{Keys, Role};

/// The soak's command line.
#[derive(Args)]
pub(crate) struct SoakArgs {
    /// HOST:PORT of the proxy's listener in front of `--server`.
    #[arg(long)]
    target: SocketAddr,
    /// HOST:PORT of memcached itself, for seeding and the final check. It is flushed.
    #[arg(long)]
    server: SocketAddr,
    /// Requests the verifying connections send in all.
    #[arg(long, default_value_t = 100_000)]
    requests: u64,
    /// Verifying connections of `--source`; every third speaks the binary protocol.
    #[arg(long, default_value_t = 9, value_parser = clap::value_parser!(u32).range(1..))]
    connections: u32,
    /// Verifying connections of `--reader-source`: they read the shelf keys, and their sets and
    /// deletes are denied.
    #[arg(long, default_value_t = 1)]
    readers: u32,
    /// Steps (a request, or a run of quiet ones) in flight per verifying connection.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u16).range(1..))]
    pipeline: u16,
    /// Keys each verifying connection owns.
    #[arg(long, default_value_t = 256, value_parser = clap::value_parser!(u32).range(1..))]
    keys: u32,
    /// Source address of the verifying connections: the identity that may write and read
    /// `alliance/fleet/` keys.
    #[arg(long)]
    source: Option<IpAddr>,
    /// Source address of the readers and the garbage senders: an identity that may only read
    /// those keys.
    #[arg(long)]
    reader_source: Option<IpAddr>,
    /// Clients causing faults on `--target` (resets, partial requests, garbage).
    #[arg(long, default_value_t = 2)]
    fault_clients: u32,
    /// HOST:PORT of a second listener whose upstream is killed and restarted during the soak.
    #[arg(long)]
    upstream_fault_target: Option<SocketAddr>,
    /// Clients of `--upstream-fault-target`.
    #[arg(long, default_value_t = 2)]
    upstream_fault_clients: u32,
    /// Seed of the request mix; a run with the same seed sends the same requests.
    #[arg(long, default_value_t = 1)]
    seed: u64,
}

/// Runs the soak and prints its summary line. Fails when anything went wrong.
pub(crate) async fn run(args: &SoakArgs) -> anyhow::Result<()> {
    if args.readers > 0 && args.reader_source.is_none() {
        bail!("--readers needs --reader-source, the identity that may only read");
    }
    let started = Instant::now();
    let mut server = Direct::connect(args.server).await?;
    server.seed().await.context("seeding memcached")?;
    let targets = FaultTargets {
        target: args.target,
        upstream_fault_target: args.upstream_fault_target,
        writer: args.source,
        reader: args.reader_source,
    };
    if args.fault_clients > 0 {
        faults::prepare(targets)
            .await
            .context("storing the fault clients' value through the proxy")?;
    }
    let stop = Arc::new(AtomicBool::new(false));
    let fault_tasks = spawn_faults(args, targets, &stop);

    // Connections 0..connections write, the ones after read.
    let mut streams = Vec::new();
    for connection in 0..args.connections + args.readers {
        let source = if connection < args.connections {
            args.source
        } else {
            args.reader_source
        };
        streams.push(load::connect(args.target, source).await?);
    }
    let progress = Arc::new(AtomicU64::new(0));
    let reporter = tokio::spawn(report_progress(progress.clone(), args.requests));
    let connections = u64::from(args.connections + args.readers);
    let verifying: Vec<_> = streams
        .into_iter()
        .zip(0..)
        .map(|(stream, connection)| {
            let share = args.requests / connections
                + u64::from(u64::from(connection) < args.requests % connections);
            let role = match connection {
                c if c >= args.connections => Role::Reader {
                    writers: args.connections,
                    keys: args.keys,
                },
                c if c % 3 == 2 => Role::Binary,
                _ => Role::Text,
            };
            let plan = verify::Plan {
                connection,
                requests: share,
                keys: args.keys,
                role,
                pipeline: usize::from(args.pipeline),
                seed: args.seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ u64::from(connection),
            };
            tokio::spawn(verify::run(stream, plan, progress.clone()))
        })
        .collect();
    let mut tally = Tally::default();
    let mut all_keys = Vec::new();
    for task in verifying {
        let (connection_tally, keys) = task.await.context("a verifying connection panicked")?;
        tally.add(connection_tally);
        all_keys.push(keys);
    }
    let traffic_time = started.elapsed();
    reporter.abort();
    stop.store(true, Ordering::Relaxed);
    let mut faults = FaultCounts::default();
    for task in fault_tasks {
        faults.add(&task.await.context("a fault client panicked")?);
    }

    let final_check = server.final_check(args.connections, &all_keys).await?;
    let summary = Summary {
        tally: &tally,
        faults: &faults,
        final_check: &final_check,
        seconds: traffic_time.as_secs_f64(),
    };
    for error in tally.first_errors.iter().chain(&final_check.first_errors) {
        eprintln!("axoneme-loadgen: {error}");
    }
    println!("{summary}");
    if summary.failed() {
        bail!("the soak found lost, corrupted, leaked or wrong replies");
    }
    Ok(())
}

fn spawn_faults(
    args: &SoakArgs,
    targets: FaultTargets,
    stop: &Arc<AtomicBool>,
) -> Vec<tokio::task::JoinHandle<FaultCounts>> {
    let mut tasks = Vec::new();
    for n in 0..args.fault_clients {
        let seed = args.seed ^ (u64::from(n) << 32);
        tasks.push(tokio::spawn(faults::client(targets, seed, stop.clone())));
    }
    if let Some(target) = targets.upstream_fault_target {
        for n in 0..args.upstream_fault_clients {
            tasks.push(tokio::spawn(faults::upstream_client(
                target,
                targets.writer,
                n,
                stop.clone(),
            )));
        }
    }
    tasks
}

/// Prints the requests answered and the rate every 10 seconds on stderr.
async fn report_progress(progress: Arc<AtomicU64>, requests: u64) {
    let start = Instant::now();
    let mut tick = tokio::time::interval(Duration::from_secs(10));
    tick.tick().await;
    loop {
        tick.tick().await;
        let done = progress.load(Ordering::Relaxed);
        let rate = done as f64 / start.elapsed().as_secs_f64();
        eprintln!(
            "soak: {done} of {requests} requests, {:.0} s, {rate:.0}/s",
            start.elapsed().as_secs_f64()
        );
    }
}

/// What the direct look at memcached found at the end.
#[derive(Default)]
struct FinalCheck {
    /// Denied sets found stored, and sentinels changed or gone: denied requests that reached
    /// the server.
    denied_reached_server: u64,
    /// Verifying keys compared, and their bytes.
    keys_compared: u64,
    bytes_compared: u64,
    /// Keys holding other than what was last written through the proxy.
    keys_wrong: u64,
    first_errors: Vec<String>,
}

/// A plain text connection to memcached itself, not through the proxy.
struct Direct {
    stream: TcpStream,
    replies: ReadBuffer,
    scratch: Vec<u8>,
}

impl Direct {
    async fn connect(server: SocketAddr) -> anyhow::Result<Direct> {
        let stream = load::connect(server, None)
            .await
            .context("connecting to memcached directly")?;
        Ok(Direct {
            stream,
            replies: ReadBuffer::new(),
            scratch: Vec::new(),
        })
    }

    /// Sends `request` and fails unless its one reply is the line `expected`.
    async fn line(&mut self, request: &[u8], expected: &[u8]) -> anyhow::Result<()> {
        self.stream.write_all(request).await?;
        let right = self
            .replies
            .next(&mut self.stream, |buf| {
                protocol::frame_any(buf)
                    .map(|reply| reply.map(|(reply, len)| (reply == AnyReply::Line(expected), len)))
            })
            .await?;
        if !right {
            bail!(
                "memcached did not answer {}",
                String::from_utf8_lossy(expected)
            );
        }
        Ok(())
    }

    /// Empties memcached and stores the sentinels and the shelf.
    async fn seed(&mut self) -> anyhow::Result<()> {
        self.line(b"flush_all\r\n", b"OK").await?;
        let mut out = Vec::new();
        let mut value = Vec::new();
        for (key, seed) in seeded() {
            plan::fill_value(seed, &mut value);
            out.clear();
            protocol::encode_set_key(&mut out, &key, plan::value_flags(seed), &value, false);
            self.line(&out, b"STORED").await?;
        }
        Ok(())
    }

    /// Gets `keys` in one request and judges the reply against their seeds into `tally`.
    async fn compare(
        &mut self,
        keys: Vec<(String, Option<u64>)>,
        tally: &mut Tally,
    ) -> anyhow::Result<()> {
        let mut out = Vec::new();
        protocol::encode_get_keys(&mut out, keys.iter().map(|(key, _)| key.as_str()));
        self.stream.write_all(&out).await?;
        let expect = plan::Expect::Get {
            style: plan::Style::Classic,
            keys,
        };
        let scratch = &mut self.scratch;
        self.replies
            .next(&mut self.stream, |buf| {
                protocol::frame_any(buf).map(|reply| {
                    reply.map(|(reply, len)| {
                        tally.text(&expect, &reply, scratch);
                        ((), len)
                    })
                })
            })
            .await
    }

    /// Looks at every sentinel, every key a denied set may have written, and every verifying
    /// key.
    async fn final_check(
        &mut self,
        connections: u32,
        all_keys: &[Keys],
    ) -> anyhow::Result<FinalCheck> {
        let mut check = FinalCheck::default();
        let mut denied = Tally::default();
        let seeded: Vec<_> = seeded().map(|(key, seed)| (key, Some(seed))).collect();
        for batch in seeded.chunks(32) {
            self.compare(batch.to_vec(), &mut denied)
                .await
                .context("reading the sentinels and the shelf directly")?;
        }
        for connection in 0..connections {
            let keys = plan::denied_keys(connection)
                .map(|key| (key, None))
                .collect();
            self.compare(keys, &mut denied)
                .await
                .context("reading the denied keys directly")?;
        }
        check.denied_reached_server = denied.lost + denied.corrupted + denied.wrong;
        check.first_errors.extend(
            denied
                .first_errors
                .into_iter()
                .map(|e| format!("denied keys: {e}")),
        );

        let mut verified = Tally::default();
        for keys in all_keys {
            let names: Vec<_> = (0..keys.versions.len() as u32)
                .map(|key| (plan::allowed_key(keys.connection, key), keys.seed(key)))
                .collect();
            for batch in names.chunks(64) {
                self.compare(batch.to_vec(), &mut verified)
                    .await
                    .context("reading the verifying keys directly")?;
            }
        }
        check.keys_compared = verified.values_compared;
        check.bytes_compared = verified.bytes_compared;
        check.keys_wrong = verified.lost + verified.corrupted + verified.wrong;
        check.first_errors.extend(
            verified
                .first_errors
                .into_iter()
                .map(|e| format!("final read: {e}")),
        );
        Ok(check)
    }
}

/// The keys seeded directly in memcached, and their values' seeds: the sentinels, which only
/// denied requests touch, and the shelf, which only the reader reads.
fn seeded() -> impl Iterator<Item = (String, u64)> {
    let sentinels = (0..plan::SENTINELS).map(|n| (plan::sentinel_key(n), plan::sentinel_seed(n)));
    let shelf = (0..plan::SHELF).map(|n| (plan::shelf_key(n), plan::shelf_seed(n)));
    sentinels.chain(shelf)
}

/// The summary line.
struct Summary<'a> {
    tally: &'a Tally,
    faults: &'a FaultCounts,
    final_check: &'a FinalCheck,
    seconds: f64,
}

impl Summary<'_> {
    fn failed(&self) -> bool {
        self.tally.failed()
            || self.final_check.denied_reached_server > 0
            || self.final_check.keys_wrong > 0
            || self.faults.upstream_wrong > 0
    }
}

impl std::fmt::Display for Summary<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (t, faults, end) = (self.tally, self.faults, self.final_check);
        write!(
            f,
            "soak {}: {} requests ({} allowed, {} denied) in {:.1} s, {:.0}/s; {} values \
             compared through the proxy ({} bytes), {} keys at the end directly ({} bytes); lost \
             {}, corrupted {}, denied answered otherwise {}, allowed denied {}, other wrong \
             replies {}, denied reaching the server {}, keys wrong at the end {}; client faults \
             {} (reset mid-request {}, reset mid-reply {}, partial then close {}, garbage {}, \
             denied then reset {}, reset at connect {}); second listener: {} requests answered, \
             {} connections cut by upstream faults, {} wrong replies",
            if self.failed() { "FAILED" } else { "passed" },
            t.requests,
            t.allowed,
            t.denied,
            self.seconds,
            t.requests as f64 / self.seconds,
            t.values_compared,
            t.bytes_compared,
            end.keys_compared,
            end.bytes_compared,
            t.lost,
            t.corrupted,
            t.denied_passed,
            t.allowed_denied,
            t.wrong,
            end.denied_reached_server,
            end.keys_wrong,
            faults.client_faults(),
            faults.reset_mid_request,
            faults.reset_mid_reply,
            faults.partial_then_close,
            faults.garbage,
            faults.denied_then_reset,
            faults.connect_reset,
            faults.upstream_answered,
            faults.upstream_cuts,
            faults.upstream_wrong,
        )
    }
}
