//! TxnOffsetCommit (key 28), v0 to v5: the group and topics whose offsets a transactional
//! producer commits.

use super::{partitioned_topic, PartitionedTopic};
use crate::topics::{Entries, KeptTopics, Topics};
use crate::wire::{Reader, WireError};

/// A TxnOffsetCommit request.
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    /// The transactional id.
    pub transactional_id: &'a [u8],
    /// The group.
    pub group_id: &'a [u8],
    /// The topics and partitions committed.
    pub topics: Topics<'a>,
}

/// Reads a TxnOffsetCommit request body, keeping the topics it names in `kept` as they are read.
pub fn parse<'a>(
    r: &mut Reader<'a>,
    version: i16,
    kept: &mut KeptTopics<'a>,
) -> Result<Request<'a>, WireError> {
    let transactional_id = r.string("the transactional id")?;
    let group_id = r.string("the group id")?;
    r.i64("the producer id")?;
    r.i16("the producer epoch")?;
    if version >= 3 {
        r.i32("the generation id")?;
        r.string("the member id")?;
        r.nullable_string("the group instance id")?;
    }
    let topics = Entries::read_keeping(r, version, "the topics", partitioned_topic::<Topic>, kept)?;
    r.tagged_fields()?;
    Ok(Request {
        transactional_id,
        group_id,
        topics,
    })
}

/// TxnOffsetCommit's topic entries.
struct Topic;

impl PartitionedTopic for Topic {
    #[inline]
    fn partition(r: &mut Reader<'_>, version: i16) -> Result<i32, WireError> {
        let index = r.i32("a partition index")?;
        r.i64("the committed offset")?;
        if version >= 2 {
            r.i32("the committed leader epoch")?;
        }
        r.nullable_string("the committed metadata")?;
        r.tagged_fields()?;
        Ok(index)
    }
}
