//! Following edits of the configuration file and the policy files it names, without a restart.
//!
//! Files are polled (their modification times and sizes), which works on every filesystem and
//! catches editors that replace a file instead of writing it. A change that does not load
//! leaves the last good state in force and is logged. Files are read and parsed on a blocking
//! thread, not on the agent's runtime. This module only notices changes and hands them to the
//! agent.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use crate::config::Config;
use crate::control::agent::{config_sources, Agent};

/// How often files are looked at.
pub const POLL_INTERVAL: Duration = Duration::from_millis(500);

/// What a file looked like when last seen: its modification time and size, per file.
type Stamp = Vec<(PathBuf, Option<(SystemTime, u64)>)>;

/// Stamps of `paths`, directories contributing their files.
fn stamp(paths: &[PathBuf]) -> Stamp {
    let mut stamp = Vec::new();
    for path in paths {
        let mut files = vec![path.clone()];
        if let Ok(entries) = fs::read_dir(path) {
            let mut inside: Vec<PathBuf> = entries.flatten().map(|e| e.path()).collect();
            inside.sort();
            files.extend(inside);
        }
        for file in files {
            let seen = fs::metadata(&file)
                .ok()
                .and_then(|m| Some((m.modified().ok()?, m.len())));
            stamp.push((file, seen));
        }
    }
    stamp
}

/// Watches the agent's configuration file and policy files until the task is aborted.
pub async fn watch_files(agent: Arc<Agent>, config_path: PathBuf, mut config: Config) {
    let mut config_stamp = stamp(std::slice::from_ref(&config_path));
    let mut policy_stamp = stamp(&config.policies);
    loop {
        tokio::time::sleep(POLL_INTERVAL).await;
        let now = stamp(std::slice::from_ref(&config_path));
        if now != config_stamp {
            config_stamp = now;
            match reload_config(&agent, &config_path).await {
                Ok(new) => {
                    config = new;
                    policy_stamp = stamp(&config.policies);
                }
                Err(error) => {
                    tracing::error!(file = %config_path.display(), %error, "configuration change rejected; the last good one stays")
                }
            }
            continue;
        }
        let now = stamp(&config.policies);
        if now != policy_stamp {
            policy_stamp = now;
            let state = Arc::clone(agent.state());
            match tokio::task::spawn_blocking(move || state.reload_files()).await {
                Ok(Ok(revision)) => tracing::info!(revision, "policy files reloaded"),
                Ok(Err(error)) => {
                    tracing::error!(%error, "policy change rejected; the last good policy stays")
                }
                Err(error) => tracing::error!(%error, "policy reload failed"),
            }
        }
    }
}

async fn reload_config(agent: &Agent, path: &Path) -> anyhow::Result<Config> {
    let config = Config::load(path)?;
    let state = Arc::clone(agent.state());
    let sources = config_sources(&config);
    let revision = tokio::task::spawn_blocking(move || state.set_config(sources)).await??;
    agent.reconcile_listeners(&config.listeners).await?;
    tracing::info!(
        revision,
        "configuration reloaded (access log, API, metrics, web, limits, timeouts and cluster need a restart)"
    );
    Ok(config)
}
