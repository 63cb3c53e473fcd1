//! Reading policies from text, files and directories.

use std::fs;
use std::path::PathBuf;

use axoneme_policy::{
    load_paths, parse_policies, PolicyError, PolicyKind, DEFAULT_MAX_POLICY_BYTES, MAX_DEPTH,
};

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
}

#[test]
fn text_without_a_policy_is_refused_not_taken_as_no_policy() {
    for empty in [
        "",
        "  \n\t\n",
        "# all commented out\n# apiVersion: cilium.io/v2\n",
        "---\n---\n",
        "apiVersion: v1\nkind: List\nitems: []\n",
    ] {
        let error = parse_policies("cut.yaml", empty).unwrap_err();
        assert!(matches!(error, PolicyError::Empty { .. }), "{empty:?}");
        assert!(
            error
                .to_string()
                .starts_with("cut.yaml: holds no policy (it is empty or only comments)"),
            "{error}"
        );
    }
    let dir = scratch_dir("empty");
    fs::write(dir.join("a.yaml"), policy("a")).unwrap();
    fs::write(dir.join("b.yaml"), "").unwrap();
    let error = load_paths(std::slice::from_ref(&dir), DEFAULT_MAX_POLICY_BYTES).unwrap_err();
    assert!(
        error.to_string().starts_with(&format!(
            "{}: holds no policy",
            dir.join("b.yaml").display()
        )),
        "{error}"
    );
    fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_top_level_description_is_accepted() {
    let text = "apiVersion: cilium.io/v2\nkind: CiliumNetworkPolicy\ndescription: \"L7 policy to restrict access to specific HTTP call\"\nmetadata: {name: rule1}\nspec: {endpointSelector: {}}\n";
    assert_eq!(parse_policies("d.yaml", text).unwrap()[0].name(), "rule1");
}

/// What `kubectl get cnp -o yaml` prints: a List with server-set fields and status.
const KUBECTL_LIST: &str = r#"apiVersion: v1
items:
- apiVersion: cilium.io/v2
  kind: CiliumNetworkPolicy
  metadata:
    annotations:
      kubectl.kubernetes.io/last-applied-configuration: |
        {"apiVersion":"cilium.io/v2","kind":"CiliumNetworkPolicy"}
    creationTimestamp: "2024-05-02T10:11:12Z"
    generation: 1
    managedFields:
    - apiVersion: cilium.io/v2
      fieldsType: FieldsV1
      fieldsV1: {"f:spec": {}}
      manager: kubectl-client-side-apply
      operation: Update
      time: "2024-05-02T10:11:12Z"
    name: rule1
    namespace: empire
    ownerReferences: []
    resourceVersion: "1234"
    uid: 5d3b2a8e-0000-4000-8000-000000000001
  spec:
    description: L7 policy to restrict access to specific HTTP call
    endpointSelector:
      matchLabels: {org: empire, class: deathstar}
  status:
    conditions:
    - {lastTransitionTime: "2024-05-02T10:11:12Z", message: Policy validation succeeded, status: "True", type: Valid}
- apiVersion: cilium.io/v2
  kind: CiliumClusterwideNetworkPolicy
  metadata: {name: everywhere, generation: 3, uid: x}
  spec: {endpointSelector: {}}
kind: List
metadata:
  resourceVersion: ""
"#;

#[test]
fn kubectl_lists_load_with_server_fields_ignored() {
    let policies = parse_policies("cnp.yaml", KUBECTL_LIST).unwrap();
    let names: Vec<(&str, Option<&str>)> =
        policies.iter().map(|p| (p.name(), p.namespace())).collect();
    assert_eq!(names, [("rule1", Some("empire")), ("everywhere", None)]);
    let typed = "apiVersion: cilium.io/v2\nkind: CiliumNetworkPolicyList\nmetadata: {resourceVersion: '9'}\nitems:\n- metadata: {name: a}\n  spec: {endpointSelector: {}}\n";
    let policies = parse_policies("typed.yaml", typed).unwrap();
    assert_eq!(policies[0].kind(), PolicyKind::Namespaced);
    let error = parse_policies(
        "l.yaml",
        "apiVersion: v1\nkind: List\nitems:\n- {apiVersion: cilium.io/v2, kind: CiliumNetworkPolicy, metadata: {}}\n",
    )
    .unwrap_err();
    assert_eq!(
        error.to_string(),
        "l.yaml: document 1: items[0]: metadata.name: a policy needs a name"
    );
    let error = parse_policies("l.yaml", "apiVersion: v1\nkind: List\nitemz: []\n").unwrap_err();
    assert_eq!(
        error.to_string(),
        "l.yaml: document 1: itemz: unknown field in a list"
    );
}

#[test]
fn kubectl_json_output_loads() {
    let json = "{\n\t\"apiVersion\": \"v1\",\n\t\"kind\": \"List\",\n\t\"items\": [{\"apiVersion\": \"cilium.io/v2\", \"kind\": \"CiliumNetworkPolicy\",\n\t\t\"metadata\": {\"name\": \"j\", \"uid\": \"u\", \"resourceVersion\": \"7\"},\n\t\t\"spec\": {\"endpointSelector\": {}}, \"status\": {}}],\n\t\"metadata\": {\"resourceVersion\": \"\"}\n}\n";
    let policies = parse_policies("cnp.json", json).unwrap();
    assert_eq!(policies[0].name(), "j");
    let error = parse_policies("bad.json", "{\n  \"kind\": \n").unwrap_err();
    assert!(
        error.to_string().starts_with("bad.json: line 3 column 0: "),
        "{error}"
    );
}

#[test]
fn a_yaml_flow_mapping_is_still_yaml() {
    let text = "{apiVersion: cilium.io/v2, kind: CiliumNetworkPolicy, metadata: {name: flow}, spec: {endpointSelector: {}}}\n";
    assert_eq!(parse_policies("flow.yaml", text).unwrap()[0].name(), "flow");
}

#[test]
fn namespaces_default_as_in_kubernetes() {
    let text = "apiVersion: cilium.io/v2\nkind: CiliumNetworkPolicy\nmetadata: {name: a}\nspec: {endpointSelector: {}}\n";
    assert_eq!(
        parse_policies("n.yaml", text).unwrap()[0].namespace(),
        Some("default")
    );
    let clusterwide = text.replace(
        "kind: CiliumNetworkPolicy",
        "kind: CiliumClusterwideNetworkPolicy",
    );
    assert_eq!(
        parse_policies("n.yaml", &clusterwide).unwrap()[0].namespace(),
        None
    );
}

#[test]
fn empty_l7_values_are_accepted_with_a_warning() {
    let text = "apiVersion: cilium.io/v2\nkind: CiliumNetworkPolicy\nmetadata: {name: cache}\nspec:\n  endpointSelector: {}\n  ingress:\n  - toPorts:\n    - ports: [{port: '11211'}]\n      rules:\n        l7proto: memcache\n        l7: [{command: get, keyExact: ''}]\n";
    let policies = parse_policies("m.yaml", text).unwrap();
    let warnings: Vec<String> = policies[0]
        .warnings()
        .iter()
        .map(|w| w.to_string())
        .collect();
    assert_eq!(
        warnings,
        ["m.yaml: policy \"cache\": spec.ingress[0].toPorts[0].rules.l7[0].keyExact: the empty value puts no constraint on keyExact (as in Cilium)"]
    );
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
    let policies = load_paths(&[dir.clone(), single], DEFAULT_MAX_POLICY_BYTES).unwrap();
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
    let error = load_paths(std::slice::from_ref(&dir), DEFAULT_MAX_POLICY_BYTES).unwrap_err();
    assert!(matches!(error, PolicyError::Syntax { .. }));
    assert!(
        error
            .to_string()
            .starts_with(&format!("{}: line ", bad.display())),
        "{error}"
    );
    let missing = dir.join("missing.yaml");
    let error = load_paths(std::slice::from_ref(&missing), DEFAULT_MAX_POLICY_BYTES).unwrap_err();
    assert!(matches!(error, PolicyError::Io { .. }));
    assert!(
        error
            .to_string()
            .starts_with(&format!("{}: ", missing.display())),
        "{error}"
    );
    fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn deeply_nested_text_is_refused_before_it_is_parsed() {
    let bodies = [
        format!("{}{}", "[".repeat(50_000), "]".repeat(50_000)),
        format!("{}{}", "{a: ".repeat(50_000), "}".repeat(50_000)),
        format!("{}1{}", "{\"a\":".repeat(40_000), "}".repeat(40_000)),
        (0..2_000)
            .map(|i| format!("{}a{i}:\n", " ".repeat(i)))
            .collect(),
    ];
    // `TooDeep` comes only from the scan that runs before the YAML parser, which took 37 s of
    // CPU on such text; how fast the scan is belongs to benchmarks, not to this test.
    for body in bodies {
        let error = parse_policies("<api>", &body).unwrap_err();
        assert!(matches!(
            error,
            PolicyError::TooDeep {
                limit: MAX_DEPTH,
                ..
            }
        ));
        let message = error.to_string();
        assert!(message.starts_with("<api>: line "), "{message}");
        assert!(
            message.ends_with("nested deeper than 64 levels, the most a policy document may have"),
            "{message}"
        );
    }
}

#[test]
fn kubectl_output_is_far_from_the_depth_limit() {
    let mut deep = String::from("apiVersion: cilium.io/v2\nkind: CiliumNetworkPolicy\nmetadata:\n  name: deep\n  managedFields:\n");
    let mut indent = String::from("  ");
    deep.push_str("  - fieldsV1:\n");
    for level in 0..40 {
        indent.push_str("  ");
        deep.push_str(&format!("{indent}  f:level{level}:\n"));
    }
    deep.push_str(&format!("{indent}    {{}}\n"));
    deep.push_str("spec:\n  endpointSelector: {matchLabels: {app: db}}\n  ingress: [{toPorts: [{ports: [{port: '80'}], rules: {l7proto: r2d2, l7: [{cmd: READ, file: \"/x[0-9]\"}]}}]}]\n");
    assert_eq!(
        parse_policies("deep.yaml", &deep).unwrap()[0].name(),
        "deep"
    );
}

#[test]
fn files_longer_than_the_limit_are_refused_unread() {
    let dir = scratch_dir("large");
    let file = dir.join("large.yaml");
    fs::write(&file, policy("large")).unwrap();
    let size = fs::metadata(&file).unwrap().len();
    let limit = size as usize - 1;
    let error = load_paths(std::slice::from_ref(&file), limit).unwrap_err();
    assert_eq!(
        error.to_string(),
        format!(
            "{}: {size} bytes, more than the {limit} bytes policy text may have (maxPolicyBytes)",
            file.display()
        )
    );
    assert_eq!(load_paths(&[file], limit + 1).unwrap()[0].name(), "large");
    fs::remove_dir_all(&dir).unwrap();
}

/// A key given twice is refused in JSON as in YAML. serde_json, like Go's encoding/json, keeps
/// the last value, so `"ingress": [{}], "ingress": []` would load as no ingress rule at all (the
/// endpoint unrestricted) while the document reads as locking it down; the API server refuses
/// duplicate fields under kubectl's default strict field validation.
#[test]
fn a_key_given_twice_in_json_is_refused() {
    let json = "{\"apiVersion\": \"cilium.io/v2\", \"kind\": \"CiliumNetworkPolicy\",\n\
                \"metadata\": {\"name\": \"d\"},\n\
                \"spec\": {\"endpointSelector\": {}, \"ingress\": [{}], \"ingress\": []}}\n";
    for source in ["d.json", "api"] {
        let error = parse_policies(source, json).unwrap_err().to_string();
        assert!(
            error.starts_with(&format!("{source}: line 3 column ")),
            "{error}"
        );
        assert!(error.contains("duplicate key \"ingress\""), "{error}");
        assert!(error.contains("ingress"), "{error}");
    }
    let labels = r#"{"apiVersion": "cilium.io/v2", "kind": "CiliumNetworkPolicy", "metadata": {"name": "d"},
        "spec": {"endpointSelector": {"matchLabels": {"app": "db", "app": "web"}}}}"#;
    let error = parse_policies("l.json", labels).unwrap_err().to_string();
    assert!(
        error.contains("duplicate") && error.contains("app"),
        "{error}"
    );
}
