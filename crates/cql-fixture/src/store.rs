//! The in-memory store and the evaluator: keyspaces, tables with their schema and rows, the
//! system tables drivers read on connect, and prepared statements.
//!
//! Values are kept in their serialized form. A row's key is its primary key columns; rows sort
//! by that key (partition and clustering columns ascending, integers numerically), so a
//! table's rows come out in one stable order. Conditions may name any column.

use std::collections::hash_map::DefaultHasher;
use std::collections::{BTreeMap, HashMap};
use std::hash::{Hash, Hasher};
use std::net::{IpAddr, SocketAddr};

use crate::cql::{self, Condition, Selection, Stmt, TableRef, Term};
use crate::types::{parse_uuid, CqlType};

/// A bound value: its serialized form, null, or "not set" (left as it is).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Bound {
    Value(Vec<u8>),
    Null,
    Unset,
}

/// A column of a table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Column {
    pub name: String,
    pub ty: CqlType,
}

/// Columns of one table, as result and bind metadata describe them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Spec {
    pub keyspace: String,
    pub table: String,
    pub columns: Vec<Column>,
}

/// A row: a value, or null, per column.
pub type Row = Vec<Option<Vec<u8>>>;

/// What a statement returns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Void,
    SetKeyspace(String),
    /// `change` is CREATED or DROPPED; `table` is `None` for a keyspace.
    SchemaChange {
        change: &'static str,
        keyspace: String,
        table: Option<String>,
    },
    Rows(Spec, Vec<Row>),
}

/// An error the protocol reports, with its code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CqlError {
    Syntax(String),
    Invalid(String),
    AlreadyExists {
        keyspace: String,
        table: String,
        message: String,
    },
    Unprepared(Vec<u8>),
}

impl CqlError {
    /// The protocol's error code.
    pub fn code(&self) -> u32 {
        match self {
            CqlError::Syntax(_) => 0x2000,
            CqlError::Invalid(_) => 0x2200,
            CqlError::AlreadyExists { .. } => 0x2400,
            CqlError::Unprepared(_) => 0x2500,
        }
    }

    /// The message.
    pub fn message(&self) -> String {
        match self {
            CqlError::Syntax(m) | CqlError::Invalid(m) => m.clone(),
            CqlError::AlreadyExists { message, .. } => message.clone(),
            CqlError::Unprepared(id) => format!("prepared statement {} is unknown", hex(id)),
        }
    }
}

fn invalid(message: impl Into<String>) -> CqlError {
    CqlError::Invalid(message.into())
}

/// A prepared statement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Prepared {
    pub id: Vec<u8>,
    query: String,
    keyspace: Option<String>,
    /// The bind markers' columns, in order.
    pub bind: Spec,
    /// For each partition key column, the marker that binds it (empty unless all are bound).
    pub pk_indexes: Vec<u16>,
    /// The columns a SELECT returns.
    pub result: Option<Spec>,
}

struct Table {
    /// Partition key columns first, then clustering columns, then the others by name.
    columns: Vec<Column>,
    partition_len: usize,
    key_len: usize,
    rows: BTreeMap<Vec<u8>, Row>,
}

impl Table {
    fn new(
        columns: Vec<Column>,
        partition_key: &[String],
        clustering: &[String],
    ) -> Result<Table, CqlError> {
        let find = |name: &String| {
            columns
                .iter()
                .find(|c| &c.name == name)
                .cloned()
                .ok_or_else(|| {
                    invalid(format!(
                        "Unknown definition {name} referenced in PRIMARY KEY"
                    ))
                })
        };
        let mut ordered: Vec<Column> = partition_key
            .iter()
            .chain(clustering)
            .map(find)
            .collect::<Result<_, _>>()?;
        let key_len = ordered.len();
        let mut rest: Vec<Column> = columns
            .iter()
            .filter(|c| !ordered[..key_len].iter().any(|k| k.name == c.name))
            .cloned()
            .collect();
        rest.sort_by(|a, b| a.name.cmp(&b.name));
        ordered.extend(rest);
        for (i, column) in ordered.iter().enumerate() {
            if ordered[..i].iter().any(|c| c.name == column.name) {
                return Err(invalid(format!(
                    "Multiple definition of identifier {}",
                    column.name
                )));
            }
        }
        Ok(Table {
            columns: ordered,
            partition_len: partition_key.len(),
            key_len,
            rows: BTreeMap::new(),
        })
    }

    fn index(&self, name: &str) -> Result<usize, CqlError> {
        self.columns
            .iter()
            .position(|c| c.name == name)
            .ok_or_else(|| invalid(format!("Undefined column name {name}")))
    }

    /// The sort key of a row.
    fn key(&self, row: &Row) -> Vec<u8> {
        let mut key = Vec::new();
        for (column, value) in self.columns[..self.key_len].iter().zip(row) {
            column
                .ty
                .order_bytes(value.as_deref().unwrap_or_default(), &mut key);
        }
        key
    }

    /// Writes `values` (column index, value) into the row their key columns name.
    fn upsert(&mut self, values: Vec<(usize, Bound)>) -> Result<(), CqlError> {
        let mut row: Row = vec![None; self.columns.len()];
        for (index, value) in &values {
            if let Bound::Value(bytes) = value {
                row[*index] = Some(bytes.clone());
            }
        }
        if let Some(missing) = (0..self.key_len).find(|&i| row[i].is_none()) {
            return Err(invalid(format!(
                "Missing mandatory PRIMARY KEY part {}",
                self.columns[missing].name
            )));
        }
        let key = self.key(&row);
        let stored = self.rows.entry(key).or_insert(row);
        for (index, value) in values {
            match value {
                Bound::Value(bytes) => stored[index] = Some(bytes),
                Bound::Null => stored[index] = None,
                Bound::Unset => {}
            }
        }
        Ok(())
    }

    fn spec(&self, keyspace: &str, table: &str, columns: Vec<Column>) -> Spec {
        Spec {
            keyspace: keyspace.to_string(),
            table: table.to_string(),
            columns,
        }
    }
}

/// Columns as (name, type).
type ColumnDefs = &'static [(&'static str, &'static str)];

/// The system tables: keyspace, table, number of key columns (the first of them the partition
/// key), columns.
const SYSTEM_TABLES: &[(&str, &str, usize, ColumnDefs)] = &[
    (
        "system",
        "local",
        1,
        &[
            ("key", "text"),
            ("bootstrapped", "text"),
            ("broadcast_address", "inet"),
            ("broadcast_port", "int"),
            ("cluster_name", "text"),
            ("cql_version", "text"),
            ("data_center", "text"),
            ("gossip_generation", "int"),
            ("host_id", "uuid"),
            ("listen_address", "inet"),
            ("listen_port", "int"),
            ("native_protocol_version", "text"),
            ("partitioner", "text"),
            ("rack", "text"),
            ("release_version", "text"),
            ("rpc_address", "inet"),
            ("rpc_port", "int"),
            ("schema_version", "uuid"),
            ("tokens", "set<text>"),
        ],
    ),
    (
        "system",
        "peers",
        1,
        &[
            ("peer", "inet"),
            ("data_center", "text"),
            ("host_id", "uuid"),
            ("preferred_ip", "inet"),
            ("rack", "text"),
            ("release_version", "text"),
            ("rpc_address", "inet"),
            ("schema_version", "uuid"),
            ("tokens", "set<text>"),
        ],
    ),
    (
        "system_schema",
        "keyspaces",
        1,
        &[
            ("keyspace_name", "text"),
            ("durable_writes", "boolean"),
            ("replication", "frozen<map<text, text>>"),
        ],
    ),
    (
        "system_schema",
        "tables",
        2,
        &[
            ("keyspace_name", "text"),
            ("table_name", "text"),
            ("additional_write_policy", "text"),
            ("bloom_filter_fp_chance", "double"),
            ("caching", "frozen<map<text, text>>"),
            ("cdc", "boolean"),
            ("comment", "text"),
            ("compaction", "frozen<map<text, text>>"),
            ("compression", "frozen<map<text, text>>"),
            ("crc_check_chance", "double"),
            ("dclocal_read_repair_chance", "double"),
            ("default_time_to_live", "int"),
            ("extensions", "frozen<map<text, blob>>"),
            ("flags", "frozen<set<text>>"),
            ("gc_grace_seconds", "int"),
            ("id", "uuid"),
            ("max_index_interval", "int"),
            ("memtable_flush_period_in_ms", "int"),
            ("min_index_interval", "int"),
            ("read_repair", "text"),
            ("read_repair_chance", "double"),
            ("speculative_retry", "text"),
        ],
    ),
    (
        "system_schema",
        "columns",
        3,
        &[
            ("keyspace_name", "text"),
            ("table_name", "text"),
            ("column_name", "text"),
            ("clustering_order", "text"),
            ("column_name_bytes", "blob"),
            ("kind", "text"),
            ("position", "int"),
            ("type", "text"),
        ],
    ),
    (
        "system_schema",
        "types",
        2,
        &[
            ("keyspace_name", "text"),
            ("type_name", "text"),
            ("field_names", "frozen<list<text>>"),
            ("field_types", "frozen<list<text>>"),
        ],
    ),
    (
        "system_schema",
        "functions",
        3,
        &[
            ("keyspace_name", "text"),
            ("function_name", "text"),
            ("argument_types", "frozen<list<text>>"),
            ("argument_names", "frozen<list<text>>"),
            ("body", "text"),
            ("called_on_null_input", "boolean"),
            ("language", "text"),
            ("return_type", "text"),
        ],
    ),
    (
        "system_schema",
        "aggregates",
        3,
        &[
            ("keyspace_name", "text"),
            ("aggregate_name", "text"),
            ("argument_types", "frozen<list<text>>"),
            ("final_func", "text"),
            ("initcond", "text"),
            ("return_type", "text"),
            ("state_func", "text"),
            ("state_type", "text"),
        ],
    ),
    (
        "system_schema",
        "indexes",
        3,
        &[
            ("keyspace_name", "text"),
            ("table_name", "text"),
            ("index_name", "text"),
            ("kind", "text"),
            ("options", "frozen<map<text, text>>"),
        ],
    ),
    (
        "system_schema",
        "triggers",
        3,
        &[
            ("keyspace_name", "text"),
            ("table_name", "text"),
            ("trigger_name", "text"),
            ("options", "frozen<map<text, text>>"),
        ],
    ),
    (
        "system_schema",
        "views",
        2,
        &[
            ("keyspace_name", "text"),
            ("view_name", "text"),
            ("base_table_id", "uuid"),
            ("base_table_name", "text"),
            ("bloom_filter_fp_chance", "double"),
            ("caching", "frozen<map<text, text>>"),
            ("comment", "text"),
            ("compaction", "frozen<map<text, text>>"),
            ("compression", "frozen<map<text, text>>"),
            ("default_time_to_live", "int"),
            ("gc_grace_seconds", "int"),
            ("id", "uuid"),
            ("include_all_columns", "boolean"),
            ("speculative_retry", "text"),
            ("where_clause", "text"),
        ],
    ),
    (
        "system_virtual_schema",
        "keyspaces",
        1,
        &[("keyspace_name", "text")],
    ),
    (
        "system_virtual_schema",
        "tables",
        2,
        &[
            ("keyspace_name", "text"),
            ("table_name", "text"),
            ("comment", "text"),
        ],
    ),
    (
        "system_virtual_schema",
        "columns",
        3,
        &[
            ("keyspace_name", "text"),
            ("table_name", "text"),
            ("column_name", "text"),
            ("clustering_order", "text"),
            ("column_name_bytes", "blob"),
            ("kind", "text"),
            ("position", "int"),
            ("type", "text"),
        ],
    ),
];

/// The Cassandra version `system.local` reports.
const RELEASE_VERSION: &str = "4.0.11";

/// The CQL version the fixture reports.
pub const CQL_VERSION: &str = "3.4.5";

fn is_system(keyspace: &str) -> bool {
    ["system", "system_schema", "system_virtual_schema"].contains(&keyspace)
}

/// `system.local`'s value of `column` for a client that reached the fixture at `node`.
fn local_value(column: &str, node: SocketAddr) -> Option<Vec<u8>> {
    let text = |s: &str| Some(s.as_bytes().to_vec());
    let ip = match node.ip() {
        IpAddr::V4(ip) => ip.octets().to_vec(),
        IpAddr::V6(ip) => ip.octets().to_vec(),
    };
    match column {
        "key" => text("local"),
        "bootstrapped" => text("COMPLETED"),
        "broadcast_address" | "listen_address" | "rpc_address" => Some(ip),
        "broadcast_port" | "listen_port" => Some(7000i32.to_be_bytes().to_vec()),
        "rpc_port" => Some(i32::from(node.port()).to_be_bytes().to_vec()),
        "cluster_name" => text("cql-fixture"),
        "cql_version" => text(CQL_VERSION),
        "data_center" => text("datacenter1"),
        "rack" => text("rack1"),
        "gossip_generation" => Some(1i32.to_be_bytes().to_vec()),
        "host_id" => parse_uuid("c9f1b8a4-5d2e-4f6a-9b3c-0d1e2f3a4b5c").map(|u| u.to_vec()),
        "schema_version" => parse_uuid("5a0e6f3c-1b2d-3e4f-8a9b-0c1d2e3f4a5b").map(|u| u.to_vec()),
        "native_protocol_version" => text("4"),
        "partitioner" => text("org.apache.cassandra.dht.Murmur3Partitioner"),
        "release_version" => text(RELEASE_VERSION),
        // A set<text> of one element: "0".
        "tokens" => Some(vec![0, 0, 0, 1, 0, 0, 0, 1, b'0']),
        _ => None,
    }
}

/// The keyspaces, their tables and rows, and the prepared statements.
pub struct Store {
    keyspaces: BTreeMap<String, BTreeMap<String, Table>>,
    prepared: HashMap<Vec<u8>, Prepared>,
}

impl Default for Store {
    fn default() -> Self {
        Store::new()
    }
}

impl Store {
    /// A store with the system tables and no other keyspace.
    pub fn new() -> Store {
        let mut keyspaces: BTreeMap<String, BTreeMap<String, Table>> = BTreeMap::new();
        for (keyspace, name, key_len, columns) in SYSTEM_TABLES {
            let columns: Vec<Column> = columns
                .iter()
                .map(|(name, ty)| Column {
                    name: name.to_string(),
                    ty: CqlType::parse(ty).expect("system column types are known"),
                })
                .collect();
            let key: Vec<String> = columns[..*key_len].iter().map(|c| c.name.clone()).collect();
            let table = Table::new(columns, &key[..1], &key[1..]).expect("system tables are valid");
            keyspaces
                .entry(keyspace.to_string())
                .or_default()
                .insert(name.to_string(), table);
        }
        Store {
            keyspaces,
            prepared: HashMap::new(),
        }
    }

    /// The keyspace and name of a table, which must exist.
    fn resolve(
        &self,
        table: &TableRef,
        current: Option<&str>,
    ) -> Result<(String, String), CqlError> {
        let keyspace = table.keyspace.as_deref().or(current).ok_or_else(|| {
            invalid("No keyspace has been specified. USE a keyspace, or explicitly specify keyspace.tablename")
        })?;
        let tables = self
            .keyspaces
            .get(keyspace)
            .ok_or_else(|| invalid(format!("Keyspace {keyspace} does not exist")))?;
        if !tables.contains_key(&table.name) {
            return Err(invalid(format!("unconfigured table {}", table.name)));
        }
        Ok((keyspace.to_string(), table.name.clone()))
    }

    fn table(&self, keyspace: &str, name: &str) -> &Table {
        &self.keyspaces[keyspace][name]
    }

    /// A table to write to: it exists and is not a system table.
    fn writable(
        &mut self,
        table: &TableRef,
        current: Option<&str>,
    ) -> Result<&mut Table, CqlError> {
        let (keyspace, name) = self.resolve(table, current)?;
        if is_system(&keyspace) {
            return Err(invalid(format!("{keyspace} is a read-only keyspace")));
        }
        Ok(self
            .keyspaces
            .get_mut(&keyspace)
            .and_then(|tables| tables.get_mut(&name))
            .expect("resolved tables exist"))
    }

    /// Evaluates a statement, with `current` the connection's keyspace and `values` bound to
    /// its markers; `node` is the address the client reached.
    pub fn execute(
        &mut self,
        stmt: &Stmt,
        current: Option<&str>,
        values: &[Bound],
        node: SocketAddr,
    ) -> Result<Outcome, CqlError> {
        if values.len() != stmt.markers() {
            return Err(invalid(format!(
                "There were {} markers(?) in CQL but {} bound variables",
                stmt.markers(),
                values.len()
            )));
        }
        self.evaluate(stmt, current, values, node)
    }

    /// Evaluates a statement whose markers index `values`.
    fn evaluate(
        &mut self,
        stmt: &Stmt,
        current: Option<&str>,
        values: &[Bound],
        node: SocketAddr,
    ) -> Result<Outcome, CqlError> {
        match stmt {
            Stmt::Use(keyspace) => match self.keyspaces.contains_key(keyspace) {
                true => Ok(Outcome::SetKeyspace(keyspace.clone())),
                false => Err(invalid(format!("Keyspace '{keyspace}' does not exist"))),
            },
            Stmt::CreateKeyspace {
                name,
                if_not_exists,
            } => {
                if self.keyspaces.contains_key(name) {
                    return match if_not_exists {
                        true => Ok(Outcome::Void),
                        false => Err(CqlError::AlreadyExists {
                            keyspace: name.clone(),
                            table: String::new(),
                            message: format!("Keyspace {name} already exists"),
                        }),
                    };
                }
                self.keyspaces.insert(name.clone(), BTreeMap::new());
                Ok(schema_change("CREATED", name, None))
            }
            Stmt::CreateTable {
                table,
                if_not_exists,
                columns,
                partition_key,
                clustering,
            } => {
                let keyspace = table.keyspace.as_deref().or(current).ok_or_else(|| {
                    invalid("No keyspace has been specified. USE a keyspace, or explicitly specify keyspace.tablename")
                })?;
                if is_system(keyspace) {
                    return Err(invalid(format!("{keyspace} is a read-only keyspace")));
                }
                if partition_key.is_empty() {
                    return Err(invalid(format!(
                        "No PRIMARY KEY specified for table '{}' (exactly one required)",
                        table.name
                    )));
                }
                let tables = self
                    .keyspaces
                    .get_mut(keyspace)
                    .ok_or_else(|| invalid(format!("Keyspace {keyspace} does not exist")))?;
                if tables.contains_key(&table.name) {
                    return match if_not_exists {
                        true => Ok(Outcome::Void),
                        false => Err(CqlError::AlreadyExists {
                            keyspace: keyspace.to_string(),
                            table: table.name.clone(),
                            message: format!("Object {keyspace}.{} already exists", table.name),
                        }),
                    };
                }
                let columns = columns
                    .iter()
                    .map(|(name, ty)| Column {
                        name: name.clone(),
                        ty: ty.clone(),
                    })
                    .collect();
                tables.insert(
                    table.name.clone(),
                    Table::new(columns, partition_key, clustering)?,
                );
                Ok(schema_change("CREATED", keyspace, Some(&table.name)))
            }
            Stmt::DropKeyspace { name, if_exists } => {
                if is_system(name) {
                    return Err(invalid(format!("{name} is a read-only keyspace")));
                }
                match (self.keyspaces.remove(name), if_exists) {
                    (Some(_), _) => Ok(schema_change("DROPPED", name, None)),
                    (None, true) => Ok(Outcome::Void),
                    (None, false) => Err(invalid(format!(
                        "Cannot drop non existing keyspace '{name}'."
                    ))),
                }
            }
            Stmt::DropTable { table, if_exists } => match self.resolve(table, current) {
                Err(_) if *if_exists => Ok(Outcome::Void),
                Err(error) => Err(error),
                Ok((keyspace, _)) if is_system(&keyspace) => {
                    Err(invalid(format!("{keyspace} is a read-only keyspace")))
                }
                Ok((keyspace, name)) => {
                    if let Some(tables) = self.keyspaces.get_mut(&keyspace) {
                        tables.remove(&name);
                    }
                    Ok(schema_change("DROPPED", &keyspace, Some(&name)))
                }
            },
            Stmt::Truncate(table) => {
                self.writable(table, current)?.rows.clear();
                Ok(Outcome::Void)
            }
            Stmt::Insert {
                table,
                columns,
                values: terms,
            } => {
                if columns.len() != terms.len() {
                    return Err(invalid("Unmatched column names/values"));
                }
                let table = self.writable(table, current)?;
                let mut row = Vec::with_capacity(columns.len());
                for (name, term) in columns.iter().zip(terms) {
                    let index = table.index(name)?;
                    row.push((index, bind(term, &table.columns[index].ty, values)?));
                }
                table.upsert(row)?;
                Ok(Outcome::Void)
            }
            Stmt::Update {
                table,
                assignments,
                conditions,
            } => {
                let table = self.writable(table, current)?;
                let mut row = Vec::new();
                for (name, term) in assignments {
                    let index = table.index(name)?;
                    if index < table.key_len {
                        return Err(invalid(format!(
                            "PRIMARY KEY part {name} found in SET part"
                        )));
                    }
                    row.push((index, bind(term, &table.columns[index].ty, values)?));
                }
                for condition in conditions {
                    let index = table.index(&condition.column)?;
                    match condition.terms.as_slice() {
                        [term] if index < table.key_len => {
                            row.push((index, bind(term, &table.columns[index].ty, values)?))
                        }
                        _ => {
                            return Err(invalid(format!(
                                "UPDATE needs one value for each PRIMARY KEY column, and only those (at {})",
                                condition.column
                            )))
                        }
                    }
                }
                table.upsert(row)?;
                Ok(Outcome::Void)
            }
            Stmt::Delete {
                table,
                columns,
                conditions,
            } => {
                let table = self.writable(table, current)?;
                let filter = filter(table, conditions, values)?;
                if let Some(missing) =
                    (0..table.partition_len).find(|i| !filter.iter().any(|(c, _)| c == i))
                {
                    return Err(invalid(format!(
                        "Some partition key parts are missing: {}",
                        table.columns[missing].name
                    )));
                }
                let cleared: Vec<usize> = columns
                    .iter()
                    .map(|c| table.index(c))
                    .collect::<Result<_, _>>()?;
                if cleared.iter().any(|&i| i < table.key_len) {
                    return Err(invalid("Invalid identifier in DELETE: a PRIMARY KEY part"));
                }
                let matching: Vec<Vec<u8>> = table
                    .rows
                    .iter()
                    .filter(|(_, row)| matches(row, &filter))
                    .map(|(key, _)| key.clone())
                    .collect();
                for key in matching {
                    match cleared.is_empty() {
                        true => {
                            table.rows.remove(&key);
                        }
                        false => {
                            if let Some(row) = table.rows.get_mut(&key) {
                                for &i in &cleared {
                                    row[i] = None;
                                }
                            }
                        }
                    }
                }
                Ok(Outcome::Void)
            }
            Stmt::Select {
                table,
                selection,
                conditions,
                limit,
            } => {
                let (keyspace, name) = self.resolve(table, current)?;
                let table = self.table(&keyspace, &name);
                let filter = filter(table, conditions, values)?;
                let limit = match limit {
                    None => usize::MAX,
                    Some(term) => match bind(term, &CqlType::Int, values)? {
                        Bound::Value(bytes) => {
                            let n = i32::from_be_bytes(bytes[..4].try_into().unwrap_or_default());
                            usize::try_from(n)
                                .ok()
                                .filter(|&n| n > 0)
                                .ok_or_else(|| invalid("LIMIT must be strictly positive"))?
                        }
                        _ => return Err(invalid("Invalid null value of limit")),
                    },
                };
                let local;
                let rows: Box<dyn Iterator<Item = &Row>> = match (keyspace.as_str(), name.as_str())
                {
                    ("system", "local") => {
                        local = table
                            .columns
                            .iter()
                            .map(|c| local_value(&c.name, node))
                            .collect::<Row>();
                        Box::new(std::iter::once(&local))
                    }
                    _ => Box::new(table.rows.values()),
                };
                let rows = rows.filter(|row| matches(row, &filter)).take(limit);
                let (columns, rows) = match selection {
                    Selection::All => (table.columns.clone(), rows.cloned().collect()),
                    Selection::Columns(names) => {
                        let indexes: Vec<usize> = names
                            .iter()
                            .map(|n| table.index(n))
                            .collect::<Result<_, _>>()?;
                        let columns = indexes.iter().map(|&i| table.columns[i].clone()).collect();
                        let rows = rows
                            .map(|row| indexes.iter().map(|&i| row[i].clone()).collect())
                            .collect();
                        (columns, rows)
                    }
                    Selection::Count => {
                        let count = rows.count() as i64;
                        let column = Column {
                            name: "count".into(),
                            ty: CqlType::Bigint,
                        };
                        (vec![column], vec![vec![Some(count.to_be_bytes().to_vec())]])
                    }
                };
                Ok(Outcome::Rows(table.spec(&keyspace, &name, columns), rows))
            }
            Stmt::Batch(statements) => {
                if let Some(Stmt::Unsupported { what, .. }) = statements
                    .iter()
                    .find(|s| matches!(s, Stmt::Unsupported { .. }))
                {
                    return Err(unsupported(what));
                }
                for stmt in statements {
                    self.evaluate(stmt, current, values, node)?;
                }
                Ok(Outcome::Void)
            }
            Stmt::Unsupported { what, .. } => Err(unsupported(what)),
        }
    }

    /// Prepares a query with `current` the connection's keyspace; the id depends only on the
    /// query and that keyspace.
    pub fn prepare(&mut self, query: &str, current: Option<&str>) -> Result<Prepared, CqlError> {
        let stmt = parse(query)?;
        let mut hasher = DefaultHasher::new();
        (query, current).hash(&mut hasher);
        let first = hasher.finish();
        query.len().hash(&mut hasher);
        let id = [first.to_be_bytes(), hasher.finish().to_be_bytes()].concat();
        let (table, result) = match &stmt {
            Stmt::Insert { table, .. }
            | Stmt::Update { table, .. }
            | Stmt::Delete { table, .. } => (Some(table), None),
            Stmt::Select { table, .. } => (Some(table), Some(&stmt)),
            Stmt::Batch(_) => return Err(invalid("cql-fixture does not prepare text batches")),
            Stmt::Unsupported { what, .. } => return Err(unsupported(what)),
            _ => (None, None),
        };
        let (bind, pk_indexes, result) = match table {
            None => (
                Spec {
                    keyspace: String::new(),
                    table: String::new(),
                    columns: Vec::new(),
                },
                Vec::new(),
                None,
            ),
            Some(table) => {
                let (keyspace, name) = self.resolve(table, current)?;
                let table = self.table(&keyspace, &name);
                let mut columns = Vec::new();
                let mut pk_indexes = vec![None; table.partition_len];
                for (column, term) in stmt.terms() {
                    let Term::Marker(marker) = term else { continue };
                    let column = match column {
                        Some(name) => {
                            let index = table.index(name)?;
                            if let Some(slot) = pk_indexes.get_mut(index) {
                                *slot = Some(*marker as u16);
                            }
                            table.columns[index].clone()
                        }
                        None => Column {
                            name: "[limit]".into(),
                            ty: CqlType::Int,
                        },
                    };
                    columns.push(column);
                }
                let pk_indexes = pk_indexes.into_iter().collect::<Option<Vec<u16>>>();
                let result = match result {
                    Some(Stmt::Select { selection, .. }) => Some(
                        table.spec(
                            &keyspace,
                            &name,
                            match selection {
                                Selection::All => table.columns.clone(),
                                Selection::Columns(names) => names
                                    .iter()
                                    .map(|n| Ok(table.columns[table.index(n)?].clone()))
                                    .collect::<Result<_, CqlError>>()?,
                                Selection::Count => vec![Column {
                                    name: "count".into(),
                                    ty: CqlType::Bigint,
                                }],
                            },
                        ),
                    ),
                    _ => None,
                };
                (
                    table.spec(&keyspace, &name, columns),
                    pk_indexes.unwrap_or_default(),
                    result,
                )
            }
        };
        let prepared = Prepared {
            id: id.clone(),
            query: query.to_string(),
            keyspace: current.map(str::to_string),
            bind,
            pk_indexes,
            result,
        };
        self.prepared.insert(id, prepared.clone());
        Ok(prepared)
    }

    /// The query of a prepared statement and the keyspace it was prepared in.
    pub fn prepared_query(&self, id: &[u8]) -> Option<(&str, Option<&str>)> {
        self.prepared
            .get(id)
            .map(|p| (p.query.as_str(), p.keyspace.as_deref()))
    }

    /// Evaluates a prepared statement.
    pub fn execute_prepared(
        &mut self,
        id: &[u8],
        values: &[Bound],
        node: SocketAddr,
    ) -> Result<Outcome, CqlError> {
        let prepared = self
            .prepared
            .get(id)
            .ok_or_else(|| CqlError::Unprepared(id.to_vec()))?;
        let keyspace = prepared.keyspace.clone();
        let stmt = parse(&prepared.query)?;
        self.execute(&stmt, keyspace.as_deref(), values, node)
    }
}

/// Reads a query; text the grammar refuses is a syntax error.
pub fn parse(query: &str) -> Result<Stmt, CqlError> {
    cql::parse(query).map_err(|error| CqlError::Syntax(format!("line 1: {error}")))
}

/// The error for a statement the fixture reads but does not evaluate.
fn unsupported(what: &str) -> CqlError {
    CqlError::Syntax(format!("cql-fixture does not support {what}"))
}

fn schema_change(change: &'static str, keyspace: &str, table: Option<&str>) -> Outcome {
    Outcome::SchemaChange {
        change,
        keyspace: keyspace.to_string(),
        table: table.map(str::to_string),
    }
}

/// The value of a term for a column of type `ty`.
fn bind(term: &Term, ty: &CqlType, values: &[Bound]) -> Result<Bound, CqlError> {
    match term {
        Term::Marker(i) => {
            let value = values
                .get(*i)
                .cloned()
                .ok_or_else(|| invalid(format!("no value bound to marker {i}")))?;
            if let Bound::Value(bytes) = &value {
                ty.check(bytes).map_err(CqlError::Invalid)?;
            }
            Ok(value)
        }
        Term::Literal(literal) => match ty.from_literal(literal).map_err(CqlError::Invalid)? {
            Some(bytes) => Ok(Bound::Value(bytes)),
            None => Ok(Bound::Null),
        },
    }
}

/// Conditions as (column index, values any of which matches).
type Filter = Vec<(usize, Vec<Option<Vec<u8>>>)>;

fn filter(table: &Table, conditions: &[Condition], values: &[Bound]) -> Result<Filter, CqlError> {
    conditions
        .iter()
        .map(|condition| {
            let index = table.index(&condition.column)?;
            let accepted = condition
                .terms
                .iter()
                .map(|term| match bind(term, &table.columns[index].ty, values)? {
                    Bound::Value(bytes) => Ok(Some(bytes)),
                    Bound::Null => Ok(None),
                    Bound::Unset => Err(invalid(format!(
                        "Invalid unset value for column {}",
                        condition.column
                    ))),
                })
                .collect::<Result<_, _>>()?;
            Ok((index, accepted))
        })
        .collect()
}

fn matches(row: &Row, filter: &Filter) -> bool {
    filter
        .iter()
        .all(|(index, accepted)| accepted.contains(&row[*index]))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests;
