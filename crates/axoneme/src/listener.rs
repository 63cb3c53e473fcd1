//! Listeners: bind an address, hand each accepted connection to its own task, and drain.
//!
//! A listener decides where each connection goes (today: its configured upstream) and knows what
//! its connections guard ([`Route`]); it decides nothing about policy. Its [`Tracker`] counts
//! open connections so that a removed listener can let them finish, and closes the stragglers
//! when the drain time is over.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::{watch, Notify};

use crate::connection::{serve, Ends, Route, Shared};

/// The open connections of one listener.
#[derive(Debug)]
pub(crate) struct Tracker {
    active: AtomicUsize,
    idle: Notify,
    close: watch::Sender<bool>,
}

impl Tracker {
    pub(crate) fn new() -> Arc<Tracker> {
        Arc::new(Tracker {
            active: AtomicUsize::new(0),
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
    fn new(tracker: &Arc<Tracker>) -> Open {
        tracker.active.fetch_add(1, Ordering::AcqRel);
        Open(Arc::clone(tracker))
    }
}

impl Drop for Open {
    fn drop(&mut self) {
        if self.0.active.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.idle.notify_waiters();
        }
    }
}

/// Accepts connections until the task is aborted, sending each to `upstream`.
pub(crate) async fn accept_loop(
    listener: TcpListener,
    upstream: SocketAddr,
    route: Arc<Route>,
    shared: Arc<Shared>,
    tracker: Arc<Tracker>,
) {
    loop {
        match listener.accept().await {
            Ok((stream, client)) => {
                let ends = Ends { client, upstream };
                let open = Open::new(&tracker);
                let closing = tracker.close.subscribe();
                let (route, shared) = (Arc::clone(&route), Arc::clone(&shared));
                tokio::spawn(async move {
                    serve(stream, ends, route, shared, closing).await;
                    drop(open);
                });
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
pub(crate) async fn bind(name: &str, addr: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(addr).await.map_err(|error| {
        std::io::Error::new(
            error.kind(),
            format!("listener {name:?}: cannot listen on {addr}: {error}"),
        )
    })
}
