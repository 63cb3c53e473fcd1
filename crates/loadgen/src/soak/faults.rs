//! The soak's faults, run beside the verifying traffic until told to stop: clients of the
//! verified listener that reset or close mid-request or mid-reply, or send garbage, and clients
//! of a second listener whose upstream memcached `scripts/soak.sh` kills, stalls and restarts.
//! Faults are counted, never judged as failures, except a wrong reply on the second listener: a
//! dying upstream may cost connections, never bytes. Fault clients must never touch the
//! verifying connections' keys: they use keys of their own.

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::plan::{fill_value, value_flags, value_len, MAX_VALUE};
use crate::load::{self, Random, ReadBuffer};
use crate::memcache::protocol::{self, AnyReply};

/// A key holding a 1 MiB value, read by clients that reset mid-reply.
const BIG_KEY: &str = "alliance/fleet/fault/big";

/// The faults caused and what the clients of the second listener saw.
#[derive(Default, Debug, Clone, Copy)]
pub(super) struct FaultCounts {
    /// A set's command line and part of its data, then a reset.
    pub reset_mid_request: u64,
    /// A get of a 1 MiB value, a few bytes of the reply read, then a reset.
    pub reset_mid_reply: u64,
    /// Part of a command line or of a binary header, then a close.
    pub partial_then_close: u64,
    /// Random bytes from an identity that may only read, then a close.
    pub garbage: u64,
    /// A set the policy denies, cut in its data block by a reset.
    pub denied_then_reset: u64,
    /// A connection reset as soon as it is made.
    pub connect_reset: u64,
    /// Connections to the second listener cut or refused while the upstream was down.
    pub upstream_cuts: u64,
    /// Requests to the second listener answered right.
    pub upstream_answered: u64,
    /// Wrong replies on the second listener: a failure.
    pub upstream_wrong: u64,
}

impl FaultCounts {
    pub(super) fn client_faults(&self) -> u64 {
        self.reset_mid_request
            + self.reset_mid_reply
            + self.partial_then_close
            + self.garbage
            + self.denied_then_reset
            + self.connect_reset
    }

    pub(super) fn add(&mut self, other: &FaultCounts) {
        self.reset_mid_request += other.reset_mid_request;
        self.reset_mid_reply += other.reset_mid_reply;
        self.partial_then_close += other.partial_then_close;
        self.garbage += other.garbage;
        self.denied_then_reset += other.denied_then_reset;
        self.connect_reset += other.connect_reset;
        self.upstream_cuts += other.upstream_cuts;
        self.upstream_answered += other.upstream_answered;
        self.upstream_wrong += other.upstream_wrong;
    }
}

/// Where fault clients connect, and as whom.
#[derive(Clone, Copy)]
pub(super) struct FaultTargets {
    /// The verified listener.
    pub target: SocketAddr,
    /// The second listener, in front of the upstream that is killed.
    pub upstream_fault_target: Option<SocketAddr>,
    /// An identity that may write and read the allowed keys.
    pub writer: Option<IpAddr>,
    /// An identity that may only read them.
    pub reader: Option<IpAddr>,
}

/// Stores the value the mid-reply resets read.
pub(super) async fn prepare(targets: FaultTargets) -> anyhow::Result<()> {
    let mut stream = load::connect(targets.target, targets.writer).await?;
    let mut out = Vec::new();
    protocol::encode_set_key(&mut out, BIG_KEY, 0, &vec![b'f'; MAX_VALUE], false);
    stream.write_all(&out).await?;
    let mut replies = ReadBuffer::new();
    let stored = replies
        .next(&mut stream, |buf| {
            protocol::frame_any(buf).map(|reply| {
                reply.map(|(reply, len)| (matches!(reply, AnyReply::Line(b"STORED")), len))
            })
        })
        .await?;
    if !stored {
        bail!("storing {BIG_KEY} through the proxy was not answered STORED");
    }
    Ok(())
}

/// Runs one client of the verified listener until `stop`, cycling through the client faults.
pub(super) async fn client(targets: FaultTargets, seed: u64, stop: Arc<AtomicBool>) -> FaultCounts {
    let mut counts = FaultCounts::default();
    let mut random = Random(seed | 1);
    let mut round = 0u32;
    while !stop.load(Ordering::Relaxed) {
        // A fault that cannot even connect is not counted; the verifying traffic reports a
        // proxy that refuses connections.
        let _ = client_fault(targets, round % 6, &mut random, &mut counts).await;
        round = round.wrapping_add(1);
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    counts
}

async fn client_fault(
    targets: FaultTargets,
    kind: u32,
    random: &mut Random,
    counts: &mut FaultCounts,
) -> anyhow::Result<()> {
    match kind {
        0 => {
            let mut stream = load::connect(targets.target, targets.writer).await?;
            let key = format!("alliance/fleet/fault/{}", random.below(64));
            let len = 1 + random.below(200_000) as usize;
            let mut out = format!("set {key} 0 0 {len}\r\n").into_bytes();
            out.resize(out.len() + random.below(len as u32) as usize, b'r');
            stream.write_all(&out).await?;
            reset(stream)?;
            counts.reset_mid_request += 1;
        }
        1 => {
            let mut stream = load::connect(targets.target, targets.writer).await?;
            stream
                .write_all(format!("get {BIG_KEY}\r\n").as_bytes())
                .await?;
            let mut some = vec![0; 1 + random.below(64 << 10) as usize];
            stream.read_exact(&mut some).await?;
            reset(stream)?;
            counts.reset_mid_reply += 1;
        }
        2 => {
            let mut stream = load::connect(targets.target, targets.writer).await?;
            let partial: &[u8] = match random.below(3) {
                0 => b"get alliance/fleet/fau",
                1 => b"ms alliance/fleet/fault/0 10 T0\r\nabc",
                _ => b"\x80\x00\x00\x05\x00\x00\x00\x00\x00",
            };
            stream.write_all(partial).await?;
            stream.shutdown().await?;
            drain(&mut stream).await;
            counts.partial_then_close += 1;
        }
        3 => {
            let mut stream = load::connect(targets.target, targets.reader).await?;
            let len = 1 + random.below(4096) as usize;
            let garbage: Vec<u8> = (0..len).map(|_| random.below(256) as u8).collect();
            stream.write_all(&garbage).await?;
            stream.shutdown().await?;
            drain(&mut stream).await;
            counts.garbage += 1;
        }
        4 => {
            let mut stream = load::connect(targets.target, targets.reader).await?;
            let key = format!("alliance/fleet/fault/{}", random.below(64));
            let mut out = format!("set {key} 0 0 100000\r\n").into_bytes();
            out.resize(out.len() + random.below(100_000) as usize, b'd');
            stream.write_all(&out).await?;
            reset(stream)?;
            counts.denied_then_reset += 1;
        }
        _ => {
            let stream = load::connect(targets.target, targets.writer).await?;
            reset(stream)?;
            counts.connect_reset += 1;
        }
    }
    Ok(())
}

/// Closes `stream` with a reset rather than a FIN.
fn reset(stream: TcpStream) -> anyhow::Result<()> {
    stream.set_zero_linger().context("setting SO_LINGER")?;
    drop(stream);
    Ok(())
}

/// Reads what the proxy sends until it closes, for at most 200 ms.
async fn drain(stream: &mut TcpStream) {
    let mut buf = [0u8; 4096];
    let _ = tokio::time::timeout(Duration::from_millis(200), async {
        while matches!(stream.read(&mut buf).await, Ok(n) if n > 0) {}
    })
    .await;
}

/// Runs one client of the second listener until `stop`: on each connection, sets of fresh
/// values each read back at once; a connection cut or refused is counted and made anew.
pub(super) async fn upstream_client(
    target: SocketAddr,
    source: Option<IpAddr>,
    task: u32,
    stop: Arc<AtomicBool>,
) -> FaultCounts {
    let mut counts = FaultCounts::default();
    let mut connection = 0u32;
    while !stop.load(Ordering::Relaxed) {
        connection = connection.wrapping_add(1);
        match upstream_connection(target, source, task, connection, &stop, &mut counts).await {
            Ok(()) => {}
            Err(UpstreamError::Cut) => {
                counts.upstream_cuts += 1;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(UpstreamError::Wrong(what)) => {
                counts.upstream_wrong += 1;
                eprintln!("axoneme-loadgen: second listener: {what}");
            }
        }
    }
    counts
}

enum UpstreamError {
    /// The connection was cut, refused or timed out.
    Cut,
    /// A reply was wrong.
    Wrong(String),
}

async fn upstream_connection(
    target: SocketAddr,
    source: Option<IpAddr>,
    task: u32,
    connection: u32,
    stop: &AtomicBool,
    counts: &mut FaultCounts,
) -> Result<(), UpstreamError> {
    let mut stream = load::connect(target, source)
        .await
        .map_err(|_| UpstreamError::Cut)?;
    let key = format!("alliance/fleet/upstream/{task}/{connection}");
    let mut replies = ReadBuffer::new();
    let mut value = Vec::new();
    let mut out = Vec::new();
    let mut seed = (u64::from(task) << 40) ^ (u64::from(connection) << 8);
    while !stop.load(Ordering::Relaxed) {
        // Values up to 128 KiB: the upstream dies mid-value often enough.
        seed = seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
        while value_len(seed) > 128 << 10 {
            seed = seed.wrapping_add(1);
        }
        fill_value(seed, &mut value);
        out.clear();
        protocol::encode_set_key(&mut out, &key, value_flags(seed), &value, false);
        protocol::encode_get_keys(&mut out, [key.as_str()]);
        stream
            .write_all(&out)
            .await
            .map_err(|_| UpstreamError::Cut)?;
        for get in [false, true] {
            let right = replies
                .next(&mut stream, |buf| {
                    protocol::frame_any(buf).map(|reply| {
                        reply.map(|(reply, len)| {
                            let right = match (get, &reply) {
                                (false, AnyReply::Line(b"STORED")) => true,
                                (true, AnyReply::Values(blocks)) => {
                                    blocks.len() == 1
                                        && blocks[0].key == key.as_bytes()
                                        && blocks[0].flags
                                            == value_flags(seed).to_string().as_bytes()
                                        && blocks[0].data == value.as_slice()
                                }
                                _ => false,
                            };
                            (right, len)
                        })
                    })
                })
                .await
                .map_err(|error| match error.downcast_ref::<protocol::FrameError>() {
                    Some(broken) => UpstreamError::Wrong(format!("a reply for {key}: {broken}")),
                    None => UpstreamError::Cut,
                })?;
            if !right {
                let what = if get { "get" } else { "set" };
                return Err(UpstreamError::Wrong(format!(
                    "the {what} of {key} was answered wrongly"
                )));
            }
            counts.upstream_answered += 1;
        }
    }
    Ok(())
}
