//! Produce (key 0), v3 to v13: the topics a request writes to, and the response that denies it.
//!
//! Record batches are skipped by their length, never decoded (compressed ones included).
//! v13 names topics by id. A request with `acks` 0 is never answered, so it gets no denial.

use crate::topics::{Entries, KeptTopics, Topics};
use crate::wire::{Reader, WireError, Writer};

use super::{partitioned_topic, write_partitioned_denial, PartitionedTopic};

/// The first version naming topics by id.
const TOPIC_IDS: i16 = 13;

/// A Produce request.
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    /// The transactional id; `None` when the producer is not transactional.
    pub transactional_id: Option<&'a [u8]>,
    /// 0: no response; 1: the leader's; -1: the in-sync replicas'.
    pub acks: i16,
    /// The topics and partitions written to.
    pub topics: Topics<'a>,
}

/// Reads a Produce request body, keeping the topics it names in `kept` as they are read.
pub fn parse<'a>(
    r: &mut Reader<'a>,
    version: i16,
    kept: &mut KeptTopics<'a>,
) -> Result<Request<'a>, WireError> {
    let transactional_id = r.nullable_string("the transactional id")?;
    let acks = r.i16("acks")?;
    r.skip(4, "the timeout")?;
    let topics = Entries::read_keeping(r, version, "the topics", partitioned_topic::<Topic>, kept)?;
    r.tagged_fields()?;
    Ok(Request {
        transactional_id,
        acks,
        topics,
    })
}

/// Produce's topic entries, by id from v13.
struct Topic;

impl PartitionedTopic for Topic {
    const IDS_FROM: i16 = TOPIC_IDS;

    #[inline]
    fn partition(r: &mut Reader<'_>, _version: i16) -> Result<i32, WireError> {
        let index = r.i32("a partition index")?;
        r.skip_bytes("the records")?;
        r.tagged_fields()?;
        Ok(index)
    }
}

/// Writes the response body that fails every partition of `request` with `error`.
pub fn write_denial(request: &Request<'_>, version: i16, error: i16, w: &mut Writer<'_>) {
    write_partitioned_denial(w, &request.topics, version >= TOPIC_IDS, |w, index| {
        w.i32(index);
        w.i16(error);
        w.i64(-1);
        w.i64(-1);
        if version >= 5 {
            w.i64(-1);
        }
        if version >= 8 {
            w.array_len(Some(0));
            w.nullable_string(None);
        }
        w.tagged_fields();
    });
    w.i32(0);
    w.tagged_fields();
}
