//! `cql-fixture`: an in-memory CQL server speaking native protocol v4 and v5, for Axoneme's
//! tests and demos where no Cassandra can run. It is not a database: one process, one store in
//! memory, a small subset of CQL.
//!
//! [`cql`] reads statements by Cassandra's grammar and classifies them as policy sees them,
//! [`journal`] records what it read of each request, [`store`] evaluates them over keyspaces and tables held in memory
//! (with the system tables drivers read on connect), [`types`] encodes values, [`wire`] reads
//! request bodies and writes response bodies, [`framing`] carries envelopes unframed or in v5
//! segments, [`session`] answers a connection's requests, and [`server`] runs connections.

pub mod cql;
pub mod framing;
pub mod journal;
pub mod server;
pub mod session;
pub mod store;
pub mod types;
pub mod wire;
