//! The README's demo, run as a new user would, with the binary under test.

use std::process::Command;

#[test]
fn the_r2d2_demo_shows_an_allow_a_deny_and_a_refusal() {
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../..");
    let output = Command::new("bash")
        .arg(format!("{root}/examples/r2d2/demo.sh"))
        .arg("--once")
        .env("AXONEME_BIN", env!("CARGO_BIN_EXE_axoneme"))
        .output()
        .expect("running the demo");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "demo failed: {stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        stdout.contains("READ /public/plans           -> OK the rebel base is on Hoth"),
        "{stdout}"
    );
    assert!(
        stdout.contains("READ /secret/deathstar       -> ERROR\n"),
        "{stdout}"
    );
    assert!(
        stdout.contains("connection closed by the proxy"),
        "{stdout}"
    );
    assert!(stdout.contains("\"entry_type\":\"Denied\""), "{stdout}");
}
