//! Listeners: bind an address and hand each accepted connection to its own task.
//!
//! A listener decides where each connection goes (today: its configured upstream) and knows what
//! its connections guard ([`Route`]); it decides nothing about policy.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;

use crate::connection::{serve, Ends, Route, Shared};

/// Accepts connections until the task is aborted, sending each to `upstream`.
pub(crate) async fn accept_loop(
    listener: TcpListener,
    upstream: SocketAddr,
    route: Arc<Route>,
    shared: Arc<Shared>,
) {
    loop {
        match listener.accept().await {
            Ok((stream, client)) => {
                let ends = Ends { client, upstream };
                tokio::spawn(serve(stream, ends, Arc::clone(&route), Arc::clone(&shared)));
            }
            Err(error) => {
                // Usually out of file descriptors: wait a little rather than spin.
                tracing::warn!(listener = %route.listener, %error, "accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// Binds `addr`, with a clear error naming the listener.
pub(crate) async fn bind(name: &str, addr: SocketAddr) -> anyhow::Result<TcpListener> {
    TcpListener::bind(addr)
        .await
        .map_err(|error| anyhow::anyhow!("listener {name:?}: cannot listen on {addr}: {error}"))
}
