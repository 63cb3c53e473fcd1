//! The `axoneme run` configuration file: what it may contain and how it is read.
//!
//! Reading and validating only. Relative policy paths are resolved against the directory of the
//! configuration file, so a configuration works from any working directory. Nothing here binds a
//! socket or compiles a policy.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};

use axoneme_cluster::ClusterConfig;
use axoneme_policy::EndpointSpec;
use axoneme_sdk::Direction;
use serde::{Deserialize, Serialize};

/// The whole configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Config {
    /// Where access-log entries go; none when absent.
    #[serde(default)]
    pub access_log: Option<AccessLogConfig>,
    /// The live view of the access log.
    #[serde(default)]
    pub monitor: MonitorConfig,
    /// Addresses of the host itself (the `host` identity).
    #[serde(default, rename = "hostIPs")]
    pub host_ips: Vec<IpAddr>,
    /// The endpoints whose labels give identities.
    #[serde(default)]
    pub endpoints: Vec<EndpointSpec>,
    /// Policy files and directories.
    #[serde(default)]
    pub policies: Vec<PathBuf>,
    /// The longest policy text accepted, in a file or an API import; longer ones are refused
    /// unparsed.
    #[serde(default = "default_max_policy_bytes")]
    pub max_policy_bytes: usize,
    /// The proxy's listeners.
    #[serde(default)]
    pub listeners: Vec<ListenerConfig>,
    /// Per-connection memory bounds.
    #[serde(default)]
    pub limits: LimitsConfig,
    /// Settings of the built-in protocols.
    #[serde(default)]
    pub protocols: ProtocolsConfig,
    /// The REST API.
    #[serde(default)]
    pub api: ApiConfig,
    /// The Prometheus metrics listener.
    #[serde(default)]
    pub metrics: Option<MetricsConfig>,
    /// The flow view in the browser on a loopback port of its own, without a token.
    #[serde(default)]
    pub web: Option<WebConfig>,
    /// Transparent redirection.
    #[serde(default)]
    pub redirect: RedirectConfig,
    /// Seconds a removed listener (or a stopping agent) lets open connections finish.
    #[serde(default = "default_drain_timeout")]
    pub drain_timeout: u64,
    /// How long a peer may keep a connection waiting.
    #[serde(default)]
    pub timeouts: TimeoutsConfig,
    /// Cluster mode: policies shared with other nodes through etcd. Absent, the agent is on
    /// its own. `node` defaults to the host name.
    #[serde(default, deserialize_with = "cluster_section")]
    pub cluster: Option<ClusterConfig>,
}

/// Reads the `cluster` section, giving `node` the host name when it is not set.
fn cluster_section<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<Option<ClusterConfig>, D::Error> {
    use serde::de::Error as _;
    let Some(mut section) = Option::<serde_yaml::Mapping>::deserialize(d)? else {
        return Ok(None);
    };
    let node = serde_yaml::Value::from("node");
    if !section.contains_key(&node) {
        let host = host_name().map_err(|e| {
            D::Error::custom(format!(
                "cluster.node is not set and the host name cannot be read: {e}"
            ))
        })?;
        section.insert(node, host.into());
    }
    ClusterConfig::deserialize(serde_yaml::Value::Mapping(section))
        .map(Some)
        .map_err(|e| D::Error::custom(format!("cluster: {e}")))
}

/// This machine's host name: the kernel's, which `gethostname` returns too.
fn host_name() -> std::io::Result<String> {
    let name = std::fs::read_to_string("/proc/sys/kernel/hostname")?;
    Ok(name.trim_end().to_owned())
}

fn default_drain_timeout() -> u64 {
    10
}

fn default_max_policy_bytes() -> usize {
    axoneme_policy::DEFAULT_MAX_POLICY_BYTES
}

/// How long a peer may keep a connection waiting, in seconds; each must be at least 1.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct TimeoutsConfig {
    /// A parsed connection on which no byte arrived from either side for this long is closed.
    #[serde(default = "default_client_idle")]
    pub client_idle: u64,
    /// A request begun but not arrived whole this long after its first byte (or, with requests
    /// streaming in back to back, after the last one was decided) closes the connection. Time
    /// during which the proxy does not read the client, because output waits, does not count.
    #[serde(default = "default_request_progress")]
    pub request_progress: u64,
    /// A request forwarded, or a reply begun, after which the upstream sends no byte for this
    /// long closes the connection.
    #[serde(default = "default_upstream_response")]
    pub upstream_response: u64,
    /// Connecting to an upstream may take this long; then the client is closed.
    #[serde(default = "default_upstream_connect")]
    pub upstream_connect: u64,
    /// An API client must send a whole request head within this long of connecting (or of its
    /// previous request), before authentication; otherwise it is closed.
    #[serde(default = "default_api_header")]
    pub api_header: u64,
}

fn default_client_idle() -> u64 {
    300
}

fn default_request_progress() -> u64 {
    30
}

fn default_upstream_response() -> u64 {
    60
}

fn default_upstream_connect() -> u64 {
    10
}

fn default_api_header() -> u64 {
    10
}

impl Default for TimeoutsConfig {
    fn default() -> Self {
        TimeoutsConfig {
            client_idle: default_client_idle(),
            request_progress: default_request_progress(),
            upstream_response: default_upstream_response(),
            upstream_connect: default_upstream_connect(),
            api_header: default_api_header(),
        }
    }
}

impl TimeoutsConfig {
    /// Checks that every timeout is at least one second; the error names the field.
    pub fn check(&self) -> Result<(), String> {
        let fields = [
            ("clientIdle", self.client_idle),
            ("requestProgress", self.request_progress),
            ("upstreamResponse", self.upstream_response),
            ("upstreamConnect", self.upstream_connect),
            ("apiHeader", self.api_header),
        ];
        match fields.iter().find(|(_, seconds)| *seconds == 0) {
            Some((name, _)) => Err(format!(
                "timeouts.{name}: must be at least 1 second (it is 0)"
            )),
            None => Ok(()),
        }
    }
}

/// Where the REST API listens.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ApiConfig {
    /// The Unix socket (created with mode 0600).
    #[serde(default = "default_api_socket")]
    pub socket: PathBuf,
    /// Also listen on this TCP address; needs `token`.
    #[serde(default)]
    pub listen: Option<SocketAddr>,
    /// The bearer token TCP clients must present.
    #[serde(default)]
    pub token: Option<String>,
    /// The largest request body accepted; a larger one is answered 413.
    #[serde(default = "default_max_body_bytes")]
    pub max_body_bytes: usize,
}

/// The API's body limit unless configured otherwise: 16 MiB, three times a 100,000-rule policy.
pub const DEFAULT_MAX_BODY_BYTES: usize = 16 << 20;

fn default_max_body_bytes() -> usize {
    DEFAULT_MAX_BODY_BYTES
}

/// The API socket used when the configuration names none (and the CLI's default).
pub const DEFAULT_API_SOCKET: &str = "/var/run/axoneme/api.sock";

fn default_api_socket() -> PathBuf {
    PathBuf::from(DEFAULT_API_SOCKET)
}

impl Default for ApiConfig {
    fn default() -> Self {
        ApiConfig {
            socket: default_api_socket(),
            listen: None,
            token: None,
            max_body_bytes: default_max_body_bytes(),
        }
    }
}

/// Where Prometheus scrapes metrics.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsConfig {
    /// The TCP address serving `/metrics`.
    pub listen: SocketAddr,
}

/// Where the flow view is served without a token.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebConfig {
    /// A loopback TCP address (it needs no token, so nothing beyond this machine may reach it).
    pub listen: SocketAddr,
}

/// Settings of the built-in protocols.
#[derive(Debug, Clone, Copy, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProtocolsConfig {
    /// Memcached.
    #[serde(default)]
    pub memcache: MemcacheConfig,
    /// Cassandra.
    #[serde(default)]
    pub cassandra: CassandraConfig,
    /// Kafka.
    #[serde(default)]
    pub kafka: KafkaConfig,
}

/// Kafka settings.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct KafkaConfig {
    /// Longest request a connection may carry; a longer one closes the connection.
    #[serde(default = "default_max_request_bytes")]
    pub max_request_bytes: usize,
}

fn default_max_request_bytes() -> usize {
    axoneme_kafka::DEFAULT_MAX_REQUEST
}

impl Default for KafkaConfig {
    fn default() -> Self {
        KafkaConfig {
            max_request_bytes: default_max_request_bytes(),
        }
    }
}

/// Cassandra settings.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct CassandraConfig {
    /// Longest frame a connection may carry; a longer one closes the connection.
    #[serde(default = "default_max_frame_bytes")]
    pub max_frame_bytes: usize,
}

fn default_max_frame_bytes() -> usize {
    axoneme_cassandra::DEFAULT_MAX_FRAME
}

impl Default for CassandraConfig {
    fn default() -> Self {
        CassandraConfig {
            max_frame_bytes: default_max_frame_bytes(),
        }
    }
}

/// Memcached settings.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct MemcacheConfig {
    /// Longest value a request may carry; a longer one closes the connection.
    #[serde(default = "default_max_value_bytes")]
    pub max_value_bytes: usize,
}

fn default_max_value_bytes() -> usize {
    axoneme_memcache::DEFAULT_MAX_VALUE
}

impl Default for MemcacheConfig {
    fn default() -> Self {
        MemcacheConfig {
            max_value_bytes: default_max_value_bytes(),
        }
    }
}

/// The access log's destination, and how much it may hold and copy.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct AccessLogConfig {
    /// `-` for standard output, otherwise a file appended to.
    pub path: String,
    /// Bytes of entries that may wait for the writer (or be written) before new ones are
    /// dropped (and counted).
    #[serde(default = "default_queue_bytes")]
    pub queue_bytes: usize,
    /// Entries that may wait for the writer, when bounded by count as well.
    #[serde(default)]
    pub queue: Option<usize>,
    /// Longest field value logged whole; longer ones are truncated, and marked so.
    #[serde(default = "default_max_field_bytes")]
    pub max_field_bytes: usize,
    /// The form of each line: Cilium's field names, or short keys without label arrays.
    #[serde(default)]
    pub format: AccessLogFormat,
}

/// The form of the access log's lines (`accessLog.format`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AccessLogFormat {
    /// Cilium's JSON: its field names, with both sides' labels.
    #[default]
    Cilium,
    /// Short keys, no label arrays (the identities name them); one JSON object per line still.
    Compact,
}

impl From<AccessLogFormat> for crate::telemetry::access_log::LogFormat {
    fn from(format: AccessLogFormat) -> Self {
        match format {
            AccessLogFormat::Cilium => crate::telemetry::access_log::LogFormat::Cilium,
            AccessLogFormat::Compact => crate::telemetry::access_log::LogFormat::Compact,
        }
    }
}

fn default_queue_bytes() -> usize {
    crate::telemetry::access_log::DEFAULT_QUEUE_BYTES
}

fn default_max_field_bytes() -> usize {
    crate::telemetry::access_log::DEFAULT_MAX_FIELD_BYTES
}

/// The live view of the access log (`axoneme monitor`).
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct MonitorConfig {
    /// Bytes of entries that may wait for each watcher; a watcher further behind loses its
    /// oldest entries (and is told how many).
    #[serde(default = "default_monitor_queue_bytes")]
    pub queue_bytes: usize,
    /// Bytes of the most recent entries kept for `observe --last N`, oldest dropped first; 0
    /// keeps none (and spares formatting entries nobody watches).
    #[serde(default = "default_monitor_recent_bytes")]
    pub recent_bytes: usize,
}

fn default_monitor_recent_bytes() -> usize {
    crate::telemetry::monitor::DEFAULT_RECENT_BYTES
}

fn default_monitor_queue_bytes() -> usize {
    crate::telemetry::monitor::DEFAULT_QUEUE_BYTES
}

impl Default for MonitorConfig {
    fn default() -> Self {
        MonitorConfig {
            queue_bytes: default_monitor_queue_bytes(),
            recent_bytes: default_monitor_recent_bytes(),
        }
    }
}

impl Config {
    /// The access log's bounds; the defaults when there is no access log.
    pub fn access_log_limits(&self) -> crate::telemetry::access_log::Limits {
        match &self.access_log {
            Some(log) => crate::telemetry::access_log::Limits {
                queue_bytes: log.queue_bytes,
                queue_entries: log.queue,
                max_field_bytes: log.max_field_bytes,
                format: log.format.into(),
            },
            None => crate::telemetry::access_log::Limits::default(),
        }
    }

    /// The monitor's bounds: its own backlog, and the access log's truncation.
    pub fn monitor_limits(&self) -> crate::telemetry::monitor::Limits {
        crate::telemetry::monitor::Limits {
            queue_bytes: self.monitor.queue_bytes,
            max_field_bytes: self.access_log_limits().max_field_bytes,
            recent_bytes: self.monitor.recent_bytes,
        }
    }

    /// Checks that the access log's and the monitor's bounds are at least 1; the error names
    /// the field.
    fn check_log_queues(&self) -> Result<(), String> {
        let mut fields = vec![("monitor.queueBytes", Some(self.monitor.queue_bytes))];
        if let Some(log) = &self.access_log {
            fields.extend([
                ("accessLog.queueBytes", Some(log.queue_bytes)),
                ("accessLog.queue", log.queue),
                ("accessLog.maxFieldBytes", Some(log.max_field_bytes)),
            ]);
        }
        match fields.iter().find(|(_, value)| *value == Some(0)) {
            Some((name, _)) => Err(format!("{name}: must be at least 1 (it is 0)")),
            None => Ok(()),
        }
    }
}

/// How a listener learns where a connection goes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ListenerMode {
    /// Clients dial the listener; every connection goes to its `upstream`.
    #[default]
    Proxy,
    /// Connections steered by TPROXY rules; each goes to its original destination, the
    /// accepted socket's local address.
    Tproxy,
    /// Connections steered by REDIRECT rules; each goes to its original destination, as
    /// connection tracking recorded it.
    Redirect,
}

impl ListenerMode {
    /// Whether connections arrive by redirection rather than by dialing the listener.
    pub fn is_transparent(self) -> bool {
        self != ListenerMode::Proxy
    }

    /// The mode's name in the configuration.
    pub fn name(self) -> &'static str {
        match self {
            ListenerMode::Proxy => "proxy",
            ListenerMode::Tproxy => "tproxy",
            ListenerMode::Redirect => "redirect",
        }
    }
}

/// One listener.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ListenerConfig {
    /// A name for logs.
    pub name: String,
    /// The address to accept connections on.
    pub listen: SocketAddr,
    /// How connections arrive and where they go.
    #[serde(default)]
    pub mode: ListenerMode,
    /// Where accepted connections are forwarded (proxy mode only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upstream: Option<SocketAddr>,
    /// The endpoint this listener guards. A transparent listener without one guards every
    /// endpoint: the one owning the destination (ingress) or the client (egress) address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    /// Ingress (the endpoint is the upstream) or egress (the endpoint is the client).
    #[serde(with = "direction_name")]
    pub direction: Direction,
    /// The parser to use; when absent, the one the policy names for the upstream's port.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub l7proto: Option<String>,
    /// tproxy mode: connect upstream from the client's address, so that the server sees the
    /// real client.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub keep_client_address: bool,
    /// Most connections open at once through this listener; more are refused. Unbounded
    /// (beyond `limits.maxConnections`) when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_connections: Option<usize>,
}

impl ListenerConfig {
    /// Checks what deserialization cannot: the fields each mode needs and refuses.
    pub fn check(&self) -> Result<(), String> {
        if self.name.is_empty() {
            return Err("name: must not be empty".into());
        }
        match (self.mode, self.upstream) {
            (ListenerMode::Proxy, None) => {
                return Err("upstream: a proxy-mode listener needs an upstream".into())
            }
            (ListenerMode::Tproxy | ListenerMode::Redirect, Some(_)) => {
                return Err(format!(
                    "upstream: a {} listener sends each connection to its original destination \
                     and takes no upstream",
                    self.mode.name()
                ))
            }
            _ => {}
        }
        if self.mode == ListenerMode::Proxy && self.endpoint.is_none() {
            return Err("endpoint: a proxy-mode listener needs the endpoint it guards".into());
        }
        if self.keep_client_address && self.mode != ListenerMode::Tproxy {
            return Err(
                "keepClientAddress: only a tproxy listener can keep the client's address".into(),
            );
        }
        if self.max_connections == Some(0) {
            return Err("maxConnections: must be at least 1".into());
        }
        Ok(())
    }
}

/// Transparent redirection: the socket mark of the proxy's own connections, and whether the
/// agent keeps the nftables rules in step with policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RedirectConfig {
    /// Whether the agent installs the rules at start, keeps them in step with policy,
    /// endpoints and listeners, and removes them when it stops.
    #[serde(default)]
    pub manage: bool,
    /// The mark of the upstream sockets of transparent listeners; the rules skip such traffic.
    #[serde(default = "default_mark")]
    pub mark: u32,
    /// The mark that routes TPROXY-steered packets to the local stack.
    #[serde(default = "default_tproxy_mark")]
    pub tproxy_mark: u32,
    /// The routing table holding the local route for `tproxyMark`.
    #[serde(default = "default_route_table")]
    pub route_table: u32,
}

fn default_mark() -> u32 {
    0x4158
}

fn default_tproxy_mark() -> u32 {
    0x4159
}

fn default_route_table() -> u32 {
    4158
}

impl Default for RedirectConfig {
    fn default() -> Self {
        RedirectConfig {
            manage: false,
            mark: default_mark(),
            tproxy_mark: default_tproxy_mark(),
            route_table: default_route_table(),
        }
    }
}

/// Per-connection memory bounds, and the agent's bounds over all connections.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct LimitsConfig {
    /// Capacity of each flow's inject buffer, in bytes.
    #[serde(default = "default_inject_buffer")]
    pub inject_buffer: usize,
    /// Most bytes a parser may keep buffered per flow.
    #[serde(default = "default_max_buffered")]
    pub max_buffered: usize,
    /// Most connections open at once over all listeners; when absent, as many as the agent's
    /// open-file limit allows (two files each).
    #[serde(default)]
    pub max_connections: Option<usize>,
    /// Bytes all parsed connections together may buffer: at 90 % listeners stop accepting
    /// (until below 80 %), above it the connections holding the most are closed.
    #[serde(default = "default_buffered_bytes")]
    pub buffered_bytes: usize,
}

fn default_buffered_bytes() -> usize {
    1 << 30
}

fn default_inject_buffer() -> usize {
    axoneme_datapath::Limits::default().inject_capacity
}

fn default_max_buffered() -> usize {
    axoneme_datapath::Limits::default().max_buffered
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            inject_buffer: default_inject_buffer(),
            max_buffered: default_max_buffered(),
            max_connections: None,
            buffered_bytes: default_buffered_bytes(),
        }
    }
}

pub(crate) mod direction_name {
    use axoneme_sdk::Direction;
    use serde::{Deserialize, Deserializer, Serializer};

    /// The direction's name in the configuration.
    pub(crate) fn name(direction: Direction) -> &'static str {
        match direction {
            Direction::Ingress => "ingress",
            Direction::Egress => "egress",
        }
    }

    pub(crate) fn serialize<S: Serializer>(direction: &Direction, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(name(*direction))
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Direction, D::Error> {
        match String::deserialize(d)?.as_str() {
            "ingress" => Ok(Direction::Ingress),
            "egress" => Ok(Direction::Egress),
            other => Err(serde::de::Error::custom(format!(
                "unknown direction {other:?}, expected \"ingress\" or \"egress\""
            ))),
        }
    }
}

/// A configuration that could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("{path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not valid configuration.
    #[error("{path}: {message}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong and where.
        message: String,
    },
}

impl Config {
    /// Reads and checks the configuration at `path`, resolving relative policy paths against the
    /// file's directory.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        let base = path.parent().unwrap_or(Path::new("."));
        Config::parse(&text, base).map_err(|message| ConfigError::Invalid {
            path: path.to_owned(),
            message,
        })
    }

    /// Parses configuration text; relative policy paths are resolved against `base`.
    pub fn parse(text: &str, base: &Path) -> Result<Config, String> {
        // serde_yaml's messages already name the field path and the line and column.
        let mut config: Config = serde_yaml::from_str(text).map_err(|e| e.to_string())?;
        for policy in &mut config.policies {
            if policy.is_relative() {
                *policy = base.join(&*policy);
            }
        }
        if config.api.socket.is_relative() {
            config.api.socket = base.join(&config.api.socket);
        }
        config.check()?;
        config.check_log_queues()?;
        config.timeouts.check()?;
        if config.redirect.mark == 0 || config.redirect.mark == config.redirect.tproxy_mark {
            return Err(
                "redirect.mark: must be non-zero and differ from redirect.tproxyMark".into(),
            );
        }
        if config.redirect.tproxy_mark == 0 {
            return Err("redirect.tproxyMark: must be non-zero".into());
        }
        if config.api.listen.is_some() && config.api.token.as_deref().unwrap_or_default().is_empty()
        {
            return Err("api.listen: a TCP API needs api.token".into());
        }
        if let Some(web) = &config.web {
            if !web.listen.ip().is_loopback() {
                return Err(format!(
                    "web.listen: {} is not a loopback address; the flow view there needs no \
                     token, so it listens on loopback only (behind api.token, it is served on \
                     api.listen too)",
                    web.listen
                ));
            }
        }
        if let Some(cluster) = &config.cluster {
            cluster.validate().map_err(|e| e.to_string())?;
        }
        Ok(config)
    }

    fn check(&self) -> Result<(), String> {
        let mut names = BTreeMap::new();
        for (i, listener) in self.listeners.iter().enumerate() {
            if let Some(first) = names.insert(listener.name.as_str(), i) {
                return Err(format!(
                    "listeners[{i}].name: {:?} is already used by listeners[{first}]",
                    listener.name
                ));
            }
            listener
                .check()
                .map_err(|message| format!("listeners[{i}].{message}"))?;
            if let Some(endpoint) = &listener.endpoint {
                if !self.endpoints.iter().any(|e| e.name == *endpoint) {
                    return Err(format!(
                        "listeners[{i}].endpoint: no endpoint is named {endpoint:?}"
                    ));
                }
            }
        }
        if self.limits.max_connections == Some(0) {
            return Err("limits.maxConnections: must be at least 1".into());
        }
        if self.limits.buffered_bytes < self.limits.max_buffered {
            return Err(format!(
                "limits.bufferedBytes: must be at least limits.maxBuffered ({}), or one \
                 connection could never finish a frame",
                self.limits.max_buffered
            ));
        }
        let max_frame = self.protocols.cassandra.max_frame_bytes;
        let held = axoneme_cassandra::held_bytes(max_frame);
        if self.limits.max_buffered < held {
            return Err(format!(
                "protocols.cassandra.maxFrameBytes: frames of {max_frame} bytes need \
                 limits.maxBuffered of at least {held} (it is {})",
                self.limits.max_buffered
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXAMPLE: &str = r#"
accessLog: {path: "-"}
endpoints:
  - {name: r2d2, ips: ["127.0.0.1"], labels: {app: r2d2}}
  - {name: luke, ips: ["127.0.0.21"], labels: {app: luke}}
policies: [policy.yaml, /abs/dir]
listeners:
  - name: r2d2
    listen: 127.0.0.1:4000
    upstream: 127.0.0.1:4001
    endpoint: r2d2
    direction: ingress
"#;

    #[test]
    fn reads_the_documented_example() {
        let config = Config::parse(EXAMPLE, Path::new("examples/r2d2")).unwrap();
        assert_eq!(
            config.policies,
            vec![
                PathBuf::from("examples/r2d2/policy.yaml"),
                PathBuf::from("/abs/dir")
            ]
        );
        assert_eq!(config.listeners[0].direction, Direction::Ingress);
        assert_eq!(config.listeners[0].l7proto, None);
        assert_eq!(config.endpoints[1].labels["app"], "luke");
        let log = config.access_log.as_ref().unwrap();
        assert_eq!(
            (log.queue_bytes, log.queue, log.max_field_bytes),
            (16 << 20, None, 4096)
        );
        assert_eq!(config.monitor.queue_bytes, 4 << 20);
        assert_eq!(config.monitor.recent_bytes, 1 << 20);
    }

    #[test]
    fn log_queues_are_bounded_in_bytes_and_an_entry_count_is_still_read() {
        let config = Config::parse(
            &EXAMPLE.replace(
                r#"accessLog: {path: "-"}"#,
                "accessLog: {path: \"-\", queue: 100, queueBytes: 65536, maxFieldBytes: 512}\n\
                 monitor: {queueBytes: 1024, recentBytes: 0}",
            ),
            Path::new("."),
        )
        .unwrap();
        assert_eq!(
            config.access_log_limits(),
            crate::telemetry::access_log::Limits {
                queue_bytes: 65536,
                queue_entries: Some(100),
                max_field_bytes: 512,
                format: crate::telemetry::access_log::LogFormat::Cilium,
            }
        );
        assert_eq!(
            config.monitor_limits(),
            crate::telemetry::monitor::Limits {
                queue_bytes: 1024,
                max_field_bytes: 512,
                recent_bytes: 0
            }
        );
        let unlogged = Config::parse(
            &EXAMPLE.replace(r#"accessLog: {path: "-"}"#, ""),
            Path::new("."),
        )
        .unwrap();
        assert_eq!(
            unlogged.monitor_limits(),
            crate::telemetry::monitor::Limits::default()
        );
        for (setting, field) in [
            (
                r#"accessLog: {path: "-", queueBytes: 0}"#,
                "accessLog.queueBytes",
            ),
            (r#"accessLog: {path: "-", queue: 0}"#, "accessLog.queue"),
            (
                r#"accessLog: {path: "-", maxFieldBytes: 0}"#,
                "accessLog.maxFieldBytes",
            ),
            (
                "accessLog: {path: \"-\"}\nmonitor: {queueBytes: 0}",
                "monitor.queueBytes",
            ),
        ] {
            let text = EXAMPLE.replace(r#"accessLog: {path: "-"}"#, setting);
            let err = Config::parse(&text, Path::new(".")).unwrap_err();
            assert!(
                err.starts_with(&format!("{field}: must be at least 1")),
                "{err}"
            );
        }
    }

    #[test]
    fn the_access_log_is_in_cilium_form_unless_compact_is_asked_for() {
        use crate::telemetry::access_log::LogFormat;
        let with = |setting: &str| {
            Config::parse(
                &EXAMPLE.replace(r#"accessLog: {path: "-"}"#, setting),
                Path::new("."),
            )
        };
        let format = |setting: &str| with(setting).unwrap().access_log_limits().format;
        assert_eq!(format(r#"accessLog: {path: "-"}"#), LogFormat::Cilium);
        assert_eq!(
            format(r#"accessLog: {path: "-", format: cilium}"#),
            LogFormat::Cilium
        );
        assert_eq!(
            format(r#"accessLog: {path: "-", format: compact}"#),
            LogFormat::Compact
        );
        for bad in ["Compact", "short", "1"] {
            let err = with(&format!(r#"accessLog: {{path: "-", format: {bad}}}"#)).unwrap_err();
            assert!(
                err.starts_with(&format!(
                    "accessLog.format: unknown variant `{bad}`, expected `cilium` or `compact`"
                )),
                "{err}"
            );
        }
    }

    #[test]
    fn the_flow_view_listens_on_loopback_only() {
        let with = |listen: &str| {
            Config::parse(
                &format!("{EXAMPLE}\nweb: {{listen: \"{listen}\"}}\n"),
                Path::new("."),
            )
        };
        assert_eq!(
            with("127.0.0.1:9876").unwrap().web.unwrap().listen,
            "127.0.0.1:9876".parse().unwrap()
        );
        assert!(with("[::1]:9876").is_ok());
        let err = with("0.0.0.0:9876").unwrap_err();
        assert!(
            err.starts_with("web.listen: 0.0.0.0:9876 is not a loopback address"),
            "{err}"
        );
    }

    #[test]
    fn endpoints_have_a_namespace() {
        let config = Config::parse(
            &EXAMPLE.replace(
                "labels: {app: luke}}",
                "labels: {app: luke}, namespace: rebels}",
            ),
            Path::new("."),
        )
        .unwrap();
        assert_eq!(config.endpoints[0].namespace(), "default");
        assert_eq!(config.endpoints[1].namespace(), "rebels");
    }

    #[test]
    fn errors_name_the_field() {
        let err = Config::parse(
            &EXAMPLE.replace("direction: ingress", "direction: inbound"),
            Path::new("."),
        )
        .unwrap_err();
        assert_eq!(
            err,
            "listeners[0]: unknown direction \"inbound\", expected \"ingress\" or \"egress\" at line 8 column 5"
        );
        let err = Config::parse(
            &EXAMPLE.replace("endpoint: r2d2", "endpoint: c3po"),
            Path::new("."),
        )
        .unwrap_err();
        assert_eq!(err, "listeners[0].endpoint: no endpoint is named \"c3po\"");
        let err =
            Config::parse(&EXAMPLE.replace("listen:", "listne:"), Path::new(".")).unwrap_err();
        assert!(
            err.starts_with("listeners[0]: unknown field `listne`, expected one of"),
            "{err}"
        );
        let err = Config::parse(
            &format!("{EXAMPLE}protocols: {{cassandra: {{maxFrameBytes: 4194304}}}}\n"),
            Path::new("."),
        )
        .unwrap_err();
        assert_eq!(
            err,
            "protocols.cassandra.maxFrameBytes: frames of 4194304 bytes need limits.maxBuffered \
             of at least 4194709 (it is 1052672)"
        );
        let raised = format!(
            "{EXAMPLE}protocols: {{cassandra: {{maxFrameBytes: 4194304}}}}\n\
             limits: {{maxBuffered: 4194709}}\n"
        );
        assert!(Config::parse(&raised, Path::new(".")).is_ok());
    }

    #[test]
    fn timeouts_have_defaults_and_refuse_zero() {
        let config = Config::parse(EXAMPLE, Path::new(".")).unwrap();
        assert_eq!(config.timeouts, TimeoutsConfig::default());
        assert_eq!(
            (
                config.timeouts.client_idle,
                config.timeouts.request_progress,
                config.timeouts.upstream_response,
                config.timeouts.upstream_connect,
                config.timeouts.api_header
            ),
            (300, 30, 60, 10, 10)
        );
        let config = Config::parse(
            &format!("{EXAMPLE}timeouts: {{clientIdle: 2, upstreamConnect: 3}}\n"),
            Path::new("."),
        )
        .unwrap();
        assert_eq!(
            (
                config.timeouts.client_idle,
                config.timeouts.upstream_connect,
                config.timeouts.request_progress
            ),
            (2, 3, 30)
        );
        let err = Config::parse(
            &format!("{EXAMPLE}timeouts: {{upstreamResponse: 0}}\n"),
            Path::new("."),
        )
        .unwrap_err();
        assert_eq!(
            err,
            "timeouts.upstreamResponse: must be at least 1 second (it is 0)"
        );
        let err = Config::parse(
            &format!("{EXAMPLE}timeouts: {{apiHeader: -1}}\n"),
            Path::new("."),
        )
        .unwrap_err();
        assert!(
            err.starts_with("timeouts.apiHeader: invalid type: integer `-1`, expected u64"),
            "{err}"
        );
        let err = Config::parse(
            &format!("{EXAMPLE}timeouts: {{clientIdel: 5}}\n"),
            Path::new("."),
        )
        .unwrap_err();
        assert!(
            err.starts_with("timeouts: unknown field `clientIdel`"),
            "{err}"
        );
    }

    #[test]
    fn listener_modes() {
        let transparent = EXAMPLE.replace(
            "    upstream: 127.0.0.1:4001\n    endpoint: r2d2\n",
            "    mode: tproxy\n    keepClientAddress: true\n",
        );
        let config = Config::parse(
            &format!("{transparent}redirect: {{manage: true, mark: 0x10}}\n"),
            Path::new("."),
        )
        .unwrap();
        let listener = &config.listeners[0];
        assert_eq!(listener.mode, ListenerMode::Tproxy);
        assert_eq!(
            (listener.upstream, listener.endpoint.as_deref()),
            (None, None)
        );
        assert!(listener.keep_client_address);
        assert_eq!(
            (
                config.redirect.manage,
                config.redirect.mark,
                config.redirect.tproxy_mark
            ),
            (true, 0x10, 0x4159)
        );
        assert_eq!(
            Config::parse(EXAMPLE, Path::new(".")).unwrap().listeners[0].mode,
            ListenerMode::Proxy
        );
        let err = Config::parse(
            &EXAMPLE.replace(
                "direction: ingress",
                "direction: ingress\n    mode: redirect",
            ),
            Path::new("."),
        )
        .unwrap_err();
        assert_eq!(
            err,
            "listeners[0].upstream: a redirect listener sends each connection to its original \
             destination and takes no upstream"
        );
        let err = Config::parse(
            &EXAMPLE.replace("    upstream: 127.0.0.1:4001\n", ""),
            Path::new("."),
        )
        .unwrap_err();
        assert_eq!(
            err,
            "listeners[0].upstream: a proxy-mode listener needs an upstream"
        );
        let err = Config::parse(
            &transparent.replace("mode: tproxy", "mode: redirect"),
            Path::new("."),
        )
        .unwrap_err();
        assert_eq!(
            err,
            "listeners[0].keepClientAddress: only a tproxy listener can keep the client's address"
        );
        let err = Config::parse(
            &EXAMPLE.replace(
                "direction: ingress",
                "direction: ingress\n    mode: sideways",
            ),
            Path::new("."),
        )
        .unwrap_err();
        assert!(
            err.starts_with("listeners[0].mode: unknown variant `sideways`"),
            "{err}"
        );
        let err = Config::parse(
            &format!("{EXAMPLE}redirect: {{marks: 1}}\n"),
            Path::new("."),
        )
        .unwrap_err();
        assert!(err.starts_with("redirect: unknown field `marks`"), "{err}");
    }

    #[test]
    fn a_cluster_section_is_read_checked_and_optional() {
        assert_eq!(
            Config::parse(EXAMPLE, Path::new(".")).unwrap().cluster,
            None
        );
        let config = Config::parse(
            &format!(
                "{EXAMPLE}cluster:\n  name: galaxy\n  node: node-a\n  kvstore: {{endpoints: \
                 [\"http://127.0.0.1:2379\"]}}\n  leaseTTL: 20s\n"
            ),
            Path::new("."),
        )
        .unwrap();
        let cluster = config.cluster.unwrap();
        assert_eq!(
            (cluster.name.as_str(), cluster.node.as_str()),
            ("galaxy", "node-a")
        );
        assert_eq!(cluster.lease_ttl, std::time::Duration::from_secs(20));

        let defaulted = Config::parse(
            &format!(
                "{EXAMPLE}cluster: {{name: galaxy, kvstore: {{endpoints: [\"http://127.0.0.1:2379\"]}}}}\n"
            ),
            Path::new("."),
        )
        .unwrap();
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap();
        assert_eq!(defaulted.cluster.unwrap().node, host.trim_end());

        let err = Config::parse(
            &format!(
                "{EXAMPLE}cluster: {{name: galaxy, node: a, kvstore: {{endpoints: [\"127.0.0.1:2379\"]}}}}\n"
            ),
            Path::new("."),
        )
        .unwrap_err();
        assert_eq!(
            err,
            "cluster.kvstore.endpoints[0] = \"127.0.0.1:2379\": a client URL is http://host:port \
             or https://host:port"
        );
        let err = Config::parse(
            &format!(
                "{EXAMPLE}cluster: {{name: galaxy, node: a, kvstore: {{endpoints: []}}, ttl: 5}}\n"
            ),
            Path::new("."),
        )
        .unwrap_err();
        assert!(err.contains("cluster: unknown field `ttl`"), "{err}");
    }
}
