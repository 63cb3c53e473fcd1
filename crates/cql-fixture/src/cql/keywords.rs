//! Cassandra's keywords, in the groups its grammar (`Parser.g`) uses them: reserved ones are
//! never names; the others are names wherever the rule at hand admits them. Owns nothing but
//! these lists and the questions asked of them.

/// Keywords that are never names, lower case.
const RESERVED: [&str; 56] = [
    "add",
    "allow",
    "alter",
    "and",
    "apply",
    "asc",
    "authorize",
    "batch",
    "begin",
    "by",
    "columnfamily",
    "create",
    "delete",
    "desc",
    "describe",
    "drop",
    "entries",
    "execute",
    "from",
    "full",
    "grant",
    "if",
    "in",
    "index",
    "infinity",
    "insert",
    "into",
    "is",
    "keyspace",
    "limit",
    "materialized",
    "modify",
    "nan",
    "norecursive",
    "not",
    "null",
    "of",
    "on",
    "or",
    "order",
    "primary",
    "rename",
    "revoke",
    "schema",
    "select",
    "set",
    "table",
    "to",
    "token",
    "truncate",
    "unlogged",
    "update",
    "use",
    "using",
    "view",
    "where",
];

/// The native types, keywords that are names too.
const NATIVE_TYPES: [&str; 21] = [
    "ascii",
    "bigint",
    "blob",
    "boolean",
    "counter",
    "date",
    "decimal",
    "double",
    "duration",
    "float",
    "inet",
    "int",
    "smallint",
    "text",
    "time",
    "timestamp",
    "timeuuid",
    "tinyint",
    "uuid",
    "varchar",
    "varint",
];

/// Unreserved keywords that are names of columns but not of functions or types.
const COLUMN_ONLY: [&str; 8] = [
    "cast",
    "count",
    "distinct",
    "json",
    "key",
    "maxwritetime",
    "ttl",
    "writetime",
];

/// The unreserved keywords every kind of name admits.
const BASIC_UNRESERVED: [&str; 73] = [
    "access",
    "aggregate",
    "aggregates",
    "all",
    "ann",
    "as",
    "between",
    "called",
    "check",
    "cidrs",
    "cluster",
    "clustering",
    "columnfamilies",
    "compact",
    "contains",
    "custom",
    "datacenters",
    "default",
    "exists",
    "filtering",
    "finalfunc",
    "frozen",
    "function",
    "functions",
    "generated",
    "group",
    "hashed",
    "identity",
    "indexes",
    "initcond",
    "input",
    "internals",
    "keys",
    "keyspaces",
    "language",
    "like",
    "list",
    "login",
    "map",
    "masked",
    "mbean",
    "mbeans",
    "nologin",
    "nosuperuser",
    "only",
    "options",
    "partition",
    "password",
    "per",
    "permission",
    "permissions",
    "replace",
    "returns",
    "role",
    "roles",
    "select_masked",
    "sfunc",
    "static",
    "storage",
    "stype",
    "superuser",
    "superusers",
    "tables",
    "trigger",
    "tuple",
    "type",
    "types",
    "unmask",
    "unset",
    "user",
    "users",
    "values",
    "vector",
];

fn among(list: &[&str], word: &str) -> bool {
    list.iter().any(|k| k.eq_ignore_ascii_case(word))
}

/// Whether `word` is a keyword at all (so not an identifier token).
pub(super) fn is_keyword(word: &str) -> bool {
    among(&RESERVED, word)
        || among(&NATIVE_TYPES, word)
        || among(&COLUMN_ONLY, word)
        || among(&BASIC_UNRESERVED, word)
}

/// Whether `word` is a name where any unreserved keyword is (`ident`, `cident`, keyspace
/// and table names).
pub(super) fn is_name(word: &str) -> bool {
    !among(&RESERVED, word)
}

/// Whether `word` names a function (`allowedFunctionName`): an identifier, a basic
/// unreserved keyword, a native type, `token` or `count`.
pub(super) fn is_function_name(word: &str) -> bool {
    !is_keyword(word)
        || among(&BASIC_UNRESERVED, word)
        || among(&NATIVE_TYPES, word)
        || word.eq_ignore_ascii_case("token")
        || word.eq_ignore_ascii_case("count")
}

/// Whether `word` names a user type (`non_type_ident`): an identifier, a basic unreserved
/// keyword or `key`.
pub(super) fn is_type_name(word: &str) -> bool {
    !is_keyword(word) || among(&BASIC_UNRESERVED, word) || word.eq_ignore_ascii_case("key")
}

/// Whether `word` is a native type.
pub(super) fn is_native_type(word: &str) -> bool {
    among(&NATIVE_TYPES, word)
}

/// Whether `word` is a plain identifier, no keyword (`IDENT`).
pub(super) fn is_identifier(word: &str) -> bool {
    !is_keyword(word)
}
