//! One connection of the memcached load. A writer task keeps up to `pipeline` requests in
//! flight; a reader takes the replies in the order of the requests, checks each one and records
//! its latency.
//!
//! The writer tells the reader what each request expects through a channel, before the request
//! is written, so the reader always knows which reply comes next. A semaphore holds the pipeline
//! depth: the writer takes a permit per request, the reader gives it back per reply.

use std::sync::Arc;

use anyhow::bail;
use tokio::io::AsyncWriteExt;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, Semaphore};
use tokio::time::{timeout_at, Instant};

use super::protocol::{self, Reply};
use crate::load::{Checked, Load, Outcome, Random, ReadBuffer};

/// A request in flight: when it was sent and what it expects.
struct InFlight {
    sent: Instant,
    op: Op,
}

enum Op {
    Set,
    Get(u32),
}

/// Stores every key once, so that every `get` of the load finds its value.
pub(super) async fn preload(stream: TcpStream, keys: u32, value: &[u8]) -> anyhow::Result<()> {
    const BATCH: u32 = 100;
    let (mut reader, mut writer) = stream.into_split();
    let mut replies = ReadBuffer::new();
    let mut out = Vec::new();
    for first in (0..keys).step_by(BATCH as usize) {
        let batch = first..keys.min(first + BATCH);
        out.clear();
        for key in batch.clone() {
            protocol::encode_set(&mut out, key, value);
        }
        writer.write_all(&out).await?;
        for key in batch {
            let checked = replies
                .next(&mut reader, |buf| check_next(buf, &Op::Set, value))
                .await?;
            if let Err(wrong) = checked {
                bail!("storing key {key}: {wrong}");
            }
        }
    }
    Ok(())
}

/// Runs the load on `stream` until `load.stop_at` and every reply is in. Every `set` stores
/// `value`, and every `get` expects it.
pub(super) async fn run(
    stream: TcpStream,
    load: Arc<Load>,
    value: Arc<[u8]>,
    seed: u64,
) -> Outcome {
    let (reader, writer) = stream.into_split();
    let window = Arc::new(Semaphore::new(load.pipeline));
    let (in_flight_tx, in_flight_rx) = mpsc::unbounded_channel();
    let writing = tokio::spawn(write_requests(
        writer,
        load.clone(),
        value.clone(),
        window.clone(),
        in_flight_tx,
        seed,
    ));
    let mut outcome = Outcome::new();
    let read = read_replies(reader, &load, &value, &window, in_flight_rx, &mut outcome).await;
    let written = writing
        .await
        .map_err(anyhow::Error::from)
        .and_then(|written| written);
    if let Err(error) = read.and(written) {
        outcome.error(format!("connection lost: {error:#}"));
    }
    outcome
}

/// Sends requests while the window has room, until `load.stop_at`. Requests that find the window
/// open together go out in one write.
async fn write_requests(
    mut writer: OwnedWriteHalf,
    load: Arc<Load>,
    value: Arc<[u8]>,
    window: Arc<Semaphore>,
    in_flight: mpsc::UnboundedSender<InFlight>,
    seed: u64,
) -> anyhow::Result<()> {
    let mut random = Random(seed);
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
            let op = if load.is_write(sent) {
                protocol::encode_set(&mut out, key, &value);
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
    value: &[u8],
    window: &Semaphore,
    mut in_flight: mpsc::UnboundedReceiver<InFlight>,
    outcome: &mut Outcome,
) -> anyhow::Result<()> {
    let mut replies = ReadBuffer::new();
    let result = async {
        while let Some(request) = in_flight.recv().await {
            let checked = replies
                .next(&mut reader, |buf| check_next(buf, &request.op, value))
                .await?;
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

/// Cuts the next reply off `buf` and checks it against `op`; see [`crate::load::ReadBuffer`].
fn check_next(
    buf: &[u8],
    op: &Op,
    value: &[u8],
) -> Result<Option<(Checked, usize)>, protocol::FrameError> {
    Ok(protocol::frame(buf)?.map(|(reply, len)| (check(op, value, reply), len)))
}

/// Whether `reply` is the right answer to `op`, and what is wrong with it if not.
fn check(op: &Op, value: &[u8], reply: Reply<'_>) -> Checked {
    match (op, &reply) {
        (Op::Set, Reply::Stored) => Ok(()),
        (Op::Get(key), Reply::Value { key: got, data }) => {
            if protocol::key_number(got) != Some(*key) {
                Err(format!(
                    "get of key {key} answered with key {}",
                    String::from_utf8_lossy(got)
                ))
            } else if *data != value {
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
