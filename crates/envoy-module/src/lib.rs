//! Axoneme inside Envoy: a dynamic-module network filter (`libaxoneme_envoy.so`) that runs the
//! same parsers, sans-IO datapath engine and CiliumNetworkPolicy engine as `axoneme run`, on the
//! connections of an Envoy listener, in front of `tcp_proxy`.
//!
//! The filter's `filter_config` is JSON: the `l7proto`, the guarded `endpoint` and its
//! `direction`, the `upstream` address policy sees, the `policies` files and the `endpoints`
//! file in the agent's formats, and the `access_log` file, written in the agent's JSON format.
//! Each connection is decided when it opens (refused ones are logged and closed) and then parsed
//! request by request; a protocol error or a parser panic closes that connection only.
//!
//! Supported Envoy versions: 1.40 (built against the dynamic-module ABI of Envoy 1.40.0's
//! `abi.h`, ABI version `v0.1.0`, and tested with the official 1.40.0 binary). Envoy promises a
//! module built for release N works with N + 1, so 1.41 should load it too; earlier releases
//! (network filters exist since 1.37) declare parts of the ABI differently and are not supported.
//!
//! Modules: `abi` (the C declarations), `envoy` (a safe view of one connection through Envoy's
//! callbacks), `hooks` (the exported event hooks and the panic barrier), `config` (the filter
//! configuration), `filter` (one connection), `access_log`.

pub mod abi;
mod access_log;
mod config;
mod envoy;
mod filter;
pub mod hooks;
