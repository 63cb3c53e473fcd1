//! Axoneme, an L7 policy proxy for non-HTTP protocols: the agent behind `axoneme run`.
//!
//! The agent is thin glue around sans-IO parts: it reads the configuration ([`config`]), keeps
//! endpoints, policies and the compiled snapshot in force ([`state`]), runs listeners that can
//! be added and drained at runtime ([`listener`]), moves each connection's bytes through the
//! datapath engine ([`connection`]) under the policy of every endpoint it guards ([`guards`]),
//! writes the access log ([`access_log`]) and offers it live ([`monitor`]), counts
//! ([`metrics`]) and reports what the log and the monitor lost ([`report`]), serves the REST
//! API ([`api`]), follows edits of its files ([`watch`]) and keeps the transparent redirection
//! rules in step with policy ([`redirect`]). Protocol logic lives in the protocol crates,
//! policy logic in `axoneme-policy`.

#[allow(unsafe_code)] // the log file sink: sync_file_range and posix_fadvise on its own file
pub mod access_log;
pub mod api;
pub mod cli;
pub mod config;
mod connection;
mod decision;
mod guards;
mod http_server;
mod listener;
pub mod metrics;
pub mod monitor;
mod outbox;
mod overload;
mod read_buffers;
pub mod redirect;
pub mod report;
#[allow(unsafe_code)] // socket options and limits: setsockopt, getsockopt, getrlimit, setrlimit
mod sockets;
pub mod state;
#[cfg(test)]
mod testing;
mod throttle;
pub mod watch;
mod workers;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use axoneme_datapath::Limits;
use axoneme_sdk::{AccessLog, LogEntry, Protocol, Registry};
use serde::Serialize;
use tokio::sync::{watch as channel, Notify};
use tokio::task::JoinHandle;

use crate::access_log::JsonAccessLog;
use crate::config::{Config, ListenerConfig, ProtocolsConfig, RedirectConfig};
use crate::connection::{Guards, Route, Shared, Timeouts};
use crate::listener::{Destination, Tracker};
use crate::metrics::{Gauges, LogQueueGauges, Metrics};
use crate::monitor::Monitor;
use crate::overload::Overload;
use crate::redirect::Redirect;
use crate::sockets::UpstreamOptions;
use crate::state::{ConfigSources, State};
use crate::throttle::Throttle;
use crate::workers::Workers;

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

/// A redirect change that was refused or failed.
#[derive(Debug, thiserror::Error)]
pub enum RedirectError {
    /// The configuration leaves the rules to someone else.
    #[error(
        "this agent does not manage redirect rules (redirect.manage is false in its configuration)"
    )]
    NotManaged,
    /// `nft` or `ip` failed.
    #[error("{0}")]
    Failed(String),
}

/// What the agent knows of the redirect rules it manages.
#[derive(Debug, Default)]
struct Installed {
    /// The ruleset last installed; `None` when none is.
    ruleset: Option<String>,
    /// Flushed on request: the rules stay removed until applied again.
    paused: bool,
}

/// The redirect rules as the API shows them.
#[derive(Debug, Clone, Serialize)]
pub struct RedirectStatus {
    /// Whether this agent keeps the rules in step with policy.
    pub managed: bool,
    /// Whether the rules were flushed on request and stay so until applied again.
    pub paused: bool,
    /// What policy calls for.
    pub redirects: Vec<Redirect>,
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
    /// Where the listeners' connections run.
    workers: Arc<Workers>,
    monitor: Arc<Monitor>,
    access_log: Option<Arc<JsonAccessLog>>,
    listeners: Mutex<BTreeMap<String, RunningListener>>,
    drains: Mutex<Vec<JoinHandle<()>>>,
    drain_timeout: Duration,
    /// How long an API or metrics client may take to send a request head.
    api_header_timeout: Duration,
    /// The longest API request body accepted.
    api_max_body_bytes: usize,
    started: Instant,
    config_path: Option<PathBuf>,
    redirect: RedirectConfig,
    installed: tokio::sync::Mutex<Installed>,
    /// Woken when listeners change (policy changes come from the state).
    listeners_changed: Arc<Notify>,
    keeper: Mutex<Option<JoinHandle<()>>>,
    /// Closes the connections holding the most when the buffered-bytes budget is exceeded.
    shedder: JoinHandle<()>,
    /// Reports losses of the access log and the monitor.
    reporter: Mutex<Option<JoinHandle<()>>>,
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
                JsonAccessLog::open(&log.path, config.access_log_limits())
                    .with_context(|| format!("accessLog.path: cannot open {:?}", log.path))?,
            )),
            None => None,
        };
        let sink: Arc<dyn AccessLog> = match &access_log {
            Some(log) => Arc::clone(log) as Arc<dyn AccessLog>,
            None => Arc::new(NoAccessLog),
        };
        let monitor = Arc::new(Monitor::new(sink, config.monitor_limits()));
        let metrics = Arc::new(Metrics::new(&names));
        let max_connections = config
            .limits
            .max_connections
            .unwrap_or_else(overload::max_connections_by_file_limit);
        let throttle = Arc::new(Throttle::default());
        let overload = Overload::new(
            max_connections,
            config.limits.buffered_bytes,
            Arc::clone(&metrics),
            Arc::clone(&throttle),
        );
        let shedder = tokio::spawn(Arc::clone(&overload).shed());
        let shared = Arc::new(Shared {
            state: Arc::clone(&state),
            log: Arc::clone(&monitor) as Arc<dyn AccessLog>,
            metrics,
            overload,
            throttle,
            limits: Limits {
                inject_capacity: config.limits.inject_buffer,
                max_buffered: config.limits.max_buffered,
            },
            timeouts: Timeouts::from(&config.timeouts),
            next_id: AtomicU64::new(1),
        });
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let workers =
            Arc::new(Workers::start(cores).context("starting the connection worker threads")?);
        let agent = Arc::new(Agent {
            state,
            shared,
            workers,
            monitor,
            access_log,
            listeners: Mutex::new(BTreeMap::new()),
            drains: Mutex::new(Vec::new()),
            drain_timeout: Duration::from_secs(config.drain_timeout),
            api_header_timeout: Duration::from_secs(config.timeouts.api_header),
            api_max_body_bytes: config.api.max_body_bytes,
            started: Instant::now(),
            config_path,
            redirect: config.redirect,
            installed: tokio::sync::Mutex::new(Installed::default()),
            listeners_changed: Arc::new(Notify::new()),
            keeper: Mutex::new(None),
            shedder,
            reporter: Mutex::new(None),
        });
        let reporter = tokio::spawn(report_losses(Arc::downgrade(&agent)));
        *agent.reporter.lock().unwrap_or_else(|p| p.into_inner()) = Some(reporter);
        for listener in &config.listeners {
            agent
                .put_listener(listener.clone(), true)
                .await
                .map_err(anyhow::Error::from)?;
        }
        if agent.redirect.manage {
            agent
                .apply_redirects()
                .await
                .context("redirect.manage: cannot install the redirect rules")?;
            let keeper = tokio::spawn(keep_redirects(
                Arc::downgrade(&agent),
                agent.state.subscribe(),
                Arc::clone(&agent.listeners_changed),
            ));
            *agent.keeper.lock().unwrap_or_else(|p| p.into_inner()) = Some(keeper);
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
            access_log_write_errors: self.access_log_write_errors(),
            buffered_bytes: self.shared.overload.buffered() as u64,
            log_queues: self.log_queue_gauges(),
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

    /// Access-log writes that failed so far.
    pub fn access_log_write_errors(&self) -> u64 {
        self.access_log.as_ref().map_or(0, |log| log.write_errors())
    }

    /// What the access-log and monitor queues hold now, and what they lost or cut.
    fn log_queue_gauges(&self) -> LogQueueGauges {
        let counts = self.access_log.as_ref().map(|log| log.counts());
        let counts = counts.unwrap_or_default();
        LogQueueGauges {
            access_log_queue_bytes: counts.queued_bytes,
            access_log_failed_entries: counts.failed_entries,
            access_log_truncated_fields: counts.truncated,
            monitor_dropped: self.monitor.dropped(),
            monitor_queue_bytes: self.monitor.backlog_bytes(),
            monitor_watchers: self.monitor.watchers(),
        }
    }

    /// What the access log and the monitor lost or cut so far, for [`report::Reporter`].
    pub fn losses(&self) -> report::Losses {
        let log = self.access_log.as_deref();
        let counts = log.map(JsonAccessLog::counts).unwrap_or_default();
        let limits = log.map(JsonAccessLog::limits).unwrap_or_default();
        report::Losses {
            dropped: counts.dropped,
            dropped_at_bytes: counts.dropped_at_bytes,
            dropped_at_entries: counts.dropped_at_entries,
            dropped_entry_bytes: counts.dropped_entry_bytes,
            queue_bytes: limits.queue_bytes,
            queue_entries: limits.queue_entries,
            write_errors: counts.write_errors,
            failed_entries: counts.failed_entries,
            last_write_error: counts.last_write_error,
            truncated: counts.truncated,
            max_field_bytes: limits.max_field_bytes,
            monitor_dropped: self.monitor.dropped(),
            monitor_queue_bytes: self.monitor.limits().queue_bytes,
        }
    }

    /// Opens the access-log file's path anew, for rotation, and returns that path; none when
    /// no access log is configured or it goes to standard output.
    pub fn reopen_access_log(&self) -> std::io::Result<Option<PathBuf>> {
        let Some(log) = self.access_log.as_deref() else {
            return Ok(None);
        };
        log.reopen()?;
        Ok(log.path().map(std::path::Path::to_path_buf))
    }

    /// The address a listener is bound to (useful when it was configured with port 0).
    pub fn local_addr(&self, listener: &str) -> Option<SocketAddr> {
        self.lock_listeners().get(listener).map(|l| l.address)
    }

    /// What listener `config` tells its connections.
    fn route_of(&self, config: &ListenerConfig) -> Route {
        Route {
            listener: config.name.as_str().into(),
            guards: match &config.endpoint {
                Some(endpoint) => Guards::Endpoint(endpoint.as_str().into()),
                None => Guards::ByAddress,
            },
            direction: config.direction,
            l7proto: config.l7proto.clone(),
            upstream: UpstreamOptions {
                mark: config.mode.is_transparent().then_some(self.redirect.mark),
                keep_client_address: config.keep_client_address,
            },
        }
    }

    /// What the running listener `name` tells its connections.
    pub(crate) fn listener_route(&self, name: &str) -> Option<Route> {
        let config = self.lock_listeners().get(name)?.config.clone();
        Some(self.route_of(&config))
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
        config.check().map_err(ListenerError::Invalid)?;
        if let Some(name) = &config.l7proto {
            if self.state.registry().get(name).is_none() {
                return Err(ListenerError::Invalid(format!(
                    "l7proto: unknown protocol {name:?} (known: {})",
                    self.state.registry().names().join(", ")
                )));
            }
        }
        if let Some(endpoint) = &config.endpoint {
            if !self.state.endpoints().iter().any(|e| e.name == *endpoint) {
                return Err(ListenerError::Invalid(format!(
                    "endpoint: no endpoint is named {endpoint:?}"
                )));
            }
        }
        // A replaced listener on the same address gives it up first (its accept task is over,
        // and its socket closed, before the new one binds); otherwise the old one keeps running
        // until the new one is bound.
        let same_address = self
            .lock_listeners()
            .get(&config.name)
            .is_some_and(|l| l.config.listen == config.listen);
        if same_address {
            if let Some(accept) = self.stop_listener(&config.name) {
                let _ = accept.await;
            }
        }
        let socket = listener::bind(&config.name, config.listen, config.mode)?;
        self.stop_listener(&config.name);
        let address = socket.local_addr()?;
        let route = Arc::new(self.route_of(&config));
        let destination = match config.upstream {
            Some(upstream) => Destination::Upstream(upstream),
            None => Destination::Original(config.mode),
        };
        let tracker = Tracker::new(config.max_connections);
        let accept = tokio::spawn(listener::accept_loop(
            socket,
            destination,
            route,
            Arc::clone(&self.shared),
            Arc::clone(&tracker),
            Arc::clone(&self.workers),
        ));
        match config.upstream {
            Some(upstream) => {
                tracing::info!(listener = %config.name, addr = %address, %upstream, "listening")
            }
            None => {
                tracing::info!(listener = %config.name, addr = %address, mode = config.mode.name(), "listening transparently")
            }
        }
        let running = RunningListener {
            config: config.clone(),
            address,
            accept,
            tracker,
            from_config,
        };
        self.lock_listeners().insert(config.name, running);
        self.listeners_changed.notify_one();
        Ok(address)
    }

    /// Stops a listener: it accepts no more, and its open connections get the drain time to
    /// finish.
    pub fn delete_listener(&self, name: &str) -> Result<(), ListenerError> {
        match self.stop_listener(name) {
            Some(_) => Ok(()),
            None => Err(ListenerError::NotFound(name.into())),
        }
    }

    /// Stops a listener's accepting and starts draining its connections; returns its accept
    /// task, which is over (and the socket closed) once awaited.
    fn stop_listener(&self, name: &str) -> Option<JoinHandle<()>> {
        let running = self.lock_listeners().remove(name)?;
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
        self.listeners_changed.notify_one();
        Some(running.accept)
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
    /// at most the drain time; then removes the redirect rules it manages. (Removing them
    /// earlier would cut the open connections that TPROXY steers.)
    pub async fn shutdown(&self) {
        if let Some(keeper) = self.keeper.lock().unwrap_or_else(|p| p.into_inner()).take() {
            keeper.abort();
        }
        if let Some(reporter) = self
            .reporter
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
        {
            reporter.abort();
        }
        let names: Vec<String> = self.lock_listeners().keys().cloned().collect();
        for name in names {
            self.stop_listener(&name);
        }
        let drains = std::mem::take(&mut *self.drains.lock().unwrap_or_else(|p| p.into_inner()));
        for drain in drains {
            let _ = drain.await;
        }
        self.shedder.abort();
        if self.redirect.manage {
            match self.flush_redirects().await {
                Ok(()) => tracing::info!("redirect rules removed"),
                Err(error) => tracing::error!(%error, "cannot remove the redirect rules"),
            }
        }
    }

    /// The redirects policy calls for, with the listeners that receive them.
    pub fn redirects(&self) -> Vec<Redirect> {
        redirect::plan(&self.state.snapshot(), &self.listeners())
    }

    /// The redirect rules as the API shows them.
    pub async fn redirect_status(&self) -> RedirectStatus {
        RedirectStatus {
            managed: self.redirect.manage,
            paused: self.installed.lock().await.paused,
            redirects: self.redirects(),
        }
    }

    /// Installs the rules policy calls for now, and keeps them in step again after a flush.
    pub async fn apply_redirects(&self) -> Result<Vec<Redirect>, RedirectError> {
        self.sync_redirects(true).await
    }

    /// Removes the rules; they stay removed until applied again (or the agent restarts).
    pub async fn flush_redirects(&self) -> Result<(), RedirectError> {
        if !self.redirect.manage {
            return Err(RedirectError::NotManaged);
        }
        let mut installed = self.installed.lock().await;
        let settings = self.redirect;
        blocking(move || redirect::remove(&settings)).await?;
        installed.ruleset = None;
        installed.paused = true;
        Ok(())
    }

    /// Installs the rules policy calls for when they differ from the installed ones (or, when
    /// `force`d, in any case and even after a flush).
    async fn sync_redirects(&self, force: bool) -> Result<Vec<Redirect>, RedirectError> {
        if !self.redirect.manage {
            return Err(RedirectError::NotManaged);
        }
        let mut installed = self.installed.lock().await;
        let redirects = self.redirects();
        if installed.paused && !force {
            return Ok(redirects);
        }
        let ruleset = redirect::ruleset(&redirects, &self.redirect);
        if force || installed.ruleset.as_ref() != Some(&ruleset) {
            for unserved in redirects.iter().filter(|r| r.listener.is_none()) {
                tracing::warn!(
                    endpoint = %unserved.endpoint,
                    port = unserved.port,
                    l7proto = %unserved.l7proto,
                    "no transparent listener fits; new connections of this traffic are dropped"
                );
            }
            let (settings, list) = (self.redirect, redirects.clone());
            blocking(move || redirect::install(&list, &settings)).await?;
            tracing::info!(
                redirects = redirects.iter().filter(|r| r.listener.is_some()).count(),
                "redirect rules installed"
            );
            installed.ruleset = Some(ruleset);
            installed.paused = false;
        }
        Ok(redirects)
    }

    fn lock_listeners(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, RunningListener>> {
        self.listeners
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// Runs a blocking redirect operation off the async workers.
async fn blocking(
    work: impl FnOnce() -> Result<(), String> + Send + 'static,
) -> Result<(), RedirectError> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| RedirectError::Failed(e.to_string()))?
        .map_err(RedirectError::Failed)
}

/// Keeps the redirect rules in step with the state and the listeners, until the agent is gone.
async fn keep_redirects(
    agent: Weak<Agent>,
    mut changes: channel::Receiver<u64>,
    listeners_changed: Arc<Notify>,
) {
    loop {
        let Some(agent) = agent.upgrade() else {
            return;
        };
        if let Err(error) = agent.sync_redirects(false).await {
            tracing::error!(%error, "cannot update the redirect rules; the installed ones stay");
        }
        drop(agent);
        tokio::select! {
            changed = changes.changed() => if changed.is_err() { return },
            () = listeners_changed.notified() => {}
        }
    }
}

/// Logs what the access log and the monitor lost, every [`report::REPORT_EVERY`] while it
/// grows, until the agent is gone.
async fn report_losses(agent: Weak<Agent>) {
    let mut reporter = report::Reporter::default();
    let mut ticks = tokio::time::interval(report::REPORT_EVERY);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        // The tick's own instant: ticks a period apart are never taken as too close.
        let now = ticks.tick().await.into_std();
        let Some(agent) = agent.upgrade() else {
            return;
        };
        let losses = agent.losses();
        drop(agent);
        for line in reporter.due(&losses, now) {
            match line.severity {
                report::Severity::Info => tracing::info!("{}", line.message),
                report::Severity::Warn => tracing::warn!("{}", line.message),
                report::Severity::Error => tracing::error!("{}", line.message),
            }
        }
    }
}

/// What the configuration contributes to the state.
pub fn config_sources(config: &Config) -> ConfigSources {
    ConfigSources {
        host_ips: config.host_ips.clone(),
        endpoints: config.endpoints.clone(),
        policy_paths: config.policies.clone(),
        max_policy_bytes: config.max_policy_bytes,
    }
}
