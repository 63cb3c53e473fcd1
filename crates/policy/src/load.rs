//! Reading policies: files and directories to text, text to YAML or JSON documents, documents
//! (and the items of `List` documents, as `kubectl get -o yaml` prints them) to [`Policy`]
//! values.
//!
//! Owns document-level rules (apiVersion, kind, metadata, `spec`/`specs`, lists, the namespace
//! of a CiliumNetworkPolicy), the refusal of text without any policy, and error locations (line
//! and column for syntax, field paths for everything else). It must not interpret rules itself
//! (that is `rule.rs`) nor know about endpoints or protocols.

use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::de::{self, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;
use serde_yaml::Value;

use crate::endpoint::DEFAULT_NAMESPACE;
use crate::error::{FieldError, PolicyError, PolicyWarning, Subject};
use crate::model::Document;
use crate::nesting::{too_deep, MAX_DEPTH};
use crate::policy::{Policy, PolicyKind, AUDIT_ANNOTATION};
use crate::rule::parse_rule;

/// The only `apiVersion` accepted.
const API_VERSION: &str = "cilium.io/v2";

/// File name extensions read from a directory.
const EXTENSIONS: [&str; 3] = ["yaml", "yml", "json"];

/// The longest policy text accepted unless configured otherwise: 16 MiB, three times a
/// 100,000-rule policy.
pub const DEFAULT_MAX_POLICY_BYTES: usize = 16 << 20;

/// The `kind` of a generic list (`kubectl get -o yaml` of several objects).
const LIST_KIND: &str = "List";

/// Parses every policy in `text`: a stream of YAML documents separated by `---`, or one JSON
/// document. A document may be a policy or a list of policies (`List`,
/// `CiliumNetworkPolicyList`, `CiliumClusterwideNetworkPolicyList`); empty documents are
/// skipped, but text without any policy is an error ([`PolicyError::Empty`]). Text nesting
/// deeper than [`MAX_DEPTH`] is refused before it is parsed ([`PolicyError::TooDeep`]).
/// `source` names the text in errors, usually its file path.
pub fn parse_policies(source: &str, text: &str) -> Result<Vec<Policy>, PolicyError> {
    let empty = || PolicyError::Empty {
        file: source.to_owned(),
    };
    let blank = |line: &str| line.trim().is_empty() || line.trim_start().starts_with('#');
    if text.lines().all(blank) {
        return Err(empty());
    }
    if let Some(at) = too_deep(text, MAX_DEPTH) {
        return Err(PolicyError::TooDeep {
            file: source.to_owned(),
            line: at.line,
            column: at.column,
            limit: MAX_DEPTH,
        });
    }
    let mut policies = Vec::new();
    match json_document(source, text)? {
        Some(value) => parse_value(source, 1, value, &mut policies)?,
        None => {
            for (index, document) in serde_yaml::Deserializer::from_str(text).enumerate() {
                let number = index + 1;
                let value =
                    Value::deserialize(document).map_err(|e| yaml_error(source, number, &e))?;
                if !value.is_null() {
                    parse_value(source, number, value, &mut policies)?;
                }
            }
        }
    }
    if policies.is_empty() {
        return Err(empty());
    }
    Ok(policies)
}

/// The document of `text` when it is JSON (`kubectl get -o json` output, which YAML parsers
/// may refuse for its tabs); `None` for YAML, including a YAML flow mapping (`{a: b}`). A
/// `.json` source that is not valid JSON is a syntax error located by the JSON parser.
fn json_document(source: &str, text: &str) -> Result<Option<Value>, PolicyError> {
    if !text.trim_start().starts_with('{') {
        return Ok(None);
    }
    match serde_json::from_str::<UniqueKeys>(text) {
        Ok(UniqueKeys(value)) => serde_yaml::to_value(value)
            .map(Some)
            .map_err(|e| yaml_error(source, 1, &e)),
        // A key given twice is valid JSON syntax, refused here whatever the source's name.
        Err(e) if source.ends_with(".json") || e.is_data() => Err(PolicyError::Syntax {
            file: source.to_owned(),
            line: e.line(),
            column: e.column(),
            message: json_message(&e),
        }),
        Err(_) => Ok(None),
    }
}

/// A JSON value whose objects never give a key twice. serde_json keeps the last value of a
/// repeated key (as Go's encoding/json does), which would let a document read one way and load
/// another; such a document is refused instead, as YAML documents are.
struct UniqueKeys(serde_json::Value);

impl<'de> Deserialize<'de> for UniqueKeys {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer
            .deserialize_any(UniqueKeysVisitor)
            .map(UniqueKeys)
    }
}

struct UniqueKeysVisitor;

impl<'de> Visitor<'de> for UniqueKeysVisitor {
    type Value = serde_json::Value;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Self::Value, E> {
        Ok(v.into())
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
        Ok(v.into())
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
        Ok(v.into())
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Self::Value, E> {
        Ok(serde_json::Number::from_f64(v).map_or(serde_json::Value::Null, Into::into))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
        Ok(v.into())
    }

    fn visit_string<E: de::Error>(self, v: String) -> Result<Self::Value, E> {
        Ok(v.into())
    }

    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(serde_json::Value::Null)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut items = Vec::new();
        while let Some(UniqueKeys(item)) = seq.next_element()? {
            items.push(item);
        }
        Ok(serde_json::Value::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut object = serde_json::Map::new();
        while let Some(key) = map.next_key::<String>()? {
            if object.contains_key(&key) {
                return Err(de::Error::custom(format!("duplicate key {key:?}")));
            }
            let UniqueKeys(value) = map.next_value()?;
            object.insert(key, value);
        }
        Ok(serde_json::Value::Object(object))
    }
}

/// The JSON parser's message without the location it appends (ours carries it).
fn json_message(error: &serde_json::Error) -> String {
    let message = error.to_string();
    let suffix = format!(" at line {} column {}", error.line(), error.column());
    message
        .strip_suffix(&suffix)
        .map_or(message.clone(), str::to_owned)
}

/// Parses document `number`: a policy, or a list whose items are policies.
fn parse_value(
    source: &str,
    number: usize,
    value: Value,
    policies: &mut Vec<Policy>,
) -> Result<(), PolicyError> {
    let kind = value.get("kind").and_then(Value::as_str);
    let item_kind = match kind {
        Some(LIST_KIND) => None,
        Some(k) => match k.strip_suffix(LIST_KIND).and_then(PolicyKind::from_kind) {
            Some(item_kind) => Some(item_kind),
            None => {
                policies.push(parse_document(source, Subject::Document(number), value)?);
                return Ok(());
            }
        },
        None => {
            policies.push(parse_document(source, Subject::Document(number), value)?);
            return Ok(());
        }
    };
    let fail = |field: &str, message: String| PolicyError::Invalid {
        file: source.to_owned(),
        subject: Subject::Document(number),
        field: field.to_owned(),
        message,
    };
    let Value::Mapping(list) = value else {
        return Err(fail("", "expected a mapping".to_owned()));
    };
    let mut items = None;
    for (key, entry) in list {
        match key.as_str() {
            Some("items") => items = Some(entry),
            // Set by the API server and kubectl; nothing in them concerns policy.
            Some("apiVersion" | "kind" | "metadata") => {}
            Some(other) => return Err(fail(other, "unknown field in a list".to_owned())),
            None => return Err(fail("", "field names must be strings".to_owned())),
        }
    }
    let items = match items {
        Some(Value::Sequence(items)) => items,
        Some(Value::Null) | None => Vec::new(),
        Some(_) => return Err(fail("items", "expected a list of policies".to_owned())),
    };
    for (index, mut item) in items.into_iter().enumerate() {
        // A typed list may leave its items' apiVersion and kind out.
        if let (Some(item_kind), Value::Mapping(fields)) = (item_kind, &mut item) {
            if !fields.contains_key("apiVersion") {
                fields.insert("apiVersion".into(), API_VERSION.into());
            }
            if !fields.contains_key("kind") {
                fields.insert("kind".into(), item_kind.as_str().into());
            }
        }
        policies.push(parse_document(source, Subject::Item(number, index), item)?);
    }
    Ok(())
}

/// Loads the policies of files and directories, in the order given. A directory contributes
/// its `*.yaml`, `*.yml` and `*.json` files, sorted by name; subdirectories are not entered. A
/// file longer than `max_bytes` is refused unread ([`PolicyError::TooLarge`]).
pub fn load_paths(paths: &[PathBuf], max_bytes: usize) -> Result<Vec<Policy>, PolicyError> {
    let mut policies = Vec::new();
    for path in paths {
        let metadata = fs::metadata(path).map_err(io_error(path))?;
        if metadata.is_dir() {
            let mut files = Vec::new();
            for entry in fs::read_dir(path).map_err(io_error(path))? {
                let file = entry.map_err(io_error(path))?.path();
                let wanted = file
                    .extension()
                    .and_then(|e| e.to_str())
                    .is_some_and(|e| EXTENSIONS.contains(&e));
                if wanted && file.is_file() {
                    files.push(file);
                }
            }
            files.sort();
            for file in files {
                policies.extend(load_file(&file, max_bytes)?);
            }
        } else {
            policies.extend(load_file(path, max_bytes)?);
        }
    }
    Ok(policies)
}

fn load_file(path: &Path, max_bytes: usize) -> Result<Vec<Policy>, PolicyError> {
    let source = path.display().to_string();
    let too_large = |size: u64| PolicyError::TooLarge {
        file: source.clone(),
        size,
        limit: max_bytes,
    };
    let file = fs::File::open(path).map_err(io_error(path))?;
    let size = file.metadata().map_err(io_error(path))?.len();
    if size > max_bytes as u64 {
        return Err(too_large(size));
    }
    // Read one byte more than allowed, so that a file grown since its size was taken is noticed
    // without being read whole.
    let mut text = String::new();
    file.take(max_bytes as u64 + 1)
        .read_to_string(&mut text)
        .map_err(io_error(path))?;
    if text.len() > max_bytes {
        return Err(too_large(text.len() as u64));
    }
    parse_policies(&source, &text)
}

fn io_error(path: &Path) -> impl Fn(std::io::Error) -> PolicyError + '_ {
    move |error| PolicyError::Io {
        path: path.to_owned(),
        error,
    }
}

/// A YAML syntax error, located by line and column when the parser knows where it is.
fn yaml_error(source: &str, document: usize, error: &serde_yaml::Error) -> PolicyError {
    let message = error.to_string();
    match error.location() {
        Some(at) => PolicyError::Syntax {
            file: source.to_owned(),
            line: at.line(),
            column: at.column(),
            // The parser appends the location to its message; it is already in ours.
            message: message.replacen(
                &format!(" at line {} column {}", at.line(), at.column()),
                "",
                1,
            ),
        },
        None => PolicyError::Invalid {
            file: source.to_owned(),
            subject: Subject::Document(document),
            field: String::new(),
            message,
        },
    }
}

/// Parses one policy document; `position` names it in errors until its name is known.
fn parse_document(source: &str, position: Subject, value: Value) -> Result<Policy, PolicyError> {
    let original = value.clone();
    let name = value
        .get("metadata")
        .and_then(|m| m.get("name"))
        .and_then(Value::as_str)
        .filter(|n| !n.is_empty())
        .map(str::to_owned);
    let subject = name.clone().map_or(position, Subject::Policy);
    let fail = |error: FieldError| PolicyError::Invalid {
        file: source.to_owned(),
        subject: subject.clone(),
        field: error.field,
        message: error.message,
    };
    let metadata = value.get("metadata");
    if metadata.is_some_and(|m| m.is_mapping() && m.get("name").is_none()) {
        return Err(fail(FieldError::new(
            "metadata.name",
            "a policy needs a name",
        )));
    }
    let Value::Mapping(mut map) = value else {
        return Err(fail(FieldError::new(
            "",
            "expected a mapping with apiVersion, kind, metadata and spec",
        )));
    };
    match map.remove("apiVersion") {
        Some(Value::String(v)) if v == API_VERSION => {}
        Some(Value::String(v)) => {
            return Err(fail(FieldError::new(
                "apiVersion",
                format!("unsupported apiVersion {v:?} (expected {API_VERSION})"),
            )))
        }
        _ => {
            return Err(fail(FieldError::new(
                "apiVersion",
                format!("must be {API_VERSION}"),
            )))
        }
    }
    let kind = match map.remove("kind") {
        Some(Value::String(k)) => PolicyKind::from_kind(&k).ok_or_else(|| {
            fail(FieldError::new(
                "kind",
                format!(
                    "unsupported kind {k:?} (expected {} or {}, or a list of them)",
                    PolicyKind::Namespaced.as_str(),
                    PolicyKind::Clusterwide.as_str()
                ),
            ))
        })?,
        _ => {
            return Err(fail(FieldError::new(
                "kind",
                format!(
                    "must be {} or {}",
                    PolicyKind::Namespaced.as_str(),
                    PolicyKind::Clusterwide.as_str()
                ),
            )))
        }
    };
    let document: Document =
        serde_path_to_error::deserialize(Value::Mapping(map)).map_err(|e| {
            let path = e.path().to_string();
            let field = if path == "." { String::new() } else { path };
            fail(FieldError::new(field, e.into_inner().to_string()))
        })?;
    if document.metadata.name.is_empty() {
        return Err(fail(FieldError::new("metadata.name", "must not be empty")));
    }
    let audit = match document
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(AUDIT_ANNOTATION))
        .map(String::as_str)
    {
        None | Some("false") => false,
        Some("true") => true,
        Some(other) => {
            return Err(fail(FieldError::new(
                format!("metadata.annotations.{AUDIT_ANNOTATION}"),
                format!("must be \"true\" or \"false\", not {other:?}"),
            )))
        }
    };
    let namespace = match kind {
        PolicyKind::Namespaced => Some(
            document
                .metadata
                .namespace
                .filter(|n| !n.is_empty())
                .unwrap_or_else(|| DEFAULT_NAMESPACE.to_owned()),
        ),
        PolicyKind::Clusterwide => None,
    };
    let mut notes = Vec::new();
    let mut rules = Vec::new();
    let specs = document
        .spec
        .iter()
        .map(|spec| (spec, "spec".to_owned()))
        .chain(
            document
                .specs
                .iter()
                .flatten()
                .enumerate()
                .map(|(index, spec)| (spec, format!("specs[{index}]"))),
        );
    for (spec, path) in specs {
        let mut rule = parse_rule(spec, &path, &mut notes).map_err(fail)?;
        if let Some(namespace) = &namespace {
            for other in rule.scope_to_namespace(namespace) {
                notes.push(FieldError::new(
                    format!("{path}.endpointSelector"),
                    format!(
                        "selects in namespace {other:?}, but a CiliumNetworkPolicy applies in \
                         its own namespace ({namespace:?}); that match is ignored, as in Cilium"
                    ),
                ));
            }
        }
        rules.push(rule);
    }
    if rules.is_empty() {
        return Err(fail(FieldError::new(
            "spec",
            "a policy needs spec or a non-empty specs",
        )));
    }
    let warnings = notes
        .into_iter()
        .map(|note| PolicyWarning {
            file: source.to_owned(),
            subject: subject.clone(),
            field: note.field,
            message: note.message,
        })
        .collect();
    Ok(Policy {
        name: document.metadata.name,
        namespace,
        kind,
        source: source.to_owned(),
        rules: rules.into(),
        document: Arc::new(original),
        warnings,
        audit,
    })
}
