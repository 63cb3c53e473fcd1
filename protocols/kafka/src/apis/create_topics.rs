//! CreateTopics (key 19), v2 to v7: the topics an admin client creates, and the response that
//! denies it.

use crate::topics::{partition_index, Entries, KeptTopics, TopicEntry, TopicRef, Topics};
use crate::wire::{Reader, WireError, Writer};

/// A CreateTopics request.
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    /// The topics created.
    pub topics: Topics<'a>,
}

/// Reads a CreateTopics request body, keeping the topics it names in `kept` as they are read.
pub fn parse<'a>(
    r: &mut Reader<'a>,
    version: i16,
    kept: &mut KeptTopics<'a>,
) -> Result<Request<'a>, WireError> {
    let topics = Entries::read_keeping(r, version, "the topics", topic, kept)?;
    r.i32("the timeout")?;
    r.bool("validate only")?;
    r.tagged_fields()?;
    Ok(Request { topics })
}

fn topic<'a>(r: &mut Reader<'a>, version: i16) -> Result<TopicEntry<'a>, WireError> {
    let name = r.string("a topic name")?;
    r.i32("the number of partitions")?;
    r.i16("the replication factor")?;
    Entries::read(r, version, "the assignments", assignment)?;
    for _ in 0..r.array_len("the configs")? {
        r.string("a config name")?;
        r.nullable_string("a config value")?;
        r.tagged_fields()?;
    }
    r.tagged_fields()?;
    Ok(TopicEntry {
        topic: TopicRef::Name(name),
        partitions: Entries::empty(),
    })
}

fn assignment(r: &mut Reader<'_>, version: i16) -> Result<i32, WireError> {
    let index = r.i32("a partition index")?;
    Entries::read(r, version, "the broker ids", partition_index)?;
    r.tagged_fields()?;
    Ok(index)
}

/// Writes the response body that fails every topic of `request` with `error`.
pub fn write_denial(request: &Request<'_>, version: i16, error: i16, w: &mut Writer<'_>) {
    w.i32(0);
    w.array_len(Some(request.topics.len()));
    for entry in request.topics.iter() {
        let TopicRef::Name(name) = entry.topic else {
            continue;
        };
        w.string(name);
        if version >= 7 {
            w.uuid(&[0; 16]);
        }
        w.i16(error);
        w.nullable_string(None);
        if version >= 5 {
            w.i32(-1);
            w.i16(-1);
            w.array_len(None);
        }
        w.tagged_fields();
    }
    w.tagged_fields();
}
