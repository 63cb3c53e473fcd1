//! Arbitrary text to the CQL lexer and the statement classifier alone, with no frame around it:
//! every token to the end of the text, every statement and the qualified names a rule would
//! compare. Nothing may panic, a lexing error must end the tokens, and text the classifier
//! accepts must lex whole.

#![no_main]

use axoneme_cassandra::lexer::Lexer;
use axoneme_cassandra::{classify, statements};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let mut lexer = Lexer::new(text);
    let mut lexes = true;
    while let Some(token) = lexer.next() {
        if token.is_err() {
            lexes = false;
            assert!(lexer.next().is_none(), "tokens after a lexing error");
        }
    }
    let mut names = String::new();
    for statement in statements(text).flatten() {
        if let Some(table) = statement.table {
            names.clear();
            table.push_qualified(Some("ks"), &mut names);
            let _ = table.to_string();
        }
        if let Some(keyspace) = statement.keyspace {
            let _ = keyspace.to_string();
        }
    }
    if classify(text).is_ok() {
        assert!(lexes, "classified text that does not lex: {text:?}");
    }
});
