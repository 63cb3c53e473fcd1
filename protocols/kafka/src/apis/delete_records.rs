//! DeleteRecords (key 21), v0 to v2: the topics whose records an admin client deletes.

use super::{partitioned_topic, PartitionedTopic};
use crate::topics::{Entries, KeptTopics, Topics};
use crate::wire::{Reader, WireError};

/// A DeleteRecords request.
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    /// The topics and partitions whose records are deleted.
    pub topics: Topics<'a>,
}

/// Reads a DeleteRecords request body, keeping the topics it names in `kept` as they are read.
pub fn parse<'a>(
    r: &mut Reader<'a>,
    version: i16,
    kept: &mut KeptTopics<'a>,
) -> Result<Request<'a>, WireError> {
    let topics = Entries::read_keeping(r, version, "the topics", partitioned_topic::<Topic>, kept)?;
    r.i32("the timeout")?;
    r.tagged_fields()?;
    Ok(Request { topics })
}

/// DeleteRecords's topic entries.
struct Topic;

impl PartitionedTopic for Topic {
    #[inline]
    fn partition(r: &mut Reader<'_>, _version: i16) -> Result<i32, WireError> {
        let index = r.i32("a partition index")?;
        r.i64("the offset")?;
        r.tagged_fields()?;
        Ok(index)
    }
}
