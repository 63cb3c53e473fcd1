//! Axoneme, an L7 policy proxy for non-HTTP protocols: the runtime behind `axoneme run`.
//!
//! The runtime is thin glue around sans-IO parts: it reads the configuration ([`config`]), keeps
//! the compiled policy in force ([`state`]), accepts connections ([`listener`]), moves their
//! bytes through the datapath engine ([`connection`]), and writes the access log
//! ([`access_log`]). Protocol logic lives in the protocol crates, policy logic in
//! `axoneme-policy`.

pub mod access_log;
pub mod config;
mod connection;
mod listener;
pub mod state;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;

use anyhow::Context as _;
use axoneme_datapath::Limits;
use axoneme_sdk::{AccessLog, LogEntry, Protocol, Registry};
use tokio::task::JoinHandle;

use crate::access_log::JsonAccessLog;
use crate::config::{Config, ProtocolsConfig};
use crate::connection::{Route, Shared};
use crate::state::{PolicySources, PolicyState};

/// The protocols built into the `axoneme` binary, with their settings.
pub fn builtin_protocols(settings: &ProtocolsConfig) -> Registry {
    let mut registry = Registry::new();
    let protocols: [Arc<dyn Protocol>; 2] = [
        Arc::new(axoneme_r2d2::R2d2),
        Arc::new(axoneme_memcache::Memcache::new(
            settings.memcache.max_value_bytes,
        )),
    ];
    for protocol in protocols {
        registry
            .register(protocol)
            .expect("built-in protocol names are distinct");
    }
    registry
}

/// An access log that records nothing, for configurations without `accessLog`.
struct NoAccessLog;

impl AccessLog for NoAccessLog {
    fn log(&self, _: &LogEntry<'_>) {}
}

/// A running proxy: its listeners accept until [`Proxy::shutdown`] or drop.
pub struct Proxy {
    policy: Arc<PolicyState>,
    access_log: Option<Arc<JsonAccessLog>>,
    sources: PolicySources,
    addrs: BTreeMap<String, SocketAddr>,
    accept_tasks: Vec<JoinHandle<()>>,
}

impl Proxy {
    /// Loads the policy, opens the access log and binds every listener of `config`; parsers come
    /// from `registry`.
    pub async fn start(config: &Config, registry: Registry) -> anyhow::Result<Proxy> {
        for (i, listener) in config.listeners.iter().enumerate() {
            if let Some(name) = &listener.l7proto {
                if registry.get(name).is_none() {
                    anyhow::bail!(
                        "listeners[{i}].l7proto: unknown protocol {name:?} (known: {})",
                        registry.names().join(", ")
                    );
                }
            }
        }
        let sources = PolicySources {
            paths: config.policies.clone(),
            endpoints: config.endpoints.clone(),
            host_ips: config.host_ips.clone(),
        };
        let policy = Arc::new(PolicyState::new(registry, &sources)?);
        let access_log = match &config.access_log {
            Some(access_log) => Some(Arc::new(
                JsonAccessLog::open(&access_log.path, access_log.queue).with_context(|| {
                    format!("accessLog.path: cannot open {:?}", access_log.path)
                })?,
            )),
            None => None,
        };
        let log: Arc<dyn AccessLog> = match &access_log {
            Some(access_log) => Arc::clone(access_log) as Arc<dyn AccessLog>,
            None => Arc::new(NoAccessLog),
        };
        let shared = Arc::new(Shared {
            policy: Arc::clone(&policy),
            log,
            limits: Limits {
                inject_capacity: config.limits.inject_buffer,
                max_buffered: config.limits.max_buffered,
            },
            next_id: AtomicU64::new(1),
        });
        let mut addrs = BTreeMap::new();
        let mut accept_tasks = Vec::new();
        for listener in &config.listeners {
            let socket = listener::bind(&listener.name, listener.listen).await?;
            addrs.insert(listener.name.clone(), socket.local_addr()?);
            let route = Arc::new(Route {
                listener: listener.name.as_str().into(),
                endpoint: listener.endpoint.clone(),
                direction: listener.direction,
                l7proto: listener.l7proto.clone(),
            });
            tracing::info!(listener = %listener.name, addr = %addrs[&listener.name], upstream = %listener.upstream, "listening");
            accept_tasks.push(tokio::spawn(listener::accept_loop(
                socket,
                listener.upstream,
                route,
                Arc::clone(&shared),
            )));
        }
        Ok(Proxy {
            policy,
            access_log,
            sources,
            addrs,
            accept_tasks,
        })
    }

    /// The address a listener is bound to (useful when it was configured with port 0).
    pub fn local_addr(&self, listener: &str) -> Option<SocketAddr> {
        self.addrs.get(listener).copied()
    }

    /// The policy state in force.
    pub fn policy(&self) -> &Arc<PolicyState> {
        &self.policy
    }

    /// Access-log entries dropped so far because the writer fell behind.
    pub fn access_log_dropped(&self) -> u64 {
        self.access_log.as_ref().map_or(0, |log| log.dropped())
    }

    /// Re-reads the configured policy files; on error the policy in force stays.
    pub fn reload_policy(&self) -> Result<u64, axoneme_policy::PolicyError> {
        self.policy.reload(&self.sources)
    }

    /// Stops accepting new connections.
    pub fn shutdown(self) {
        drop(self);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        for task in &self.accept_tasks {
            task.abort();
        }
    }
}
