//! AddPartitionsToTxn (key 24), v0 to v5: the topics a transactional producer adds to its
//! transaction; from v4 a broker sends several transactions at once.

use super::{partitioned_topic, PartitionedTopic};
use crate::topics::{partition_index, Entries, Group, NamedTopics};
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

/// Reads an AddPartitionsToTxn request body.
pub fn parse<'a>(r: &mut Reader<'a>, version: i16) -> Result<Request<'a>, WireError> {
    let transactions = match version >= TRANSACTIONS {
        true => Transactions::Many(Entries::read(r, version, "the transactions", transaction)?),
        false => {
            let id = r.string("the transactional id")?;
            r.i64("the producer id")?;
            r.i16("the producer epoch")?;
            let topics = Entries::read(r, version, "the topics", partitioned_topic::<Topic>)?;
            Transactions::One(Group {
                id,
                topics: Some(topics),
            })
        }
    };
    r.tagged_fields()?;
    Ok(Request { transactions })
}

fn transaction<'a>(r: &mut Reader<'a>, version: i16) -> Result<Group<'a>, WireError> {
    let id = r.string("the transactional id")?;
    r.i64("the producer id")?;
    r.i16("the producer epoch")?;
    r.bool("verify only")?;
    let topics = Entries::read(r, version, "the topics", partitioned_topic::<Topic>)?;
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
