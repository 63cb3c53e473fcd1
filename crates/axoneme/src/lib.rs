//! Axoneme, an L7 policy proxy for non-HTTP protocols: the agent behind `axoneme run`.
//!
//! The agent is thin glue around sans-IO parts, laid out by concept:
//! - [`proxy`]: listeners, workers, connections and their sockets: the decision on each
//!   connection and the bytes it moves through the datapath engine;
//! - [`control`]: the agent itself ([`Agent`]), its policy state, the REST API, the command
//!   line's client side and the watch of its files;
//! - [`telemetry`]: the access log, its live view (the monitor), metrics and loss reports;
//! - [`redirect`]: the transparent redirection rules, kept in step with policy;
//! - [`suggest`]: least-privilege policies written from access logs (`axoneme policy suggest`);
//! - [`config`]: the configuration file, read and validated.
//!
//! Protocol logic lives in the protocol crates, policy logic in `axoneme-policy`.

pub mod config;
pub mod control;
pub mod proxy;
pub mod redirect;
pub mod suggest;
pub mod telemetry;
#[cfg(test)]
mod testing;

use std::sync::Arc;

use axoneme_sdk::{Protocol, Registry};

use crate::config::ProtocolsConfig;
pub use crate::control::agent::{Agent, ListenerError, ListenerStatus};

/// The protocols built into the `axoneme` binary, with their settings.
pub fn builtin_protocols(settings: &ProtocolsConfig) -> Registry {
    let mut registry = Registry::new();
    let protocols: [Arc<dyn Protocol>; 4] = [
        Arc::new(axoneme_r2d2::R2d2),
        Arc::new(axoneme_memcache::Memcache::new(
            settings.memcache.max_value_bytes,
        )),
        Arc::new(axoneme_cassandra::Cassandra::new(
            settings.cassandra.max_frame_bytes,
        )),
        Arc::new(axoneme_kafka::Kafka::new(settings.kafka.max_request_bytes)),
    ];
    for protocol in protocols {
        registry
            .register(protocol)
            .expect("built-in protocol names are distinct");
    }
    registry
}
