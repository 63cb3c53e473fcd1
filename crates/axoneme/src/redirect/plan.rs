//! Which traffic policy steers to which transparent listener: for every endpoint, direction
//! and port with L7 rules, the listener that takes it, or none (and then the traffic is
//! refused). Pure: it reads a policy snapshot and the bound listeners and installs nothing.

use std::net::{IpAddr, SocketAddr};

use axoneme_policy::Snapshot;
use axoneme_sdk::Direction;
use serde::Serialize;

use crate::config::{ListenerConfig, ListenerMode};

/// One endpoint, direction and port with L7 rules, and the listener its traffic goes to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Redirect {
    /// The endpoint.
    pub endpoint: String,
    /// Ingress or egress.
    #[serde(serialize_with = "crate::config::direction_name::serialize")]
    pub direction: Direction,
    /// The destination port.
    pub port: u16,
    /// The protocol the policy names.
    pub l7proto: String,
    /// The endpoint's addresses the rules match.
    pub ips: Vec<IpAddr>,
    /// The transparent listener receiving the traffic; none when no listener fits, and then
    /// new connections of that traffic are dropped unless another rule steers them.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub listener: Option<Target>,
}

/// A transparent listener as the rules steer to it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Target {
    /// Its name.
    pub name: String,
    /// tproxy or redirect.
    pub mode: ListenerMode,
    /// The address it is bound to.
    pub address: SocketAddr,
}

/// The redirects `snapshot` calls for, given the running listeners.
///
/// The listener for an endpoint, direction and port is a transparent listener of that direction
/// that guards that endpoint (or every endpoint) and parses that protocol; failing that, the one
/// such listener that names no protocol.
pub fn plan(snapshot: &Snapshot, listeners: &[BoundListener]) -> Vec<Redirect> {
    snapshot
        .l7_ports()
        .into_iter()
        .map(|port| {
            let candidates: Vec<&BoundListener> = listeners
                .iter()
                .filter(|l| {
                    l.config.mode.is_transparent()
                        && l.config.direction == port.direction
                        && !matches!(&l.config.endpoint, Some(e) if *e != port.endpoint)
                })
                .collect();
            let by_proto = candidates
                .iter()
                .find(|l| l.config.l7proto.as_deref() == Some(&*port.proto));
            let unnamed: Vec<&&BoundListener> = candidates
                .iter()
                .filter(|l| l.config.l7proto.is_none())
                .collect();
            let chosen = by_proto.or(match unnamed.as_slice() {
                [only] => Some(*only),
                _ => None,
            });
            Redirect {
                endpoint: port.endpoint,
                direction: port.direction,
                port: port.port,
                l7proto: port.proto.to_string(),
                ips: port.ips.iter().map(|ip| ip.to_canonical()).collect(),
                listener: chosen.map(|l| Target {
                    name: l.config.name.clone(),
                    mode: l.config.mode,
                    address: l.address,
                }),
            }
        })
        .collect()
}

/// A listener as the plan sees it: how it is configured and where it is bound.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BoundListener {
    /// Its configuration.
    pub config: ListenerConfig,
    /// The address it is bound to.
    pub address: SocketAddr,
}
