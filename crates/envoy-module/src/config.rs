//! The filter's configuration: the JSON Envoy hands over (`filter_config`), read and checked,
//! and what it points at loaded: the policy and identities, from files (the policy files through
//! the policy crate's loader, as the agent reads them, and the agent's `endpoints:` entries) or
//! from a running agent's API socket, watched for changes; the protocols; the access log.
//! Everything is checked here, on Envoy's main thread; a configuration that does not hold is
//! refused with a message saying what and where. It must not touch a connection.

use std::fs;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use axoneme_policy::{load_paths, EndpointSpec, PolicyError, Snapshot, DEFAULT_MAX_POLICY_BYTES};
use axoneme_sdk::{Direction, Protocol, Registry};
use serde::Deserialize;

use crate::access_log::FileLog;
use crate::agent_source::{AgentSource, AgentVersion, SourceError};
use crate::watch::Watcher;

/// The JSON of the filter's `filter_config`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Settings {
    /// The protocol every connection is parsed with (`memcache`, `cassandra`, `kafka`, `r2d2`).
    l7proto: String,
    /// The endpoint whose policy the filter enforces (a name of the endpoints file).
    endpoint: String,
    /// `ingress`: the endpoint is the upstream; `egress`: the endpoint is the client.
    direction: DirectionSetting,
    /// The upstream's address as policy sees it; its port is the port rules name.
    upstream: SocketAddr,
    /// Policy files and directories, as the agent's `policies:`.
    #[serde(default)]
    policies: Option<Vec<PathBuf>>,
    /// A YAML or JSON file listing the endpoints, as the agent's `endpoints:` (a list, or a
    /// mapping with an `endpoints` key, so the agent's configuration file itself will do).
    #[serde(default)]
    endpoints: Option<PathBuf>,
    /// A running agent's API socket, instead of `policies` and `endpoints`: its policies and
    /// endpoints, followed as they change.
    #[serde(default)]
    agent: Option<PathBuf>,
    /// How often the agent is asked whether its policy changed, in milliseconds.
    #[serde(default = "default_agent_poll_ms")]
    agent_poll_ms: u64,
    /// The access log's file; entries are appended as JSON lines.
    access_log: PathBuf,
    /// The local host's addresses (the `reserved:host` identity).
    #[serde(default)]
    host_ips: Vec<IpAddr>,
    /// The listener name written in access-log entries.
    #[serde(default = "default_listener")]
    listener: String,
}

fn default_agent_poll_ms() -> u64 {
    200
}

fn default_listener() -> String {
    "envoy".to_owned()
}

#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(rename_all = "lowercase")]
enum DirectionSetting {
    Ingress,
    Egress,
}

/// Why a filter configuration was refused.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ConfigError {
    /// The filter_config text is not the expected JSON.
    #[error("filter_config: {0}")]
    Json(#[from] serde_json::Error),
    /// The endpoints file could not be read.
    #[error("endpoints file {path}: {source}")]
    EndpointsRead {
        path: String,
        source: std::io::Error,
    },
    /// The endpoints file is not a list of endpoints (nor a mapping with one as `endpoints`).
    #[error("endpoints file {path}: expected a list of endpoints (name, ips, labels, namespace): {source}")]
    EndpointsParse {
        path: String,
        source: serde_yaml::Error,
    },
    /// The policies do not load or compile.
    #[error(transparent)]
    Policy(#[from] PolicyError),
    /// Neither files nor an agent, or both, are named as the source of policy.
    #[error("name either `policies` and `endpoints`, or `agent` (an agent's API socket)")]
    Source,
    /// The agent's policy could not be read.
    #[error(transparent)]
    Agent(#[from] SourceError),
    /// `endpoint` names no endpoint of the endpoints file.
    #[error("endpoint {0:?} is not in the endpoints file")]
    UnknownEndpoint(String),
    /// `l7proto` names no protocol this module has a parser for.
    #[error("l7proto {name:?} has no parser (known: {known})")]
    UnknownProtocol { name: String, known: String },
    /// The access log cannot be opened for appending.
    #[error("access log {path}: {source}")]
    AccessLog {
        path: String,
        source: std::io::Error,
    },
}

/// A loaded filter configuration, shared by all connections of every worker thread.
pub(crate) struct FilterConfig {
    pub(crate) protocol: Arc<dyn Protocol>,
    pub(crate) endpoint: String,
    pub(crate) direction: Direction,
    pub(crate) upstream: SocketAddr,
    pub(crate) listener: Arc<str>,
    /// The policy in force; replaced whole when the agent's changes.
    pub(crate) snapshot: Arc<ArcSwap<Snapshot>>,
    pub(crate) log: FileLog,
    /// Follows the agent, when the policy comes from one; stopped when the configuration goes.
    _watcher: Option<Watcher>,
}

/// The protocols this module parses, with the agent's default settings.
pub(crate) fn protocols() -> Registry {
    let mut registry = Registry::new();
    let protocols: [Arc<dyn Protocol>; 4] = [
        Arc::new(axoneme_r2d2::R2d2),
        Arc::new(axoneme_memcache::Memcache::default()),
        Arc::new(axoneme_cassandra::Cassandra::default()),
        Arc::new(axoneme_kafka::Kafka::default()),
    ];
    for protocol in protocols {
        registry
            .register(protocol)
            .expect("built-in protocol names are distinct");
    }
    #[cfg(feature = "fault-injection")]
    registry
        .register(Arc::new(crate::fault::FaultInjection))
        .expect("built-in protocol names are distinct");
    registry
}

impl FilterConfig {
    /// Reads `filter_config` and loads what it names.
    pub(crate) fn load(filter_config: &[u8]) -> Result<FilterConfig, ConfigError> {
        let settings: Settings = serde_json::from_slice(filter_config)?;
        let registry = protocols();
        let protocol = registry.get(&settings.l7proto).cloned().ok_or_else(|| {
            ConfigError::UnknownProtocol {
                name: settings.l7proto.clone(),
                known: registry.names().join(", "),
            }
        })?;
        let (snapshot, agent) = match (&settings.policies, &settings.endpoints, &settings.agent) {
            (Some(policies), Some(endpoints), None) => {
                let endpoints = read_endpoints(endpoints)?;
                let policies = load_paths(policies, DEFAULT_MAX_POLICY_BYTES)?;
                (
                    Snapshot::build(policies, &endpoints, &settings.host_ips, &registry, None)?,
                    None,
                )
            }
            (None, None, Some(socket)) => {
                let source = AgentSource::new(socket.clone());
                let instance = source.version()?.instance;
                let state = source.fetch()?;
                let version = AgentVersion {
                    instance,
                    revision: state.revision,
                };
                let snapshot = state.compile(&settings.host_ips, &registry, None)?;
                (snapshot, Some((source, version)))
            }
            _ => return Err(ConfigError::Source),
        };
        if snapshot.endpoint(&settings.endpoint).is_none() {
            return Err(ConfigError::UnknownEndpoint(settings.endpoint));
        }
        let log = FileLog::open(&settings.access_log).map_err(|source| ConfigError::AccessLog {
            path: settings.access_log.display().to_string(),
            source,
        })?;
        let snapshot = Arc::new(ArcSwap::from_pointee(snapshot));
        let watcher = agent.map(|(source, version)| {
            Watcher::start(
                source,
                version,
                Arc::downgrade(&snapshot),
                settings.host_ips.clone(),
                Duration::from_millis(settings.agent_poll_ms.max(1)),
            )
        });
        Ok(FilterConfig {
            protocol,
            endpoint: settings.endpoint,
            direction: match settings.direction {
                DirectionSetting::Ingress => Direction::Ingress,
                DirectionSetting::Egress => Direction::Egress,
            },
            upstream: settings.upstream,
            listener: Arc::from(settings.listener),
            snapshot,
            log,
            _watcher: watcher,
        })
    }
}

fn read_endpoints(path: &PathBuf) -> Result<Vec<EndpointSpec>, ConfigError> {
    let shown = || path.display().to_string();
    let text = fs::read_to_string(path).map_err(|source| ConfigError::EndpointsRead {
        path: shown(),
        source,
    })?;
    let parse_error = |source| ConfigError::EndpointsParse {
        path: shown(),
        source,
    };
    let mut document: serde_yaml::Value = serde_yaml::from_str(&text).map_err(parse_error)?;
    // The agent's configuration file: only its `endpoints` concern the filter.
    if let Some(endpoints) = document.get_mut("endpoints") {
        document = std::mem::take(endpoints);
    }
    serde_yaml::from_value(document).map_err(parse_error)
}
