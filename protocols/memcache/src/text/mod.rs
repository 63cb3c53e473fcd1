//! The memcached text protocol, classic and meta commands: request lines in [`request`], reply
//! framing in [`response`].

pub mod request;
pub mod response;

/// The reply injected for a denied text or meta request.
pub const DENIAL: &[u8] = b"CLIENT_ERROR access denied\r\n";

/// The request the proxy sends as a barrier: its `MN` reply marks that every earlier request has
/// been answered.
pub const BARRIER: &[u8] = b"mn\r\n";
