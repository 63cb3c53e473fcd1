//! What the engine answers: the verdict on a connection, and the request-level policy a parsed
//! connection checks each request against.
//!
//! Owns the per-request check, which runs on the data path: it iterates a prepared list and
//! must never allocate. Deciding which list applies belongs to `snapshot.rs`.

use std::any::Any;
use std::sync::Arc;

use axoneme_sdk::{CompiledRules, RequestPolicy, Verdict};

/// The decision on one new connection.
#[derive(Debug, Clone)]
pub enum ConnectionVerdict {
    /// No policy enforces anything on the endpoint in that direction: everything is allowed and
    /// nothing is parsed.
    Unrestricted,
    /// The connection must be refused.
    Refused {
        /// The policy whose deny rule matched; empty when nothing allowed the connection.
        policy_name: String,
        /// Why, in a few words.
        reason: String,
    },
    /// The connection may proceed.
    Allowed {
        /// The first policy that allows it.
        policy_name: String,
        /// The request-level policy when the port has an L7 protocol; `None`: forward the bytes
        /// unparsed.
        l7: Option<Arc<PortPolicy>>,
    },
}

/// One way a request can be allowed: by a policy, with or without L7 rules.
#[derive(Debug, Clone)]
pub(crate) struct RequestRule {
    /// The policy that allows.
    pub policy: Arc<str>,
    /// Its compiled L7 rules; `None` allows every request.
    pub rules: Option<CompiledRules>,
}

/// The request-level policy of one connection: the L7 protocol and the rules that may allow
/// its requests.
#[derive(Debug)]
pub struct PortPolicy {
    proto: Option<Arc<str>>,
    denied_by: Option<Arc<str>>,
    rules: Vec<RequestRule>,
    /// Audit mode: a request that would be denied is let through, its verdict marked audited.
    audited: bool,
}

impl PortPolicy {
    /// A policy under which every request is allowed (with an empty policy name).
    pub fn allow_all(proto: Option<&str>) -> PortPolicy {
        PortPolicy::allowing(
            proto.map(Arc::from),
            vec![RequestRule {
                policy: Arc::from(""),
                rules: None,
            }],
        )
    }

    /// A policy under which every request is denied in the name of `policy_name` (empty for a
    /// denial because nothing allows).
    pub fn deny_all(proto: Option<&str>, policy_name: &str) -> PortPolicy {
        PortPolicy {
            proto: proto.map(Arc::from),
            denied_by: Some(Arc::from(policy_name)),
            rules: Vec::new(),
            audited: false,
        }
    }

    /// A policy that allows a request when one of `rules` does.
    pub(crate) fn allowing(proto: Option<Arc<str>>, rules: Vec<RequestRule>) -> PortPolicy {
        PortPolicy {
            proto,
            denied_by: None,
            rules,
            audited: false,
        }
    }

    /// The same policy in audit mode (`audited`) or enforcing: in audit mode, what it would
    /// deny is allowed with [`axoneme_sdk::Verdict::audited`] set.
    pub fn in_audit_mode(mut self, audited: bool) -> PortPolicy {
        self.audited = audited;
        self
    }

    /// Whether the policy is in audit mode.
    pub fn is_audited(&self) -> bool {
        self.audited
    }

    /// The L7 protocol of the port, when it has one.
    pub fn proto(&self) -> Option<&str> {
        self.proto.as_deref()
    }

    /// The policies whose rules a request is checked against, each once, in order: those
    /// that may allow it, or the one whose deny rule denies every request.
    pub fn policy_names(&self) -> Vec<&str> {
        let mut names: Vec<&str> = Vec::new();
        let all = self
            .denied_by
            .iter()
            .chain(self.rules.iter().map(|r| &r.policy));
        for name in all.map(|name| &**name) {
            if !name.is_empty() && !names.contains(&name) {
                names.push(name);
            }
        }
        names
    }
}

impl RequestPolicy for PortPolicy {
    fn check(&self, matches: &mut dyn FnMut(&(dyn Any + Send + Sync)) -> bool) -> Verdict<'_> {
        if let Some(name) = &self.denied_by {
            return Verdict {
                allowed: self.audited,
                policy_name: name,
                audited: self.audited,
            };
        }
        for rule in &self.rules {
            let allowed = match &rule.rules {
                None => true,
                Some(compiled) => matches(&**compiled),
            };
            if allowed {
                return Verdict {
                    allowed: true,
                    policy_name: &rule.policy,
                    audited: false,
                };
            }
        }
        Verdict {
            allowed: self.audited,
            policy_name: "",
            audited: self.audited,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(policy: &str) -> RequestRule {
        RequestRule {
            policy: Arc::from(policy),
            rules: None,
        }
    }

    #[test]
    fn the_policies_checked_are_named_once_each_in_order_and_never_empty() {
        let allowing = PortPolicy::allowing(
            None,
            vec![rule("fleet"), rule(""), rule("jedi"), rule("fleet")],
        );
        assert_eq!(allowing.policy_names(), ["fleet", "jedi"]);
        assert_eq!(
            PortPolicy::deny_all(Some("memcache"), "lockdown").policy_names(),
            ["lockdown"]
        );
        assert!(PortPolicy::deny_all(None, "").policy_names().is_empty());
        assert!(PortPolicy::allow_all(None).policy_names().is_empty());
    }
}
