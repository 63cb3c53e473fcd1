//! A secured etcd: TLS with client certificates, and users with passwords.

use std::time::Duration;

use axoneme_cluster::{ClusterError, Session};

use crate::support::{eventually, EtcdExt};
use axoneme_testkit::etcd::Etcd;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tls_etcd_is_reached_with_the_configured_certificates() {
    let etcd = Etcd::single_tls();
    let config = etcd.config("galaxy", "node-a");
    assert!(config.kvstore.endpoints[0].starts_with("https://"));
    let a = Session::connect(config.clone()).await.unwrap();
    let b = Session::connect(etcd.config("galaxy", "node-b"))
        .await
        .unwrap();
    let id = a.allocate_identity(&["app=luke"]).await.unwrap();
    assert_eq!(b.allocate_identity(&["app=luke"]).await.unwrap(), id);
    a.put_policy("p", "text").await.unwrap();
    let mut policies = b.policies();
    eventually(
        "the policy reaches node b over TLS",
        Duration::from_secs(5),
        || {
            let seen = policies.borrow_and_update().policies.len();
            async move { seen == 1 }
        },
    )
    .await;
    eventually(
        "the member is probed healthy over TLS",
        Duration::from_secs(5),
        || {
            let members = a.health().borrow().members.clone();
            async move { members.len() == 1 && members[0].healthy }
        },
    )
    .await;

    let mut missing = config.clone();
    if let Some(tls) = missing.kvstore.tls.as_mut() {
        tls.key = "/nonexistent/client.key".to_owned();
    }
    let error = Session::connect(missing).await.err().unwrap();
    assert!(
        matches!(error, ClusterError::TlsFile { field: "key", .. }),
        "{error}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_and_password_log_in() {
    let etcd = Etcd::single();
    etcd.enable_auth("secret");
    let mut config = etcd.config("galaxy", "node-a");
    config.kvstore.username = Some("root".to_owned());
    config.kvstore.password = Some("secret".to_owned());
    let node = Session::connect(config.clone()).await.unwrap();
    node.put_policy("p", "text").await.unwrap();
    eventually("the policy is watched", Duration::from_secs(5), || {
        let seen = node.policies().borrow().policies.len();
        async move { seen == 1 }
    })
    .await;

    let mut wrong = config.clone();
    wrong.kvstore.password = Some("guess".to_owned());
    let error = Session::connect(wrong).await.err().unwrap();
    assert!(error.to_string().contains("connect to"), "{error}");
    let anonymous = etcd.config("galaxy", "node-b");
    assert!(Session::connect(anonymous).await.is_err());
}
