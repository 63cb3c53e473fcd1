//! Transparent redirection: which traffic goes to which transparent listener, derived from
//! policy ([`plan`]), its installation in the nftables table `inet axoneme` ([`nft`]), and the
//! [`Redirector`] that keeps the installed rules in step with policy and the bound listeners.
//!
//! As in Cilium, every endpoint, direction and port with L7 rules is steered to a transparent
//! listener of that protocol, limited to the endpoint's addresses: ingress by destination,
//! egress by source.
//!
//! Traffic that policy says must be parsed fails closed: when no listener fits an endpoint,
//! direction and port, new connections of that traffic are dropped (and logged by the kernel
//! with the prefix `axoneme-refused: `) unless another rule steers them to a listener, which
//! then checks both ends of the flow.
//!
//! This component reads the policy state and the listeners the agent publishes; it starts and
//! stops no listener and changes no policy.

pub mod nft;
pub mod plan;

use std::sync::{Arc, Mutex, Weak};

use serde::Serialize;
use tokio::sync::{watch, Notify};
use tokio::task::JoinHandle;

use crate::config::RedirectConfig;
use crate::control::state::State;
pub use plan::{BoundListener, Redirect, Target};

/// A redirect change that was refused or failed.
#[derive(Debug, thiserror::Error)]
pub enum RedirectError {
    /// The configuration leaves the rules to someone else.
    #[error(
        "this agent does not manage redirect rules (redirect.manage is false in its configuration)"
    )]
    NotManaged,
    /// `nft` or `ip` failed.
    #[error("{0}")]
    Failed(String),
}

/// The redirect rules as the API shows them.
#[derive(Debug, Clone, Serialize)]
pub struct RedirectStatus {
    /// Whether this agent keeps the rules in step with policy.
    pub managed: bool,
    /// Whether the rules were flushed on request and stay so until applied again.
    pub paused: bool,
    /// What policy calls for.
    pub redirects: Vec<Redirect>,
}

/// What the redirector knows of the rules it installed.
#[derive(Debug, Default)]
struct Installed {
    /// The ruleset last installed; `None` when none is.
    ruleset: Option<String>,
    /// Flushed on request: the rules stay removed until applied again.
    paused: bool,
}

/// Keeps the redirect rules in step with policy and the bound listeners, when the configuration
/// says this agent manages them (`redirect.manage`).
pub struct Redirector {
    settings: RedirectConfig,
    state: Arc<State>,
    /// The listeners bound now, as the agent publishes them.
    listeners: watch::Receiver<Vec<BoundListener>>,
    /// Held while rules are being installed or removed, so that changes apply one at a time.
    installed: tokio::sync::Mutex<Installed>,
    keeper: Mutex<Option<JoinHandle<()>>>,
    /// Tells the keeper to stop following changes once its current update is done.
    stopping: Arc<Notify>,
}

impl Redirector {
    /// A redirector for `state`'s policy and the `listeners` the agent publishes. It installs
    /// nothing until [`Redirector::start`].
    pub fn new(
        settings: RedirectConfig,
        state: Arc<State>,
        listeners: watch::Receiver<Vec<BoundListener>>,
    ) -> Arc<Redirector> {
        Arc::new(Redirector {
            settings,
            state,
            listeners,
            installed: tokio::sync::Mutex::new(Installed::default()),
            keeper: Mutex::new(None),
            stopping: Arc::new(Notify::new()),
        })
    }

    /// When the rules are managed here: installs what policy calls for now, and from then on
    /// follows every policy and listener change. Otherwise does nothing.
    pub async fn start(self: &Arc<Self>) -> Result<(), RedirectError> {
        if !self.settings.manage {
            return Ok(());
        }
        self.apply().await?;
        let keeper = tokio::spawn(keep_in_step(
            Arc::downgrade(self),
            self.state.subscribe(),
            self.listeners.clone(),
            Arc::clone(&self.stopping),
        ));
        *self.keeper.lock().unwrap_or_else(|p| p.into_inner()) = Some(keeper);
        Ok(())
    }

    /// Whether the rules are kept in step with policy and the listeners now; none when this
    /// agent does not manage them.
    pub fn following(&self) -> Option<bool> {
        if !self.settings.manage {
            return None;
        }
        let keeper = self.keeper.lock().unwrap_or_else(|p| p.into_inner());
        Some(keeper.as_ref().is_some_and(|keeper| !keeper.is_finished()))
    }

    /// Stops following policy and listener changes, once an update under way is done (an
    /// update cut short could still be installing rules after this returns). The rules
    /// installed stay until [`Redirector::remove`].
    pub async fn stop_following(&self) {
        let keeper = self.keeper.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(keeper) = keeper {
            self.stopping.notify_one();
            let _ = keeper.await;
        }
    }

    /// Stops following changes and removes the managed rules. Called once the listeners'
    /// connections have drained: removing the rules earlier would cut the open connections that
    /// TPROXY steers.
    pub async fn remove(&self) {
        self.stop_following().await;
        if self.settings.manage {
            match self.flush().await {
                Ok(()) => tracing::info!("redirect rules removed"),
                Err(error) => tracing::error!(%error, "cannot remove the redirect rules"),
            }
        }
    }

    /// The redirects policy calls for, with the listeners that receive them.
    pub fn plan(&self) -> Vec<Redirect> {
        plan::plan(&self.state.snapshot(), &self.listeners.borrow())
    }

    /// The redirect rules as the API shows them.
    pub async fn status(&self) -> RedirectStatus {
        RedirectStatus {
            managed: self.settings.manage,
            paused: self.installed.lock().await.paused,
            redirects: self.plan(),
        }
    }

    /// Installs the rules policy calls for now, and keeps them in step again after a flush.
    pub async fn apply(&self) -> Result<Vec<Redirect>, RedirectError> {
        self.sync(true).await
    }

    /// Removes the rules; they stay removed until applied again (or the agent restarts).
    pub async fn flush(&self) -> Result<(), RedirectError> {
        if !self.settings.manage {
            return Err(RedirectError::NotManaged);
        }
        let mut installed = self.installed.lock().await;
        let settings = self.settings;
        blocking(move || nft::remove(&settings)).await?;
        installed.ruleset = None;
        installed.paused = true;
        Ok(())
    }

    /// Installs the rules policy calls for when they differ from the installed ones (or, when
    /// `force`d, in any case and even after a flush).
    async fn sync(&self, force: bool) -> Result<Vec<Redirect>, RedirectError> {
        if !self.settings.manage {
            return Err(RedirectError::NotManaged);
        }
        let mut installed = self.installed.lock().await;
        let redirects = self.plan();
        if installed.paused && !force {
            return Ok(redirects);
        }
        let ruleset = nft::ruleset(&redirects, &self.settings);
        if force || installed.ruleset.as_ref() != Some(&ruleset) {
            for unserved in redirects.iter().filter(|r| r.listener.is_none()) {
                tracing::warn!(
                    endpoint = %unserved.endpoint,
                    port = unserved.port,
                    l7proto = %unserved.l7proto,
                    "no transparent listener fits; new connections of this traffic are dropped"
                );
            }
            let (settings, list) = (self.settings, redirects.clone());
            blocking(move || nft::install(&list, &settings)).await?;
            tracing::info!(
                redirects = redirects.iter().filter(|r| r.listener.is_some()).count(),
                "redirect rules installed"
            );
            installed.ruleset = Some(ruleset);
            installed.paused = false;
        }
        Ok(redirects)
    }
}

/// Runs a blocking redirect operation off the async workers.
async fn blocking(
    work: impl FnOnce() -> Result<(), String> + Send + 'static,
) -> Result<(), RedirectError> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| RedirectError::Failed(e.to_string()))?
        .map_err(RedirectError::Failed)
}

/// Keeps the rules in step with the policy revision and the bound listeners, until the
/// redirector is gone.
async fn keep_in_step(
    redirector: Weak<Redirector>,
    mut policy: watch::Receiver<u64>,
    mut listeners: watch::Receiver<Vec<BoundListener>>,
    stopping: Arc<Notify>,
) {
    loop {
        let Some(redirector) = redirector.upgrade() else {
            return;
        };
        if let Err(error) = redirector.sync(false).await {
            tracing::error!(%error, "cannot update the redirect rules; the installed ones stay");
        }
        drop(redirector);
        tokio::select! {
            changed = policy.changed() => if changed.is_err() { return },
            changed = listeners.changed() => if changed.is_err() { return },
            () = stopping.notified() => return,
        }
    }
}
