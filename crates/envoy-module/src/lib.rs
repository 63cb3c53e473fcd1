//! Axoneme inside Envoy: a dynamic-module network filter (`libaxoneme_envoy.so`) that runs the
//! same parsers, sans-IO datapath engine and CiliumNetworkPolicy engine as `axoneme run`, on the
//! connections of an Envoy listener, in front of `tcp_proxy`.
//!
//! The filter's `filter_config` is JSON: the `l7proto`, the guarded `endpoint` and its
//! `direction`, the `upstream` address policy sees, the source of policy and identities (the
//! `policies` files and the `endpoints` file in the agent's formats, or a running `agent`'s API
//! socket, followed as its policy changes), and the `access_log` file, written in the agent's
//! JSON format.
//! Each connection is decided when it opens (refused ones are logged and closed) and then parsed
//! request by request; a protocol error or a parser panic closes that connection only.
//!
//! Supported Envoy versions: 1.38, 1.39 and 1.40. The bindings follow the C header of the
//! dynamic-module ABI `v0.1.0` (`abi.h`), which Envoy 1.38 and 1.39 implement; Envoy 1.40 (ABI
//! `v0.2.0`) keeps `v0.1` modules working, as the ABI promises from one minor version to the
//! next, and loads this one with a warning that it was built for an older ABI. The tests run the
//! official 1.40.0 binary by default and pass with 1.38.3 and 1.39.3 (`ENVOY_BIN`). Envoy 1.37
//! identifies its ABI by a hash of an older header and is not supported.
//!
//! Modules: `abi` (the C declarations), `envoy` (a safe view of one connection through Envoy's
//! callbacks), `hooks` (the exported event hooks and the panic barrier), `config` (the filter
//! configuration), `agent_source` and `watch` (policy from a running agent), `filter` (one
//! connection), `access_log`; with the `fault-injection` feature,
//! `fault` (a protocol whose parser panics on request, for the tests).

// The library has no unit tests of its own: it is tested through a real Envoy (tests/envoy). Its
// test build is empty, because the agent's access log it compiles in carries the
// agent's unit tests, which build only in the agent's crate.
#![cfg(not(test))]

pub mod abi;
mod access_log;
mod agent_source;
mod config;
mod envoy;
#[cfg(feature = "fault-injection")]
mod fault;
mod filter;
pub mod hooks;
mod watch;
