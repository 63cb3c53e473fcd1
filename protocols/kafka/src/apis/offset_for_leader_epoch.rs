//! OffsetForLeaderEpoch (key 23), v2 to v4: the topics whose epoch end offsets a client or
//! follower looks up.

use super::{partitioned_topic, PartitionedTopic};
use crate::topics::{Entries, KeptTopics, Topics};
use crate::wire::{Reader, WireError};

/// An OffsetForLeaderEpoch request.
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    /// The topics and partitions looked up.
    pub topics: Topics<'a>,
}

/// Reads an OffsetForLeaderEpoch request body, keeping the topics it names in `kept` as they
/// are read.
pub fn parse<'a>(
    r: &mut Reader<'a>,
    version: i16,
    kept: &mut KeptTopics<'a>,
) -> Result<Request<'a>, WireError> {
    if version >= 3 {
        r.i32("the replica id")?;
    }
    let topics = Entries::read_keeping(r, version, "the topics", partitioned_topic::<Topic>, kept)?;
    r.tagged_fields()?;
    Ok(Request { topics })
}

/// OffsetForLeaderEpoch's topic entries.
struct Topic;

impl PartitionedTopic for Topic {
    #[inline]
    fn partition(r: &mut Reader<'_>, _version: i16) -> Result<i32, WireError> {
        let index = r.i32("a partition index")?;
        r.i32("the current leader epoch")?;
        r.i32("the leader epoch")?;
        r.tagged_fields()?;
        Ok(index)
    }
}
