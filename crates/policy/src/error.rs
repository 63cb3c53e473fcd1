//! The crate's one error type and how it reads.
//!
//! Every message names where the problem is (file, policy or document, field path) and why.
//! This module only formats; deciding what is an error belongs to the loading and compiling
//! modules.

use std::fmt;
use std::path::PathBuf;

/// Why policies could not be loaded or compiled.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PolicyError {
    /// A file or directory could not be read.
    #[error("{}: {error}", path.display())]
    Io {
        /// The path that failed.
        path: PathBuf,
        /// What the system said.
        #[source]
        error: std::io::Error,
    },
    /// The text is not valid YAML.
    #[error("{file}: line {line} column {column}: {message}")]
    Syntax {
        /// The file (or other source name) holding the text.
        file: String,
        /// One-based line of the problem.
        line: usize,
        /// One-based column of the problem.
        column: usize,
        /// What the YAML parser said.
        message: String,
    },
    /// The text is longer than policy text may be; it was not parsed.
    #[error(
        "{file}: {size} bytes, more than the {limit} bytes policy text may have (maxPolicyBytes)"
    )]
    TooLarge {
        /// The file (or other source name) holding the text.
        file: String,
        /// The length of the text (at least this much, for a file that kept growing).
        size: u64,
        /// The most that is accepted.
        limit: usize,
    },
    /// The text nests collections deeper than a policy document may; it was not parsed.
    #[error(
        "{file}: line {line} column {column}: nested deeper than {limit} levels, the most a \
         policy document may have"
    )]
    TooDeep {
        /// The file (or other source name) holding the text.
        file: String,
        /// One-based line where the limit is passed.
        line: usize,
        /// One-based column where the limit is passed.
        column: usize,
        /// The deepest nesting accepted.
        limit: usize,
    },
    /// A document is valid YAML but not a policy Axoneme accepts.
    #[error("{file}: {subject}: {}{message}", FieldPrefix(field))]
    Invalid {
        /// The file (or other source name) holding the document.
        file: String,
        /// The policy, or the document when its name is unknown.
        subject: Subject,
        /// Path of the offending field, e.g. `spec.ingress[0].toPorts[0].rules.l7proto`; empty
        /// when the document as a whole is at fault.
        field: String,
        /// Why it was rejected.
        message: String,
    },
    /// The text holds no policy document: it is empty, or only whitespace and comments (a
    /// truncated file, an editor's half-written save), or a list without items. Never taken to
    /// mean "no policies": policies are removed by deleting their file or through the API.
    #[error(
        "{file}: holds no policy (it is empty or only comments); to remove policies, delete the \
         file or remove it from `policies`, or use `policy delete`"
    )]
    Empty {
        /// The file (or other source name) holding the text.
        file: String,
    },
    /// Two rules put different L7 protocols on the same port of one endpoint and direction.
    #[error(
        "endpoint {endpoint:?}: {direction} port {port}: conflicting l7proto: {first} and {second}"
    )]
    Conflict {
        /// The endpoint both rules select.
        endpoint: String,
        /// `ingress` or `egress`.
        direction: &'static str,
        /// The port both rules name.
        port: u16,
        /// The first rule, in policy order.
        first: Box<L7Origin>,
        /// The rule that disagrees with it.
        second: Box<L7Origin>,
    },
    /// An endpoint description is inconsistent.
    #[error("endpoint {name:?}: {message}")]
    Endpoint {
        /// The endpoint's name.
        name: String,
        /// What is wrong with it.
        message: String,
    },
}

/// Something in a policy that is accepted but that its author should know about, e.g. an empty
/// L7 rule value, which constrains nothing.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{file}: {subject}: {}{message}", FieldPrefix(field))]
pub struct PolicyWarning {
    /// The file (or other source name) holding the policy.
    pub file: String,
    /// The policy.
    pub subject: Subject,
    /// Path of the field concerned.
    pub field: String,
    /// What it means.
    pub message: String,
}

/// What an [`PolicyError::Invalid`] or a [`PolicyWarning`] is about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Subject {
    /// A policy, by `metadata.name`.
    Policy(String),
    /// A document whose name could not be read, by its one-based position in the file.
    Document(usize),
    /// An element of a document's `items` (a `List`) whose name could not be read: the
    /// document's one-based position and the item's zero-based index.
    Item(usize, usize),
}

impl fmt::Display for Subject {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Subject::Policy(name) => write!(f, "policy {name:?}"),
            Subject::Document(index) => write!(f, "document {index}"),
            Subject::Item(document, item) => write!(f, "document {document}: items[{item}]"),
        }
    }
}

/// Where an `l7proto` in conflict was set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct L7Origin {
    /// The protocol name.
    pub proto: String,
    /// The file of the policy.
    pub file: String,
    /// The policy's name.
    pub policy: String,
    /// Path of the `toPorts` element.
    pub field: String,
}

impl fmt::Display for L7Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:?} ({}: policy {:?}: {})",
            self.proto, self.file, self.policy, self.field
        )
    }
}

/// Writes `field: ` when there is a field to name.
struct FieldPrefix<'a>(&'a str);

impl fmt::Display for FieldPrefix<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() {
            Ok(())
        } else {
            write!(f, "{}: ", self.0)
        }
    }
}

/// A problem found in one field of a policy, before the file and policy are attached to it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct FieldError {
    /// Path of the offending field.
    pub field: String,
    /// Why it was rejected.
    pub message: String,
}

impl FieldError {
    /// A problem with `field`.
    pub(crate) fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        FieldError {
            field: field.into(),
            message: message.into(),
        }
    }
}
