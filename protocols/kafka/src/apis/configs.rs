//! The config APIs: DescribeConfigs (key 32, v1 to v4), AlterConfigs (key 33, v0 to v2) and
//! IncrementalAlterConfigs (key 44, v0 to v1): the resources whose configs a client reads or
//! changes, and the response that denies it.
//!
//! A resource of type TOPIC (2) names that topic; BROKER (4), BROKER_LOGGER (8),
//! CLIENT_METRICS (16) and GROUP (32) name none; any other type is judged as naming topics
//! beyond one name ([`TopicRef::Any`]), so only a rule without `topic` allows it. A denial
//! fails each topic resource with TOPIC_AUTHORIZATION_FAILED (29) and any other with
//! CLUSTER_AUTHORIZATION_FAILED (31).

use crate::api::{DESCRIBE_CONFIGS, INCREMENTAL_ALTER_CONFIGS};
use crate::topics::{
    Entries, KeptTopics, Resource, TopicRef, CLUSTER_AUTHORIZATION_FAILED,
    TOPIC_AUTHORIZATION_FAILED,
};
use crate::wire::{Reader, WireError, Writer};

/// The config resource type of a topic.
pub const TOPIC: i8 = 2;

/// The config resource types that are no topic: broker, broker logger, client metrics, group.
const NOT_TOPICS: [i8; 4] = [4, 8, 16, 32];

/// A DescribeConfigs, AlterConfigs or IncrementalAlterConfigs request.
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    /// The resources read or changed.
    pub resources: Entries<'a, Resource<'a>>,
}

/// Reads the body of a request of the config API `key`, keeping the topics it names in `kept`
/// as they are read.
pub fn parse<'a>(
    r: &mut Reader<'a>,
    key: i16,
    version: i16,
    kept: &mut KeptTopics<'a>,
) -> Result<Request<'a>, WireError> {
    let read = match key {
        DESCRIBE_CONFIGS => described,
        INCREMENTAL_ALTER_CONFIGS => altered_incrementally,
        _ => altered,
    };
    let resources = Entries::read_with(r, version, "the resources", read, |resource| {
        kept.push_resource(&resource)
    })?;
    match key {
        DESCRIBE_CONFIGS => {
            r.bool("include synonyms")?;
            if version >= 3 {
                r.bool("include documentation")?;
            }
        }
        _ => {
            r.bool("validate only")?;
        }
    }
    r.tagged_fields()?;
    Ok(Request { resources })
}

fn resource<'a>(r: &mut Reader<'a>) -> Result<Resource<'a>, WireError> {
    let kind = r.i8("a resource type")?;
    let name = r.string("a resource name")?;
    let topic = match kind {
        TOPIC => Some(TopicRef::Name(name)),
        kind if NOT_TOPICS.contains(&kind) => None,
        _ => Some(TopicRef::Any),
    };
    Ok(Resource { kind, name, topic })
}

fn described<'a>(r: &mut Reader<'a>, _version: i16) -> Result<Resource<'a>, WireError> {
    let resource = resource(r)?;
    r.skip_string_array("the configuration keys")?;
    r.tagged_fields()?;
    Ok(resource)
}

fn altered<'a>(r: &mut Reader<'a>, _version: i16) -> Result<Resource<'a>, WireError> {
    let resource = resource(r)?;
    for _ in 0..r.array_len("the configs")? {
        r.string("a config name")?;
        r.nullable_string("a config value")?;
        r.tagged_fields()?;
    }
    r.tagged_fields()?;
    Ok(resource)
}

fn altered_incrementally<'a>(r: &mut Reader<'a>, _version: i16) -> Result<Resource<'a>, WireError> {
    let resource = resource(r)?;
    for _ in 0..r.array_len("the configs")? {
        r.string("a config name")?;
        r.i8("a config operation")?;
        r.nullable_string("a config value")?;
        r.tagged_fields()?;
    }
    r.tagged_fields()?;
    Ok(resource)
}

/// Writes the response body of the config API `key` that fails every resource of `request`.
pub fn write_denial(request: &Request<'_>, key: i16, w: &mut Writer<'_>) {
    w.i32(0);
    w.array_len(Some(request.resources.len()));
    for resource in request.resources.iter() {
        w.i16(match resource.topic {
            Some(_) => TOPIC_AUTHORIZATION_FAILED,
            None => CLUSTER_AUTHORIZATION_FAILED,
        });
        w.nullable_string(None);
        w.i8(resource.kind);
        w.string(resource.name);
        if key == DESCRIBE_CONFIGS {
            w.array_len(Some(0));
        }
        w.tagged_fields();
    }
    w.tagged_fields();
}
