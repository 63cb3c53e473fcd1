//! Fetch (key 1), v4 to v17: the topics a consumer or follower reads, and the response that
//! denies it.
//!
//! v13 and later name topics by id. Forgotten topics (v7+) leave a fetch session and read
//! nothing, so they are not among the topics the request names, as for Kafka's authorizer.
//! A denial fails every partition and answers with session id 0, which makes the client start
//! a new fetch session.

use crate::topics::{partition_index, Entries, TopicEntry, Topics};
use crate::wire::{Reader, WireError, Writer};

use super::{topic_ref, write_topic_ref};

/// The first version naming topics by id.
const TOPIC_IDS: i16 = 13;

/// A Fetch request.
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    /// The fetch session (0: none).
    pub session_id: i32,
    /// The topics and partitions read.
    pub topics: Topics<'a>,
}

/// Reads a Fetch request body.
pub fn parse<'a>(r: &mut Reader<'a>, version: i16) -> Result<Request<'a>, WireError> {
    if version <= 14 {
        r.i32("the replica id")?;
    }
    r.i32("the maximum wait")?;
    r.i32("the minimum bytes")?;
    r.i32("the maximum bytes")?;
    r.i8("the isolation level")?;
    let mut session_id = 0;
    if version >= 7 {
        session_id = r.i32("the session id")?;
        r.i32("the session epoch")?;
    }
    let topics = Entries::read(r, version, "the topics", topic)?;
    if version >= 7 {
        Entries::read(r, version, "the forgotten topics", forgotten)?;
    }
    if version >= 11 {
        r.string("the rack id")?;
    }
    r.tagged_fields()?;
    Ok(Request { session_id, topics })
}

fn topic<'a>(r: &mut Reader<'a>, version: i16) -> Result<TopicEntry<'a>, WireError> {
    let topic = topic_ref(r, version >= TOPIC_IDS)?;
    let partitions = Entries::read(r, version, "the partitions", partition)?;
    r.tagged_fields()?;
    Ok(TopicEntry { topic, partitions })
}

fn partition(r: &mut Reader<'_>, version: i16) -> Result<i32, WireError> {
    let index = r.i32("a partition index")?;
    if version >= 9 {
        r.i32("the current leader epoch")?;
    }
    r.i64("the fetch offset")?;
    if version >= 12 {
        r.i32("the last fetched epoch")?;
    }
    if version >= 5 {
        r.i64("the log start offset")?;
    }
    r.i32("the partition's maximum bytes")?;
    r.tagged_fields()?;
    Ok(index)
}

fn forgotten<'a>(r: &mut Reader<'a>, version: i16) -> Result<TopicEntry<'a>, WireError> {
    let topic = topic_ref(r, version >= TOPIC_IDS)?;
    let partitions = Entries::read(r, version, "the forgotten partitions", partition_index)?;
    r.tagged_fields()?;
    Ok(TopicEntry { topic, partitions })
}

/// Writes the response body that fails every partition of `request` with `error`.
pub fn write_denial(request: &Request<'_>, version: i16, error: i16, w: &mut Writer<'_>) {
    w.i32(0);
    if version >= 7 {
        w.i16(0);
        w.i32(0);
    }
    w.array_len(Some(request.topics.len()));
    for entry in request.topics.iter() {
        write_topic_ref(w, entry.topic, version >= TOPIC_IDS);
        w.array_len(Some(entry.partitions.len()));
        for index in entry.partitions.iter() {
            w.i32(index);
            w.i16(error);
            w.i64(-1);
            w.i64(-1);
            if version >= 5 {
                w.i64(-1);
            }
            w.array_len(None);
            if version >= 11 {
                w.i32(-1);
            }
            w.null_bytes();
            w.tagged_fields();
        }
        w.tagged_fields();
    }
    w.tagged_fields();
}
