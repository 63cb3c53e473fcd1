//! Fetch (key 1), v4 to v17: the topics a consumer or follower reads, and the response that
//! denies it.
//!
//! v13 and later name topics by id. Forgotten topics (v7+) leave a fetch session and read
//! nothing, so they are not among the topics the request names, as for Kafka's authorizer;
//! the topics an incremental fetch reads through its session are the business of
//! [`crate::fetch_sessions`]. A denial of a full fetch fails every partition and answers with
//! session id 0; a denial of an incremental one answers FETCH_SESSION_ID_NOT_FOUND (70), as a
//! broker that does not know the session does: either way the client starts over with a full
//! fetch.

use crate::topics::{partition_index, Entries, KeptTopics, Topics};
use crate::wire::{Reader, WireError, Writer};

use super::{partitioned_topic, write_partitioned_denial, PartitionedTopic};

/// The first version naming topics by id.
const TOPIC_IDS: i16 = 13;

/// The first version with fetch sessions.
const SESSIONS: i16 = 7;

/// The epoch of a full fetch that creates a session.
const INITIAL_EPOCH: i32 = 0;

/// The epoch of a full fetch that closes its session and creates none (and of every fetch
/// before v7).
const FINAL_EPOCH: i32 = -1;

/// Error code: the broker does not know the fetch session.
pub const FETCH_SESSION_ID_NOT_FOUND: i16 = 70;

/// A Fetch request.
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    /// The fetch session (0: none).
    pub session_id: i32,
    /// The session epoch: 0 creates a session, -1 uses none, any other is incremental.
    pub epoch: i32,
    /// The topics and partitions read.
    pub topics: Topics<'a>,
    /// The topics and partitions an incremental fetch takes out of its session.
    pub forgotten: Topics<'a>,
}

impl Request<'_> {
    /// Whether the fetch is incremental: the broker also reads the partitions its session
    /// holds.
    pub fn is_incremental(&self) -> bool {
        self.epoch != INITIAL_EPOCH && self.epoch != FINAL_EPOCH
    }

    /// Whether the fetch asks the broker for a new session.
    pub fn creates_session(&self) -> bool {
        self.epoch == INITIAL_EPOCH
    }
}

/// Reads a Fetch request body, keeping the topics it names in `kept` as they are read.
pub fn parse<'a>(
    r: &mut Reader<'a>,
    version: i16,
    kept: &mut KeptTopics<'a>,
) -> Result<Request<'a>, WireError> {
    // The replica id (up to v14), the maximum wait, the minimum and maximum bytes, the
    // isolation level.
    let unread = if version <= 14 { 17 } else { 13 };
    r.skip(unread, "the fetch's limits")?;
    let (mut session_id, mut epoch) = (0, FINAL_EPOCH);
    if version >= SESSIONS {
        session_id = r.i32("the session id")?;
        epoch = r.i32("the session epoch")?;
    }
    let topics = Entries::read_keeping(r, version, "the topics", partitioned_topic::<Topic>, kept)?;
    let forgotten = match version >= SESSIONS {
        true => Entries::read(
            r,
            version,
            "the forgotten topics",
            partitioned_topic::<Forgotten>,
        )?,
        false => Entries::empty(),
    };
    if version >= 11 {
        r.string("the rack id")?;
    }
    r.tagged_fields()?;
    Ok(Request {
        session_id,
        epoch,
        topics,
        forgotten,
    })
}

/// Fetch's topic entries, by id from v13.
struct Topic;

impl PartitionedTopic for Topic {
    const IDS_FROM: i16 = TOPIC_IDS;

    #[inline]
    fn partition(r: &mut Reader<'_>, version: i16) -> Result<i32, WireError> {
        let index = r.i32("a partition index")?;
        // The current leader epoch (v9+), the fetch offset, the last fetched epoch (v12+),
        // the log start offset (v5+), the partition's maximum bytes.
        let unread = 8
            + 4
            + if version >= 9 { 4 } else { 0 }
            + if version >= 12 { 4 } else { 0 }
            + if version >= 5 { 8 } else { 0 };
        r.skip(unread, "a fetch partition's offsets")?;
        r.tagged_fields()?;
        Ok(index)
    }
}

/// Fetch's forgotten topic entries, by id from v13.
struct Forgotten;

impl PartitionedTopic for Forgotten {
    const IDS_FROM: i16 = TOPIC_IDS;
    const PARTITIONS: &'static str = "the forgotten partitions";

    #[inline]
    fn partition(r: &mut Reader<'_>, version: i16) -> Result<i32, WireError> {
        partition_index(r, version)
    }
}

/// Writes the response body that fails every partition of a full `request` with `error`, or
/// an incremental one with FETCH_SESSION_ID_NOT_FOUND.
pub fn write_denial(request: &Request<'_>, version: i16, error: i16, w: &mut Writer<'_>) {
    w.i32(0);
    if request.is_incremental() {
        w.i16(FETCH_SESSION_ID_NOT_FOUND);
        w.i32(0);
        w.array_len(Some(0));
        w.tagged_fields();
        return;
    }
    if version >= SESSIONS {
        w.i16(0);
        w.i32(0);
    }
    write_partitioned_denial(w, &request.topics, version >= TOPIC_IDS, |w, index| {
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
    });
    w.tagged_fields();
}
