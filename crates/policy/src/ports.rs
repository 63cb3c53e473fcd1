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
        Some(PortValue::Text(text)) if is_octal_looking(text) => {
            return Err(FieldError::new(
                format!("{path}.port"),
                format!(
                    "port {text:?} has a leading zero, which Cilium reads as an octal number \
                     (\"010\" is port 8); write the port in decimal without leading zeros"
                ),
            ))
        }
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

/// Whether a port string is digits with a leading zero (`"010"`): Cilium parses port strings
/// with Go's `strconv.ParseUint(port, 0, 16)`, which reads them as octal.
fn is_octal_looking(text: &str) -> bool {
    text.len() > 1 && text.starts_with('0') && text.bytes().all(|b| b.is_ascii_digit())
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

    /// Cilium reads a port string with Go's `strconv.ParseUint(port, 0, 16)`
    /// (cilium/cilium `pkg/policy/api/rule_validation.go`, `PortProtocol.sanitize`): base 0, so
    /// `"010"` is port 8 there and `"08"` is refused. Read as decimal, `"010"` would open port 10,
    /// which the same policy keeps closed in Cilium; such a port is refused.
    #[test]
    fn a_port_string_with_a_leading_zero_is_refused() {
        for text in ["010", "0080", "08", "00"] {
            let error = entry(&format!("{{port: '{text}'}}")).unwrap_err();
            assert!(
                error.starts_with(&format!("p.port: port \"{text}\" has a leading zero")),
                "{error}"
            );
        }
        assert_eq!(entry("{port: '0'}").unwrap().range, PortRange::ALL);
        assert_eq!(entry("{port: '10'}").unwrap().range.single(), Some(10));
        assert!(entry("{port: '010', endPort: 20}").is_err());
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
