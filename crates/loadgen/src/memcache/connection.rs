//! One connection of the memcached load: storing every key before it, and the load's requests
//! (`set` and `get` in the load's mix) and the checks of their replies, which
//! [`load::pipeline`] sends and receives.

use std::sync::Arc;

use anyhow::bail;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use super::protocol::{self, Reply};
use crate::load::{self, Checked, Load, Outcome, Random, ReadBuffer};

/// What a request asks, which its reply must answer.
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

/// Runs the load on `stream` until `load.stop_at` and every reply is in, `pipeline` requests in
/// flight (see [`load::pipeline`]). Every `set` stores `value`, and every `get` expects it.
pub(super) async fn run(
    stream: TcpStream,
    load: Arc<Load>,
    value: Arc<[u8]>,
    seed: u64,
) -> Outcome {
    let mut random = Random(seed);
    let mut sent: u64 = 0;
    let writer_load = load.clone();
    let written = value.clone();
    let encode = move |out: &mut Vec<u8>| {
        let key = random.below(writer_load.keys);
        let op = if writer_load.is_write(sent) {
            protocol::encode_set(out, key, &written);
            Op::Set
        } else {
            protocol::encode_get(out, key);
            Op::Get(key)
        };
        sent += 1;
        op
    };
    load::pipeline(stream, load, encode, move |buf, op| {
        check_next(buf, op, &value)
    })
    .await
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
