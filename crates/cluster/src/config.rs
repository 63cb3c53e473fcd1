//! The `cluster` section of an agent's configuration: which etcd, which cluster, which node,
//! how long its keys outlive it, and where identities come from.
//!
//! Owns the parsing of that section (camelCase, as the agent's YAML writes it) and its checks,
//! which name the field, the value and the reason. It must not connect to anything.

use std::time::Duration;

use serde::{Deserialize, Deserializer};

use crate::error::ConfigError;

/// How long a node's keys outlive it when nothing else is said.
pub const DEFAULT_LEASE_TTL: Duration = Duration::from_secs(15);
/// The longest lease accepted: a dead node's endpoints must not linger for minutes.
pub const MAX_LEASE_TTL: Duration = Duration::from_secs(90);
/// The shortest lease accepted: etcd itself refuses shorter ones, and the keepalive runs at a
/// third of it.
pub const MIN_LEASE_TTL: Duration = Duration::from_secs(2);
/// How long an identity nobody references keeps its number before it is deleted.
pub const DEFAULT_IDENTITY_GRACE: Duration = Duration::from_secs(300);

/// Where the numeric identities of label sets come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum IdentitySource {
    /// Axoneme allocates them itself, under its own prefix in etcd.
    #[default]
    Axoneme,
    /// A Cilium cluster in kvstore mode allocates them; Axoneme only reads Cilium's keys.
    Cilium,
}

/// Files for a TLS connection to etcd.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// The CA certificate (PEM) that etcd's server certificates are checked against.
    pub ca: String,
    /// This node's client certificate (PEM).
    pub cert: String,
    /// The key of the client certificate (PEM).
    pub key: String,
}

/// The kvstore: etcd's client URLs and how to log in.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct KvstoreConfig {
    /// Client URLs of etcd's members, e.g. `http://127.0.0.1:2379`.
    pub endpoints: Vec<String>,
    /// TLS files, when etcd is served over TLS.
    #[serde(default)]
    pub tls: Option<TlsConfig>,
    /// User name, when etcd has authentication enabled.
    #[serde(default)]
    pub username: Option<String>,
    /// Password of `username`.
    #[serde(default)]
    pub password: Option<String>,
}

/// The `cluster` section.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ClusterConfig {
    /// The cluster's name; several clusters may share one etcd, each under its own prefix.
    pub name: String,
    /// This node's name, unique in the cluster (the runtime defaults it to the host name).
    pub node: String,
    /// The etcd to use.
    pub kvstore: KvstoreConfig,
    /// How long this node's keys outlive it (`15s` when not given, at most `90s`).
    #[serde(
        default = "default_lease_ttl",
        rename = "leaseTTL",
        deserialize_with = "deserialize_duration"
    )]
    pub lease_ttl: Duration,
    /// Where identities come from.
    #[serde(default)]
    pub identity_source: IdentitySource,
    /// How long an identity that nothing references any more keeps its number (`300s`).
    #[serde(
        default = "default_identity_grace",
        rename = "identityGracePeriod",
        deserialize_with = "deserialize_duration"
    )]
    pub identity_grace: Duration,
}

fn default_lease_ttl() -> Duration {
    DEFAULT_LEASE_TTL
}

fn default_identity_grace() -> Duration {
    DEFAULT_IDENTITY_GRACE
}

impl ClusterConfig {
    /// A configuration with the defaults for everything but the names and the endpoints.
    pub fn new(name: &str, node: &str, endpoints: Vec<String>) -> ClusterConfig {
        ClusterConfig {
            name: name.to_owned(),
            node: node.to_owned(),
            kvstore: KvstoreConfig {
                endpoints,
                tls: None,
                username: None,
                password: None,
            },
            lease_ttl: DEFAULT_LEASE_TTL,
            identity_source: IdentitySource::Axoneme,
            identity_grace: DEFAULT_IDENTITY_GRACE,
        }
    }

    /// Checks every field; the first problem found is returned.
    pub fn validate(&self) -> Result<(), ConfigError> {
        check_name("cluster.name", &self.name)?;
        check_name("cluster.node", &self.node)?;
        if self.kvstore.endpoints.is_empty() {
            return Err(ConfigError::new(
                "cluster.kvstore.endpoints",
                "[]",
                "at least one etcd client URL is needed",
            ));
        }
        for (i, endpoint) in self.kvstore.endpoints.iter().enumerate() {
            let scheme_ok = endpoint.starts_with("http://") || endpoint.starts_with("https://");
            let host = endpoint.split_once("://").map_or("", |(_, rest)| rest);
            if !scheme_ok || host.is_empty() {
                return Err(ConfigError::new(
                    &format!("cluster.kvstore.endpoints[{i}]"),
                    &format!("{endpoint:?}"),
                    "a client URL is http://host:port or https://host:port",
                ));
            }
            if endpoint.starts_with("https://") && self.kvstore.tls.is_none() {
                return Err(ConfigError::new(
                    &format!("cluster.kvstore.endpoints[{i}]"),
                    &format!("{endpoint:?}"),
                    "an https endpoint needs cluster.kvstore.tls (ca, cert, key)",
                ));
            }
        }
        if let Some(tls) = &self.kvstore.tls {
            for (field, path) in [("ca", &tls.ca), ("cert", &tls.cert), ("key", &tls.key)] {
                if path.is_empty() {
                    return Err(ConfigError::new(
                        &format!("cluster.kvstore.tls.{field}"),
                        &format!("{path:?}"),
                        "a path to a PEM file is needed",
                    ));
                }
            }
        }
        match (&self.kvstore.username, &self.kvstore.password) {
            (Some(user), Some(_)) if user.is_empty() => {
                return Err(ConfigError::new(
                    "cluster.kvstore.username",
                    &format!("{user:?}"),
                    "an empty user name cannot log in",
                ))
            }
            (Some(_), None) => {
                return Err(ConfigError::new(
                    "cluster.kvstore.password",
                    "(missing)",
                    "a username needs a password",
                ))
            }
            (None, Some(_)) => {
                return Err(ConfigError::new(
                    "cluster.kvstore.username",
                    "(missing)",
                    "a password needs a username",
                ))
            }
            _ => {}
        }
        if self.lease_ttl < MIN_LEASE_TTL || self.lease_ttl > MAX_LEASE_TTL {
            return Err(ConfigError::new(
                "cluster.leaseTTL",
                &format!("{:?}", self.lease_ttl),
                &format!(
                    "must be between {}s and {}s: longer leaves a dead node's endpoints in \
                     place for minutes",
                    MIN_LEASE_TTL.as_secs(),
                    MAX_LEASE_TTL.as_secs()
                ),
            ));
        }
        if self.lease_ttl.subsec_nanos() != 0 {
            return Err(ConfigError::new(
                "cluster.leaseTTL",
                &format!("{:?}", self.lease_ttl),
                "etcd leases count whole seconds",
            ));
        }
        if self.identity_grace.is_zero() {
            return Err(ConfigError::new(
                "cluster.identityGracePeriod",
                "0s",
                "a released identity needs time for the nodes that still hold it in policy",
            ));
        }
        Ok(())
    }
}

/// Names become key segments: they must be non-empty and must not contain `/`.
fn check_name(field: &str, value: &str) -> Result<(), ConfigError> {
    if value.is_empty() {
        return Err(ConfigError::new(field, "\"\"", "must not be empty"));
    }
    if let Some(bad) = value
        .chars()
        .find(|c| *c == '/' || c.is_whitespace() || c.is_control())
    {
        return Err(ConfigError::new(
            field,
            &format!("{value:?}"),
            &format!("{bad:?} is not allowed: the name is a segment of etcd keys"),
        ));
    }
    Ok(())
}

/// Reads `15s`, `500ms`, `2m`, or a bare number of seconds.
fn deserialize_duration<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Duration, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        Seconds(u64),
        Text(String),
    }
    match Raw::deserialize(deserializer)? {
        Raw::Seconds(s) => Ok(Duration::from_secs(s)),
        Raw::Text(text) => parse_duration(&text).map_err(serde::de::Error::custom),
    }
}

/// Parses a duration written as a number and a unit (`ms`, `s`, `m`).
pub(crate) fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let value: u64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a duration such as 15s, 500ms or 1m"))?;
    match unit {
        "ms" => Ok(Duration::from_millis(value)),
        "s" | "" => Ok(Duration::from_secs(value)),
        "m" => Ok(Duration::from_secs(value.saturating_mul(60))),
        _ => Err(format!(
            "{text:?} has the unit {unit:?}; use ms, s or m (e.g. 15s)"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(yaml: &str) -> ClusterConfig {
        serde_yaml::from_str(yaml).unwrap()
    }

    #[test]
    fn the_issue_example_parses_with_defaults() {
        let config = parse(
            "name: galaxy\nnode: node-a\nkvstore:\n  endpoints: [\"http://127.0.0.1:2379\"]\n\
             leaseTTL: 20s\nidentitySource: cilium\n",
        );
        assert_eq!(config.lease_ttl, Duration::from_secs(20));
        assert_eq!(config.identity_source, IdentitySource::Cilium);
        assert_eq!(config.identity_grace, DEFAULT_IDENTITY_GRACE);
        config.validate().unwrap();
        let config = parse("name: g\nnode: n\nkvstore: {endpoints: [\"http://e:1\"]}\n");
        assert_eq!(config.lease_ttl, DEFAULT_LEASE_TTL);
        assert_eq!(config.identity_source, IdentitySource::Axoneme);
    }

    #[test]
    fn unknown_fields_are_refused() {
        let error = serde_yaml::from_str::<ClusterConfig>(
            "name: g\nnode: n\nkvstore: {endpoints: []}\nleaseTtl: 5s\n",
        )
        .unwrap_err()
        .to_string();
        assert!(error.contains("leaseTtl"), "{error}");
    }

    #[test]
    fn durations_take_a_unit() {
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        assert_eq!(parse_duration("7").unwrap(), Duration::from_secs(7));
        assert!(parse_duration("5h").unwrap_err().contains("unit \"h\""));
        assert!(parse_duration("s").is_err());
    }

    #[test]
    fn validation_names_the_field_the_value_and_the_reason() {
        let base = ClusterConfig::new("galaxy", "node-a", vec!["http://127.0.0.1:2379".into()]);
        base.validate().unwrap();

        let mut config = base.clone();
        config.lease_ttl = Duration::from_secs(120);
        let error = config.validate().unwrap_err().to_string();
        assert!(error.starts_with("cluster.leaseTTL = 120s:"), "{error}");
        assert!(error.contains("between 2s and 90s"), "{error}");

        let mut config = base.clone();
        config.node = "a/b".into();
        let error = config.validate().unwrap_err().to_string();
        assert!(error.contains("cluster.node = \"a/b\""), "{error}");

        let mut config = base.clone();
        config.kvstore.endpoints = vec!["127.0.0.1:2379".into()];
        let error = config.validate().unwrap_err().to_string();
        assert!(error.contains("cluster.kvstore.endpoints[0]"), "{error}");

        let mut config = base.clone();
        config.kvstore.endpoints = vec!["https://127.0.0.1:2379".into()];
        let error = config.validate().unwrap_err().to_string();
        assert!(error.contains("needs cluster.kvstore.tls"), "{error}");

        let mut config = base.clone();
        config.kvstore.username = Some("root".into());
        let error = config.validate().unwrap_err().to_string();
        assert!(error.contains("needs a password"), "{error}");

        let mut config = base;
        config.lease_ttl = Duration::from_millis(2500);
        let error = config.validate().unwrap_err().to_string();
        assert!(error.contains("whole seconds"), "{error}");
    }
}
