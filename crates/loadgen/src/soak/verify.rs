//! One verifying connection of the soak: a writer task sends the planner's steps, keeping up to
//! `pipeline` of them in flight, and a reader judges every reply in order. It owns no policy
//! knowledge (that is the planner's) and must never retry or skip a request: every request is
//! answered as expected or counted as wrong.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use tokio::io::AsyncWriteExt;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, Semaphore};

use super::check::Tally;
use super::plan::{Keys, Planner, Role, Step};
use crate::load::ReadBuffer;
use crate::memcache::{binary, protocol};

/// What a verifying connection sends.
pub(super) struct Plan {
    pub connection: u32,
    /// Requests to send (a step may send a few more than are left).
    pub requests: u64,
    pub keys: u32,
    pub role: Role,
    pub pipeline: usize,
    pub seed: u64,
}

/// Runs one verifying connection on `stream` to the end of its plan. Returns what it saw and
/// the state of its keys, for the final check. `progress` counts requests answered.
pub(super) async fn run(stream: TcpStream, plan: Plan, progress: Arc<AtomicU64>) -> (Tally, Keys) {
    let (reader, writer) = stream.into_split();
    let window = Arc::new(Semaphore::new(plan.pipeline));
    let (steps_tx, steps_rx) = mpsc::unbounded_channel();
    let binary = plan.role == Role::Binary;
    let writing = tokio::spawn(write_steps(writer, plan, window.clone(), steps_tx));
    let mut tally = Tally::default();
    let read = read_replies(reader, binary, &window, steps_rx, &mut tally, &progress).await;
    let (written, keys) = writing.await.expect("the writer does not panic");
    if let Err(error) = read.and(written) {
        tally.wrong += 1;
        tally.note(format!("connection lost: {error:#}"));
    }
    (tally, keys)
}

/// Sends steps while the window has room, until the plan's requests are sent. Steps that find
/// the window open together go out in one write.
async fn write_steps(
    mut writer: OwnedWriteHalf,
    plan: Plan,
    window: Arc<Semaphore>,
    steps: mpsc::UnboundedSender<Step>,
) -> (anyhow::Result<()>, Keys) {
    let mut planner = Planner::new(plan.connection, plan.keys, plan.role, plan.seed);
    let mut sent = 0u64;
    let mut out = Vec::new();
    let result = async {
        // The reader closes the window when it stops.
        while sent < plan.requests {
            let Ok(permit) = window.acquire().await else {
                break;
            };
            permit.forget();
            out.clear();
            loop {
                let step = planner.next(&mut out);
                sent +=
                    step.expects.len() as u64 + u64::from(step.silent_allowed + step.silent_denied);
                if steps.send(step).is_err() {
                    return Ok(()); // the reader has stopped and says why
                }
                if sent >= plan.requests {
                    break;
                }
                match window.try_acquire() {
                    Ok(permit) => permit.forget(),
                    Err(_) => break,
                }
            }
            writer.write_all(&out).await?;
        }
        Ok(())
    }
    .await;
    (result, planner.keys)
}

/// Judges the replies of every step, in order, until the writer is done. Steps left without
/// their replies when the connection fails are counted as lost.
async fn read_replies(
    mut reader: OwnedReadHalf,
    binary: bool,
    window: &Semaphore,
    mut steps: mpsc::UnboundedReceiver<Step>,
    tally: &mut Tally,
    progress: &AtomicU64,
) -> anyhow::Result<()> {
    let mut replies = ReadBuffer::new();
    let mut scratch = Vec::new();
    let mut result = Ok(());
    while let Some(step) = steps.recv().await {
        if result.is_err() {
            step.expects
                .iter()
                .for_each(|expect| tally.unanswered(expect));
            continue;
        }
        for (i, expect) in step.expects.iter().enumerate() {
            let judged = if binary {
                replies
                    .next(&mut reader, |buf| {
                        Ok::<_, protocol::FrameError>(binary::frame(buf)?.map(|(response, len)| {
                            tally.binary(expect, &response, &mut scratch);
                            ((), len)
                        }))
                    })
                    .await
            } else {
                replies
                    .next(&mut reader, |buf| {
                        Ok::<_, protocol::FrameError>(protocol::frame_any(buf)?.map(
                            |(reply, len)| {
                                tally.text(expect, &reply, &mut scratch);
                                ((), len)
                            },
                        ))
                    })
                    .await
            };
            if let Err(error) = judged {
                step.expects[i..]
                    .iter()
                    .for_each(|expect| tally.unanswered(expect));
                result = Err(error);
                // A writer waiting for room must not wait for replies that will never come.
                window.close();
                break;
            }
        }
        tally.silent(step.silent_allowed, step.silent_denied);
        progress.fetch_add(
            step.expects.len() as u64 + u64::from(step.silent_allowed + step.silent_denied),
            Ordering::Relaxed,
        );
        window.add_permits(1);
    }
    window.close();
    result
}
