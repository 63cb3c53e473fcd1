//! AddPartitionsToTxn (key 24), v0 to v5: the topics a transactional producer adds to its
//! transaction; from v4 a broker sends several transactions at once.

use super::{partitioned_topic, PartitionedTopic};
use crate::topics::{partition_index, Entries, Group, KeptTopics, NamedTopics, TopicEntry};
use crate::wire::{Reader, WireError};

/// The first version carrying several transactions.
const TRANSACTIONS: i16 = 4;

/// The transactions of an AddPartitionsToTxn request.
#[derive(Debug, Clone, Copy)]
pub enum Transactions<'a> {
    /// v0 to v3: one transaction.
    One(Group<'a>),
    /// v4 and later.
    Many(Entries<'a, Group<'a>>),
}

/// An AddPartitionsToTxn request.
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    /// Each transaction (its transactional id) with its topics.
    pub transactions: Transactions<'a>,
}

impl<'a> Request<'a> {
    /// The topics named, in every transaction.
    pub fn topics(&self) -> NamedTopics<'a> {
        match &self.transactions {
            Transactions::One(group) => NamedTopics::of(group.topics.as_ref()),
            Transactions::Many(groups) => NamedTopics::of_groups(groups),
        }
    }
}

/// Reads an AddPartitionsToTxn request body, keeping the topics it names in `kept` as they
/// are read.
pub fn parse<'a>(
    r: &mut Reader<'a>,
    version: i16,
    kept: &mut KeptTopics<'a>,
) -> Result<Request<'a>, WireError> {
    let transactions = match version >= TRANSACTIONS {
        true => Transactions::Many(Entries::read_checking(
            r,
            version,
            "the transactions",
            transaction,
            |r, version| read_transaction(r, version, |entry| kept.push(entry.topic)),
        )?),
        false => {
            let id = r.string("the transactional id")?;
            r.i64("the producer id")?;
            r.i16("the producer epoch")?;
            let topic = partitioned_topic::<Topic>;
            let topics = Entries::read_keeping(r, version, "the topics", topic, kept)?;
            Transactions::One(Group {
                id,
                topics: Some(topics),
            })
        }
    };
    r.tagged_fields()?;
    Ok(Request { transactions })
}

/// Reads one transaction (v4+), as iterating the transactions does.
fn transaction<'a>(r: &mut Reader<'a>, version: i16) -> Result<Group<'a>, WireError> {
    read_transaction(r, version, |_| {})
}

/// Reads one transaction (v4+), handing each of its topic entries to `each` as it is read.
#[inline(always)]
fn read_transaction<'a>(
    r: &mut Reader<'a>,
    version: i16,
    each: impl FnMut(TopicEntry<'a>),
) -> Result<Group<'a>, WireError> {
    let id = r.string("the transactional id")?;
    r.i64("the producer id")?;
    r.i16("the producer epoch")?;
    r.bool("verify only")?;
    let topic = partitioned_topic::<Topic>;
    let topics = Entries::read_with(r, version, "the topics", topic, each)?;
    r.tagged_fields()?;
    Ok(Group {
        id,
        topics: Some(topics),
    })
}

/// AddPartitionsToTxn's topic entries.
struct Topic;

impl PartitionedTopic for Topic {
    #[inline]
    fn partition(r: &mut Reader<'_>, version: i16) -> Result<i32, WireError> {
        partition_index(r, version)
    }
}
