//! Arbitrary bytes as policy text, through `parse_policies`, the entry point of policy files
//! and of API imports: the size limit, the nesting scan, the JSON and YAML parsers, documents,
//! lists and rules. Text that may be JSON is read both as a `.yaml` and as a `.json` source,
//! which report text that is not JSON differently. Nothing may panic, and every error and
//! warning must print.

#![no_main]

use axoneme_policy::{parse_policies, DEFAULT_MAX_POLICY_BYTES};
use libfuzzer_sys::fuzz_target;

/// Parses `text` as the source `source`, printing what comes out.
fn parse(source: &str, text: &str) {
    match parse_policies(source, text) {
        Ok(policies) => {
            for warning in policies.iter().flat_map(|policy| policy.warnings()) {
                let _ = warning.to_string();
            }
        }
        Err(error) => {
            let _ = error.to_string();
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if text.len() > DEFAULT_MAX_POLICY_BYTES {
        return;
    }
    parse("fuzz.yaml", text);
    if text.trim_start().starts_with('{') {
        parse("fuzz.json", text);
    }
});
