//! DeleteTopics (key 20), v1 to v6: the topics an admin client deletes, by name or (v6) by id,
//! and the response that denies it. A v6 entry with both a name and a non-zero id is refused,
//! as brokers read it differently.

use crate::topics::{Entries, KeptTopics, TopicEntry, TopicRef, Topics};
use crate::wire::{Reader, WireError, Writer};

/// The first version with topic entries (name or id) rather than names.
const TOPIC_ENTRIES: i16 = 6;

/// A DeleteTopics request.
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    /// The topics deleted.
    pub topics: Topics<'a>,
}

/// Reads a DeleteTopics request body, keeping the topics it names in `kept` as they are read.
pub fn parse<'a>(
    r: &mut Reader<'a>,
    version: i16,
    kept: &mut KeptTopics<'a>,
) -> Result<Request<'a>, WireError> {
    let topics = match version >= TOPIC_ENTRIES {
        true => Entries::read_keeping(r, version, "the topics", topic, kept)?,
        false => Entries::read_keeping(r, version, "the topic names", name, kept)?,
    };
    r.i32("the timeout")?;
    r.tagged_fields()?;
    Ok(Request { topics })
}

fn name<'a>(r: &mut Reader<'a>, _version: i16) -> Result<TopicEntry<'a>, WireError> {
    Ok(TopicEntry {
        topic: TopicRef::Name(r.string("a topic name")?),
        partitions: Entries::empty(),
    })
}

fn topic<'a>(r: &mut Reader<'a>, _version: i16) -> Result<TopicEntry<'a>, WireError> {
    let name = r.nullable_string("a topic name")?;
    let id = r.uuid("a topic id")?;
    r.tagged_fields()?;
    // Kafka's broker refuses an entry with both a name and a non-zero id; tansu deletes the
    // topic of the id. Judged by its name, it would let a client delete any topic by its id.
    let topic = match name {
        None => TopicRef::Id(id),
        Some(_) if id != [0; 16] => {
            return Err(WireError::Ambiguous(
                "a topic named by both an id and a name",
            ))
        }
        Some(name) => TopicRef::Name(name),
    };
    Ok(TopicEntry {
        topic,
        partitions: Entries::empty(),
    })
}

/// Writes the response body that fails every topic of `request` with `error`.
pub fn write_denial(request: &Request<'_>, version: i16, error: i16, w: &mut Writer<'_>) {
    w.i32(0);
    w.array_len(Some(request.topics.len()));
    for entry in request.topics.iter() {
        let (name, id) = match entry.topic {
            TopicRef::Name(name) => (Some(name), [0; 16]),
            TopicRef::Id(id) => (None, id),
            TopicRef::Any => (None, [0; 16]),
        };
        match version >= TOPIC_ENTRIES {
            true => {
                w.nullable_string(name);
                w.uuid(&id);
            }
            false => w.string(name.unwrap_or_default()),
        }
        w.i16(error);
        if version >= 5 {
            w.nullable_string(None);
        }
        w.tagged_fields();
    }
    w.tagged_fields();
}
