//! Reading policies from text, files and directories.

use std::fs;
use std::path::PathBuf;

use axoneme_policy::{load_paths, parse_policies, PolicyError, PolicyKind};

const POLICY: &str = "apiVersion: cilium.io/v2\nkind: CiliumNetworkPolicy\nmetadata:\n  name: NAME\n  namespace: ns\n  labels: {a: b}\n  annotations: {c: d}\nspec:\n  description: d\n  labels: [{key: k, value: v}]\n  endpointSelector: {}\n";

fn policy(name: &str) -> String {
    POLICY.replace("NAME", name)
}

#[test]
fn multi_document_yaml_skips_empty_documents() {
    let text = format!(
        "---\n# nothing\n---\n{}---\n{}---\n",
        policy("a"),
        policy("b")
    );
    let policies = parse_policies("x.yaml", &text).unwrap();
    let names: Vec<&str> = policies.iter().map(|p| p.name()).collect();
    assert_eq!(names, ["a", "b"]);
    assert_eq!(policies[0].namespace(), Some("ns"));
    assert_eq!(policies[0].kind(), PolicyKind::Namespaced);
    assert_eq!(policies[0].source(), "x.yaml");
    assert!(parse_policies("empty.yaml", "").unwrap().is_empty());
}

#[test]
fn json_is_accepted() {
    let json = r#"{"apiVersion": "cilium.io/v2", "kind": "CiliumClusterwideNetworkPolicy",
        "metadata": {"name": "j"},
        "spec": {"endpointSelector": {}, "ingress": [{"toPorts": [{"ports": [{"port": "80", "protocol": "TCP"}]}]}]}}"#;
    let policies = parse_policies("p.json", json).unwrap();
    assert_eq!(policies[0].kind(), PolicyKind::Clusterwide);
}

fn scratch_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("axoneme-policy-{name}-{}", std::process::id()));
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(dir.join("nested")).unwrap();
    dir
}

#[test]
fn directories_are_read_sorted_and_not_recursively() {
    let dir = scratch_dir("dir");
    fs::write(dir.join("b.yml"), policy("from-b")).unwrap();
    fs::write(dir.join("a.yaml"), policy("from-a")).unwrap();
    fs::write(dir.join("c.json"), policy("from-c")).unwrap();
    fs::write(dir.join("notes.txt"), "not a policy").unwrap();
    fs::write(dir.join("nested/d.yaml"), policy("from-d")).unwrap();
    let single = dir.join("nested/d.yaml");
    let policies = load_paths(&[dir.clone(), single]).unwrap();
    let names: Vec<&str> = policies.iter().map(|p| p.name()).collect();
    assert_eq!(names, ["from-a", "from-b", "from-c", "from-d"]);
    assert_eq!(
        policies[0].source(),
        dir.join("a.yaml").display().to_string()
    );
    fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn file_errors_name_the_file() {
    let dir = scratch_dir("err");
    let bad = dir.join("bad.yaml");
    fs::write(&bad, "apiVersion: cilium.io/v2\nkind: [\n").unwrap();
    let error = load_paths(std::slice::from_ref(&dir)).unwrap_err();
    assert!(matches!(error, PolicyError::Syntax { .. }));
    assert!(
        error
            .to_string()
            .starts_with(&format!("{}: line ", bad.display())),
        "{error}"
    );
    let missing = dir.join("missing.yaml");
    let error = load_paths(std::slice::from_ref(&missing)).unwrap_err();
    assert!(matches!(error, PolicyError::Io { .. }));
    assert!(
        error
            .to_string()
            .starts_with(&format!("{}: ", missing.display())),
        "{error}"
    );
    fs::remove_dir_all(&dir).unwrap();
}
