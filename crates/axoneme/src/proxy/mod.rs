//! The data path of the agent: listeners that accept connections, the per-core workers that run
//! them, the decision taken on each connection, and the connections themselves, which move
//! bytes through the datapath engine and a parser under the policy of every endpoint they guard.
//!
//! What it owns: sockets, read buffers, output waiting to be written, the overload guard, and
//! the connection decision ([`decision`], pure, shared with `policy trace`). What it must not do:
//! change policy state, install redirect rules or serve the API; it reads the policy snapshot
//! in force and reports what happened through the access log and the metrics of
//! [`crate::telemetry`].

pub(crate) mod connection;
pub(crate) mod decision;
pub(crate) mod guards;
pub(crate) mod listener;
mod outbox;
pub(crate) mod overload;
mod read_buffers;
#[allow(unsafe_code)] // the socket options of transparent proxying; each block says why it is sound
pub(crate) mod sockets;
pub(crate) mod workers;
