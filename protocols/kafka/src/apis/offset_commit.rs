//! OffsetCommit (key 8), v2 to v10: the group and the topics whose offsets a consumer
//! commits, and the response that denies it. v10 names topics by id.

use crate::topics::{Entries, KeptTopics, Topics};
use crate::wire::{Reader, WireError, Writer};

use super::{partitioned_topic, write_partitioned_denial, PartitionedTopic};

/// The first version naming topics by id.
const TOPIC_IDS: i16 = 10;

/// An OffsetCommit request.
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    /// The group.
    pub group_id: &'a [u8],
    /// The topics and partitions committed.
    pub topics: Topics<'a>,
}

/// Reads an OffsetCommit request body, keeping the topics it names in `kept` as they are read.
pub fn parse<'a>(
    r: &mut Reader<'a>,
    version: i16,
    kept: &mut KeptTopics<'a>,
) -> Result<Request<'a>, WireError> {
    let group_id = r.string("the group id")?;
    r.i32("the generation id or member epoch")?;
    r.string("the member id")?;
    if version >= 7 {
        r.nullable_string("the group instance id")?;
    }
    if version <= 4 {
        r.i64("the retention time")?;
    }
    let topics = Entries::read_keeping(r, version, "the topics", partitioned_topic::<Topic>, kept)?;
    r.tagged_fields()?;
    Ok(Request { group_id, topics })
}

/// OffsetCommit's topic entries, by id from [`TOPIC_IDS`].
struct Topic;

impl PartitionedTopic for Topic {
    const IDS_FROM: i16 = TOPIC_IDS;

    #[inline]
    fn partition(r: &mut Reader<'_>, version: i16) -> Result<i32, WireError> {
        let index = r.i32("a partition index")?;
        r.i64("the committed offset")?;
        if version >= 6 {
            r.i32("the committed leader epoch")?;
        }
        r.nullable_string("the committed metadata")?;
        r.tagged_fields()?;
        Ok(index)
    }
}

/// Writes the response body that fails every partition of `request` with `error`.
pub fn write_denial(request: &Request<'_>, version: i16, error: i16, w: &mut Writer<'_>) {
    if version >= 3 {
        w.i32(0);
    }
    write_partitioned_denial(w, &request.topics, version >= TOPIC_IDS, |w, index| {
        w.i32(index);
        w.i16(error);
        w.tagged_fields();
    });
    w.tagged_fields();
}
