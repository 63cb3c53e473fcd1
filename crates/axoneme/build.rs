//! Records what the binary is built from, for `axoneme_build_info`, `axoneme version` and
//! `axoneme status`: the git commit of the source tree (when it is a git checkout and git is
//! installed; empty otherwise) and the compiler's version. It runs git and rustc, nothing else.

use std::path::Path;
use std::process::Command;

/// What `program args` prints, trimmed; none when it cannot run or fails.
fn output(program: &str, args: &[&str]) -> Option<String> {
    let out = Command::new(program).args(args).output().ok()?;
    if !out.status.success() {
        return None;
    }
    let text = String::from_utf8(out.stdout).ok()?;
    Some(text.trim().to_owned()).filter(|text| !text.is_empty())
}

fn main() {
    let commit = output("git", &["rev-parse", "--short=12", "HEAD"]).unwrap_or_default();
    println!("cargo:rustc-env=AXONEME_GIT_COMMIT={commit}");
    // `rustc 1.91.0 (f8297e351 2025-10-28)`: the version is the second word.
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".to_owned());
    let version = output(&rustc, &["--version"])
        .and_then(|line| line.split_whitespace().nth(1).map(str::to_owned))
        .unwrap_or_default();
    println!("cargo:rustc-env=AXONEME_RUSTC_VERSION={version}");
    // Built again when HEAD moves: HEAD itself names the branch, the branch's file its commit.
    // A file that does not exist would make every build run this again, so only existing ones.
    let mut watched = vec![output("git", &["rev-parse", "--git-path", "HEAD"])];
    if let Some(branch) = output("git", &["symbolic-ref", "-q", "HEAD"]) {
        watched.push(output("git", &["rev-parse", "--git-path", &branch]));
    }
    for path in watched.into_iter().flatten() {
        if Path::new(&path).exists() {
            println!("cargo:rerun-if-changed={path}");
        }
    }
    println!("cargo:rerun-if-changed=build.rs");
}
