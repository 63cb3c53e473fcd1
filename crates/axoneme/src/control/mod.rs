//! The control plane of the agent: the [`agent::Agent`] that `axoneme run` starts (listeners,
//! the access log, metrics, the redirector), its policy state ([`state`]), the REST API that
//! changes and shows it ([`api`]), the command line's client side ([`cli`], with [`observe`] and `status_view`), the watch of its
//! files ([`watch`]), the flow view in the browser ([`web`]) and, in cluster mode, the policies, endpoints and identity numbers shared
//! through the kvstore ([`cluster`]).
//!
//! Changes reach traffic only as a new policy snapshot swapped in by the state, or as listeners
//! started and drained by the agent. Nothing here reads or writes a proxied connection's bytes.

pub mod agent;
pub mod api;
pub mod cli;
pub mod cluster;
mod http_server;
#[allow(unsafe_code)]
// gmtime_r and localtime_r, for the times of flows; each block says why it is sound
pub mod observe;
pub mod state;
mod status_view;
pub mod watch;
pub mod web;
