//! Cluster mode against real etcd processes (Debian's `etcd-server`), one per test: a single
//! member for most, three for the quorum tests.

mod cilium;
mod endpoints;
mod faults;
mod identities;
mod mirrors;
mod policies;
mod security;
mod support;
