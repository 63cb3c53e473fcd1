//! ListOffsets (key 2, Cilium's `offsets`), v1 to v10: the topics whose offsets a client looks
//! up, and the response that denies it.

use crate::topics::{Entries, KeptTopics, Topics};
use crate::wire::{Reader, WireError, Writer};

use super::{partitioned_topic, write_partitioned_denial, PartitionedTopic};

/// A ListOffsets request.
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    /// The topics and partitions looked up.
    pub topics: Topics<'a>,
}

/// Reads a ListOffsets request body, keeping the topics it names in `kept` as they are read.
pub fn parse<'a>(
    r: &mut Reader<'a>,
    version: i16,
    kept: &mut KeptTopics<'a>,
) -> Result<Request<'a>, WireError> {
    r.i32("the replica id")?;
    if version >= 2 {
        r.i8("the isolation level")?;
    }
    let topics = Entries::read_keeping(r, version, "the topics", partitioned_topic::<Topic>, kept)?;
    if version >= 10 {
        r.i32("the timeout")?;
    }
    r.tagged_fields()?;
    Ok(Request { topics })
}

/// ListOffsets's topic entries.
struct Topic;

impl PartitionedTopic for Topic {
    #[inline]
    fn partition(r: &mut Reader<'_>, version: i16) -> Result<i32, WireError> {
        let index = r.i32("a partition index")?;
        if version >= 4 {
            r.i32("the current leader epoch")?;
        }
        r.i64("the timestamp")?;
        r.tagged_fields()?;
        Ok(index)
    }
}

/// Writes the response body that fails every partition of `request` with `error`.
pub fn write_denial(request: &Request<'_>, version: i16, error: i16, w: &mut Writer<'_>) {
    if version >= 2 {
        w.i32(0);
    }
    write_partitioned_denial(w, &request.topics, false, |w, index| {
        w.i32(index);
        w.i16(error);
        w.i64(-1);
        w.i64(-1);
        if version >= 4 {
            w.i32(-1);
        }
        w.tagged_fields();
    });
    w.tagged_fields();
}
