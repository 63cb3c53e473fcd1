//! Kafka L7 policy for Axoneme: Cilium's `rules.kafka` over every request version a Kafka 4.x
//! broker accepts.
//!
//! [`header`] frames the byte streams by their 4-byte length and reads request headers;
//! [`api`] is the table of API keys (Kafka's names, the names policies use, versions,
//! flexible versions); [`apis`] reads the bodies of the requests that name topics, in place,
//! and writes the responses that deny them; [`rules`] compiles Cilium's `role`, `apiKey`,
//! `apiVersion`, `clientID` and `topic` keys and judges requests as Cilium did. [`wire`]
//! holds Kafka's primitive types and [`topics`] the arrays of topics and partitions.
//! Everything here is sans-IO: a function of the bytes at hand.

pub mod api;
pub mod apis;
mod error;
pub mod header;
pub mod rules;
pub mod topics;
pub mod wire;

pub use api::Api;
pub use apis::{Body, Denial, Request};
pub use error::Error;
pub use header::RequestHeader;
pub use rules::RuleSet;
pub use topics::TopicRef;
