//! What the cluster tests need around the shared etcd launcher: a cluster configuration for a
//! node of a test cluster, a plain etcd client, polling until a condition holds, and the keys
//! under a prefix as text.

use std::future::Future;
use std::time::Duration;

use axoneme_cluster::{ClusterConfig, TlsConfig};
use axoneme_testkit::etcd::Etcd;

/// The crate's side of a test etcd.
pub(crate) trait EtcdExt {
    /// A cluster configuration for `node` with a short lease and grace period.
    fn config(&self, cluster: &str, node: &str) -> ClusterConfig;

    /// A plain client, for checking what etcd holds and for writing keys as others would.
    async fn client(&self) -> etcd_client::Client;
}

impl EtcdExt for Etcd {
    fn config(&self, cluster: &str, node: &str) -> ClusterConfig {
        // The crate's log, shown for failed tests (`AXONEME_LOG=debug` for more).
        let _ = tracing_subscriber::fmt()
            .with_env_filter(
                tracing_subscriber::EnvFilter::try_from_env("AXONEME_LOG")
                    .unwrap_or_else(|_| "axoneme_cluster=info".into()),
            )
            .with_test_writer()
            .try_init();
        let mut config = ClusterConfig::new(cluster, node, self.endpoints());
        config.lease_ttl = Duration::from_secs(3);
        config.identity_grace = Duration::from_secs(1);
        config.kvstore.tls = self.tls().map(|tls| TlsConfig {
            ca: tls.ca.display().to_string(),
            cert: tls.client_cert.display().to_string(),
            key: tls.client_key.display().to_string(),
        });
        config
    }

    async fn client(&self) -> etcd_client::Client {
        etcd_client::Client::connect(self.endpoints(), None)
            .await
            .unwrap()
    }
}

/// Waits until `check` holds, polling; fails the test after `timeout`.
pub(crate) async fn eventually<F, Fut>(what: &str, timeout: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if check().await {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "not within {timeout:?}: {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The keys under `prefix` and their values, as text.
pub(crate) async fn dump(client: &mut etcd_client::Client, prefix: &str) -> Vec<(String, String)> {
    let answer = client
        .get(prefix, Some(etcd_client::GetOptions::new().with_prefix()))
        .await
        .unwrap();
    answer
        .kvs()
        .iter()
        .map(|kv| {
            (
                kv.key_str().unwrap().to_owned(),
                kv.value_str().unwrap().to_owned(),
            )
        })
        .collect()
}
