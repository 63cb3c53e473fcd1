//! Kafka rules from observed requests: per topic, the API keys used on it; without `--exact`,
//! a topic whose APIs all belong to Cilium's `produce` or `consume` role (and that used the
//! role's own API: Produce, or Fetch) is allowed by `{role, topic}`. A request naming no topic
//! needs a rule without `topic`: `{apiKey: X}`.

use std::collections::{BTreeMap, BTreeSet};

use axoneme_kafka::rules::{CONSUME_ROLE, PRODUCE_ROLE};
use axoneme_kafka::Api;

use super::{Fields, Generalise, SuggestedRule, Suggestion};

/// The roles: name, API keys, and the API that marks a client as playing it.
const ROLES: [(&str, &[i16], &str); 2] = [
    ("produce", &PRODUCE_ROLE, "produce"),
    ("consume", &CONSUME_ROLE, "fetch"),
];

/// The rules for `requests` (fields `api_key` and `topic`, topics joined by `, `).
pub(crate) fn suggest(requests: &BTreeMap<Fields, u64>, generalise: Generalise) -> Suggestion {
    let mut suggestion = Suggestion::default();
    // topic ("" for none) → api → requests.
    let mut by_topic: BTreeMap<&str, BTreeMap<&'static str, u64>> = BTreeMap::new();
    for (fields, &count) in requests {
        let name = fields.get("api_key").map_or("", String::as_str);
        let Some(api) = Api::by_policy_name(name) else {
            suggestion
                .unexpressible
                .push(format!("{count} request(s) with api_key {name:?}"));
            continue;
        };
        let topics = fields.get("topic").map_or("", String::as_str);
        let topics: Vec<&str> = match topics {
            "" => vec![""],
            topics => topics.split(", ").collect(),
        };
        for topic in topics {
            *by_topic
                .entry(topic)
                .or_default()
                .entry(api.policy_name)
                .or_default() += count;
        }
    }
    for (topic, apis) in by_topic {
        let role = ROLES.iter().find(|(_, keys, marker)| {
            !generalise.exact
                && !topic.is_empty()
                && apis.contains_key(marker)
                && apis.keys().all(|name| {
                    Api::by_policy_name(name).is_some_and(|api| keys.contains(&api.key))
                })
        });
        let with_topic = |mut keys: Vec<(&'static str, String)>| {
            if !topic.is_empty() {
                keys.push(("topic", topic.to_owned()));
            }
            keys
        };
        match role {
            Some((role, _, _)) => suggestion.rules.push(SuggestedRule {
                keys: with_topic(vec![("role", (*role).to_owned())]),
                count: apis.values().sum(),
            }),
            None => {
                let names: BTreeSet<&str> = apis.keys().copied().collect();
                for name in names {
                    suggestion.rules.push(SuggestedRule {
                        keys: with_topic(vec![("apiKey", name.to_owned())]),
                        count: apis[name],
                    });
                }
            }
        }
    }
    suggestion
}
