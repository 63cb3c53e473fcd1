//! The arrays of topics, partitions and groups that requests carry, read in place.
//!
//! An array is read once when its request is parsed, which checks every entry, and is kept
//! as a position in the body with the function that reads one entry; iterating reads the
//! entries again from the borrowed bytes, so nothing is copied or allocated. The topics a
//! request names are also kept at hand as it is parsed ([`KeptTopics`]: up to
//! [`KEPT_TOPICS`] of them, slices of the body), each as its entry is checked: in the body's
//! own topic array ([`Entries::read_keeping`]), in the topic arrays of its groups or
//! transactions ([`Entries::read_checking`]) or among its resources ([`Entries::read_with`]),
//! so judging and logging it walk no array again. This module knows the shapes shared by the
//! messages, not any message's fields.

use crate::wire::{Reader, Uuid, WireError};

/// Error code: the client may not access the topic.
pub const TOPIC_AUTHORIZATION_FAILED: i16 = 29;
/// Error code: the client may not access the group.
pub const GROUP_AUTHORIZATION_FAILED: i16 = 30;
/// Error code: the client may not perform the operation on the cluster.
pub const CLUSTER_AUTHORIZATION_FAILED: i16 = 31;

/// A topic as a request names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TopicRef<'a> {
    /// By name, borrowed from the request.
    Name(&'a [u8]),
    /// By topic id (Fetch v13+, Produce v13+, OffsetCommit and OffsetFetch v10+, DeleteTopics
    /// v6+ when the name is null, and Metadata v10+ when the name is null, or empty with a
    /// non-zero id).
    Id(Uuid),
    /// Topics beyond one literal name: an ACL or ACL filter that may match any topic (a null
    /// name, the resource type ANY, a pattern other than LITERAL, the literal wildcard `*`), or
    /// a config resource of a type this crate does not know. Only a rule without `topic`
    /// allows it.
    Any,
}

/// A config or ACL resource a request names: its type and name as written, and the topic
/// it stands for (`None`: a resource of another kind, which names no topic).
#[derive(Debug, Clone, Copy)]
pub struct Resource<'a> {
    /// The resource type, in the numbering of the request's API.
    pub kind: i8,
    /// The name (empty when the filter's name is null).
    pub name: &'a [u8],
    /// The topic, if it is one.
    pub topic: Option<TopicRef<'a>>,
}

/// The entries of an array in a request body, read in place.
pub struct Entries<'a, T> {
    reader: Reader<'a>,
    count: usize,
    version: i16,
    read: fn(&mut Reader<'a>, i16) -> Result<T, WireError>,
}

impl<T> Clone for Entries<'_, T> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<T> Copy for Entries<'_, T> {}

impl<T> std::fmt::Debug for Entries<'_, T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Entries")
            .field("count", &self.count)
            .finish()
    }
}

fn nothing<T>(_: &mut Reader<'_>, _: i16) -> Result<T, WireError> {
    Err(WireError::Truncated("an entry of an empty array"))
}

impl<'a, T> Entries<'a, T> {
    /// An array without entries.
    pub fn empty() -> Self {
        Entries {
            reader: Reader::new(&[], false),
            count: 0,
            version: 0,
            read: nothing,
        }
    }

    /// Reads an array that may not be null whose entries `read` reads, checking each.
    #[inline(always)]
    pub fn read(
        r: &mut Reader<'a>,
        version: i16,
        what: &'static str,
        read: fn(&mut Reader<'a>, i16) -> Result<T, WireError>,
    ) -> Result<Self, WireError> {
        let count = r.array_len(what)?;
        Self::read_count(r, version, count, read)
    }

    /// Reads an array that may not be null, handing each entry to `each` as it is read.
    #[inline(always)]
    pub fn read_with(
        r: &mut Reader<'a>,
        version: i16,
        what: &'static str,
        read: fn(&mut Reader<'a>, i16) -> Result<T, WireError>,
        each: impl FnMut(T),
    ) -> Result<Self, WireError> {
        let count = r.array_len(what)?;
        Self::read_count_with(r, version, count, read, each)
    }

    /// Reads an array that may be null (`None`), handing each entry to `each` as it is read.
    #[inline(always)]
    pub fn read_nullable_with(
        r: &mut Reader<'a>,
        version: i16,
        what: &'static str,
        read: fn(&mut Reader<'a>, i16) -> Result<T, WireError>,
        each: impl FnMut(T),
    ) -> Result<Option<Self>, WireError> {
        match r.nullable_array(what)? {
            Some(count) => Self::read_count_with(r, version, count, read, each).map(Some),
            None => Ok(None),
        }
    }

    /// Reads an array that may not be null, checking each entry with `check`, which must
    /// read an entry exactly as `read` does (the array is iterated with `read`) and may note
    /// what it meets on the way: the topics of an entry's own arrays, so that no one reads the
    /// array again for them.
    #[inline(always)]
    pub fn read_checking(
        r: &mut Reader<'a>,
        version: i16,
        what: &'static str,
        read: fn(&mut Reader<'a>, i16) -> Result<T, WireError>,
        mut check: impl FnMut(&mut Reader<'a>, i16) -> Result<T, WireError>,
    ) -> Result<Self, WireError> {
        let count = r.array_len(what)?;
        let start = *r;
        for _ in 0..count {
            check(r, version)?;
        }
        Ok(Entries {
            reader: start,
            count,
            version,
            read,
        })
    }

    #[inline(always)]
    fn read_count(
        r: &mut Reader<'a>,
        version: i16,
        count: usize,
        read: fn(&mut Reader<'a>, i16) -> Result<T, WireError>,
    ) -> Result<Self, WireError> {
        Self::read_count_with(r, version, count, read, |_| {})
    }

    /// Reads `count` entries, handing each to `each` as it is read.
    #[inline(always)]
    fn read_count_with(
        r: &mut Reader<'a>,
        version: i16,
        count: usize,
        read: fn(&mut Reader<'a>, i16) -> Result<T, WireError>,
        mut each: impl FnMut(T),
    ) -> Result<Self, WireError> {
        let start = *r;
        for _ in 0..count {
            each(read(r, version)?);
        }
        Ok(Entries {
            reader: start,
            count,
            version,
            read,
        })
    }

    /// The number of entries.
    pub fn len(&self) -> usize {
        self.count
    }

    /// Whether the array has no entries.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// The entries, in order.
    #[inline]
    pub fn iter(&self) -> EntryIter<'a, T> {
        EntryIter {
            reader: self.reader,
            left: self.count,
            version: self.version,
            read: self.read,
        }
    }
}

/// An iterator over [`Entries`].
pub struct EntryIter<'a, T> {
    reader: Reader<'a>,
    left: usize,
    version: i16,
    read: fn(&mut Reader<'a>, i16) -> Result<T, WireError>,
}

impl<T> Clone for EntryIter<'_, T> {
    fn clone(&self) -> Self {
        EntryIter { ..*self }
    }
}

impl<T> Iterator for EntryIter<'_, T> {
    type Item = T;

    #[inline]
    fn next(&mut self) -> Option<T> {
        if self.left == 0 {
            return None;
        }
        match (self.read)(&mut self.reader, self.version) {
            Ok(entry) => {
                self.left -= 1;
                Some(entry)
            }
            // Checked when the request was parsed, so not reached; ending is the safe answer.
            Err(_) => {
                self.left = 0;
                None
            }
        }
    }
}

impl<'a> Entries<'a, TopicEntry<'a>> {
    /// Reads a topic array that may not be null, as [`Entries::read`], keeping each entry's
    /// topic in `kept` as it is read, so that no one reads the array again for its topics.
    #[inline(always)]
    pub fn read_keeping(
        r: &mut Reader<'a>,
        version: i16,
        what: &'static str,
        read: fn(&mut Reader<'a>, i16) -> Result<TopicEntry<'a>, WireError>,
        kept: &mut KeptTopics<'a>,
    ) -> Result<Self, WireError> {
        Self::read_with(r, version, what, read, |entry| kept.push(entry.topic))
    }

    /// Reads a topic array that may be null (`None`), as [`Entries::read_keeping`].
    #[inline(always)]
    pub fn read_nullable_keeping(
        r: &mut Reader<'a>,
        version: i16,
        what: &'static str,
        read: fn(&mut Reader<'a>, i16) -> Result<TopicEntry<'a>, WireError>,
        kept: &mut KeptTopics<'a>,
    ) -> Result<Option<Self>, WireError> {
        Self::read_nullable_with(r, version, what, read, |entry| kept.push(entry.topic))
    }
}

/// The partition indexes of one topic entry.
pub type Partitions<'a> = Entries<'a, i32>;

/// One topic entry: the topic and the partitions the request names for it.
#[derive(Debug, Clone, Copy)]
pub struct TopicEntry<'a> {
    /// The topic.
    pub topic: TopicRef<'a>,
    /// Its partitions (empty for requests that name whole topics).
    pub partitions: Partitions<'a>,
}

/// The topic entries of a request.
pub type Topics<'a> = Entries<'a, TopicEntry<'a>>;

/// A group (OffsetFetch v8+) or transaction (AddPartitionsToTxn v4+) and its topics.
#[derive(Debug, Clone, Copy)]
pub struct Group<'a> {
    /// The group or transactional id.
    pub id: &'a [u8],
    /// Its topics; `None` is null (OffsetFetch: all the group's topics).
    pub topics: Option<Topics<'a>>,
}

/// Reads an `int32` partition index: the entry of `[]int32` partition arrays.
pub fn partition_index(r: &mut Reader<'_>, _version: i16) -> Result<i32, WireError> {
    r.i32("a partition index")
}

/// The topics a request names, across its groups or resources when it has them.
#[derive(Clone)]
pub struct NamedTopics<'a> {
    groups: EntryIter<'a, Group<'a>>,
    current: EntryIter<'a, TopicEntry<'a>>,
    resources: EntryIter<'a, Resource<'a>>,
    single: Option<TopicRef<'a>>,
}

impl<'a> NamedTopics<'a> {
    /// The topics of one array.
    pub fn of(topics: Option<&Topics<'a>>) -> Self {
        NamedTopics {
            groups: Entries::empty().iter(),
            current: topics.map_or_else(|| Entries::empty().iter(), Entries::iter),
            resources: Entries::empty().iter(),
            single: None,
        }
    }

    /// The topics of every group.
    pub fn of_groups(groups: &Entries<'a, Group<'a>>) -> Self {
        NamedTopics {
            groups: groups.iter(),
            ..Self::of(None)
        }
    }

    /// The topics among config or ACL resources.
    pub fn of_resources(resources: &Entries<'a, Resource<'a>>) -> Self {
        NamedTopics {
            resources: resources.iter(),
            ..Self::of(None)
        }
    }

    /// One topic, or none.
    pub fn one(topic: Option<TopicRef<'a>>) -> Self {
        NamedTopics {
            single: topic,
            ..Self::of(None)
        }
    }
}

impl<'a> Iterator for NamedTopics<'a> {
    type Item = TopicRef<'a>;

    #[inline]
    fn next(&mut self) -> Option<TopicRef<'a>> {
        if let Some(topic) = self.single.take() {
            return Some(topic);
        }
        loop {
            if let Some(entry) = self.current.next() {
                return Some(entry.topic);
            }
            let Some(group) = self.groups.next() else {
                return self.resources.find_map(|resource| resource.topic);
            };
            self.current = group
                .topics
                .map_or_else(|| Entries::empty().iter(), |topics| topics.iter());
        }
    }
}

/// How many of the topics a request names [`KeptTopics`] holds at hand.
pub const KEPT_TOPICS: usize = 8;

/// The topics a request names, in order, read once when it is parsed: up to [`KEPT_TOPICS`]
/// of them held inline (names borrowed from the body), or, for a request naming more, a mark
/// that they must be read again from the body.
#[derive(Debug, Clone, Copy)]
pub struct KeptTopics<'a> {
    topics: [TopicRef<'a>; KEPT_TOPICS],
    len: usize,
    all_kept: bool,
}

impl<'a> KeptTopics<'a> {
    /// No topic.
    pub fn none() -> Self {
        KeptTopics {
            topics: [TopicRef::Any; KEPT_TOPICS],
            len: 0,
            all_kept: true,
        }
    }

    /// Keeps `topic` after those held, or marks that there are more than fit.
    #[inline]
    pub fn push(&mut self, topic: TopicRef<'a>) {
        match self.topics.get_mut(self.len) {
            Some(slot) => {
                *slot = topic;
                self.len += 1;
            }
            None => self.all_kept = false,
        }
    }

    /// Keeps the topic `resource` stands for, if any, as [`KeptTopics::push`].
    #[inline]
    pub fn push_resource(&mut self, resource: &Resource<'a>) {
        if let Some(topic) = resource.topic {
            self.push(topic);
        }
    }

    /// The topics, when all of them are held; `None` when there are more than
    /// [`KEPT_TOPICS`].
    pub fn all(&self) -> Option<&[TopicRef<'a>]> {
        self.all_kept.then(|| &self.topics[..self.len])
    }
}

/// The topics a request names, from [`KeptTopics`] or, past those, read again from the body.
#[derive(Clone)]
pub enum RequestTopics<'k, 'a> {
    /// Held since the request was parsed.
    Kept(std::slice::Iter<'k, TopicRef<'a>>),
    /// Read again from the body.
    Read(NamedTopics<'a>),
}

impl<'a> Iterator for RequestTopics<'_, 'a> {
    type Item = TopicRef<'a>;

    #[inline]
    fn next(&mut self) -> Option<TopicRef<'a>> {
        match self {
            RequestTopics::Kept(kept) => kept.next().copied(),
            RequestTopics::Read(read) => read.next(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn topic<'a>(r: &mut Reader<'a>, version: i16) -> Result<TopicEntry<'a>, WireError> {
        let name = r.string("name")?;
        let partitions = Entries::read(r, version, "partitions", partition_index)?;
        Ok(TopicEntry {
            topic: TopicRef::Name(name),
            partitions,
        })
    }

    #[test]
    fn entries_are_checked_once_and_read_in_place() {
        let body =
            b"\x00\x00\x00\x02\x00\x01a\x00\x00\x00\x01\x00\x00\x00\x07\x00\x01b\x00\x00\x00\x00!";
        let mut r = Reader::new(body, false);
        let topics = Entries::read(&mut r, 0, "topics", topic).unwrap();
        assert_eq!(r.remaining(), 1);
        let entries: Vec<_> = topics.iter().collect();
        assert_eq!(entries.len(), 2);
        assert_eq!(entries[0].topic, TopicRef::Name(b"a"));
        assert_eq!(entries[0].partitions.iter().collect::<Vec<_>>(), [7]);
        assert!(entries[1].partitions.is_empty());
        let TopicRef::Name(name) = entries[0].topic else {
            unreachable!()
        };
        assert_eq!(name.as_ptr(), body[6..].as_ptr(), "borrowed, not copied");
    }

    #[test]
    fn a_request_keeps_up_to_eight_topics_and_marks_more() {
        let names: Vec<Vec<u8>> = (0..=KEPT_TOPICS).map(|i| vec![b'a' + i as u8]).collect();
        let refs = || names.iter().map(|name| TopicRef::Name(name));
        fn kept_of<'a>(named: &mut dyn Iterator<Item = TopicRef<'a>>) -> Option<Vec<TopicRef<'a>>> {
            let mut kept = KeptTopics::none();
            named.for_each(|topic| kept.push(topic));
            kept.all().map(<[_]>::to_vec)
        }
        assert_eq!(
            kept_of(&mut refs().take(KEPT_TOPICS)),
            Some(refs().take(KEPT_TOPICS).collect())
        );
        assert_eq!(kept_of(&mut std::iter::empty()), Some(Vec::new()));
        assert_eq!(kept_of(&mut refs()), None);
    }

    #[test]
    fn a_truncated_entry_fails_the_read() {
        let body = b"\x00\x00\x00\x02\x00\x01a\x00\x00\x00\x00";
        assert_eq!(
            Entries::read(&mut Reader::new(body, false), 0, "topics", topic).unwrap_err(),
            WireError::Truncated("name")
        );
    }
}
