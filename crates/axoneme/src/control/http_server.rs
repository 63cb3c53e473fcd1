//! Serving the API and metrics routers over HTTP/1, with a bound on how long a client may take
//! to send a request head.
//!
//! `axum::serve` offers no such bound. This is what it does for HTTP/1 (a task per accepted
//! connection running hyper's server over the router) plus hyper's header read timeout, which
//! runs whenever the server waits for a request head: from the connection's start and again
//! after each answer, before any authentication. A connection that sends no whole request head
//! in time is closed; if it was never answered it is counted and logged, at most once per ten
//! seconds (a connection kept alive after its requests and then left idle is closed the same way,
//! quietly).

use std::fmt::Debug;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use axum::serve::Listener;
use axum::Router;
use hyper::server::conn::http1;
use hyper::service::{service_fn, Service as _};
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;

use crate::telemetry::metrics::Timeout;
use crate::telemetry::throttle::throttled_warn;
use crate::Agent;

/// Serves `router` on every connection `listener` accepts, for as long as the task runs, with
/// the agent's `timeouts.apiHeader`.
pub(crate) async fn serve<L>(mut listener: L, router: Router, agent: &Agent)
where
    L: Listener,
    L::Addr: Debug,
{
    let header_timeout = agent.api_header_timeout;
    let (metrics, throttle) = (&agent.shared.metrics, &agent.shared.throttle);
    loop {
        let (io, client) = listener.accept().await;
        let routes = TowerToHyperService::new(router.clone());
        let (metrics, throttle) = (Arc::clone(metrics), Arc::clone(throttle));
        tokio::spawn(async move {
            let answered = Arc::new(AtomicBool::new(false));
            let noted = Arc::clone(&answered);
            let service = service_fn(move |request| {
                noted.store(true, Ordering::Relaxed);
                routes.call(request)
            });
            let served = http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(header_timeout)
                .serve_connection(TokioIo::new(io), service)
                .await;
            match served {
                Err(error) if error.is_timeout() && !answered.load(Ordering::Relaxed) => {
                    metrics.timed_out(Timeout::ApiHeader);
                    throttled_warn!(
                        throttle,
                        Timeout::ApiHeader.name(),
                        ?client,
                        kind = Timeout::ApiHeader.name(),
                        "API connection closed: timeout"
                    );
                }
                Err(error) => tracing::debug!(?client, %error, "API connection ended"),
                Ok(()) => {}
            }
        });
    }
}
