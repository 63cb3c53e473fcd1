//! DeleteRecords (key 21), v0 to v2: the topics whose records an admin client deletes.

use super::{partitioned_topic, PartitionedTopic};
use crate::topics::{Entries, Topics};
use crate::wire::{Reader, WireError};

/// A DeleteRecords request.
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    /// The topics and partitions whose records are deleted.
    pub topics: Topics<'a>,
}

/// Reads a DeleteRecords request body.
pub fn parse<'a>(r: &mut Reader<'a>, version: i16) -> Result<Request<'a>, WireError> {
    let topics = Entries::read(r, version, "the topics", partitioned_topic::<Topic>)?;
    r.i32("the timeout")?;
    r.tagged_fields()?;
    Ok(Request { topics })
}

/// DeleteRecords's topic entries.
struct Topic;

impl PartitionedTopic for Topic {
    fn partition(r: &mut Reader<'_>, _version: i16) -> Result<i32, WireError> {
        let index = r.i32("a partition index")?;
        r.i64("the offset")?;
        r.tagged_fields()?;
        Ok(index)
    }
}
