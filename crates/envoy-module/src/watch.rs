//! Following a running agent: a thread that asks the agent for its run and policy revision every
//! poll interval and, when either changed, compiles the agent's policies and endpoints into a new
//! snapshot that replaces the one in force; open connections take it up at their next bytes. An
//! agent that cannot be reached, or a snapshot that does not build, leaves the one in force and is
//! reported on stderr; the agent's policy is then read whole again at the next poll that reaches
//! it, whatever revision it tells (an agent started again counts from the start). The thread stops,
//! and is waited for, when the configuration that started it goes away: Envoy may unload the module
//! right after.

use std::net::IpAddr;
use std::sync::{Arc, Condvar, Mutex, Weak};
use std::thread::JoinHandle;
use std::time::Duration;

use arc_swap::ArcSwap;
use axoneme_policy::Snapshot;

use crate::agent_source::{AgentSource, AgentVersion};
use crate::config::protocols;

/// The stop signal shared with the thread.
#[derive(Default)]
struct Stop {
    stopped: Mutex<bool>,
    wake: Condvar,
}

impl Stop {
    /// Waits up to `interval`; true once stopping was asked.
    fn wait(&self, interval: Duration) -> bool {
        let stopped = self.stopped.lock().unwrap_or_else(|p| p.into_inner());
        let (stopped, _) = self
            .wake
            .wait_timeout_while(stopped, interval, |stopped| !*stopped)
            .unwrap_or_else(|p| p.into_inner());
        *stopped
    }
}

/// The thread following the agent.
pub(crate) struct Watcher {
    stop: Arc<Stop>,
    thread: Option<JoinHandle<()>>,
}

impl Watcher {
    /// Follows `source` from `version` on, storing new snapshots into `snapshot` while it is
    /// alive.
    pub(crate) fn start(
        source: AgentSource,
        version: AgentVersion,
        snapshot: Weak<ArcSwap<Snapshot>>,
        host_ips: Vec<IpAddr>,
        interval: Duration,
    ) -> Watcher {
        let stop = Arc::new(Stop::default());
        let signal = Arc::clone(&stop);
        let thread = std::thread::Builder::new()
            .name("axoneme-agent".to_owned())
            .spawn(move || follow(&source, version, &snapshot, &host_ips, interval, &signal))
            .expect("a thread can be started");
        Watcher {
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for Watcher {
    fn drop(&mut self) {
        *self.stop.stopped.lock().unwrap_or_else(|p| p.into_inner()) = true;
        self.stop.wake.notify_all();
        if let Some(thread) = self.thread.take() {
            if thread.join().is_err() {
                eprintln!("axoneme envoy filter: the agent watch panicked");
            }
        }
    }
}

fn follow(
    source: &AgentSource,
    version: AgentVersion,
    snapshot: &Weak<ArcSwap<Snapshot>>,
    host_ips: &[IpAddr],
    interval: Duration,
    stop: &Stop,
) {
    let registry = protocols();
    // What was last reported, so that a lasting failure is reported once.
    let mut reported = String::new();
    // The agent's policy in force here; `None` after a failure, so that whatever the agent holds
    // when it is reached again is read whole.
    let mut in_force_version = Some(version);
    while !stop.wait(interval) {
        let Some(in_force) = snapshot.upgrade() else {
            return;
        };
        let result = source.version().and_then(|now| {
            if in_force_version.as_ref() == Some(&now) {
                return Ok(None);
            }
            source.fetch().map(|state| Some((now.instance, state)))
        });
        let outcome = match result {
            Ok(None) => Ok(()),
            Ok(Some((instance, state))) => {
                let previous = in_force.load();
                let revision = state.revision;
                state
                    .compile(host_ips, &registry, Some(&previous))
                    .map(|next| {
                        in_force.store(Arc::new(next));
                        in_force_version = Some(AgentVersion { instance, revision });
                    })
                    .map_err(|e| {
                        format!("the agent's policy revision {revision} does not compile: {e}")
                    })
            }
            Err(error) => Err(error.to_string()),
        };
        match outcome {
            Ok(()) => reported.clear(),
            Err(message) => {
                in_force_version = None;
                if message != reported {
                    eprintln!("axoneme envoy filter: keeping the policy in force: {message}");
                    reported = message;
                }
            }
        }
    }
}
