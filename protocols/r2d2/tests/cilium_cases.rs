//! Cilium proxylib's own R2-D2 test cases, replayed through Axoneme's R2-D2 parser and the real
//! datapath engine.
//!
//! The cases are the `R2d2Suite` tests of `proxylib/r2d2/r2d2parser_test.go` in cilium/proxy:
//! each a policy, the requests fed to `OnData`, and the operations and injected bytes expected
//! back. Each test names its Go case. The Go operations are restated as what reaches each side:
//! PASS of a request is its bytes upstream, DROP is nothing upstream, the inject buffer is bytes
//! to the client, MORE is nothing yet.
//!
//! The Go cases do not check the access log; these tests do, and name the deliberate difference
//! from Cilium (cilium-compat.md) that applies.

use axoneme_r2d2::R2d2;
use axoneme_sdk::Flow;
use axoneme_testkit::{Emitted, RulesPolicy, Session};

/// The name the Go cases' policy has (their endpoint's address).
const POLICY: &str = "1.1.1.1";

/// A connection under a policy of the `l7` rules `rules`.
fn session(rules: &[&[(&str, &str)]]) -> Session {
    Session::new(&R2d2, RulesPolicy::compile(&R2d2, POLICY, rules))
}

/// TestR2d2OnDataIncomplete: a request line without its line end, on a connection no rule
/// allows anything, is not yet a request.
#[test]
fn r2d2_on_data_incomplete() {
    let mut s = session(&[]);
    assert_eq!(
        s.deliver(Flow::Request, &[b"READ xssss"]),
        Emitted::nothing()
    );
    assert!(s.log().is_empty());
}

/// TestR2d2OnDataBasicPass: under a port rule without L7 constraints (here one empty `l7`
/// rule), every command passes.
///
/// HALT and RESET entries carry no `file` field (deliberate difference: Cilium logged
/// `file: ""`).
#[test]
fn r2d2_on_data_basic_pass() {
    let mut s = session(&[&[]]);
    let requests = "READ sssss\r\nWRITE sssss\r\nHALT\r\nRESET\r\n";
    assert_eq!(
        s.deliver(Flow::Request, &[requests.as_bytes()]),
        Emitted::new(requests.as_bytes(), b"")
    );
    assert_eq!(
        s.log(),
        [
            "Request 1.1.1.1 cmd=READ file=sssss",
            "Request 1.1.1.1 cmd=WRITE file=sssss",
            "Request 1.1.1.1 cmd=HALT",
            "Request 1.1.1.1 cmd=RESET",
        ]
    );
}

/// TestR2d2OnDataMultipleReq: one request in two reads.
#[test]
fn r2d2_on_data_multiple_req() {
    let mut s = session(&[&[]]);
    assert_eq!(
        s.deliver(Flow::Request, &[b"RE", b"SET\r\n"]),
        Emitted::new(b"RESET\r\n", b"")
    );
    assert_eq!(s.log(), ["Request 1.1.1.1 cmd=RESET"]);
}

/// TestR2d2OnDataAllowDenyCmd: `cmd: READ` passes the READ and answers the WRITE with
/// `ERROR\r\n`.
///
/// The denial follows the reply owed to the READ (deliberate difference: denials are answered in
/// request order; Cilium injected `ERROR\r\n` at once, ahead of the READ's reply).
#[test]
fn r2d2_on_data_allow_deny_cmd() {
    let mut s = session(&[&[("cmd", "READ")]]);
    assert_eq!(
        s.deliver(Flow::Request, &[b"READ xssss\r\nWRITE xssss\r\n"]),
        Emitted::new(b"READ xssss\r\n", b""),
        "nothing to the client before the READ's reply"
    );
    s.send(Flow::Reply, b"OK xssss\r\n").unwrap();
    assert_eq!(s.sent.client, b"OK xssss\r\nERROR\r\n");
    assert_eq!(
        s.log(),
        [
            "Request 1.1.1.1 cmd=READ file=xssss",
            "Denied  cmd=WRITE file=xssss",
        ]
    );
}

/// TestR2d2OnDataAllowDenyRegex: `file: s.*` passes the READ of `ssss` and answers the WRITE of
/// `yyyyy` with `ERROR\r\n`.
///
/// The denial follows the reply owed to the READ (deliberate difference: denials are answered in
/// request order; Cilium injected `ERROR\r\n` at once, ahead of the READ's reply).
#[test]
fn r2d2_on_data_allow_deny_regex() {
    let mut s = session(&[&[("file", "s.*")]]);
    assert_eq!(
        s.deliver(Flow::Request, &[b"READ ssss\r\nWRITE yyyyy\r\n"]),
        Emitted::new(b"READ ssss\r\n", b""),
        "nothing to the client before the READ's reply"
    );
    s.send(Flow::Reply, b"OK ssss\r\n").unwrap();
    assert_eq!(s.sent.client, b"OK ssss\r\nERROR\r\n");
    assert_eq!(
        s.log(),
        [
            "Request 1.1.1.1 cmd=READ file=ssss",
            "Denied  cmd=WRITE file=yyyyy",
        ]
    );
}
