//! Connection workers: one single-threaded runtime per core, each on a thread of its own, that
//! serve the connections the listeners hand them.
//!
//! A connection stays on its worker for its whole life: its socket events, its task and its
//! parser never move between threads, and a request's bytes cross no thread on their way
//! through the proxy (a work-stealing runtime would wake an idle thread to steal nearly every
//! woken connection, costing a thread wake-up per request). Listeners, the API and the file
//! watcher run on the agent's own runtime. This module knows nothing of what the connections do.

use std::future::Future;
use std::io;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::thread;

use tokio::runtime::{Builder, Handle};
use tokio::sync::oneshot;

/// The running workers. Dropping this stops them; connections still on them are closed.
pub(crate) struct Workers {
    handles: Vec<Handle>,
    /// Dropped with the workers: each worker's runtime then stops.
    _stop: Vec<oneshot::Sender<()>>,
    next: AtomicUsize,
}

impl Workers {
    /// Starts `count` workers (at least one).
    pub(crate) fn start(count: usize) -> io::Result<Workers> {
        let count = count.max(1);
        let mut handles = Vec::with_capacity(count);
        let mut stops = Vec::with_capacity(count);
        for index in 0..count {
            let (handle_tx, handle_rx) = mpsc::channel();
            let (stop_tx, stop_rx) = oneshot::channel::<()>();
            thread::Builder::new()
                .name(format!("worker-{index}"))
                .spawn(move || {
                    let runtime = match Builder::new_current_thread().enable_all().build() {
                        Ok(runtime) => runtime,
                        Err(error) => {
                            let _ = handle_tx.send(Err(error));
                            return;
                        }
                    };
                    let _ = handle_tx.send(Ok(runtime.handle().clone()));
                    // Serves spawned connections until the workers are dropped; dropping the
                    // runtime here, on its own thread, closes what is still open.
                    runtime.block_on(async {
                        let _ = stop_rx.await;
                    });
                })?;
            let handle = handle_rx
                .recv()
                .map_err(|_| io::Error::other("a worker thread ended while starting"))??;
            handles.push(handle);
            stops.push(stop_tx);
        }
        Ok(Workers {
            handles,
            _stop: stops,
            next: AtomicUsize::new(0),
        })
    }

    /// Runs `task` on the next worker in turn.
    pub(crate) fn spawn<F>(&self, task: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let index = self.next.fetch_add(1, Ordering::Relaxed) % self.handles.len();
        self.handles[index].spawn(task);
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;
    use std::sync::{Arc, Mutex};

    use super::*;

    #[test]
    fn tasks_are_spread_over_every_worker_each_on_one_thread() {
        let workers = Workers::start(3).unwrap();
        let threads = Arc::new(Mutex::new(Vec::new()));
        let (done_tx, done_rx) = mpsc::channel();
        for _ in 0..6 {
            let (threads, done) = (Arc::clone(&threads), done_tx.clone());
            workers.spawn(async move {
                let before = thread::current().id();
                tokio::task::yield_now().await;
                tokio::time::sleep(std::time::Duration::from_millis(1)).await;
                assert_eq!(
                    thread::current().id(),
                    before,
                    "a task moved between threads"
                );
                threads.lock().unwrap().push(before);
                done.send(()).unwrap();
            });
        }
        for _ in 0..6 {
            done_rx
                .recv_timeout(std::time::Duration::from_secs(10))
                .unwrap();
        }
        let distinct: HashSet<_> = threads.lock().unwrap().iter().copied().collect();
        assert_eq!(distinct.len(), 3);
    }

    #[test]
    fn dropping_the_workers_closes_what_runs_on_them() {
        let workers = Workers::start(1).unwrap();
        let (dropped_tx, dropped_rx) = mpsc::channel::<()>();
        workers.spawn(async move {
            let _held_until_dropped = dropped_tx;
            std::future::pending::<()>().await;
        });
        drop(workers);
        // The sender is dropped with the task, which ends the channel.
        assert!(dropped_rx
            .recv_timeout(std::time::Duration::from_secs(10))
            .is_err());
    }
}
