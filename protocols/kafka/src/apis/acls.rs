//! The ACL APIs: DescribeAcls (key 29), CreateAcls (key 30) and DeleteAcls (key 31), v1 to
//! v3: the ACLs a client creates, or the filters of those it lists or deletes, and the
//! response that denies it.
//!
//! An ACL or filter names a topic when its resource type is TOPIC (2), its pattern type
//! LITERAL (3) and its name one topic's (not null, not the wildcard `*`). One that may
//! match topics beyond one name (resource type ANY or UNKNOWN, a topic pattern ANY, MATCH or
//! PREFIXED, a null name, the wildcard) is judged as naming [`TopicRef::Any`], which only a
//! rule without `topic` allows; the other resource types (group, cluster, transactional id,
//! delegation token, user) name no topic. Kafka's authorizer asks the cluster for these
//! APIs, so a denial answers CLUSTER_AUTHORIZATION_FAILED (31).

use crate::api::{CREATE_ACLS, DESCRIBE_ACLS};
use crate::topics::{Entries, KeptTopics, Resource, TopicRef, CLUSTER_AUTHORIZATION_FAILED};
use crate::wire::{Reader, WireError, Writer};

/// The ACL resource type of a topic.
pub const TOPIC: i8 = 2;

/// The ACL resource types that are no topic: group, cluster, transactional id, delegation
/// token, user.
const NOT_TOPICS: [i8; 5] = [3, 4, 5, 6, 7];

/// The pattern type that matches one name.
const LITERAL: i8 = 3;

/// The name that matches every resource of its type.
const WILDCARD: &[u8] = b"*";

/// An ACL request.
#[derive(Debug, Clone, Copy)]
pub enum Request<'a> {
    /// DescribeAcls: one filter.
    Describe(Resource<'a>),
    /// CreateAcls: the ACLs created; DeleteAcls: the filters of those deleted.
    Many(Entries<'a, Resource<'a>>),
}

/// Reads the body of a request of the ACL API `key`, keeping the topics it names in `kept` as
/// they are read.
pub fn parse<'a>(
    r: &mut Reader<'a>,
    key: i16,
    version: i16,
    kept: &mut KeptTopics<'a>,
) -> Result<Request<'a>, WireError> {
    let mut keep = |resource: Resource<'a>| kept.push_resource(&resource);
    let request = match key {
        DESCRIBE_ACLS => {
            let filter = filter(r, version)?;
            keep(filter);
            Request::Describe(filter)
        }
        CREATE_ACLS => Request::Many(Entries::read_with(
            r,
            version,
            "the creations",
            creation,
            keep,
        )?),
        _ => Request::Many(Entries::read_with(
            r,
            version,
            "the filters",
            deletion_filter,
            keep,
        )?),
    };
    r.tagged_fields()?;
    Ok(request)
}

/// The resource of an ACL or filter: its type, name and pattern type.
fn resource(kind: i8, name: Option<&[u8]>, pattern: i8) -> Resource<'_> {
    let topic = match (kind, name) {
        (TOPIC, Some(name)) if pattern == LITERAL && name != WILDCARD => Some(TopicRef::Name(name)),
        (kind, _) if NOT_TOPICS.contains(&kind) => None,
        _ => Some(TopicRef::Any),
    };
    Resource {
        kind,
        name: name.unwrap_or_default(),
        topic,
    }
}

fn pattern(r: &mut Reader<'_>, version: i16) -> Result<i8, WireError> {
    match version {
        0 => Ok(LITERAL),
        _ => r.i8("a pattern type"),
    }
}

fn creation<'a>(r: &mut Reader<'a>, version: i16) -> Result<Resource<'a>, WireError> {
    let kind = r.i8("a resource type")?;
    let name = r.string("a resource name")?;
    let pattern = pattern(r, version)?;
    r.string("a principal")?;
    r.string("a host")?;
    r.i8("an operation")?;
    r.i8("a permission type")?;
    r.tagged_fields()?;
    Ok(resource(kind, Some(name), pattern))
}

/// The fields of a filter, without the tagged fields that end an entry of DeleteAcls.
fn filter<'a>(r: &mut Reader<'a>, version: i16) -> Result<Resource<'a>, WireError> {
    let kind = r.i8("a resource type filter")?;
    let name = r.nullable_string("a resource name filter")?;
    let pattern = pattern(r, version)?;
    r.nullable_string("a principal filter")?;
    r.nullable_string("a host filter")?;
    r.i8("an operation")?;
    r.i8("a permission type")?;
    Ok(resource(kind, name, pattern))
}

fn deletion_filter<'a>(r: &mut Reader<'a>, version: i16) -> Result<Resource<'a>, WireError> {
    let filter = filter(r, version)?;
    r.tagged_fields()?;
    Ok(filter)
}

/// Writes the response body of the ACL API `key` that fails `request` (each creation or
/// filter) with CLUSTER_AUTHORIZATION_FAILED.
pub fn write_denial(request: &Request<'_>, key: i16, w: &mut Writer<'_>) {
    w.i32(0);
    match request {
        Request::Describe(_) => {
            w.i16(CLUSTER_AUTHORIZATION_FAILED);
            w.nullable_string(None);
            w.array_len(Some(0));
        }
        Request::Many(entries) => {
            w.array_len(Some(entries.len()));
            for _ in entries.iter() {
                w.i16(CLUSTER_AUTHORIZATION_FAILED);
                w.nullable_string(None);
                if key != CREATE_ACLS {
                    w.array_len(Some(0));
                }
                w.tagged_fields();
            }
        }
    }
    w.tagged_fields();
}
