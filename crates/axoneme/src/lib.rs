//! Axoneme, an L7 policy proxy for non-HTTP protocols: the agent behind `axoneme run`.
//!
//! The agent is thin glue around sans-IO parts: it reads the configuration ([`config`]), keeps
//! endpoints, policies and the compiled snapshot in force ([`state`]), runs listeners that can
//! be added and drained at runtime ([`listener`]), moves each connection's bytes through the
//! datapath engine ([`connection`]), writes the access log ([`access_log`]) and offers it live
//! ([`monitor`]), counts ([`metrics`]), serves the REST API ([`api`]) and follows edits of its
//! files ([`watch`]). Protocol logic lives in the protocol crates, policy logic in
//! `axoneme-policy`.

pub mod access_log;
pub mod api;
pub mod cli;
pub mod config;
mod connection;
mod listener;
pub mod metrics;
pub mod monitor;
pub mod state;
pub mod watch;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use axoneme_datapath::Limits;
use axoneme_sdk::{AccessLog, LogEntry, Protocol, Registry};
use serde::Serialize;
use tokio::task::JoinHandle;

use crate::access_log::JsonAccessLog;
use crate::config::{Config, ListenerConfig, ProtocolsConfig};
use crate::connection::{Route, Shared};
use crate::listener::Tracker;
use crate::metrics::{Gauges, Metrics};
use crate::monitor::Monitor;
use crate::state::{ConfigSources, State};

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

/// A listener change that was refused.
#[derive(Debug, thiserror::Error)]
pub enum ListenerError {
    /// No listener has that name.
    #[error("no listener is named {0:?}")]
    NotFound(String),
    /// The listener's description is unusable.
    #[error("{0}")]
    Invalid(String),
    /// Its address cannot be bound.
    #[error(transparent)]
    Bind(#[from] std::io::Error),
}

/// A running listener as the API shows it.
#[derive(Debug, Clone, Serialize)]
pub struct ListenerStatus {
    /// Its configuration.
    #[serde(flatten)]
    pub config: ListenerConfig,
    /// The address it is bound to.
    pub address: SocketAddr,
    /// Connections open now.
    pub connections: usize,
}

struct RunningListener {
    config: ListenerConfig,
    address: SocketAddr,
    accept: JoinHandle<()>,
    tracker: Arc<Tracker>,
    /// Whether the configuration file declares it (rather than the API).
    from_config: bool,
}

/// A running agent: its state, its listeners, its access log and metrics.
pub struct Agent {
    state: Arc<State>,
    shared: Arc<Shared>,
    monitor: Arc<Monitor>,
    access_log: Option<Arc<JsonAccessLog>>,
    listeners: Mutex<BTreeMap<String, RunningListener>>,
    drains: Mutex<Vec<JoinHandle<()>>>,
    drain_timeout: Duration,
    started: Instant,
    config_path: Option<PathBuf>,
}

impl Agent {
    /// Loads the policy, opens the access log and binds every listener of `config`; parsers come
    /// from `registry`. `config_path` is the file `config` came from, if any (it is watched).
    pub async fn start(
        config: &Config,
        registry: Registry,
        config_path: Option<PathBuf>,
    ) -> anyhow::Result<Arc<Agent>> {
        let names = registry.names();
        let state = Arc::new(State::new(registry, config_sources(config))?);
        let access_log = match &config.access_log {
            Some(log) => Some(Arc::new(
                JsonAccessLog::open(&log.path, log.queue)
                    .with_context(|| format!("accessLog.path: cannot open {:?}", log.path))?,
            )),
            None => None,
        };
        let sink: Arc<dyn AccessLog> = match &access_log {
            Some(log) => Arc::clone(log) as Arc<dyn AccessLog>,
            None => Arc::new(NoAccessLog),
        };
        let monitor = Arc::new(Monitor::new(sink));
        let shared = Arc::new(Shared {
            state: Arc::clone(&state),
            log: Arc::clone(&monitor) as Arc<dyn AccessLog>,
            metrics: Arc::new(Metrics::new(&names)),
            limits: Limits {
                inject_capacity: config.limits.inject_buffer,
                max_buffered: config.limits.max_buffered,
            },
            next_id: AtomicU64::new(1),
        });
        let agent = Arc::new(Agent {
            state,
            shared,
            monitor,
            access_log,
            listeners: Mutex::new(BTreeMap::new()),
            drains: Mutex::new(Vec::new()),
            drain_timeout: Duration::from_secs(config.drain_timeout),
            started: Instant::now(),
            config_path,
        });
        for listener in &config.listeners {
            agent
                .put_listener(listener.clone(), true)
                .await
                .map_err(anyhow::Error::from)?;
        }
        Ok(agent)
    }

    /// The agent's state.
    pub fn state(&self) -> &Arc<State> {
        &self.state
    }

    /// The access log, live.
    pub fn monitor(&self) -> &Monitor {
        &self.monitor
    }

    /// How long the agent has been running.
    pub fn uptime(&self) -> Duration {
        self.started.elapsed()
    }

    /// The configuration file, if the agent was started from one.
    pub fn config_path(&self) -> Option<&PathBuf> {
        self.config_path.as_ref()
    }

    /// The metrics in the Prometheus text format.
    pub fn metrics_text(&self) -> String {
        self.shared.metrics.render(Gauges {
            policy_revision: self.state.revision(),
            policy_import_errors: self.state.import_errors(),
            access_log_dropped: self.access_log_dropped(),
        })
    }

    /// The counters the status shows.
    pub fn metrics(&self) -> &Metrics {
        &self.shared.metrics
    }

    /// Access-log entries dropped so far because the writer fell behind.
    pub fn access_log_dropped(&self) -> u64 {
        self.access_log.as_ref().map_or(0, |log| log.dropped())
    }

    /// The address a listener is bound to (useful when it was configured with port 0).
    pub fn local_addr(&self, listener: &str) -> Option<SocketAddr> {
        self.lock_listeners().get(listener).map(|l| l.address)
    }

    /// The running listeners.
    pub fn listeners(&self) -> Vec<ListenerStatus> {
        self.lock_listeners()
            .values()
            .map(|l| ListenerStatus {
                config: l.config.clone(),
                address: l.address,
                connections: l.tracker.active(),
            })
            .collect()
    }

    /// Starts a listener, or replaces the one of the same name (which stops accepting and drains).
    /// `from_config` marks listeners the configuration file declares.
    pub async fn put_listener(
        &self,
        config: ListenerConfig,
        from_config: bool,
    ) -> Result<SocketAddr, ListenerError> {
        if let Some(name) = &config.l7proto {
            if self.state.registry().get(name).is_none() {
                return Err(ListenerError::Invalid(format!(
                    "l7proto: unknown protocol {name:?} (known: {})",
                    self.state.registry().names().join(", ")
                )));
            }
        }
        if !self
            .state
            .endpoints()
            .iter()
            .any(|e| e.name == config.endpoint)
        {
            return Err(ListenerError::Invalid(format!(
                "endpoint: no endpoint is named {:?}",
                config.endpoint
            )));
        }
        if config.name.is_empty() {
            return Err(ListenerError::Invalid("name: must not be empty".into()));
        }
        // A replaced listener on the same address gives it up first, so that the new one can
        // bind it; otherwise the old one keeps running until the new one is bound.
        let same_address = self
            .lock_listeners()
            .get(&config.name)
            .is_some_and(|l| l.config.listen == config.listen);
        if same_address {
            self.stop_listener(&config.name);
        }
        let socket = listener::bind(&config.name, config.listen).await?;
        self.stop_listener(&config.name);
        let address = socket.local_addr()?;
        let route = Arc::new(Route {
            listener: config.name.as_str().into(),
            endpoint: config.endpoint.as_str().into(),
            direction: config.direction,
            l7proto: config.l7proto.clone(),
        });
        let tracker = Tracker::new();
        let accept = tokio::spawn(listener::accept_loop(
            socket,
            config.upstream,
            route,
            Arc::clone(&self.shared),
            Arc::clone(&tracker),
        ));
        tracing::info!(listener = %config.name, addr = %address, upstream = %config.upstream, "listening");
        let running = RunningListener {
            config: config.clone(),
            address,
            accept,
            tracker,
            from_config,
        };
        self.lock_listeners().insert(config.name, running);
        Ok(address)
    }

    /// Stops a listener: it accepts no more, and its open connections get the drain time to
    /// finish.
    pub fn delete_listener(&self, name: &str) -> Result<(), ListenerError> {
        match self.stop_listener(name) {
            true => Ok(()),
            false => Err(ListenerError::NotFound(name.into())),
        }
    }

    fn stop_listener(&self, name: &str) -> bool {
        let Some(running) = self.lock_listeners().remove(name) else {
            return false;
        };
        running.accept.abort();
        tracing::info!(
            listener = name,
            open = running.tracker.active(),
            "listener stopped; draining"
        );
        let timeout = self.drain_timeout;
        let drain = tokio::spawn(async move { running.tracker.drain(timeout).await });
        if let Ok(mut drains) = self.drains.lock() {
            drains.retain(|d| !d.is_finished());
            drains.push(drain);
        }
        true
    }

    /// Makes the running listeners match `configured` (from a changed configuration file):
    /// new ones start, changed ones are replaced, removed ones drain. Listeners added through
    /// the API are left alone.
    pub async fn reconcile_listeners(
        &self,
        configured: &[ListenerConfig],
    ) -> Result<(), ListenerError> {
        let stale: Vec<String> = self
            .lock_listeners()
            .iter()
            .filter(|(name, l)| l.from_config && !configured.iter().any(|c| &c.name == *name))
            .map(|(name, _)| name.clone())
            .collect();
        for name in stale {
            self.stop_listener(&name);
        }
        for config in configured {
            let unchanged = self
                .lock_listeners()
                .get(&config.name)
                .is_some_and(|l| l.config == *config);
            if !unchanged {
                self.put_listener(config.clone(), true).await?;
            }
        }
        Ok(())
    }

    /// Stops accepting on every listener and waits until their connections have finished, for
    /// at most the drain time.
    pub async fn shutdown(&self) {
        let names: Vec<String> = self.lock_listeners().keys().cloned().collect();
        for name in names {
            self.stop_listener(&name);
        }
        let drains = std::mem::take(&mut *self.drains.lock().unwrap_or_else(|p| p.into_inner()));
        for drain in drains {
            let _ = drain.await;
        }
    }

    fn lock_listeners(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, RunningListener>> {
        self.listeners
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// What the configuration contributes to the state.
pub fn config_sources(config: &Config) -> ConfigSources {
    ConfigSources {
        host_ips: config.host_ips.clone(),
        endpoints: config.endpoints.clone(),
        policy_paths: config.policies.clone(),
    }
}
