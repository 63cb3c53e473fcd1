//! `toPorts[].ports[]` elements: port numbers, ranges and transport protocols.
//!
//! Owns what a port entry means and which entries can ever match a connection (Axoneme proxies
//! TCP only). It must not know about peers or L7 rules.

use crate::error::FieldError;
use crate::model::{PortModel, PortValue};

/// An inclusive range of TCP ports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct PortRange {
    first: u16,
    last: u16,
}

impl PortRange {
    /// Every port.
    pub(crate) const ALL: PortRange = PortRange {
        first: 0,
        last: u16::MAX,
    };

    /// Whether `port` is in the range.
    pub(crate) fn contains(self, port: u16) -> bool {
        self.first <= port && port <= self.last
    }

    /// The port, when the range holds exactly one named port (not the wildcard).
    pub(crate) fn single(self) -> Option<u16> {
        (self.first == self.last && self.first != 0).then_some(self.first)
    }
}

/// One checked port entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct PortEntry {
    /// The ports it names.
    pub range: PortRange,
    /// False for UDP and SCTP entries: accepted, but never matching a proxied connection.
    pub tcp: bool,
}

/// Checks the port entry written at `path`.
pub(crate) fn parse_port(model: &PortModel, path: &str) -> Result<PortEntry, FieldError> {
    let port = match &model.port {
        None => 0,
        Some(PortValue::Number(n)) => port_number(*n, &format!("{path}.port"))?,
        Some(PortValue::Text(text)) => match text.parse::<u64>() {
            Ok(n) => port_number(n, &format!("{path}.port"))?,
            Err(_) if text.is_empty() => 0,
            Err(_) => {
                return Err(FieldError::new(
                    format!("{path}.port"),
                    format!("named port {text:?} is not supported by axoneme (use a number)"),
                ))
            }
        },
    };
    let range = match model.end_port {
        None | Some(0) => {
            if port == 0 {
                PortRange::ALL
            } else {
                PortRange {
                    first: port,
                    last: port,
                }
            }
        }
        Some(_) if port == 0 => {
            return Err(FieldError::new(
                format!("{path}.endPort"),
                "endPort needs a port",
            ))
        }
        Some(end) => {
            let last = u64::try_from(end)
                .ok()
                .and_then(|e| u16::try_from(e).ok())
                .filter(|&e| e >= port)
                .ok_or_else(|| {
                    FieldError::new(
                        format!("{path}.endPort"),
                        format!("endPort {end} must be between port {port} and 65535"),
                    )
                })?;
            PortRange { first: port, last }
        }
    };
    let tcp = match model.protocol.as_deref() {
        None | Some("TCP") | Some("ANY") => true,
        Some("UDP") | Some("SCTP") => false,
        Some(other) => {
            return Err(FieldError::new(
                format!("{path}.protocol"),
                format!("unsupported protocol {other:?} (expected TCP, UDP, SCTP or ANY)"),
            ))
        }
    };
    Ok(PortEntry { range, tcp })
}

fn port_number(n: u64, field: &str) -> Result<u16, FieldError> {
    u16::try_from(n)
        .map_err(|_| FieldError::new(field, format!("port {n} is out of range 0-65535")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(yaml: &str) -> Result<PortEntry, String> {
        let model: PortModel = serde_yaml::from_str(yaml).unwrap();
        parse_port(&model, "p").map_err(|e| format!("{}: {}", e.field, e.message))
    }

    #[test]
    fn numbers_strings_and_wildcards() {
        let single = PortRange {
            first: 80,
            last: 80,
        };
        assert_eq!(
            entry("{port: 80}"),
            Ok(PortEntry {
                range: single,
                tcp: true
            })
        );
        assert_eq!(
            entry("{port: '80'}"),
            Ok(PortEntry {
                range: single,
                tcp: true
            })
        );
        assert_eq!(single.single(), Some(80));
        for wildcard in ["{}", "{port: 0}", "{port: '0'}", "{protocol: ANY}"] {
            let parsed = entry(wildcard).unwrap();
            assert_eq!(parsed.range, PortRange::ALL, "{wildcard}");
            assert_eq!(parsed.range.single(), None);
        }
        assert!(!entry("{port: 53, protocol: UDP}").unwrap().tcp);
        assert!(!entry("{port: 53, protocol: SCTP}").unwrap().tcp);
    }

    #[test]
    fn ranges() {
        let range = entry("{port: 8000, endPort: 8002}").unwrap().range;
        assert!(range.contains(8000) && range.contains(8002) && !range.contains(8003));
        assert_eq!(range.single(), None);
        assert_eq!(
            entry("{port: 80, endPort: 80}").unwrap().range.single(),
            Some(80)
        );
        assert_eq!(
            entry("{endPort: 90}"),
            Err("p.endPort: endPort needs a port".into())
        );
        assert!(entry("{port: 80, endPort: 65536}").is_err());
        assert!(entry("{port: 80, endPort: -3}").is_err());
    }
}
