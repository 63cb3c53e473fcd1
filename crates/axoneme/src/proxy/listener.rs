//! Listeners: bind an address, hand each accepted connection to a task on a worker, and drain.
//!
//! A listener decides where each connection goes (its configured upstream, or for a transparent
//! listener the connection's original destination) and knows what its connections guard
//! ([`Route`]); it decides nothing about policy. Its [`Tracker`] counts
//! open connections so that a removed listener can let them finish, and closes the stragglers
//! when the drain time is over. A listener refuses connections over its own `maxConnections` and
//! the agent's, and stops accepting while the agent is overloaded ([`crate::proxy::overload`]).

use std::fmt::Display;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Notify};

use crate::config::ListenerMode;
use crate::proxy::connection::{serve, Ends, Route, Shared};
use crate::proxy::sockets;
use crate::proxy::workers::Workers;
use crate::telemetry::metrics::{LimitHit, SocketError};
use crate::telemetry::throttle::throttled_warn;

/// The open connections of one listener.
#[derive(Debug)]
pub(crate) struct Tracker {
    active: AtomicUsize,
    /// Most connections open at once.
    max: usize,
    idle: Notify,
    close: watch::Sender<bool>,
}

impl Tracker {
    /// A tracker for a listener holding at most `max` connections at once.
    pub(crate) fn new(max: Option<usize>) -> Arc<Tracker> {
        Arc::new(Tracker {
            active: AtomicUsize::new(0),
            max: max.unwrap_or(usize::MAX),
            idle: Notify::new(),
            close: watch::Sender::new(false),
        })
    }

    /// Connections open now.
    pub(crate) fn active(&self) -> usize {
        self.active.load(Ordering::Acquire)
    }

    /// Waits until every connection has finished, or `timeout` has passed; then closes the
    /// connections still open and waits for them to go.
    pub(crate) async fn drain(&self, timeout: Duration) {
        if tokio::time::timeout(timeout, self.idle()).await.is_err() {
            tracing::warn!(
                open = self.active(),
                "drain time over; closing the remaining connections"
            );
            self.close.send_replace(true);
            self.idle().await;
        }
    }

    async fn idle(&self) {
        loop {
            let notified = self.idle.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.active() == 0 {
                return;
            }
            notified.await;
        }
    }
}

/// Held by a connection task for its whole life.
struct Open(Arc<Tracker>);

impl Open {
    /// Counts one more connection, or `None` when the listener holds its maximum.
    fn new(tracker: &Arc<Tracker>) -> Option<Open> {
        tracker
            .active
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |active| {
                (active < tracker.max).then_some(active + 1)
            })
            .ok()?;
        Some(Open(Arc::clone(tracker)))
    }
}

impl Drop for Open {
    fn drop(&mut self) {
        if self.0.active.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.idle.notify_waiters();
        }
    }
}

/// Where a listener's connections go.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Destination {
    /// Every connection to this upstream.
    Upstream(SocketAddr),
    /// Each connection to its original destination, as the listener's mode learns it.
    Original(ListenerMode),
}

impl Destination {
    /// The upstream of one accepted connection, or why it has none.
    fn of(self, stream: &TcpStream, listening: SocketAddr) -> Result<SocketAddr, String> {
        let original = match self {
            Destination::Upstream(upstream) => return Ok(upstream),
            Destination::Original(ListenerMode::Redirect) => sockets::original_destination(stream)
                .map_err(|e| format!("no original destination (not redirected?): {e}"))?,
            Destination::Original(_) => stream
                .local_addr()
                .map_err(|e| format!("no local address: {e}"))?,
        };
        let original = canonical(original);
        // A client that dialed the listener itself has no other destination: forwarding it
        // would connect the proxy to itself.
        if original.port() == listening.port()
            && (listening.ip().is_unspecified() || canonical(listening).ip() == original.ip())
        {
            return Err(format!(
                "{original} is the listener itself, not a redirected destination"
            ));
        }
        Ok(original)
    }
}

/// The address with an IPv4-mapped IPv6 address written as IPv4.
pub(crate) fn canonical(addr: SocketAddr) -> SocketAddr {
    SocketAddr::new(addr.ip().to_canonical(), addr.port())
}

/// Accepts connections until the task is aborted, sending each where `destination` says. Does
/// not accept while the agent is overloaded; refuses (closes at once) connections over the
/// listener's or the agent's maximum.
pub(crate) async fn accept_loop(
    listener: TcpListener,
    destination: Destination,
    route: Arc<Route>,
    shared: Arc<Shared>,
    tracker: Arc<Tracker>,
    workers: Arc<Workers>,
) {
    let listening = listener
        .local_addr()
        .unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)));
    loop {
        shared.overload.accepting().await;
        match listener.accept().await {
            Ok((stream, client)) => {
                let Some(open) = Open::new(&tracker) else {
                    shared.overload.hit(
                        LimitHit::ListenerConnections,
                        format_args!(
                            "connection from {client} refused: listener {} holds its maxConnections ({})",
                            route.listener, tracker.max
                        ),
                    );
                    continue;
                };
                let Some(admitted) = shared.overload.admit() else {
                    continue;
                };
                let upstream = match destination.of(&stream, listening) {
                    Ok(upstream) => upstream,
                    Err(reason) => {
                        no_destination(&shared, &route, client, &reason);
                        continue;
                    }
                };
                let ends = Ends {
                    client: canonical(client),
                    upstream,
                };
                // The socket leaves this runtime's event loop for its worker's.
                let stream = match stream.into_std() {
                    Ok(stream) => stream,
                    Err(error) => {
                        no_destination(&shared, &route, client, &error);
                        continue;
                    }
                };
                let mut closing = tracker.close.subscribe();
                let (route, shared) = (Arc::clone(&route), Arc::clone(&shared));
                workers.spawn(async move {
                    match TcpStream::from_std(stream) {
                        Ok(stream) => serve(stream, ends, &route, &shared, &mut closing).await,
                        Err(error) => no_destination(&shared, &route, client, &error),
                    }
                    drop((open, admitted));
                });
            }
            Err(error) => {
                // Usually out of file descriptors: wait a little rather than spin.
                shared.metrics.socket_error(SocketError::Accept);
                throttled_warn!(
                    shared.throttle,
                    SocketError::Accept.name(),
                    listener = %route.listener,
                    %error,
                    "accept failed"
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// Counts and logs a connection closed because it could not be sent anywhere.
fn no_destination(shared: &Shared, route: &Route, client: SocketAddr, reason: &dyn Display) {
    shared.metrics.socket_error(SocketError::Destination);
    throttled_warn!(
        shared.throttle,
        SocketError::Destination.name(),
        listener = %route.listener,
        %client,
        %reason,
        "connection closed"
    );
}

/// Binds `addr` (transparently for a tproxy listener), with a clear error naming the listener.
pub(crate) fn bind(
    name: &str,
    addr: SocketAddr,
    mode: ListenerMode,
) -> std::io::Result<TcpListener> {
    sockets::listen(addr, mode == ListenerMode::Tproxy).map_err(|error| {
        std::io::Error::new(
            error.kind(),
            format!(
                "listener {name:?}: cannot listen on {addr}: {error}{}",
                sockets::missing_privilege(&error, addr)
            ),
        )
    })
}
