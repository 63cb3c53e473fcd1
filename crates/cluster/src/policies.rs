//! The cluster's policies: named policy texts any node may write, every node watches.
//!
//! Owns the policy keys (`policies/<name>`, the text as imported) and their snapshot, and the
//! restore of the last policies held after etcd lost its data (create-if-absent, so nodes
//! restoring at once do not fight). It must not parse or compile policies.

use std::collections::BTreeMap;
use std::sync::Arc;

use etcd_client::{Compare, CompareOp, Txn, TxnOp};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::error::ClusterError;
use crate::mirror::{self, View};
use crate::session::{Session, Shared};

/// The cluster's policies at a revision.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PoliciesSnapshot {
    /// The revision of the last change applied.
    pub revision: i64,
    /// Policy name → text.
    pub policies: BTreeMap<String, String>,
}

impl Session {
    /// Writes a policy, replacing any of that name. Fails with a clear error while etcd has
    /// no quorum.
    pub async fn put_policy(&self, name: &str, text: &str) -> Result<i64, ClusterError> {
        let shared = self.shared();
        let key = shared.keys.policy(check_name(name)?);
        let answer = shared
            .put(|| format!("write policy {name:?}"), &key, text, None)
            .await?;
        Ok(answer.header().map_or(0, |h| h.revision()))
    }

    /// Writes a policy only if none of that name exists; `true` when written. (`false` too in
    /// the rare case that a first attempt was applied but its answer lost, and the repeat
    /// found the policy in place.)
    pub async fn create_policy_if_absent(
        &self,
        name: &str,
        text: &str,
    ) -> Result<bool, ClusterError> {
        create_if_absent(self.shared(), name, text).await
    }

    /// Deletes a policy; `true` when it existed.
    pub async fn delete_policy(&self, name: &str) -> Result<bool, ClusterError> {
        let shared = self.shared();
        let key = shared.keys.policy(check_name(name)?);
        let answer = shared
            .delete(|| format!("delete policy {name:?}"), &key, None)
            .await?;
        Ok(answer.deleted() > 0)
    }
}

async fn create_if_absent(shared: &Shared, name: &str, text: &str) -> Result<bool, ClusterError> {
    let key = shared.keys.policy(check_name(name)?);
    let txn = Txn::new()
        .when([Compare::create_revision(key.clone(), CompareOp::Equal, 0)])
        .and_then([TxnOp::put(key, text, None)]);
    let answer = shared
        .txn(|| format!("create policy {name:?}"), txn)
        .await?;
    Ok(answer.succeeded())
}

/// A policy name is one key segment.
fn check_name(name: &str) -> Result<&str, ClusterError> {
    let reason = if name.is_empty() {
        Some("a policy needs a name")
    } else if name.contains('/') {
        Some("`/` separates key segments")
    } else {
        None
    };
    match reason {
        Some(reason) => Err(ClusterError::InvalidPolicyName {
            name: name.to_owned(),
            reason,
        }),
        None => Ok(name),
    }
}

/// Restores the policies last watched, each only if absent, many in one transaction.
pub(crate) async fn restore(shared: &Arc<Shared>) -> Result<(), ClusterError> {
    let policies = shared
        .policies
        .get()
        .map(|policies| policies.borrow().policies.clone())
        .unwrap_or_default();
    let mut ops = Vec::with_capacity(policies.len());
    for (name, text) in policies {
        let key = shared.keys.policy(check_name(&name)?);
        let bytes = key.len() + text.len();
        let create = Txn::new()
            .when([Compare::create_revision(key.clone(), CompareOp::Equal, 0)])
            .and_then([TxnOp::put(key, text, None)]);
        ops.push((TxnOp::txn(create), bytes));
    }
    shared
        .write_batched("restore the cluster's policies", ops)
        .await?;
    Ok(())
}

/// Starts watching the policies.
pub(crate) async fn watch(
    shared: &Arc<Shared>,
) -> Result<(watch::Receiver<PoliciesSnapshot>, JoinHandle<()>), ClusterError> {
    mirror::start::<PoliciesView>(shared, shared.keys.policies()).await
}

/// Entries `<name>` → the policy text.
struct PoliciesView;

impl View for PoliciesView {
    type Value = String;
    type Snapshot = PoliciesSnapshot;

    fn decode(name: &str, text: &[u8]) -> Option<String> {
        match std::str::from_utf8(text) {
            Ok(text) => Some(text.to_owned()),
            Err(_) => {
                tracing::warn!(policy = %name, "policy in the kvstore is not UTF-8; ignored");
                None
            }
        }
    }

    fn update(snapshot: &mut PoliciesSnapshot, name: &str, text: Option<&String>) {
        match text {
            Some(text) => snapshot.policies.insert(name.to_owned(), text.clone()),
            None => snapshot.policies.remove(name),
        };
    }

    fn set_revision(snapshot: &mut PoliciesSnapshot, revision: i64) {
        snapshot.revision = revision;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_one_key_segment() {
        assert!(check_name("deny-all").is_ok());
        assert!(check_name("").is_err());
        let error = check_name("a/b").unwrap_err().to_string();
        assert!(error.contains("\"a/b\""), "{error}");
    }

    #[test]
    fn texts_that_are_not_utf8_are_left_out() {
        assert_eq!(PoliciesView::decode("p", b"text").as_deref(), Some("text"));
        assert_eq!(PoliciesView::decode("p", &[0xff, 0xfe]), None);
    }
}
