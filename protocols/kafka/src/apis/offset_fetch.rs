//! OffsetFetch (key 9), v1 to v10: the groups and topics whose committed offsets a consumer
//! reads, and the response that denies it.
//!
//! Up to v7 a request asks about one group; from v8 about several, each with its topics. From
//! v2 a null topic array asks for every topic the group committed. v10 names topics by id.

use crate::topics::{partition_index, Entries, Group, KeptTopics, NamedTopics, TopicEntry};
use crate::wire::{Reader, WireError, Writer};

use super::{partitioned_topic, write_partitioned_denial, PartitionedTopic};

/// The first version asking about several groups.
const GROUPS: i16 = 8;
/// The first version naming topics by id.
const TOPIC_IDS: i16 = 10;

/// The groups of an OffsetFetch request.
#[derive(Debug, Clone, Copy)]
pub enum Groups<'a> {
    /// v1 to v7: one group.
    One(Group<'a>),
    /// v8 and later.
    Many(Entries<'a, Group<'a>>),
}

/// An OffsetFetch request.
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    /// The groups asked about, each with its topics (`None`: all of them).
    pub groups: Groups<'a>,
}

impl<'a> Request<'a> {
    /// The topics named, in every group; none when a group asks for all its topics, as the
    /// request then names all of them.
    pub fn topics(&self) -> NamedTopics<'a> {
        match &self.groups {
            Groups::One(group) => NamedTopics::of(group.topics.as_ref()),
            Groups::Many(groups) if groups.iter().any(|group| group.topics.is_none()) => {
                NamedTopics::of(None)
            }
            Groups::Many(groups) => NamedTopics::of_groups(groups),
        }
    }
}

/// Reads an OffsetFetch request body, keeping the topics it names in `kept` as they are read
/// (none when a group asks for all its topics).
pub fn parse<'a>(
    r: &mut Reader<'a>,
    version: i16,
    kept: &mut KeptTopics<'a>,
) -> Result<Request<'a>, WireError> {
    let topic = partitioned_topic::<Topic>;
    let groups = match version >= GROUPS {
        true => {
            let mut asks_all = false;
            let groups = Entries::read_checking(r, version, "the groups", group, |r, version| {
                let group = read_group(r, version, |entry| kept.push(entry.topic))?;
                asks_all |= group.topics.is_none();
                Ok(group)
            })?;
            if asks_all {
                *kept = KeptTopics::none();
            }
            Groups::Many(groups)
        }
        false => {
            let id = r.string("the group id")?;
            let topics = match version {
                1 => Some(Entries::read_keeping(
                    r,
                    version,
                    "the topics",
                    topic,
                    kept,
                )?),
                _ => Entries::read_nullable_keeping(r, version, "the topics", topic, kept)?,
            };
            Groups::One(Group { id, topics })
        }
    };
    if version >= 7 {
        r.bool("require stable")?;
    }
    r.tagged_fields()?;
    Ok(Request { groups })
}

/// Reads one group (v8+), as iterating the groups does.
fn group<'a>(r: &mut Reader<'a>, version: i16) -> Result<Group<'a>, WireError> {
    read_group(r, version, |_| {})
}

/// Reads one group (v8+), handing each of its topic entries to `each` as it is read.
#[inline(always)]
fn read_group<'a>(
    r: &mut Reader<'a>,
    version: i16,
    each: impl FnMut(TopicEntry<'a>),
) -> Result<Group<'a>, WireError> {
    let id = r.string("the group id")?;
    if version >= 9 {
        r.nullable_string("the member id")?;
        r.i32("the member epoch")?;
    }
    let topic = partitioned_topic::<Topic>;
    let topics = Entries::read_nullable_with(r, version, "the topics", topic, each)?;
    r.tagged_fields()?;
    Ok(Group { id, topics })
}

/// OffsetFetch's topic entries, by id from [`TOPIC_IDS`].
struct Topic;

impl PartitionedTopic for Topic {
    const IDS_FROM: i16 = TOPIC_IDS;
    const PARTITIONS: &'static str = "the partition indexes";

    #[inline]
    fn partition(r: &mut Reader<'_>, version: i16) -> Result<i32, WireError> {
        partition_index(r, version)
    }
}

/// Writes the response body that fails every named partition with `error`, and a group that
/// names no topic with `group_error`.
pub fn write_denial(
    request: &Request<'_>,
    version: i16,
    error: i16,
    group_error: i16,
    w: &mut Writer<'_>,
) {
    if version >= 3 {
        w.i32(0);
    }
    let group_error_of = |group: &Group<'_>| match group.topics {
        Some(topics) if !topics.is_empty() => 0,
        _ => group_error,
    };
    match &request.groups {
        Groups::One(group) => {
            write_topics(group, version, error, w);
            if version >= 2 {
                w.i16(group_error_of(group));
            }
        }
        Groups::Many(groups) => {
            w.array_len(Some(groups.len()));
            for group in groups.iter() {
                w.string(group.id);
                write_topics(&group, version, error, w);
                w.i16(group_error_of(&group));
                w.tagged_fields();
            }
        }
    }
    w.tagged_fields();
}

fn write_topics(group: &Group<'_>, version: i16, error: i16, w: &mut Writer<'_>) {
    let topics = group.topics.unwrap_or_else(Entries::empty);
    write_partitioned_denial(w, &topics, version >= TOPIC_IDS, |w, index| {
        w.i32(index);
        w.i64(-1);
        if version >= 5 {
            w.i32(-1);
        }
        w.nullable_string(Some(b""));
        w.i16(error);
        w.tagged_fields();
    });
}
