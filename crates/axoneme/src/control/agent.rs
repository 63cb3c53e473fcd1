//! The agent: what `axoneme run` is while it runs. It owns the policy state, the listeners
//! (started, replaced and drained at runtime), the access log and the monitor, the metrics and
//! the overload guard, and the redirector; the API and the file watcher change it only through
//! its methods.
//!
//! The agent moves no bytes and makes no policy decision: connections run on the workers
//! ([`crate::proxy`]) and decide with the snapshot they read from the state.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use axoneme_datapath::Limits;
use axoneme_sdk::{AccessLog, Registry};
use serde::Serialize;
use tokio::sync::watch as channel;
use tokio::task::JoinHandle;

use crate::config::{Config, ListenerConfig};
use crate::control::cluster::Cluster;
use crate::control::state::{ConfigSources, State};
use crate::proxy::connection::{Guards, Route, Shared, Timeouts};
use crate::proxy::listener::{self, Destination, Tracker};
use crate::proxy::overload::{self, Overload};
use crate::proxy::sockets::UpstreamOptions;
use crate::proxy::workers::Workers;
use crate::redirect::{BoundListener, Redirector};
use crate::telemetry::access_log::JsonAccessLog;
use crate::telemetry::metrics::{Gauges, LogQueueGauges, Metrics};
use crate::telemetry::monitor::Monitor;
use crate::telemetry::report;
use crate::telemetry::throttle::Throttle;

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

/// A task of the agent that keeps something in step, as `status` shows it (Cilium's
/// controllers).
#[derive(Debug, Clone, Serialize)]
pub struct ControllerStatus {
    /// What it keeps in step.
    pub name: &'static str,
    /// Whether it runs and its last work succeeded.
    pub healthy: bool,
    /// What is wrong, when it is not healthy.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failure: Option<String>,
}

impl ControllerStatus {
    fn new(name: &'static str, failure: Option<String>) -> ControllerStatus {
        ControllerStatus {
            name,
            healthy: failure.is_none(),
            failure,
        }
    }
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
    pub(super) shared: Arc<Shared>,
    /// Where the listeners' connections run.
    workers: Arc<Workers>,
    monitor: Arc<Monitor>,
    access_log: Option<Arc<JsonAccessLog>>,
    listeners: Mutex<BTreeMap<String, RunningListener>>,
    drains: Mutex<Vec<JoinHandle<()>>>,
    drain_timeout: Duration,
    /// How long an API or metrics client may take to send a request head.
    pub(super) api_header_timeout: Duration,
    /// The longest API request body accepted.
    pub(super) api_max_body_bytes: usize,
    started: Instant,
    /// What tells this run of the agent from any other: its process id and start time.
    instance: String,
    config_path: Option<PathBuf>,
    /// The socket mark of transparent listeners' upstream connections.
    redirect_mark: u32,
    /// The bound listeners, published for the redirector whenever they change.
    bound: channel::Sender<Vec<BoundListener>>,
    redirector: Arc<Redirector>,
    /// Closes the connections holding the most when the buffered-bytes budget is exceeded.
    shedder: JoinHandle<()>,
    /// Reports losses of the access log and the monitor.
    reporter: Mutex<Option<JoinHandle<()>>>,
    /// The node's part in the cluster, in cluster mode.
    cluster: Option<Cluster>,
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
        let cluster = match &config.cluster {
            Some(cluster) => Some(Cluster::start(cluster, Arc::clone(&state)).await?),
            None => None,
        };
        let access_log = match &config.access_log {
            Some(log) => Some(Arc::new(
                JsonAccessLog::open(&log.path, config.access_log_limits())
                    .with_context(|| format!("accessLog.path: cannot open {:?}", log.path))?,
            )),
            None => None,
        };
        let monitor = Arc::new(Monitor::new(access_log.clone(), config.monitor_limits()));
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
        let (bound, listening) = channel::channel(Vec::new());
        let redirector = Redirector::new(config.redirect, Arc::clone(&state), listening);
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
            instance: instance_name(),
            config_path,
            redirect_mark: config.redirect.mark,
            bound,
            redirector,
            shedder,
            reporter: Mutex::new(None),
            cluster,
        });
        let reporter = tokio::spawn(report_losses(Arc::downgrade(&agent)));
        *agent.reporter.lock().unwrap_or_else(|p| p.into_inner()) = Some(reporter);
        for listener in &config.listeners {
            agent
                .put_listener(listener.clone(), true)
                .await
                .map_err(anyhow::Error::from)?;
        }
        agent
            .redirector
            .start()
            .await
            .context("redirect.manage: cannot install the redirect rules")?;
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

    /// A name of this run of the agent that no other run has: an agent started again counts
    /// its policy revisions from the start, and this tells its revisions from the last run's.
    pub fn instance(&self) -> &str {
        &self.instance
    }

    /// The configuration file, if the agent was started from one.
    pub fn config_path(&self) -> Option<&PathBuf> {
        self.config_path.as_ref()
    }

    /// The metrics in the Prometheus text format.
    pub fn metrics_text(&self) -> String {
        let mut text = self.shared.metrics.render(Gauges {
            policy_revision: self.state.revision(),
            policy_import_errors: self.state.import_errors(),
            access_log_dropped: self.access_log_dropped(),
            access_log_write_errors: self.access_log_write_errors(),
            buffered_bytes: self.shared.overload.buffered() as u64,
            log_queues: self.log_queue_gauges(),
            kvstore: self.cluster.as_ref().map(Cluster::gauges),
        });
        crate::telemetry::process::render(&mut text);
        text
    }

    /// The node's part in the cluster; none without cluster mode.
    pub fn cluster(&self) -> Option<&Cluster> {
        self.cluster.as_ref()
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

    /// The access log as `status` shows it: where it goes, what its queue holds and what it
    /// lost; none when no access log is configured.
    pub fn access_log_status(&self) -> Option<serde_json::Value> {
        let log = self.access_log.as_deref()?;
        let counts = log.counts();
        Some(serde_json::json!({
            "path": log.path().map_or_else(|| "stdout".into(), |path| path.display().to_string()),
            "queue_bytes": counts.queued_bytes,
            "queue_limit_bytes": log.limits().queue_bytes,
            "dropped": counts.dropped,
            "write_errors": counts.write_errors,
            "failed_entries": counts.failed_entries,
            "truncated_fields": counts.truncated,
            "last_write_error": counts.last_write_error,
        }))
    }

    /// The monitor as `status` shows it: its watchers, what waits for them, what they lost,
    /// and the recent entries kept for replay.
    pub fn monitor_status(&self) -> serde_json::Value {
        let limits = self.monitor.limits();
        serde_json::json!({
            "watchers": self.monitor.watchers(),
            "queue_bytes": self.monitor.backlog_bytes(),
            "queue_limit_bytes": limits.queue_bytes,
            "dropped": self.monitor.dropped(),
            "recent_bytes": self.monitor.recent_bytes(),
            "recent_limit_bytes": limits.recent_bytes,
        })
    }

    /// The agent's tasks that keep things in step, and whether each is healthy: the overload
    /// shedder and the loss reporter always; the access-log writer, the redirect keeper and the
    /// kvstore's sync when configured.
    pub fn controllers(&self) -> Vec<ControllerStatus> {
        let stopped = |task: Option<&JoinHandle<()>>| match task {
            Some(task) if !task.is_finished() => None,
            _ => Some("stopped".to_owned()),
        };
        let mut controllers = vec![ControllerStatus::new(
            "overload-shedder",
            stopped(Some(&self.shedder)),
        )];
        let reporter = self.reporter.lock().unwrap_or_else(|p| p.into_inner());
        controllers.push(ControllerStatus::new(
            "loss-reporter",
            stopped(reporter.as_ref()),
        ));
        drop(reporter);
        if let Some(log) = &self.access_log {
            let counts = log.counts();
            let failure = counts
                .last_write_error
                .map(|error| format!("{} writes failed, the last: {error}", counts.write_errors));
            controllers.push(ControllerStatus::new("access-log-writer", failure));
        }
        if let Some(following) = self.redirector.following() {
            let failure = (!following).then(|| "stopped".to_owned());
            controllers.push(ControllerStatus::new("redirect-keeper", failure));
        }
        if let Some(cluster) = &self.cluster {
            let status = cluster.status();
            let failure = status.stale.then(|| {
                format!(
                    "the kvstore has not answered since {}",
                    status.stale_since.unwrap_or_default()
                )
            });
            controllers.push(ControllerStatus::new("kvstore-sync", failure));
        }
        controllers
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
            monitor_recent_bytes: self.monitor.recent_bytes(),
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
                mark: config.mode.is_transparent().then_some(self.redirect_mark),
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
        self.publish_listeners();
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
        self.publish_listeners();
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
    /// at most the drain time; then removes the redirect rules it manages (removing them
    /// earlier would cut the open connections that TPROXY steers), and in cluster mode leaves
    /// the cluster, revoking the node's lease so that its endpoints and identity references
    /// vanish from the other nodes' views at once.
    pub async fn shutdown(&self) {
        // Listeners stopping below must not make the redirector install rules for what is left.
        self.redirector.stop_following().await;
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
        self.redirector.remove().await;
        if let Some(cluster) = &self.cluster {
            cluster.close().await;
        }
    }

    /// The transparent redirection rules, kept in step with policy and the listeners.
    pub fn redirector(&self) -> &Redirector {
        &self.redirector
    }

    /// Tells the redirector which listeners are bound now.
    fn publish_listeners(&self) {
        let bound = self
            .lock_listeners()
            .values()
            .map(|l| BoundListener {
                config: l.config.clone(),
                address: l.address,
            })
            .collect();
        self.bound.send_replace(bound);
    }

    fn lock_listeners(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, RunningListener>> {
        self.listeners
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
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

/// This process's id and the time it started the agent, in nanoseconds since the Unix epoch.
fn instance_name() -> String {
    let since_epoch = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    format!("{}-{}", std::process::id(), since_epoch.as_nanos())
}
