//! Kafka requests and responses for the allocation test and the bench, written byte by byte
//! from Kafka 4.x's message definitions (`ProduceRequest.json`, `FetchResponse.json`, ...),
//! not with the crate they exercise: Produce v9, Fetch v12 (topics by name) and v16 (by id),
//! Metadata v12, each flexible (request header v2, response header v1).

/// Kafka's API keys of the messages here.
pub const PRODUCE: i16 = 0;
pub const FETCH: i16 = 1;
pub const METADATA: i16 = 3;

/// A message being written.
#[derive(Default)]
pub struct Out(pub Vec<u8>);

impl Out {
    pub fn i8(&mut self, v: i8) -> &mut Self {
        self.0.extend_from_slice(&v.to_be_bytes());
        self
    }
    pub fn i16(&mut self, v: i16) -> &mut Self {
        self.0.extend_from_slice(&v.to_be_bytes());
        self
    }
    pub fn i32(&mut self, v: i32) -> &mut Self {
        self.0.extend_from_slice(&v.to_be_bytes());
        self
    }
    pub fn i64(&mut self, v: i64) -> &mut Self {
        self.0.extend_from_slice(&v.to_be_bytes());
        self
    }
    pub fn raw(&mut self, v: &[u8]) -> &mut Self {
        self.0.extend_from_slice(v);
        self
    }
    /// An unsigned varint.
    pub fn uvarint(&mut self, mut v: u64) -> &mut Self {
        while v >= 0x80 {
            self.0.push(v as u8 | 0x80);
            v >>= 7;
        }
        self.0.push(v as u8);
        self
    }
    /// A compact string or compact bytes: length + 1 as a varint, then the bytes.
    pub fn compact(&mut self, v: &[u8]) -> &mut Self {
        self.uvarint(v.len() as u64 + 1).raw(v)
    }
    /// A compact nullable string, null.
    pub fn null(&mut self) -> &mut Self {
        self.uvarint(0)
    }
    /// A compact array's length.
    pub fn array(&mut self, n: usize) -> &mut Self {
        self.uvarint(n as u64 + 1)
    }
    /// An empty set of tagged fields.
    pub fn tags(&mut self) -> &mut Self {
        self.uvarint(0)
    }
}

/// A request frame: the length, request header v2 (client id `outpost-7`), then the body.
pub fn request(
    key: i16,
    version: i16,
    correlation_id: i32,
    body: impl FnOnce(&mut Out),
) -> Vec<u8> {
    let mut m = Out::default();
    m.i16(key).i16(version).i32(correlation_id);
    m.i16(9).raw(b"outpost-7").tags();
    body(&mut m);
    framed(m.0)
}

/// A response frame: the length, response header v1, then the body.
pub fn response(correlation_id: i32, body: impl FnOnce(&mut Out)) -> Vec<u8> {
    let mut m = Out::default();
    m.i32(correlation_id).tags();
    body(&mut m);
    framed(m.0)
}

fn framed(message: Vec<u8>) -> Vec<u8> {
    let mut frame = (message.len() as i32).to_be_bytes().to_vec();
    frame.extend_from_slice(&message);
    frame
}

/// Produce v9 with `acks` -1 writing `records` (a record batch, passed unread) to partition 0
/// of `topic`.
pub fn produce(correlation_id: i32, topic: &str, records: &[u8]) -> Vec<u8> {
    request(PRODUCE, 9, correlation_id, |m| {
        m.null().i16(-1).i32(30_000); // transactional id, acks, timeout
        m.array(1).compact(topic.as_bytes());
        m.array(1).i32(0).compact(records).tags();
        m.tags().tags();
    })
}

/// The Produce v9 response: partition 0 of `topic` written at offset 42.
pub fn produce_response(correlation_id: i32, topic: &str) -> Vec<u8> {
    response(correlation_id, |m| {
        m.array(1).compact(topic.as_bytes());
        m.array(1).i32(0).i16(0).i64(42).i64(-1).i64(0); // index, error, offsets
        m.array(0).null().tags(); // record errors, error message
        m.tags();
        m.i32(0).tags(); // throttle time
    })
}

/// A topic as a Fetch names it: by name (v12) or by id (v13+).
#[derive(Clone, Copy)]
pub enum Topic<'a> {
    Name(&'a str),
    Id([u8; 16]),
}

impl Topic<'_> {
    fn write(self, m: &mut Out) {
        match self {
            Topic::Name(name) => m.compact(name.as_bytes()),
            Topic::Id(id) => m.raw(&id),
        };
    }

    /// The Fetch version that names the topic this way.
    pub fn fetch_version(self) -> i16 {
        match self {
            Topic::Name(_) => 12,
            Topic::Id(_) => 16,
        }
    }
}

/// A Fetch (v12 by name, v16 by id) of partition 0 of `topic` from offset 0, outside a fetch
/// session.
pub fn fetch(correlation_id: i32, topic: Topic<'_>) -> Vec<u8> {
    fetch_in_session(correlation_id, topic, Some(topic), 0, -1)
}

/// A Fetch (of `version_of`'s version) in fetch session `session_id` at `epoch`, of partition
/// 0 of `topic` from offset 0, or of no partition (an incremental fetch with nothing new).
pub fn fetch_in_session(
    correlation_id: i32,
    version_of: Topic<'_>,
    topic: Option<Topic<'_>>,
    session_id: i32,
    epoch: i32,
) -> Vec<u8> {
    let version = version_of.fetch_version();
    request(FETCH, version, correlation_id, |m| {
        if version <= 14 {
            m.i32(-1); // replica id
        }
        m.i32(500).i32(1).i32(52_428_800).i8(0); // max wait, min bytes, max bytes, isolation
        m.i32(session_id).i32(epoch);
        match topic {
            None => {
                m.array(0);
            }
            Some(topic) => {
                m.array(1);
                topic.write(m);
                m.array(1)
                    .i32(0)
                    .i32(-1)
                    .i64(0)
                    .i32(-1)
                    .i64(-1)
                    .i32(1_048_576)
                    .tags();
                m.tags();
            }
        }
        m.array(0).compact(b"").tags(); // forgotten topics, rack id
    })
}

/// The Fetch response (of `topic`'s version) carrying `records` for partition 0 of `topic`.
pub fn fetch_response(correlation_id: i32, topic: Topic<'_>, records: &[u8]) -> Vec<u8> {
    fetch_response_in_session(correlation_id, topic, records, 0)
}

/// The Fetch response of fetch session `session_id` carrying `records` for partition 0 of
/// `topic`.
pub fn fetch_response_in_session(
    correlation_id: i32,
    topic: Topic<'_>,
    records: &[u8],
    session_id: i32,
) -> Vec<u8> {
    response(correlation_id, |m| {
        m.i32(0).i16(0).i32(session_id); // throttle time, error, session id
        m.array(1);
        topic.write(m);
        m.array(1).i32(0).i16(0).i64(1).i64(1).i64(0); // index, error, watermarks
        m.array(0).i32(-1).compact(records).tags(); // aborted, preferred replica, records
        m.tags().tags();
    })
}

/// Metadata v12 for `topics`, with or without leave to create the missing ones.
pub fn metadata(correlation_id: i32, topics: &[&str], allow_auto_topic_creation: bool) -> Vec<u8> {
    request(METADATA, 12, correlation_id, |m| {
        m.array(topics.len());
        for topic in topics {
            m.raw(&[0; 16]).compact(topic.as_bytes()).tags();
        }
        m.i8(allow_auto_topic_creation.into()).i8(0).tags();
    })
}

/// Metadata v12 asking for every topic (a null topic array), without leave to create any.
pub fn metadata_for_all_topics(correlation_id: i32) -> Vec<u8> {
    request(METADATA, 12, correlation_id, |m| {
        m.null().i8(0).i8(0).tags();
    })
}

/// The Metadata v12 response: one broker, and `topics` by name and id, each with partition 0
/// led by that broker.
pub fn metadata_response(correlation_id: i32, topics: &[(&str, [u8; 16])]) -> Vec<u8> {
    metadata_response_failing(correlation_id, topics, &[])
}

/// [`metadata_response`] with, after `topics`, an entry for each of `failed` with error
/// TOPIC_AUTHORIZATION_FAILED (29): the name, a zero id, not internal, no partitions,
/// authorized operations not reported.
pub fn metadata_response_failing(
    correlation_id: i32,
    topics: &[(&str, [u8; 16])],
    failed: &[&str],
) -> Vec<u8> {
    response(correlation_id, |m| {
        m.i32(0); // throttle time
        m.array(1)
            .i32(1)
            .compact(b"kafka-0")
            .i32(9092)
            .null()
            .tags();
        m.compact(b"empire").i32(1); // cluster id, controller
        m.array(topics.len() + failed.len());
        for (name, id) in topics {
            m.i16(0).compact(name.as_bytes()).raw(id).i8(0);
            m.array(1).i16(0).i32(0).i32(1).i32(0);
            m.array(1).i32(1).array(1).i32(1).array(0).tags(); // replicas, isr, offline
            m.i32(i32::MIN).tags(); // authorized operations
        }
        for name in failed {
            m.i16(29).compact(name.as_bytes()).raw(&[0; 16]).i8(0);
            m.array(0).i32(i32::MIN).tags();
        }
        m.tags();
    })
}
