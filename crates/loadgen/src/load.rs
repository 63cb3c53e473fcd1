//! What every load shares, whatever the protocol: its command line ([`LoadArgs`]), the schedule
//! and mix of requests ([`Load`]), what a connection measures ([`Outcome`]), connecting from a
//! source address, a buffer that cuts replies off a socket ([`ReadBuffer`]), the generator that
//! picks keys ([`Random`]), [`pipeline`], which runs one connection whose replies come in the
//! order of its requests, and [`drive`], which runs every connection of a load and adds up what
//! they measured. It knows no protocol: each load supplies how its requests are encoded and its
//! replies checked.
//!
//! Connections are tasks on tokio's runtime (one worker thread per core), not threads: ten
//! thousand connections cost ten thousand pairs of tasks and sockets, never a thread each.
//! Making room for their sockets among the open files is [`crate::files`]' task.

use std::io::{IsTerminal, Write};
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use anyhow::{bail, Context};
use clap::Args;
use hdrhistogram::Histogram;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::{mpsc, Semaphore};
use tokio::time::{timeout, timeout_at, Instant};

/// A request that waits this long for its reply counts the connection as lost.
pub(crate) const REPLY_TIMEOUT: Duration = Duration::from_secs(10);

/// The command line every load shares.
#[derive(Args)]
pub(crate) struct LoadArgs {
    /// HOST:PORT of the server or of a proxy in front of it.
    #[arg(long)]
    pub target: SocketAddr,
    /// Connections, each run by its own tasks.
    #[arg(long, default_value_t = 20)]
    pub connections: usize,
    /// Requests in flight per connection (1: request/response).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..))]
    pub pipeline: u16,
    /// Seconds measured, after the warm-up.
    #[arg(long, default_value_t = 10)]
    pub duration: u64,
    /// Seconds of load before measuring.
    #[arg(long, default_value_t = 1)]
    pub warmup: u64,
    /// Writes to reads, as WRITES:READS (memcached: set:get; CQL: INSERT:SELECT).
    #[arg(long, default_value = "1:4", value_parser = parse_ratio)]
    pub ratio: (u32, u32),
    /// Keys in use, all written before the load starts: memcached alliance/fleet/key-0 ..
    /// key-(N-1); CQL the rows outpost-0 .. outpost-(N-1).
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u32).range(1..))]
    pub keys: u32,
    /// Source address to connect from, the identity a proxy sees (e.g. 127.0.0.11).
    #[arg(long)]
    pub source: Option<IpAddr>,
    /// Print the result as one JSON object.
    #[arg(long)]
    pub json: bool,
}

impl LoadArgs {
    /// The load, its warm-up starting now.
    pub(crate) fn start(&self) -> Load {
        let measure_from = Instant::now() + Duration::from_secs(self.warmup);
        Load {
            keys: self.keys,
            writes: self.ratio.0,
            reads: self.ratio.1,
            pipeline: usize::from(self.pipeline),
            measure_from,
            stop_at: measure_from + Duration::from_secs(self.duration),
            replies: AtomicU64::new(0),
            latencies: Latencies::new(),
        }
    }
}

/// Fields a load adds to the JSON report, such as its value size.
pub(crate) type JsonFields = serde_json::Map<String, serde_json::Value>;

/// Parses `WRITES:READS`, e.g. `1:4`.
fn parse_ratio(text: &str) -> Result<(u32, u32), String> {
    let parsed = text
        .split_once(':')
        .and_then(|(writes, reads)| Some((writes.parse().ok()?, reads.parse().ok()?)));
    match parsed {
        Some((writes, reads)) if writes + reads > 0 => Ok((writes, reads)),
        _ => Err(format!("expected WRITES:READS such as 1:4, got {text:?}")),
    }
}

/// What every connection sends, and when.
pub(crate) struct Load {
    /// Keys in use: `0..keys`.
    pub keys: u32,
    /// Writes per `writes + reads` requests.
    pub writes: u32,
    pub reads: u32,
    /// Requests in flight per connection.
    pub pipeline: usize,
    /// Replies to requests sent from here on are measured; before it is the warm-up.
    pub measure_from: Instant,
    /// No request is sent from here on.
    pub stop_at: Instant,
    /// Every reply received, measured or not, for the progress indicator.
    pub replies: AtomicU64,
    /// The latency of every measured request, whichever connection sent it.
    pub latencies: Latencies,
}

impl Load {
    /// Whether the `n`th request of a connection (from 0) is a write: the first `writes` of
    /// every `writes + reads`.
    pub(crate) fn is_write(&self, n: u64) -> bool {
        n % u64::from(self.writes + self.reads) < u64::from(self.writes)
    }
}

/// Whether a reply was the right one, and what is wrong with it if not.
pub(crate) type Checked = Result<(), String>;

/// Latency histograms the connections of a load share, in nanoseconds: one per worker thread
/// (up to [`Latencies::SHARDS`]; a connection records into the one of the thread it runs on),
/// where a histogram per connection would hold its 230 KiB of counters ten thousand times over.
pub(crate) struct Latencies {
    shards: Vec<Mutex<Histogram<u64>>>,
}

/// The next thread's shard of [`Latencies`].
static NEXT_SHARD: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    /// This thread's shard of [`Latencies`], taken on its first record.
    static SHARD: usize = NEXT_SHARD.fetch_add(1, Ordering::Relaxed) % Latencies::SHARDS;
}

impl Latencies {
    /// Histograms at most: threads beyond as many share them.
    const SHARDS: usize = 16;

    fn new() -> Latencies {
        Latencies {
            shards: (0..Self::SHARDS).map(|_| Mutex::new(histogram())).collect(),
        }
    }

    /// Records a request's latency of `nanos` into this thread's histogram.
    fn record(&self, nanos: u64) {
        let shard = SHARD.with(|shard| *shard);
        self.shards[shard]
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .saturating_record(nanos);
    }

    /// Every latency recorded, in one histogram.
    fn merged(&self) -> anyhow::Result<Histogram<u64>> {
        let mut merged = histogram();
        for shard in &self.shards {
            merged.add(&*shard.lock().unwrap_or_else(PoisonError::into_inner))?;
        }
        Ok(merged)
    }
}

/// A latency histogram: three significant digits from 1 ns to 100 s; a longer latency is
/// recorded as 100 s.
fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 100_000_000_000, 3).expect("valid bounds")
}

/// What one connection measured, or all of them added up.
pub(crate) struct Outcome {
    /// Latency of each measured request, in nanoseconds: in the total that [`drive`] returns;
    /// a connection's requests go to the load's [`Latencies`], and its own stays empty.
    pub latency: Histogram<u64>,
    /// Replies checked in the measured time, wrong ones included.
    pub ops: u64,
    /// Wrong replies (warm-up included), plus one per connection lost.
    pub errors: u64,
    /// Bytes of the measured requests and their replies (counted by [`pipeline`]).
    pub bytes: u64,
    /// The first things that went wrong, to show.
    pub first_errors: Vec<String>,
}

impl Outcome {
    /// How many of the first errors an outcome keeps to show.
    const ERRORS_KEPT: usize = 3;

    pub(crate) fn new() -> Outcome {
        Outcome {
            // Empty, three significant digits, and sized as values come.
            latency: Histogram::new(3).expect("valid precision"),
            ops: 0,
            errors: 0,
            bytes: 0,
            first_errors: Vec::new(),
        }
    }

    /// Records the reply to a request sent at `sent`, `checked` saying whether it was right. It
    /// is counted and timed if the request was sent in the measured time; a wrong reply is an
    /// error even in the warm-up.
    pub(crate) fn record(&mut self, load: &Load, sent: Instant, checked: Checked) {
        load.replies.fetch_add(1, Ordering::Relaxed);
        if sent >= load.measure_from {
            self.ops += 1;
            let elapsed = sent.elapsed().as_nanos();
            load.latencies
                .record(u64::try_from(elapsed).unwrap_or(u64::MAX));
        }
        if let Err(wrong) = checked {
            self.error(wrong);
        }
    }

    /// Counts `bytes` of a request sent at `sent` and its reply, if it was sent in the
    /// measured time.
    pub(crate) fn count_bytes(&mut self, load: &Load, sent: Instant, bytes: usize) {
        if sent >= load.measure_from {
            self.bytes += bytes as u64;
        }
    }

    /// Counts an error, keeping its description if it is one of the first.
    pub(crate) fn error(&mut self, description: String) {
        self.errors += 1;
        if self.first_errors.len() < Self::ERRORS_KEPT {
            self.first_errors.push(description);
        }
    }

    /// Adds what another connection measured.
    fn add(&mut self, other: Outcome) -> anyhow::Result<()> {
        self.latency.add(&other.latency)?;
        self.ops += other.ops;
        self.errors += other.errors;
        self.bytes += other.bytes;
        for description in other.first_errors {
            if self.first_errors.len() < Self::ERRORS_KEPT {
                self.first_errors.push(description);
            }
        }
        Ok(())
    }
}

/// Opens a connection to `target` from `source` (any port, chosen at connect: see
/// [`crate::source_port`]) with Nagle off.
pub(crate) async fn connect(
    target: SocketAddr,
    source: Option<IpAddr>,
) -> anyhow::Result<TcpStream> {
    let socket = if target.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    if let Some(source) = source {
        if target.is_ipv4() {
            crate::source_port::leave_port_to_connect(&socket)
                .context("setting IP_BIND_ADDRESS_NO_PORT")?;
        }
        socket
            .bind(SocketAddr::new(source, 0))
            .with_context(|| format!("binding {source}"))?;
    }
    let stream = socket
        .connect(target)
        .await
        .with_context(|| format!("connecting to {target}"))?;
    stream.set_nodelay(true)?;
    Ok(stream)
}

/// A request in flight on a pipelined connection: when it was sent, its size in bytes and what
/// its reply must be.
struct InFlight<E> {
    sent: Instant,
    len: usize,
    expected: E,
}

/// Runs the load on `stream` until `load.stop_at` and every reply is in, for a protocol whose
/// replies come in the order of its requests. A writer task keeps up to `load.pipeline` requests
/// in flight: `encode` appends the next request to the outgoing bytes and returns what its reply
/// must be. A reader takes the replies: `check_next` cuts the next one off the received bytes
/// (see [`ReadBuffer::next`]) and checks it against what its request expects; the reader records
/// its latency and the bytes of request and reply.
///
/// The writer tells the reader what each request expects through a channel, before the request
/// is written, so the reader always knows which reply comes next. A semaphore holds the pipeline
/// depth: the writer takes a permit per request, the reader gives it back per reply.
pub(crate) async fn pipeline<E, Encode, CheckNext, CutError>(
    stream: TcpStream,
    load: Arc<Load>,
    encode: Encode,
    check_next: CheckNext,
) -> Outcome
where
    E: Send + 'static,
    Encode: FnMut(&mut Vec<u8>) -> E + Send + 'static,
    CheckNext: FnMut(&[u8], &E) -> Result<Option<(Checked, usize)>, CutError>,
    anyhow::Error: From<CutError>,
{
    let (reader, writer) = stream.into_split();
    let window = Arc::new(Semaphore::new(load.pipeline));
    let (in_flight_tx, in_flight_rx) = mpsc::unbounded_channel();
    let writing = tokio::spawn(write_requests(
        writer,
        load.clone(),
        encode,
        window.clone(),
        in_flight_tx,
    ));
    let mut outcome = Outcome::new();
    let read = read_replies(
        reader,
        &load,
        check_next,
        &window,
        in_flight_rx,
        &mut outcome,
    )
    .await;
    let written = writing
        .await
        .map_err(anyhow::Error::new)
        .and_then(|written| written);
    if let Err(error) = read.and(written) {
        outcome.error(format!("connection lost: {error:#}"));
    }
    outcome
}

/// Sends requests while the window has room, until `load.stop_at`. Requests that find the window
/// open together go out in one write.
async fn write_requests<E>(
    mut writer: OwnedWriteHalf,
    load: Arc<Load>,
    mut encode: impl FnMut(&mut Vec<u8>) -> E,
    window: Arc<Semaphore>,
    in_flight: mpsc::UnboundedSender<InFlight<E>>,
) -> anyhow::Result<()> {
    let mut out = Vec::new();
    // Waiting for room ends at stop_at; the reader closes the window if it fails.
    while let Ok(Ok(permit)) = timeout_at(load.stop_at, window.acquire()).await {
        permit.forget();
        let mut batch = 1;
        while let Ok(permit) = window.try_acquire() {
            permit.forget();
            batch += 1;
        }
        out.clear();
        let now = Instant::now();
        for _ in 0..batch {
            let start = out.len();
            let expected = encode(&mut out);
            let request = InFlight {
                sent: now,
                len: out.len() - start,
                expected,
            };
            if in_flight.send(request).is_err() {
                return Ok(()); // the reader has stopped and says why
            }
        }
        writer.write_all(&out).await?;
    }
    Ok(())
}

/// Takes one reply per request in flight until the writer is done and every reply is in.
async fn read_replies<E, CutError>(
    mut reader: OwnedReadHalf,
    load: &Load,
    mut check_next: impl FnMut(&[u8], &E) -> Result<Option<(Checked, usize)>, CutError>,
    window: &Semaphore,
    mut in_flight: mpsc::UnboundedReceiver<InFlight<E>>,
    outcome: &mut Outcome,
) -> anyhow::Result<()>
where
    anyhow::Error: From<CutError>,
{
    let mut replies = ReadBuffer::new();
    let result = async {
        while let Some(request) = in_flight.recv().await {
            let (checked, len) = replies
                .next(&mut reader, |buf| {
                    Ok::<_, CutError>(
                        check_next(buf, &request.expected)?
                            .map(|(checked, len)| ((checked, len), len)),
                    )
                })
                .await?;
            outcome.count_bytes(load, request.sent, request.len + len);
            outcome.record(load, request.sent, checked);
            window.add_permits(1);
        }
        Ok(())
    }
    .await;
    // A writer waiting for room must not wait for replies that will never come.
    window.close();
    result
}

/// Runs `run` on every connection, each in its own task with a distinct seed, from now until
/// `load.stop_at`, and adds up what they measured. Shows progress on stderr when it is a
/// terminal.
pub(crate) async fn drive<C, F, R>(
    load: Arc<Load>,
    connections: Vec<C>,
    run: R,
) -> anyhow::Result<Outcome>
where
    R: Fn(C, Arc<Load>, u64) -> F,
    F: std::future::Future<Output = Outcome> + Send + 'static,
{
    let progress = std::io::stderr()
        .is_terminal()
        .then(|| tokio::spawn(show_progress(load.clone())));
    let tasks: Vec<_> = connections
        .into_iter()
        .enumerate()
        .map(|(i, connection)| {
            // A distinct, non-zero seed per connection.
            let seed = 0x9E37_79B9_7F4A_7C15u64.wrapping_mul(i as u64 + 1);
            tokio::spawn(run(connection, load.clone(), seed))
        })
        .collect();
    let mut total = Outcome::new();
    for task in tasks {
        total.add(task.await?)?;
    }
    total.latency = load.latencies.merged()?;
    if let Some(progress) = progress {
        progress.abort();
        eprint!("\r\x1b[K");
    }
    Ok(total)
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

/// Reads the reply stream of one connection into a buffer and cuts whole replies off it.
pub(crate) struct ReadBuffer {
    buf: Vec<u8>,
    /// Bytes before `start` are consumed replies; bytes from `end` on are free.
    start: usize,
    end: usize,
}

impl ReadBuffer {
    pub(crate) fn new() -> Self {
        ReadBuffer {
            buf: vec![0; 64 * 1024],
            start: 0,
            end: 0,
        }
    }

    /// Waits for the next whole reply. `cut` looks at the unconsumed bytes: it returns what it
    /// makes of the first reply and the reply's length, `None` when the reply is not all there
    /// yet, or an error when the bytes cannot be a reply (which loses the connection).
    pub(crate) async fn next<T, E>(
        &mut self,
        reader: &mut (impl AsyncRead + Unpin),
        mut cut: impl FnMut(&[u8]) -> Result<Option<(T, usize)>, E>,
    ) -> anyhow::Result<T>
    where
        anyhow::Error: From<E>,
    {
        loop {
            if let Some((reply, len)) = cut(&self.buf[self.start..self.end])? {
                self.start += len;
                return Ok(reply);
            }
            self.make_room();
            // A read of 0 bytes is the end of the stream: the other end closed the connection.
            let read = timeout(REPLY_TIMEOUT, reader.read(&mut self.buf[self.end..]))
                .await
                .context("no reply within 10 s")??;
            if read == 0 {
                bail!("closed by the other end");
            }
            self.end += read;
        }
    }

    /// Moves the unconsumed bytes to the front, and grows the buffer when they fill it.
    fn make_room(&mut self) {
        self.buf.copy_within(self.start..self.end, 0);
        self.end -= self.start;
        self.start = 0;
        if self.end == self.buf.len() {
            self.buf.resize(self.buf.len() * 2, 0);
        }
    }
}

/// A xorshift64* generator: cheap, and good enough to spread requests over keys.
pub(crate) struct Random(pub u64);

impl Random {
    /// A number in `0..n`.
    pub(crate) fn below(&mut self, n: u32) -> u32 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        let bits = self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 32;
        ((bits * u64::from(n)) >> 32) as u32
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

    #[test]
    fn random_keys_stay_in_range_and_spread() {
        let mut random = Random(0x9E37_79B9_7F4A_7C15);
        let mut seen = [0u32; 10];
        for _ in 0..10_000 {
            seen[random.below(10) as usize] += 1;
        }
        assert!(
            seen.iter().all(|&count| (800..1200).contains(&count)),
            "{seen:?}"
        );
    }

    #[test]
    fn writes_come_first_in_every_period() {
        let now = Instant::now();
        let load = Load {
            keys: 1,
            writes: 1,
            reads: 4,
            pipeline: 1,
            measure_from: now,
            stop_at: now,
            replies: AtomicU64::new(0),
            latencies: Latencies::new(),
        };
        let writes: Vec<bool> = (0..10).map(|n| load.is_write(n)).collect();
        assert_eq!(
            writes,
            [true, false, false, false, false, true, false, false, false, false]
        );
    }

    #[test]
    fn latencies_recorded_on_many_threads_all_reach_the_merged_histogram() {
        let latencies = Arc::new(Latencies::new());
        let threads: Vec<_> = (1..=Latencies::SHARDS as u64 + 4)
            .map(|thread| {
                let latencies = latencies.clone();
                std::thread::spawn(move || {
                    for n in 0..1000 {
                        latencies.record(thread * 1000 + n);
                    }
                })
            })
            .collect();
        for thread in threads {
            thread.join().unwrap();
        }
        let merged = latencies.merged().unwrap();
        assert_eq!(merged.len(), (Latencies::SHARDS as u64 + 4) * 1000);
        assert_eq!(merged.min(), 1000);
        assert!(merged.equivalent(merged.max(), (Latencies::SHARDS as u64 + 4) * 1000 + 999));
    }

    #[tokio::test]
    async fn cuts_replies_that_arrive_in_pieces() {
        // Replies are lines; they arrive split across reads and two in one read.
        let (mut client, mut server) = tokio::io::duplex(64);
        let cut_line = |buf: &[u8]| -> anyhow::Result<Option<(String, usize)>> {
            Ok(buf.iter().position(|&b| b == b'\n').map(|end| {
                let line = String::from_utf8_lossy(&buf[..end]).into_owned();
                (line, end + 1)
            }))
        };
        tokio::spawn(async move {
            use tokio::io::AsyncWriteExt;
            for piece in [&b"fir"[..], b"st\nsecond\nthi", b"rd\n"] {
                server.write_all(piece).await.unwrap();
                tokio::task::yield_now().await;
            }
        });
        let mut buffer = ReadBuffer::new();
        for expected in ["first", "second", "third"] {
            assert_eq!(buffer.next(&mut client, cut_line).await.unwrap(), expected);
        }
        let closed = buffer.next(&mut client, cut_line).await.unwrap_err();
        assert_eq!(closed.to_string(), "closed by the other end");
    }
}
