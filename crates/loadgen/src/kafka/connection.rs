//! One connection of the Kafka load: its requests (Produce, or Fetch from offsets moving through
//! the topic) and the checks of their responses (correlation id, topic, partition, error codes),
//! which [`load::pipeline`] sends and receives; a broker answers in the order of the requests.

use std::sync::Arc;

use tokio::net::TcpStream;

use super::wire;
use crate::load::{self, Checked, Load, Outcome};

/// What every request of a connection does.
pub(super) enum Work {
    /// Produce `request`, the same frame every time but for its correlation id.
    Produce { request: Vec<u8> },
    /// Fetch up to `max_bytes` from offsets 0, `per_fetch`, 2 x `per_fetch` ... and again from
    /// 0 past the first `records` records.
    Fetch {
        max_bytes: i32,
        records: i64,
        per_fetch: i64,
    },
}

/// What a request's response must carry: its correlation id and, for a Fetch, the offset it
/// asked for.
struct Expected {
    correlation_id: i32,
    offset: Option<i64>,
}

/// Runs the load on `stream` until `load.stop_at` and every response is in, `pipeline`
/// requests in flight (see [`load::pipeline`]).
pub(super) async fn run(
    stream: TcpStream,
    load: Arc<Load>,
    work: Arc<Work>,
    topic: Arc<str>,
) -> Outcome {
    let mut correlation_id: i32 = 0;
    let mut next_offset: i64 = 0;
    let requested = topic.clone();
    let encode = move |out: &mut Vec<u8>| {
        correlation_id = correlation_id.wrapping_add(1);
        let start = out.len();
        let offset = match &*work {
            Work::Produce { request } => {
                out.extend_from_slice(request);
                wire::set_correlation_id(&mut out[start..], correlation_id);
                None
            }
            Work::Fetch {
                max_bytes,
                records,
                per_fetch,
            } => {
                let offset = next_offset;
                next_offset += per_fetch;
                if next_offset >= *records {
                    next_offset = 0;
                }
                wire::encode_fetch(out, correlation_id, &requested, offset, *max_bytes);
                Some(offset)
            }
        };
        Expected {
            correlation_id,
            offset,
        }
    };
    load::pipeline(stream, load, encode, move |buf, expected| {
        Ok::<_, wire::WireError>(
            wire::cut(buf)?.map(|(frame, len)| (check(expected, &topic, &frame), len)),
        )
    })
    .await
}

/// Whether `frame` is the right response to `request`, and what is wrong with it if not.
fn check(request: &Expected, topic: &str, frame: &wire::Frame<'_>) -> Checked {
    if frame.correlation_id != request.correlation_id {
        return Err(format!(
            "a response with correlation id {} where {} was expected",
            frame.correlation_id, request.correlation_id
        ));
    }
    match request.offset {
        None => {
            let produced = wire::produced(frame.body, topic).map_err(|error| error.to_string())?;
            if produced.error_code != wire::NONE {
                return Err(format!("Produce answered error {}", produced.error_code));
            }
            if produced.base_offset < 0 {
                return Err(format!(
                    "Produce answered base offset {}",
                    produced.base_offset
                ));
            }
            Ok(())
        }
        Some(offset) => {
            let fetched = wire::fetched(frame.body, topic).map_err(|error| error.to_string())?;
            if fetched.error_code != wire::NONE || fetched.partition_error_code != wire::NONE {
                return Err(format!(
                    "Fetch from offset {offset} answered error {} (partition: {})",
                    fetched.error_code, fetched.partition_error_code
                ));
            }
            match fetched.offsets {
                Some((first, last)) if first <= offset && offset <= last => Ok(()),
                Some((first, last)) => Err(format!(
                    "Fetch from offset {offset} answered records {first}..={last}"
                )),
                None => Err(format!(
                    "Fetch from offset {offset} answered no whole record batch (high watermark \
                     {})",
                    fetched.high_watermark
                )),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(correlation_id: i32, offset: Option<i64>) -> Expected {
        Expected {
            correlation_id,
            offset,
        }
    }

    /// A Produce v8 response body for partition 0 of topic "t" with `error_code`.
    fn produce_body(error_code: i16) -> Vec<u8> {
        let mut body = vec![0, 0, 0, 1, 0, 1, b't', 0, 0, 0, 1, 0, 0, 0, 0];
        body.extend_from_slice(&error_code.to_be_bytes());
        body.extend_from_slice(&7i64.to_be_bytes()); // base offset
        body.extend_from_slice(&(-1i64).to_be_bytes()); // log append time
        body.extend_from_slice(&0i64.to_be_bytes()); // log start offset
        body.extend_from_slice(&[0, 0, 0, 0, 0xff, 0xff, 0, 0, 0, 0]);
        body
    }

    #[test]
    fn a_response_to_another_request_is_an_error() {
        let body = produce_body(0);
        let frame = |correlation_id| wire::Frame {
            correlation_id,
            body: &body,
        };
        assert_eq!(check(&request(5, None), "t", &frame(5)), Ok(()));
        assert_eq!(
            check(&request(5, None), "t", &frame(6)),
            Err("a response with correlation id 6 where 5 was expected".into())
        );
    }

    #[test]
    fn an_error_code_or_another_topic_is_an_error() {
        let body = produce_body(29);
        let frame = wire::Frame {
            correlation_id: 1,
            body: &body,
        };
        assert_eq!(
            check(&request(1, None), "t", &frame),
            Err("Produce answered error 29".into())
        );
        let body = produce_body(0);
        let frame = wire::Frame {
            correlation_id: 1,
            body: &body,
        };
        assert!(check(&request(1, None), "u", &frame).is_err());
    }

    #[test]
    fn a_fetch_must_answer_the_offset_it_asked_for() {
        let mut batch = wire::record_batch(b"v", 0);
        batch[..8].copy_from_slice(&10i64.to_be_bytes());
        let mut body = vec![0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 1, b't'];
        body.extend_from_slice(&[0, 0, 0, 1, 0, 0, 0, 0, 0, 0]); // partition 0, no error
        body.extend_from_slice(&100i64.to_be_bytes()); // high watermark
        body.extend_from_slice(&100i64.to_be_bytes()); // last stable offset
        body.extend_from_slice(&0i64.to_be_bytes()); // log start offset
        body.extend_from_slice(&(-1i32).to_be_bytes()); // no aborted transactions
        body.extend_from_slice(&(-1i32).to_be_bytes()); // preferred read replica
        body.extend_from_slice(&(batch.len() as i32).to_be_bytes());
        body.extend_from_slice(&batch);
        let frame = wire::Frame {
            correlation_id: 1,
            body: &body,
        };
        assert_eq!(check(&request(1, Some(10)), "t", &frame), Ok(()));
        assert_eq!(
            check(&request(1, Some(11)), "t", &frame),
            Err("Fetch from offset 11 answered records 10..=10".into())
        );
    }
}
