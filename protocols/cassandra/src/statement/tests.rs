//! Classification of every action, of quoted and unqualified names, comments and batches.

use super::*;

fn one(query: &str) -> (Action, Option<String>) {
    let statements = classify(query).unwrap_or_else(|e| panic!("{query}: {e}"));
    assert_eq!(statements.len(), 1, "{query}");
    let s = &statements[0];
    (s.action, s.table.as_ref().map(ToString::to_string))
}

#[test]
fn every_action_is_recognised() {
    use Action::*;
    let cases: &[(&str, Action, Option<&str>)] = &[
        ("SELECT a, token(b) FROM ks.t WHERE a = 1", Select, Some("ks.t")),
        ("select * from T", Select, Some("t")),
        ("INSERT INTO t(a,b) VALUES (1, 2) IF NOT EXISTS", Insert, Some("t")),
        ("UPDATE ks.t USING TTL 5 SET a = 1 WHERE b = 2 IF EXISTS", Update, Some("ks.t")),
        ("DELETE a FROM ks.t WHERE b = 2", Delete, Some("ks.t")),
        ("CREATE TABLE IF NOT EXISTS ks.t (a int PRIMARY KEY)", CreateTable, Some("ks.t")),
        ("DROP TABLE IF EXISTS t", DropTable, Some("t")),
        ("ALTER TABLE ks.t ADD c int", AlterTable, Some("ks.t")),
        ("TRUNCATE TABLE ks.t", TruncateTable, Some("ks.t")),
        ("TRUNCATE ks.t", TruncateTable, Some("ks.t")),
        ("CREATE KEYSPACE IF NOT EXISTS k WITH replication = {'class': 'SimpleStrategy'}", CreateKeyspace, None),
        ("ALTER KEYSPACE k WITH durable_writes = false", AlterKeyspace, None),
        ("DROP KEYSPACE k", DropKeyspace, None),
        ("DROP INDEX IF EXISTS ks.idx", DropIndex, None),
        ("CREATE CUSTOM INDEX IF NOT EXISTS idx ON ks.t (a) USING 'x'", CreateIndex, Some("ks.t")),
        ("CREATE INDEX ON t (a)", CreateIndex, Some("t")),
        ("CREATE MATERIALIZED VIEW ks.v AS SELECT * FROM ks.t WHERE a IS NOT NULL PRIMARY KEY (a)", CreateMaterializedView, Some("ks.v")),
        ("DROP MATERIALIZED VIEW IF EXISTS ks.v", DropMaterializedView, Some("ks.v")),
        ("CREATE ROLE r WITH PASSWORD = 'p'", CreateRole, None),
        ("ALTER ROLE r WITH LOGIN = true", AlterRole, None),
        ("DROP ROLE r", DropRole, None),
        ("GRANT r1 TO r2", GrantRole, None),
        ("REVOKE r1 FROM r2", RevokeRole, None),
        ("LIST ROLES", ListRoles, None),
        ("GRANT SELECT ON KEYSPACE k TO r", GrantPermission, None),
        ("REVOKE SELECT ON ALL KEYSPACES FROM r", RevokePermission, None),
        ("LIST ALL PERMISSIONS OF r", ListPermissions, None),
        ("CREATE USER u WITH PASSWORD 'p' SUPERUSER", CreateUser, None),
        ("ALTER USER u WITH PASSWORD 'q'", AlterUser, None),
        ("DROP USER u", DropUser, None),
        ("LIST USERS", ListUsers, None),
        ("CREATE OR REPLACE FUNCTION ks.f (a int) CALLED ON NULL INPUT RETURNS int LANGUAGE java AS $$ return a; $$", CreateFunction, None),
        ("DROP FUNCTION ks.f", DropFunction, None),
        ("CREATE AGGREGATE ks.agg (int) SFUNC f STYPE int", CreateAggregate, None),
        ("DROP AGGREGATE ks.agg", DropAggregate, None),
        ("CREATE TYPE ks.address (street text)", CreateType, None),
        ("ALTER TYPE ks.address ADD zip int", AlterType, None),
        ("DROP TYPE ks.address", DropType, None),
        ("CREATE TRIGGER trig ON ks.t USING 'org.Trigger'", CreateTrigger, Some("ks.t")),
        ("DROP TRIGGER IF EXISTS trig ON ks.t", DropTrigger, Some("ks.t")),
        ("ALTER MATERIALIZED VIEW ks.v WITH comment = 'x'", AlterMaterializedView, Some("ks.v")),
        ("DESCRIBE KEYSPACE ks", Describe, None),
        ("desc tables", Describe, None),
        ("LIST SUPERUSERS", ListSuperusers, None),
        ("ADD IDENTITY IF NOT EXISTS 'spiffe://x' TO ROLE r", AddIdentity, None),
        ("DROP IDENTITY 'spiffe://x'", DropIdentity, None),
    ];
    for (query, action, table) in cases {
        assert_eq!(one(query), (*action, table.map(str::to_owned)), "{query}");
    }
    for (action, name) in ACTIONS {
        assert_eq!(Action::from_name(name), Some(action));
        assert_eq!(action.name(), name);
    }
}

#[test]
fn use_names_the_keyspace() {
    let statements = classify("USE \"MyKs\"").unwrap();
    let keyspace = |s: &Statement<'_>| s.keyspace.map(|k| k.to_string());
    assert_eq!(keyspace(&statements[0]), Some("MyKs".into()));
    assert_eq!(
        keyspace(&classify("use Other;").unwrap()[0]),
        Some("other".into())
    );
    assert_eq!(
        keyspace(&classify(r#"USE "a""b""#).unwrap()[0]),
        Some("a\"b".into())
    );
}

#[test]
fn names_are_lower_cased_unless_quoted_and_resolve_against_the_keyspace() {
    let statements = classify(r#"SELECT * FROM "MyKs"."Tbl""#).unwrap();
    assert_eq!(
        statements[0]
            .table
            .as_ref()
            .unwrap()
            .qualified(None)
            .as_deref(),
        Some("MyKs.Tbl")
    );
    let statements = classify("SELECT * FROM Attendance.Daily_Records").unwrap();
    assert_eq!(
        statements[0]
            .table
            .as_ref()
            .unwrap()
            .qualified(None)
            .as_deref(),
        Some("attendance.daily_records")
    );
    let unqualified = classify("INSERT INTO records(a) VALUES (1)").unwrap()[0]
        .table
        .unwrap();
    assert_eq!(
        unqualified.qualified(Some("attendance")).as_deref(),
        Some("attendance.records")
    );
    assert_eq!(unqualified.qualified(None), None);
}

#[test]
fn comments_and_strings_cannot_hide_or_fake_a_table() {
    assert_eq!(
        one("SELECT * /* FROM secret.t */ FROM public.t -- FROM secret.t\n"),
        (Action::Select, Some("public.t".into()))
    );
    assert_eq!(
        one("SELECT 'FROM secret.t' FROM public.t"),
        (Action::Select, Some("public.t".into()))
    );
    assert_eq!(
        one("INSERT INTO public.t (a) VALUES ('x; DROP TABLE secret.t')"),
        (Action::Insert, Some("public.t".into()))
    );
}

#[test]
fn text_batches_yield_every_statement() {
    let statements = classify(
        "BEGIN UNLOGGED BATCH USING TIMESTAMP 5 INSERT INTO a.t (k) VALUES (1); UPDATE b.t SET v = 1 WHERE k = 1; DELETE FROM c.t WHERE k = 2 APPLY BATCH;",
    )
    .unwrap();
    let summary: Vec<(Action, String)> = statements
        .iter()
        .map(|s| (s.action, s.table.as_ref().unwrap().to_string()))
        .collect();
    assert_eq!(
        summary,
        vec![
            (Action::Insert, "a.t".into()),
            (Action::Update, "b.t".into()),
            (Action::Delete, "c.t".into())
        ]
    );
    assert_eq!(
        classify("BEGIN COUNTER BATCH UPDATE t SET c = c + 1 WHERE k = 1; APPLY BATCH")
            .unwrap()
            .len(),
        1
    );
}

#[test]
fn what_cannot_be_classified_is_an_error() {
    assert_eq!(classify(""), Err(ClassifyError::Empty));
    assert_eq!(classify(" -- nothing\n ; "), Err(ClassifyError::Empty));
    assert_eq!(
        classify("SELECT * FROM a; DROP TABLE b"),
        Err(ClassifyError::Several)
    );
    assert_eq!(
        classify("EXPLAIN SELECT 1"),
        Err(ClassifyError::Unknown("EXPLAIN".into()))
    );
    assert_eq!(
        classify("SELECT now()"),
        Err(ClassifyError::MissingName("select"))
    );
    assert_eq!(
        classify("BEGIN BATCH INSERT INTO t (a) VALUES (1);"),
        Err(ClassifyError::Unknown("BEGIN".into()))
    );
    assert!(matches!(
        classify("SELECT * FROM 't"),
        Err(ClassifyError::Lex(_))
    ));
}

/// Every (action, table) of a query, tables resolved against `ks`.
fn all(query: &str) -> Result<Vec<(Action, Option<String>)>, ClassifyError> {
    Ok(classify(query)?
        .iter()
        .map(|s| (s.action, s.table.and_then(|t| t.qualified(Some("ks")))))
        .collect())
}

#[test]
fn statements_read_as_cassandra_reads_them() {
    use Action::*;
    let cases: &[(&str, &[(Action, &str)])] = &[
        // A line comment ends at `\r` as well as `\n`.
        ("SELECT*FROM--\rsecret.vault/*\nsystem.local*/", &[(Select, "secret.vault")]),
        ("--\rDROP KEYSPACE secret/*\nSELECT*FROM system.local*/", &[(DropKeyspace, "")]),
        ("SELECT*--\rFROM system.local", &[(Select, "system.local")]),
        // No number holds `--`.
        ("SELECT 1--/*\nFROM secret.vault--*/FROM system.local\n", &[(Select, "secret.vault")]),
        ("SELECT*FROM system.local WHERE k=1--;x\n", &[(Select, "system.local")]),
        // A batch's statements need no `;` between them.
        (
            "BEGIN BATCH INSERT INTO attendance.daily_records(k)VALUES(1)DELETE FROM secret.vault WHERE k=1 APPLY BATCH",
            &[(Insert, "attendance.daily_records"), (Delete, "secret.vault")],
        ),
        (
            "BEGIN BATCH USING TIMESTAMP -1 UPDATE a.t SET v=1 WHERE k=1 insert into b.t(k) values(2) APPLY BATCH",
            &[(Update, "a.t"), (Insert, "b.t")],
        ),
        ("BEGIN UNLOGGED BATCH APPLY BATCH;", &[]),
        // A literal ends where Cassandra ends it, even with a word glued to it.
        (
            "BEGIN BATCH UPDATE a.t SET v=1 WHERE k=-InfinityDELETE FROM secret.vault WHERE k=1 APPLY BATCH",
            &[(Update, "a.t"), (Delete, "secret.vault")],
        ),
        (
            "BEGIN BATCH UPDATE a.t SET d=P0001-02-03T04:05:06DELETE FROM secret.vault WHERE k=1 APPLY BATCH",
            &[(Update, "a.t"), (Delete, "secret.vault")],
        ),
    ];
    for (query, expected) in cases {
        let expected: Vec<(Action, Option<String>)> = expected
            .iter()
            .map(|(a, t)| (*a, (!t.is_empty()).then(|| t.to_string())))
            .collect();
        assert_eq!(all(query), Ok(expected), "{query:?}");
    }
}

#[test]
fn what_cassandra_refuses_is_refused() {
    for query in [
        "USE ks.t",
        "USE system x",
        "USE system -- c",
        "SELECT * FROM t -- no line end",
        "BEGIN BATCH SELECT * FROM t APPLY BATCH",
        "BEGIN BATCH INSERT INTO t(k) VALUES(1) USE x APPLY BATCH",
        "BEGIN BATCH INSERT INTO t(k) VALUES(1) APPLY BATCH SELECT",
        "BEGIN BATCH USING TIMESTAMP 1",
        "SELECT * FROM ks.t; DELETE FROM ks.t",
        "SELECT * FROM system.local DROP KEYSPACE secret",
        "INSERT INTO ks.t(k) VALUES(1)--\rDELETE FROM secret.vault WHERE k=1",
        "ALTER TABLE ks.t WITH comment = 'x' DELETE FROM secret.vault",
    ] {
        assert!(classify(query).is_err(), "{query:?}: {:?}", classify(query));
    }
}

#[test]
fn words_that_begin_statements_may_stand_where_the_grammar_puts_them() {
    use Action::*;
    for (query, action) in [
        ("SELECT * FROM ks.t WHERE k = 1 ORDER BY c DESC", Select),
        ("ALTER TABLE ks.t DROP c", AlterTable),
        ("ALTER TABLE ks.t ALTER c TYPE blob", AlterTable),
        ("GRANT SELECT ON ALL KEYSPACES TO r", GrantPermission),
        ("REVOKE DROP ON KEYSPACE ks FROM r", RevokePermission),
        ("LIST CREATE ON ALL KEYSPACES OF r", ListPermissions),
        ("CREATE MATERIALIZED VIEW ks.v AS SELECT * FROM ks.t WHERE k IS NOT NULL PRIMARY KEY (k)", CreateMaterializedView),
        ("CREATE TABLE ks.t (k int PRIMARY KEY) WITH CLUSTERING ORDER BY (k DESC)", CreateTable),
    ] {
        assert_eq!(all(query).map(|s| s[0].0), Ok(action), "{query:?}");
    }
}

proptest::proptest! {
    #[test]
    fn a_word_meets_a_keywords_short_number_only_when_it_is_that_keyword(
        word in "[A-Za-z0-9_]{1,10}",
        keyword in proptest::sample::select(vec![
            "INSERT", "UPDATE", "DELETE", "SELECT", "USE", "TRUNCATE", "CREATE", "DROP",
            "ALTER", "GRANT", "REVOKE", "BEGIN", "DESCRIBE", "DESC", "APPLY",
        ]),
        case_flips in proptest::collection::vec(proptest::bool::ANY, 8),
    ) {
        let written: String = keyword
            .chars()
            .zip(&case_flips)
            .map(|(c, &flip)| if flip { c.to_ascii_lowercase() } else { c })
            .collect();
        let number = short_keyword(keyword.as_bytes());
        proptest::prop_assert_eq!(short_keyword(written.as_bytes()), number);
        proptest::prop_assert_eq!(
            short_keyword(word.as_bytes()) == number,
            word.eq_ignore_ascii_case(keyword),
            "{}", word
        );
    }
}
