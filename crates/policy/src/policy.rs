//! A loaded policy: its identity (name, namespace, kind, source), its checked rules and the
//! warnings found while checking them.
//!
//! Owns how errors and warnings about one policy are attributed to it. It must not read files or YAML, and
//! must not compile anything against endpoints or protocols.

use std::sync::Arc;

use crate::error::{FieldError, PolicyError, PolicyWarning, Subject};
use crate::rule::Rule;

/// The two kinds of policy document Axoneme reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PolicyKind {
    /// `CiliumNetworkPolicy`.
    Namespaced,
    /// `CiliumClusterwideNetworkPolicy`.
    Clusterwide,
}

impl PolicyKind {
    /// The `kind` as documents write it.
    pub fn as_str(self) -> &'static str {
        match self {
            PolicyKind::Namespaced => "CiliumNetworkPolicy",
            PolicyKind::Clusterwide => "CiliumClusterwideNetworkPolicy",
        }
    }

    /// The kind named by a document's `kind`.
    pub(crate) fn from_kind(kind: &str) -> Option<PolicyKind> {
        [PolicyKind::Namespaced, PolicyKind::Clusterwide]
            .into_iter()
            .find(|k| k.as_str() == kind)
    }
}

/// One parsed and checked CiliumNetworkPolicy or CiliumClusterwideNetworkPolicy. Its rules and
/// document are shared between clones, so that keeping a policy in one snapshot after another
/// copies neither.
#[derive(Debug, Clone)]
pub struct Policy {
    pub(crate) name: String,
    pub(crate) namespace: Option<String>,
    pub(crate) kind: PolicyKind,
    pub(crate) source: String,
    pub(crate) rules: Arc<[Rule]>,
    pub(crate) document: Arc<serde_yaml::Value>,
    pub(crate) warnings: Vec<PolicyWarning>,
    pub(crate) audit: bool,
}

/// The annotation that puts a policy in audit mode: `axoneme.io/audit: "true"` in its
/// `metadata.annotations`. What such a policy would deny is forwarded and logged as audited.
pub const AUDIT_ANNOTATION: &str = "axoneme.io/audit";

impl Policy {
    /// `metadata.name`: the name verdicts and access-log entries carry.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The namespace a CiliumNetworkPolicy applies in (`metadata.namespace`, `default` when
    /// not given); `None` for a CiliumClusterwideNetworkPolicy, which applies cluster-wide.
    pub fn namespace(&self) -> Option<&str> {
        self.namespace.as_deref()
    }

    /// Which kind of document it came from.
    pub fn kind(&self) -> PolicyKind {
        self.kind
    }

    /// Where it came from: a file path, or whatever name the caller gave the text.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// The document as it was read, for showing the policy back.
    pub fn document(&self) -> &serde_yaml::Value {
        &self.document
    }

    /// Whether the policy is in audit mode ([`AUDIT_ANNOTATION`]).
    pub fn audit(&self) -> bool {
        self.audit
    }

    /// What was accepted but deserves its author's attention, e.g. empty L7 rule values.
    pub fn warnings(&self) -> &[PolicyWarning] {
        &self.warnings
    }

    /// Whether `other` was read from the same document of the same source, and so has the
    /// same rules: a policy is a function of its source's name and its document.
    pub(crate) fn same_as(&self, other: &Policy) -> bool {
        Arc::ptr_eq(&self.rules, &other.rules)
            || (self.source == other.source && self.document == other.document)
    }

    /// Attributes a field error to this policy.
    pub(crate) fn error(&self, error: FieldError) -> PolicyError {
        PolicyError::Invalid {
            file: self.source.clone(),
            subject: Subject::Policy(self.name.clone()),
            field: error.field,
            message: error.message,
        }
    }
}
