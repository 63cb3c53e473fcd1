//! Literal text as a regular expression: what policies' regex fields need for exact values.

/// `text` with every character the regex syntax gives a meaning escaped, so that the pattern
/// matches `text` itself.
pub(crate) fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if "\\.+*?()|[]{}^$#&-~".contains(c) || c.is_whitespace() {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use axoneme_sdk::WholeMatch;

    #[test]
    fn escaped_text_matches_itself_only() {
        for (text, other) in [
            ("a.b", "axb"),
            ("x|y", "x"),
            ("(k)*", "kk"),
            ("a b", "a  b"),
            ("^$", ""),
            ("a-z[0]", "a-z0"),
        ] {
            let compiled = WholeMatch::compile(0, "k", &escape(text)).expect("a valid pattern");
            assert!(compiled.is_match(text.as_bytes()), "{text:?}");
            assert!(
                !compiled.is_match(other.as_bytes()),
                "{text:?} on {other:?}"
            );
        }
    }
}
