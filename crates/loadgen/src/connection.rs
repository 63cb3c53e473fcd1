//! One connection of the load. A writer task keeps up to `pipeline` requests in flight; a reader
//! takes the replies in the order of the requests, checks each one and records its latency.
//!
//! The writer tells the reader what each request expects through a channel, before the request
//! is written, so the reader always knows which reply comes next. A semaphore holds the pipeline
//! depth: the writer takes a permit per request, the reader gives it back per reply.

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use hdrhistogram::Histogram;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::{mpsc, Semaphore};
use tokio::time::{timeout, timeout_at, Instant};

use crate::protocol::{self, Reply};

/// A request that waits this long for its reply counts the connection as lost.
const REPLY_TIMEOUT: Duration = Duration::from_secs(10);

/// What every connection sends, and when.
pub struct Load {
    pub value: Vec<u8>,
    pub keys: u32,
    /// Sets per `sets + gets` requests.
    pub sets: u32,
    pub gets: u32,
    pub pipeline: usize,
    /// Replies to requests sent from here on are measured; before it is the warm-up.
    pub measure_from: Instant,
    /// No request is sent from here on.
    pub stop_at: Instant,
    /// Every reply received, measured or not, for the progress indicator.
    pub replies: AtomicU64,
}

/// What one connection measured.
pub struct Outcome {
    /// Latency of each measured request, in nanoseconds.
    pub latency: Histogram<u64>,
    /// Replies checked in the measured time, wrong ones included.
    pub ops: u64,
    /// Wrong replies (warm-up included), plus one if the connection was lost.
    pub errors: u64,
    /// The first thing that went wrong, to show.
    pub first_error: Option<String>,
}

/// A request in flight: when it was sent and what it expects.
struct InFlight {
    sent: Instant,
    op: Op,
}

enum Op {
    Set,
    Get(u32),
}

/// Opens a connection to `target` from `source` (any port) with Nagle off.
pub async fn connect(target: SocketAddr, source: Option<IpAddr>) -> anyhow::Result<TcpStream> {
    let socket = if target.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    if let Some(source) = source {
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

/// Stores every key once, so that every `get` of the load finds its value.
pub async fn preload(stream: TcpStream, load: &Load) -> anyhow::Result<()> {
    const BATCH: u32 = 100;
    let (mut reader, mut writer) = stream.into_split();
    let mut replies = ReplyReader::new();
    let mut out = Vec::new();
    for first in (0..load.keys).step_by(BATCH as usize) {
        let batch = first..load.keys.min(first + BATCH);
        out.clear();
        for key in batch.clone() {
            protocol::encode_set(&mut out, key, &load.value);
        }
        writer.write_all(&out).await?;
        for key in batch {
            let checked = replies
                .next(&mut reader, |reply| check(&Op::Set, load, reply))
                .await?;
            if let Err(wrong) = checked {
                bail!("storing key {key}: {wrong}");
            }
        }
    }
    Ok(())
}

/// Runs the load on `stream` until `load.stop_at` and every reply is in.
pub async fn run(stream: TcpStream, load: Arc<Load>, seed: u64) -> Outcome {
    let (reader, writer) = stream.into_split();
    let window = Arc::new(Semaphore::new(load.pipeline));
    let (in_flight_tx, in_flight_rx) = mpsc::unbounded_channel();
    let writing = tokio::spawn(write_requests(
        writer,
        load.clone(),
        window.clone(),
        in_flight_tx,
        seed,
    ));
    let mut outcome = Outcome {
        // Three significant digits from 1 ns to 100 s; a longer latency is recorded as 100 s.
        latency: Histogram::new_with_bounds(1, 100_000_000_000, 3).expect("valid bounds"),
        ops: 0,
        errors: 0,
        first_error: None,
    };
    let read = read_replies(reader, &load, &window, in_flight_rx, &mut outcome).await;
    let written = writing
        .await
        .map_err(anyhow::Error::from)
        .and_then(|written| written);
    if let Err(error) = read.and(written) {
        outcome.errors += 1;
        outcome
            .first_error
            .get_or_insert(format!("connection lost: {error:#}"));
    }
    outcome
}

/// Sends requests while the window has room, until `load.stop_at`. Requests that find the window
/// open together go out in one write.
async fn write_requests(
    mut writer: OwnedWriteHalf,
    load: Arc<Load>,
    window: Arc<Semaphore>,
    in_flight: mpsc::UnboundedSender<InFlight>,
    seed: u64,
) -> anyhow::Result<()> {
    let mut random = Random(seed);
    let period = load.sets + load.gets;
    let mut sent: u64 = 0;
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
            let key = random.below(load.keys);
            let op = if sent % u64::from(period) < u64::from(load.sets) {
                protocol::encode_set(&mut out, key, &load.value);
                Op::Set
            } else {
                protocol::encode_get(&mut out, key);
                Op::Get(key)
            };
            sent += 1;
            if in_flight.send(InFlight { sent: now, op }).is_err() {
                return Ok(()); // the reader has stopped and says why
            }
        }
        writer.write_all(&out).await?;
    }
    Ok(())
}

/// Takes one reply per request in flight until the writer is done and every reply is in.
async fn read_replies(
    mut reader: OwnedReadHalf,
    load: &Load,
    window: &Semaphore,
    mut in_flight: mpsc::UnboundedReceiver<InFlight>,
    outcome: &mut Outcome,
) -> anyhow::Result<()> {
    let mut replies = ReplyReader::new();
    let result = async {
        while let Some(request) = in_flight.recv().await {
            let checked = replies
                .next(&mut reader, |reply| check(&request.op, load, reply))
                .await?;
            load.replies.fetch_add(1, Ordering::Relaxed);
            if request.sent >= load.measure_from {
                outcome.ops += 1;
                let elapsed = request.sent.elapsed().as_nanos();
                outcome
                    .latency
                    .saturating_record(u64::try_from(elapsed).unwrap_or(u64::MAX));
            }
            // Wrong replies count in the warm-up too.
            if let Err(wrong) = checked {
                outcome.errors += 1;
                outcome.first_error.get_or_insert(wrong);
            }
            window.add_permits(1);
        }
        Ok(())
    }
    .await;
    // A writer waiting for room must not wait for replies that will never come.
    window.close();
    result
}

/// Whether `reply` is the right answer to `op`, and what is wrong with it if not.
fn check(op: &Op, load: &Load, reply: Reply<'_>) -> Result<(), String> {
    match (op, &reply) {
        (Op::Set, Reply::Stored) => Ok(()),
        (Op::Get(key), Reply::Value { key: got, data }) => {
            if protocol::key_number(got) != Some(*key) {
                Err(format!(
                    "get of key {key} answered with key {}",
                    String::from_utf8_lossy(got)
                ))
            } else if *data != load.value.as_slice() {
                Err(format!(
                    "get of key {key} answered with {} bytes of other data",
                    data.len()
                ))
            } else {
                Ok(())
            }
        }
        (Op::Set, _) => Err(format!("set answered with {}", describe(&reply))),
        (Op::Get(key), _) => Err(format!(
            "get of key {key} answered with {}",
            describe(&reply)
        )),
    }
}

fn describe(reply: &Reply<'_>) -> String {
    match reply {
        Reply::Stored => "STORED".into(),
        Reply::Value { .. } => "a VALUE".into(),
        Reply::Miss => "END (a miss)".into(),
        Reply::Other(line) => String::from_utf8_lossy(line).into_owned(),
    }
}

/// Reads the reply stream of one connection into a buffer and cuts whole replies off it.
struct ReplyReader {
    buf: Vec<u8>,
    /// Bytes before `start` are consumed replies; bytes from `end` on are free.
    start: usize,
    end: usize,
}

impl ReplyReader {
    fn new() -> Self {
        ReplyReader {
            buf: vec![0; 64 * 1024],
            start: 0,
            end: 0,
        }
    }

    /// Waits for the next whole reply and hands it to `inspect`, returning what that returns.
    async fn next<T>(
        &mut self,
        reader: &mut OwnedReadHalf,
        inspect: impl FnOnce(Reply<'_>) -> T,
    ) -> anyhow::Result<T> {
        loop {
            if let Some((reply, len)) = protocol::frame(&self.buf[self.start..self.end])? {
                let inspected = inspect(reply);
                self.start += len;
                return Ok(inspected);
            }
            self.make_room();
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
struct Random(u64);

impl Random {
    /// A number in `0..n`.
    fn below(&mut self, n: u32) -> u32 {
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
}
