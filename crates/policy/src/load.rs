//! Reading policies: files and directories to text, text to YAML documents, documents to
//! [`Policy`] values.
//!
//! Owns document-level rules (apiVersion, kind, metadata, `spec`/`specs`) and error locations
//! (line and column for YAML syntax, field paths for everything else). It must not interpret
//! rules itself (that is `rule.rs`) nor know about endpoints or protocols.

use std::fs;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde_yaml::Value;

use crate::error::{FieldError, PolicyError, Subject};
use crate::model::Document;
use crate::policy::{Policy, PolicyKind};
use crate::rule::parse_rule;

/// The only `apiVersion` accepted.
const API_VERSION: &str = "cilium.io/v2";

/// File name extensions read from a directory.
const EXTENSIONS: [&str; 3] = ["yaml", "yml", "json"];

/// Parses every policy in `text`, a stream of YAML documents separated by `---` (JSON works
/// too). Empty documents are skipped. `source` names the text in errors, usually its file path.
pub fn parse_policies(source: &str, text: &str) -> Result<Vec<Policy>, PolicyError> {
    let mut policies = Vec::new();
    for (index, document) in serde_yaml::Deserializer::from_str(text).enumerate() {
        let number = index + 1;
        let value = Value::deserialize(document).map_err(|e| yaml_error(source, number, &e))?;
        if value.is_null() {
            continue;
        }
        policies.push(parse_document(source, number, value)?);
    }
    Ok(policies)
}

/// Loads the policies of files and directories, in the order given. A directory contributes
/// its `*.yaml`, `*.yml` and `*.json` files, sorted by name; subdirectories are not entered.
pub fn load_paths(paths: &[PathBuf]) -> Result<Vec<Policy>, PolicyError> {
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
                policies.extend(load_file(&file)?);
            }
        } else {
            policies.extend(load_file(path)?);
        }
    }
    Ok(policies)
}

fn load_file(path: &Path) -> Result<Vec<Policy>, PolicyError> {
    let text = fs::read_to_string(path).map_err(io_error(path))?;
    parse_policies(&path.display().to_string(), &text)
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

fn parse_document(source: &str, number: usize, value: Value) -> Result<Policy, PolicyError> {
    let original = value.clone();
    let name = value
        .get("metadata")
        .and_then(|m| m.get("name"))
        .and_then(Value::as_str)
        .filter(|n| !n.is_empty())
        .map(str::to_owned);
    let subject = name
        .clone()
        .map_or(Subject::Document(number), Subject::Policy);
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
                    "unsupported kind {k:?} (expected {} or {})",
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
    let mut rules = Vec::new();
    if let Some(spec) = &document.spec {
        rules.push(parse_rule(spec, "spec").map_err(fail)?);
    }
    for (index, spec) in document.specs.iter().flatten().enumerate() {
        rules.push(parse_rule(spec, &format!("specs[{index}]")).map_err(fail)?);
    }
    if rules.is_empty() {
        return Err(fail(FieldError::new(
            "spec",
            "a policy needs spec or a non-empty specs",
        )));
    }
    Ok(Policy {
        name: document.metadata.name,
        namespace: document.metadata.namespace,
        kind,
        source: source.to_owned(),
        rules,
        document: original,
    })
}
