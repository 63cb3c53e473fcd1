//! One CQL connection: opening it (STARTUP), the requests it makes one batch at a time before
//! the load (creating the table, writing the rows, preparing statements), and the load itself.
//!
//! Under load a writer task keeps up to `pipeline` requests in flight, each on a stream id of
//! its own, and a reader matches every response to its request by stream id, checks it and
//! records its latency. The stream ids not in use wait in a channel: the writer takes one per
//! request and the reader gives it back with the response, so that channel is the pipeline's
//! window. The writer announces each request to the reader through a second channel before
//! writing it, so a response always finds its request.

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::ops::Range;
use std::sync::Arc;

use anyhow::{anyhow, bail, Context};
use tokio::io::AsyncWriteExt;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::time::{timeout_at, Instant};

use super::frame::{self, Response};
use super::statements::{self, InsertQuery, Op, Statements};
use crate::load::{self, Load, Outcome, Random, ReadBuffer};

/// Requests written together before their responses are read, when writing rows.
const BATCH: u32 = 100;

/// The server answered a request with an ERROR.
#[derive(Debug)]
pub(super) struct ServerError {
    pub code: i32,
    message: String,
}

impl fmt::Display for ServerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ERROR 0x{:04x} {}", self.code, self.message)
    }
}

impl std::error::Error for ServerError {}

/// A started connection with its read buffer.
pub(super) struct Connection {
    stream: TcpStream,
    buffer: ReadBuffer,
    out: Vec<u8>,
}

impl Connection {
    /// Connects to `target` from `source` and starts the connection: STARTUP, answered READY.
    pub(super) async fn open(
        target: SocketAddr,
        source: Option<IpAddr>,
    ) -> anyhow::Result<Connection> {
        let mut connection = Connection {
            stream: load::connect(target, source).await?,
            buffer: ReadBuffer::new(),
            out: Vec::new(),
        };
        connection
            .call(frame::encode_startup, |response| match response {
                Response::Ready => Ok(()),
                other => Err(unexpected(&other)),
            })
            .await
            .context("starting the connection")?;
        Ok(connection)
    }

    /// Runs `query`, which must succeed (a Void or a Set_keyspace or Schema_change RESULT).
    pub(super) async fn query(&mut self, query: &str) -> anyhow::Result<()> {
        self.call(
            |out, stream| frame::encode_query(out, stream, query),
            |response| match response {
                Response::Void | Response::Done => Ok(()),
                other => Err(unexpected(&other)),
            },
        )
        .await
        .with_context(|| format!("running {query}"))
    }

    /// Prepares `query` and returns its id.
    pub(super) async fn prepare(&mut self, query: &str) -> anyhow::Result<Vec<u8>> {
        self.call(
            |out, stream| frame::encode_prepare(out, stream, query),
            |response| match response {
                Response::Prepared { id } => Ok(id.to_vec()),
                other => Err(unexpected(&other)),
            },
        )
        .await
        .with_context(|| format!("preparing {query}"))
    }

    /// Writes the rows of `keys` with QUERY, [`BATCH`] requests at a time.
    pub(super) async fn write_rows(&mut self, keys: Range<u32>) -> anyhow::Result<()> {
        for first in keys.clone().step_by(BATCH as usize) {
            let batch = first..keys.end.min(first + BATCH);
            self.out.clear();
            for (stream, key) in batch.clone().enumerate() {
                Statements::Query.insert(&mut self.out, stream as i16, key);
            }
            self.stream.write_all(&self.out).await?;
            for _ in batch {
                // The row is the one written on the response's stream.
                let (key, written) = self
                    .buffer
                    .next(&mut self.stream, |buf| {
                        let Some((frame, len)) = frame::cut(buf)? else {
                            return Ok::<_, anyhow::Error>(None);
                        };
                        let key = first + u32::try_from(frame.stream)?;
                        let written = match Response::parse(&frame)? {
                            Response::Void => Ok(()),
                            other => Err(unexpected(&other)),
                        };
                        Ok(Some(((key, written), len)))
                    })
                    .await?;
                written.with_context(|| format!("writing {}", InsertQuery(key)))?;
            }
        }
        Ok(())
    }

    /// Sends the request `encode` writes on stream 0, and makes its response into a result
    /// with `inspect`.
    async fn call<T>(
        &mut self,
        encode: impl FnOnce(&mut Vec<u8>, i16),
        mut inspect: impl FnMut(Response<'_>) -> anyhow::Result<T>,
    ) -> anyhow::Result<T> {
        self.out.clear();
        encode(&mut self.out, 0);
        self.stream.write_all(&self.out).await?;
        self.buffer
            .next(&mut self.stream, |buf| {
                let Some((frame, len)) = frame::cut(buf)? else {
                    return Ok::<_, anyhow::Error>(None);
                };
                if frame.stream != 0 {
                    bail!("a response on stream {} to a request on 0", frame.stream);
                }
                Ok(Some((inspect(Response::parse(&frame)?), len)))
            })
            .await?
    }

    /// Runs the load on this connection until `load.stop_at` and every response is in.
    pub(super) async fn run(self, load: Arc<Load>, statements: Statements, seed: u64) -> Outcome {
        let (reader, writer) = self.stream.into_split();
        let (free_tx, free_rx) = mpsc::unbounded_channel();
        for stream in 0..load.pipeline {
            // The load checked that the pipeline fits in the stream ids, 0..=i16::MAX.
            let _ = free_tx.send(stream as i16);
        }
        let (announce_tx, announce_rx) = mpsc::unbounded_channel();
        let writing = tokio::spawn(write_requests(
            writer,
            load.clone(),
            statements,
            free_rx,
            announce_tx,
            seed,
        ));
        let mut outcome = Outcome::new();
        let in_flight = InFlight {
            requests: (0..load.pipeline).map(|_| None).collect(),
            count: 0,
            announced: announce_rx,
        };
        let read =
            read_responses(reader, self.buffer, &load, free_tx, in_flight, &mut outcome).await;
        let written = writing
            .await
            .map_err(anyhow::Error::from)
            .and_then(|written| written);
        if let Err(error) = read.and(written) {
            outcome.error(format!("connection lost: {error:#}"));
        }
        outcome
    }
}

/// The error for a response that is not the one expected: a [`ServerError`] for an ERROR.
fn unexpected(response: &Response<'_>) -> anyhow::Error {
    match response {
        Response::Error { code, message } => ServerError {
            code: *code,
            message: message.to_string(),
        }
        .into(),
        other => anyhow!("answered with {}", statements::describe(other)),
    }
}

/// A request sent: its stream id, when it was sent and what it expects.
struct Request {
    stream: i16,
    sent: Instant,
    op: Op,
}

/// The requests in flight, by stream id, as the reader knows them.
struct InFlight {
    requests: Vec<Option<Request>>,
    count: usize,
    /// Requests the writer has sent, or is about to send, that are not in `requests` yet.
    announced: mpsc::UnboundedReceiver<Request>,
}

impl InFlight {
    /// Waits until a request is in flight; false when none is and the writer is done.
    async fn wait(&mut self) -> bool {
        if self.count > 0 {
            return true;
        }
        match self.announced.recv().await {
            Some(request) => {
                self.insert(request);
                true
            }
            None => false,
        }
    }

    /// Takes the request on `stream`, if one is in flight there.
    fn take(&mut self, stream: i16) -> Option<Request> {
        while let Ok(request) = self.announced.try_recv() {
            self.insert(request);
        }
        let request = self
            .requests
            .get_mut(usize::try_from(stream).ok()?)?
            .take()?;
        self.count -= 1;
        Some(request)
    }

    fn insert(&mut self, request: Request) {
        let slot = usize::try_from(request.stream).expect("stream ids from 0");
        self.requests[slot] = Some(request);
        self.count += 1;
    }
}

/// Sends requests while stream ids are free, until `load.stop_at`. Requests that find ids free
/// together go out in one write.
async fn write_requests(
    mut writer: OwnedWriteHalf,
    load: Arc<Load>,
    statements: Statements,
    mut free: mpsc::UnboundedReceiver<i16>,
    announce: mpsc::UnboundedSender<Request>,
    seed: u64,
) -> anyhow::Result<()> {
    let mut random = Random(seed);
    let mut sent: u64 = 0;
    let mut out = Vec::new();
    // Waiting for a free id ends at stop_at, or when the reader stops and drops its sender.
    while let Ok(Some(first)) = timeout_at(load.stop_at, free.recv()).await {
        out.clear();
        let now = Instant::now();
        let mut next = Some(first);
        while let Some(stream) = next {
            let key = random.below(load.keys);
            let op = if load.is_write(sent) {
                statements.insert(&mut out, stream, key);
                Op::Insert
            } else {
                statements.select(&mut out, stream, key);
                Op::Select(key)
            };
            sent += 1;
            let request = Request {
                stream,
                sent: now,
                op,
            };
            if announce.send(request).is_err() {
                return Ok(()); // the reader has stopped and says why
            }
            next = free.try_recv().ok();
        }
        writer.write_all(&out).await?;
    }
    Ok(())
}

/// Takes the response to every request in flight until the writer is done and every response
/// is in; frees each response's stream id for the writer.
async fn read_responses(
    mut reader: OwnedReadHalf,
    mut buffer: ReadBuffer,
    load: &Load,
    free: mpsc::UnboundedSender<i16>,
    mut in_flight: InFlight,
    outcome: &mut Outcome,
) -> anyhow::Result<()> {
    while in_flight.wait().await {
        let (request, checked) = buffer
            .next(&mut reader, |buf| {
                let Some((frame, len)) = frame::cut(buf)? else {
                    return Ok::<_, anyhow::Error>(None);
                };
                let request = in_flight.take(frame.stream).ok_or_else(|| {
                    anyhow!("a response on stream {}, where no request is", frame.stream)
                })?;
                let checked = statements::check(request.op, &Response::parse(&frame)?);
                Ok(Some(((request, checked), len)))
            })
            .await?;
        outcome.record(load, request.sent, checked);
        // The writer may be done; then the id is not needed.
        let _ = free.send(request.stream);
    }
    Ok(())
}
