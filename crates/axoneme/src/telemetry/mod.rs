//! What the agent tells about the traffic it sees: the access log ([`access_log`], Cilium's JSON
//! or its compact form, written by a thread of its own, shared with the Envoy filter), its lines
//! read back in either form ([`log_forms`]), its live view ([`monitor`]) and the ring of recent entries it replays ([`recent`]) and the filters watchers choose
//! from it ([`flow_filter`]), Prometheus [`metrics`] with the build's and the process's own
//! ([`process`]) and the verdicts of each endpoint by policy ([`policy_verdicts`]), reports
//! of what the log and the monitor lost ([`report`]) and rate limits for operational log lines
//! about floods of events ([`throttle`]).
//!
//! Everything here records and counts what it is given, bounded in bytes; it decides nothing
//! about traffic and never blocks a connection.

pub mod access_log;
pub mod flow_filter;
pub mod log_forms;
pub mod metrics;
pub mod monitor;
pub mod policy_verdicts;
pub mod process;
pub use axoneme_access_log::recent;
pub mod report;
pub(crate) mod throttle;
