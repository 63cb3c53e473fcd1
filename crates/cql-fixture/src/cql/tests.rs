use super::lexer::{tokenize, LexError, Token};
use super::*;

fn tokens(text: &str) -> Vec<Token<'_>> {
    tokenize(text)
        .unwrap_or_else(|e| panic!("{text:?}: {e}"))
        .into_iter()
        .map(|s| s.token)
        .collect()
}

fn table(keyspace: Option<&str>, name: &str) -> TableRef {
    TableRef {
        keyspace: keyspace.map(str::to_string),
        name: name.to_string(),
    }
}

/// What policy checks for `query` with `keyspace` set, as `action table` strings.
fn checked(query: &str, keyspace: Option<&str>) -> Vec<String> {
    parse(query)
        .unwrap_or_else(|e| panic!("{query:?}: {e}"))
        .checked(keyspace)
        .unwrap_or_else(|e| panic!("{query:?}: {e}"))
        .into_iter()
        .map(|c| {
            format!("{} {}", c.action.name(), c.table)
                .trim_end()
                .to_string()
        })
        .collect()
}

fn refused(query: &str) -> bool {
    parse(query).is_err()
}

#[test]
fn line_comments_end_at_the_first_line_end_of_either_kind() {
    use Token::*;
    assert_eq!(
        tokens("SELECT*FROM--\rsecret.vault/*\nsystem.local*/"),
        [
            Word("SELECT"),
            Punct("*"),
            Word("FROM"),
            Word("secret"),
            Punct("."),
            Word("vault")
        ]
    );
    assert_eq!(tokens("a//x\r\nb"), [Word("a"), Word("b")]);
    assert_eq!(tokens("a--x\nb"), [Word("a"), Word("b")]);
    assert_eq!(
        tokenize("SELECT 1 --"),
        Err(LexError::UnterminatedLineComment(9))
    );
    assert_eq!(
        tokenize("a // no end"),
        Err(LexError::UnterminatedLineComment(2))
    );
    assert_eq!(tokenize("a /* x"), Err(LexError::UnterminatedComment(2)));
    assert_eq!(tokenize("/*/"), Err(LexError::UnterminatedComment(0)));
    assert_eq!(tokens("a/**/b/* -- */c"), [Word("a"), Word("b"), Word("c")]);
}

#[test]
fn numbers_never_take_a_comment() {
    use Token::*;
    assert_eq!(tokens("1--x\n"), [Integer("1")]);
    assert_eq!(tokens("1.5--\n"), [Float("1.5")]);
    assert_eq!(tokens("0x1f--\n"), [Hex("0x1f")]);
    assert_eq!(tokens("3h--\n"), [Duration("3h")]);
    assert_eq!(
        tokens("a1b2c3d4-0000-4000-8000-00000000000f--\n"),
        [Uuid("a1b2c3d4-0000-4000-8000-00000000000f")]
    );
    assert_eq!(tokens("1//x\r"), [Integer("1")]);
    assert_eq!(tokens("1/*x*/2"), [Integer("1"), Integer("2")]);
    assert_eq!(tokens("-1"), [Integer("-1")]);
    assert_eq!(tokens("k-1"), [Word("k"), Integer("-1")]);
    assert_eq!(tokens("- 1"), [Punct("-"), Integer("1")]);
}

#[test]
fn number_forms() {
    use Token::*;
    assert_eq!(tokens("1.5e-3"), [Float("1.5e-3")]);
    assert_eq!(
        tokens("1e5 2. -3.25"),
        [Float("1e5"), Float("2."), Float("-3.25")]
    );
    assert_eq!(tokens("1..2"), [Integer("1"), Range, Integer("2")]);
    assert_eq!(tokens("1..."), [Float("1."), Range]);
    assert_eq!(tokens("0x 0XAB"), [Hex("0x"), Hex("0XAB")]);
    assert_eq!(
        tokens("1h30m -5d 2mo 3ms 4us 5µs 6ns 7y 8w"),
        [
            Duration("1h30m"),
            Duration("-5d"),
            Duration("2mo"),
            Duration("3ms"),
            Duration("4us"),
            Duration("5µs"),
            Duration("6ns"),
            Duration("7y"),
            Duration("8w")
        ]
    );
    assert_eq!(
        tokens("P1Y2M3DT4H5M6S PT4H P2W -P1D P0001-02-03T04:05:06"),
        [
            Duration("P1Y2M3DT4H5M6S"),
            Duration("PT4H"),
            Duration("P2W"),
            Duration("-P1D"),
            Duration("P0001-02-03T04:05:06")
        ]
    );
    assert_eq!(tokens("P1Dx"), [Word("P1Dx")]);
    assert_eq!(
        tokens("TRUE false NaN -NaN -infinity"),
        [
            Boolean(true),
            Boolean(false),
            Word("NaN"),
            NegativeNaN,
            NegativeInfinity
        ]
    );
    assert_eq!(
        tokens("12345678-1234-1234-1234-123456789abc"),
        [Uuid("12345678-1234-1234-1234-123456789abc")]
    );
}

#[test]
fn strings_and_names() {
    use Token::*;
    assert_eq!(tokens("'it''s'"), [Str("it's".into())]);
    assert_eq!(tokens("$$a 'b' -- c$$"), [Str("a 'b' -- c".into())]);
    assert_eq!(tokens("'é -- ☃'"), [Str("é -- ☃".into())]);
    assert_eq!(tokens(r#""My""Name""#), [Quoted(r#"My"Name"#.into())]);
    assert_eq!(tokens(r#""""""#), [Quoted(r#"""#.into())]);
    assert_eq!(tokens(r#""" x"#), [EmptyQuoted, Word("x")]);
    assert_eq!(tokenize("'open"), Err(LexError::UnterminatedString(0)));
    assert_eq!(tokenize("$$open"), Err(LexError::UnterminatedString(0)));
    assert_eq!(tokenize("\"open"), Err(LexError::UnterminatedName(0)));
}

#[test]
fn white_space_is_four_characters_and_stray_characters_are_errors() {
    assert_eq!(tokenize("a\u{0c}b"), Err(LexError::Stray(1, '\u{0c}')));
    assert_eq!(tokenize("a\u{a0}b"), Err(LexError::Stray(1, '\u{a0}')));
    assert_eq!(tokenize("a @b"), Err(LexError::Stray(2, '@')));
    assert_eq!(tokenize("$a"), Err(LexError::Stray(0, '$')));
    assert_eq!(tokenize("a ! b"), Err(LexError::Stray(2, '!')));
    assert_eq!(tokens(" \t\r\na != b").len(), 3);
}

#[test]
fn comments_between_tokens_and_at_the_end() {
    assert_eq!(
        checked("SELECT*FROM--\rsecret.vault/*\nsystem.local*/", None),
        ["select secret.vault"]
    );
    assert_eq!(
        checked(
            "--\rDROP KEYSPACE secret/*\nSELECT*FROM system.local*/",
            None
        ),
        ["drop-keyspace"]
    );
    assert_eq!(
        checked(
            "SELECT 1--/*\nFROM secret.vault--*/FROM system.local\n",
            None
        ),
        ["select secret.vault"]
    );
    assert_eq!(
        checked("SELECT*FROM system.local WHERE k=1--;x\n", None),
        ["select system.local"]
    );
    assert_eq!(
        checked("SELECT*--\rFROM system.local", None),
        ["select system.local"]
    );
    assert!(refused("SELECT * FROM system.local --"));
    assert!(refused(
        "SELECT * FROM system.local; SELECT * FROM secret.vault"
    ));
    assert_eq!(
        checked("SELECT * FROM system.local;; -- done\n", None),
        ["select system.local"]
    );
}

#[test]
fn batches_with_and_without_semicolons() {
    assert_eq!(
        checked(
            "BEGIN BATCH INSERT INTO attendance.daily_records(k)VALUES(1)DELETE FROM secret.vault WHERE k=1 APPLY BATCH",
            None
        ),
        ["insert attendance.daily_records", "delete secret.vault"]
    );
    assert_eq!(
        checked(
            "BEGIN UNLOGGED BATCH USING TIMESTAMP -1 INSERT INTO t (k) VALUES (?); UPDATE u SET v = 1 WHERE k = 2; APPLY BATCH;",
            Some("ks")
        ),
        ["insert ks.t", "update ks.u"]
    );
    assert_eq!(
        checked("BEGIN COUNTER BATCH APPLY BATCH", None),
        Vec::<String>::new()
    );
    assert!(refused("BEGIN BATCH SELECT * FROM t; APPLY BATCH"));
    assert!(refused("BEGIN LOGGED BATCH APPLY BATCH"));
    assert!(refused("BEGIN BATCH INSERT INTO t (k) VALUES (1)"));
    let Stmt::Batch(statements) =
        parse("BEGIN BATCH INSERT INTO t (k) VALUES (?) DELETE FROM t WHERE k = ? APPLY BATCH")
            .unwrap()
    else {
        panic!()
    };
    assert_eq!(statements.len(), 2);
}

#[test]
fn use_takes_one_keyspace() {
    assert_eq!(parse("USE \"MyKs\"").unwrap(), Stmt::Use("MyKs".into()));
    assert_eq!(parse("use System;").unwrap(), Stmt::Use("system".into()));
    assert!(refused("USE ks.t"));
    assert!(refused("USE system x"));
    assert!(refused("USE"));
    assert!(refused("USE ?"));
    assert_eq!(checked("USE ks", None), ["use"]);
}

#[test]
fn unqualified_tables_need_a_keyspace() {
    let stmt = parse("SELECT * FROM vault").unwrap();
    assert_eq!(stmt.checked(None), Err(Unresolved("vault".into())));
    assert_eq!(
        checked("SELECT * FROM vault", Some("secret")),
        ["select secret.vault"]
    );
    assert_eq!(checked("DROP INDEX idx", None), ["drop-index"]);
    assert_eq!(
        checked(r#"SELECT * FROM "Ks"."T""x""#, None),
        [r#"select Ks.T"x"#]
    );
}

#[test]
fn every_statement_kind_is_classified() {
    let cases: &[(&str, &str)] = &[
        ("SELECT a, \"B\" FROM Ks.T WHERE k = ? AND c IN (1, ?) LIMIT 2", "select ks.t"),
        ("SELECT JSON * FROM t", "select ks.t"),
        ("SELECT DISTINCT k FROM t", "select ks.t"),
        ("SELECT count(*), writetime(v), v AS w, token(k) FROM t WHERE c > 1 AND (a, b) IN ((1, 2)) GROUP BY k ORDER BY c DESC PER PARTITION LIMIT 1 LIMIT 3 ALLOW FILTERING", "select ks.t"),
        ("INSERT INTO t (k, v) VALUES (1, 'x') IF NOT EXISTS USING TTL 5 AND TIMESTAMP 3", "insert ks.t"),
        ("INSERT INTO t JSON '{}' DEFAULT UNSET", "insert ks.t"),
        ("UPDATE t USING TTL 1 SET v = v + 1, l = [1] + l, m['a'] = 2, s += {3} WHERE k = 1 IF EXISTS", "update ks.t"),
        ("DELETE v, l[0] FROM t USING TIMESTAMP 1 WHERE k = 1 IF v = 2", "delete ks.t"),
        ("CREATE TABLE IF NOT EXISTS t (k int PRIMARY KEY, v text,) WITH comment = 'x' AND CLUSTERING ORDER BY (v DESC)", "create-table ks.t"),
        ("CREATE TABLE t2 LIKE t", "create-table ks.t2"),
        ("DROP TABLE IF EXISTS ks.t", "drop-table ks.t"),
        ("ALTER TABLE t ADD (a int, b text)", "alter-table ks.t"),
        ("ALTER TABLE t WITH comment = 'x'", "alter-table ks.t"),
        ("ALTER TABLE t RENAME a TO b AND c TO d", "alter-table ks.t"),
        ("TRUNCATE TABLE t", "truncate-table ks.t"),
        ("TRUNCATE t", "truncate-table ks.t"),
        ("USE ks", "use"),
        ("CREATE KEYSPACE k WITH replication = {'class': 'SimpleStrategy', 'replication_factor': 1} AND durable_writes = true", "create-keyspace"),
        ("ALTER KEYSPACE k WITH durable_writes = false", "alter-keyspace"),
        ("DROP KEYSPACE IF EXISTS k", "drop-keyspace"),
        ("DROP INDEX k.i", "drop-index"),
        ("CREATE CUSTOM INDEX IF NOT EXISTS i ON t (keys(m)) USING 'x' WITH options = {'a': 'b'}", "create-index ks.t"),
        ("CREATE INDEX ON other.t (v)", "create-index other.t"),
        ("CREATE MATERIALIZED VIEW v AS SELECT k FROM t WHERE k IS NOT NULL PRIMARY KEY (k)", "create-materialized-view ks.v"),
        ("DROP MATERIALIZED VIEW IF EXISTS other.v", "drop-materialized-view other.v"),
        ("ALTER MATERIALIZED VIEW v WITH comment = 'x'", "alter-materialized-view ks.v"),
        ("CREATE ROLE IF NOT EXISTS r WITH PASSWORD = 'p' AND LOGIN = true AND ACCESS TO ALL DATACENTERS", "create-role"),
        ("ALTER ROLE r WITH SUPERUSER = false", "alter-role"),
        ("DROP ROLE IF EXISTS 'r'", "drop-role"),
        ("GRANT r TO s", "grant-role"),
        ("REVOKE r FROM s", "revoke-role"),
        ("LIST ROLES OF r NORECURSIVE", "list-roles"),
        ("GRANT SELECT, MODIFY ON TABLE ks.t TO r", "grant-permission"),
        ("GRANT ALL PERMISSIONS ON ALL KEYSPACES TO r", "grant-permission"),
        ("REVOKE EXECUTE ON FUNCTION ks.f(int) FROM r", "revoke-permission"),
        ("LIST ALL ON KEYSPACE ks OF r", "list-permissions"),
        ("LIST SUPERUSERS", "list-superusers"),
        ("CREATE USER IF NOT EXISTS bob WITH PASSWORD 'p' SUPERUSER", "create-user"),
        ("ALTER USER bob NOSUPERUSER", "alter-user"),
        ("DROP USER IF EXISTS bob", "drop-user"),
        ("LIST USERS", "list-users"),
        ("CREATE OR REPLACE FUNCTION ks.f (a int) CALLED ON NULL INPUT RETURNS int LANGUAGE java AS $$return a;$$", "create-function"),
        ("DROP FUNCTION IF EXISTS ks.f(int)", "drop-function"),
        ("CREATE AGGREGATE ks.a (int) SFUNC f STYPE int FINALFUNC g INITCOND 0", "create-aggregate"),
        ("DROP AGGREGATE a", "drop-aggregate"),
        ("CREATE TYPE IF NOT EXISTS ks.addr (street text, zip int)", "create-type"),
        ("ALTER TYPE addr ADD city text", "alter-type"),
        ("DROP TYPE addr", "drop-type"),
        ("CREATE TRIGGER tr ON t USING 'org.x.T'", "create-trigger ks.t"),
        ("DROP TRIGGER IF EXISTS tr ON other.t", "drop-trigger other.t"),
        ("DESCRIBE KEYSPACES", "describe"),
        ("DESC TABLE ks.t", "describe"),
        ("DESCRIBE FULL SCHEMA", "describe"),
        ("DESCRIBE ks.t WITH INTERNALS", "describe"),
        ("ADD IDENTITY 'spiffe://x' TO ROLE 'r'", "add-identity"),
        ("DROP IDENTITY IF EXISTS 'spiffe://x'", "drop-identity"),
    ];
    for (query, expected) in cases {
        assert_eq!(checked(query, Some("ks")), [*expected], "{query}");
    }
}

#[test]
fn the_grammar_refuses() {
    for query in [
        "",
        ";",
        "FROBNICATE everything",
        "SELECT * FROM select",
        "SELECT * FROM t junk",
        "SELECT FROM t",
        "SELECT * FROM ?",
        "SELECT * FROM ks.?",
        "INSERT INTO t (k) VALUES ()",
        "UPDATE t SET v = 1",
        "UPDATE t SET v = w + 1 WHERE k = 1",
        "DELETE FROM t",
        "CREATE KEYSPACE k",
        "CREATE SCHEMA k WITH durable_writes = true",
        "DROP SCHEMA k",
        "CREATE KEYSPACE k WITH a = 1 AND a = 2",
        "CREATE TABLE t (k int PRIMARY KEY) WITH comment = bareword",
        "CREATE TYPE interval (a int)",
        "CREATE USER \"bob\"",
        "CREATE ROLE r WITH PASSWORD = 'a' AND HASHED PASSWORD = 'b'",
        "GRANT EXECUTE ON TABLE t TO r",
        "DROP",
        "DESCRIBE",
        "DESCRIBE cluster.t",
        "LIST",
        "TRUNCATE",
        "ALTER TABLE t",
        "SELECT expr(a) FROM t",
        "SELECT * FROM t WHERE k = 'open",
        "SELECT * FROM t WHERE k = 1 AND",
        "BEGIN BATCH APPLY BATCH junk",
    ] {
        assert!(refused(query), "{query:?} was accepted");
    }
}

#[test]
fn evaluated_statements_keep_their_values() {
    let stmt = parse(
        r#"CREATE TABLE IF NOT EXISTS Ks."Users" (id int, "Name" text, at timestamp,
           tags set<text>, PRIMARY KEY ((id), at)) WITH comment = 'x';"#,
    )
    .unwrap();
    assert_eq!(
        stmt,
        Stmt::CreateTable {
            table: table(Some("ks"), "Users"),
            if_not_exists: true,
            columns: vec![
                ("id".into(), CqlType::Int),
                ("Name".into(), CqlType::Text),
                ("at".into(), CqlType::Timestamp),
                ("tags".into(), CqlType::Set(Box::new(CqlType::Text))),
            ],
            partition_key: vec!["id".into()],
            clustering: vec!["at".into()],
        }
    );
    assert_eq!(
        parse("INSERT INTO t (a, b, c, d, e) VALUES (?, 'it''s', -3, now(), - 4)").unwrap(),
        Stmt::Insert {
            table: table(None, "t"),
            columns: vec!["a".into(), "b".into(), "c".into(), "d".into(), "e".into()],
            values: vec![
                Term::Marker(0),
                Term::Literal(Literal::Str("it's".into())),
                Term::Literal(Literal::Bare("-3".into())),
                Term::Literal(Literal::Now),
                Term::Literal(Literal::Bare("-4".into())),
            ],
        }
    );
    let stmt = parse("SELECT a, \"B\" FROM ks.t WHERE k = ? AND c IN (1, :x) LIMIT ?").unwrap();
    assert_eq!(stmt.markers(), 3);
    assert_eq!(
        stmt.terms().iter().map(|(c, _)| *c).collect::<Vec<_>>(),
        [Some("k"), Some("c"), Some("c"), None]
    );
    assert!(matches!(
        parse("select count(*) from t").unwrap(),
        Stmt::Select {
            selection: Selection::Count,
            ..
        }
    ));
    assert!(matches!(
        parse("select COUNT(1) from t").unwrap(),
        Stmt::Select {
            selection: Selection::Count,
            ..
        }
    ));
    let Stmt::Update { conditions, .. } =
        parse("UPDATE t SET v = 1 WHERE id = a1b2c3d4-0000-4000-8000-00000000000f").unwrap()
    else {
        panic!()
    };
    assert_eq!(
        conditions[0].terms,
        [Term::Literal(Literal::Bare(
            "a1b2c3d4-0000-4000-8000-00000000000f".into()
        ))]
    );
}

#[test]
fn features_the_fixture_lacks_are_read_not_evaluated() {
    for (query, what) in [
        ("SELECT * FROM t ORDER BY c", "ORDER BY"),
        ("SELECT * FROM t WHERE c > 1", "this WHERE clause"),
        (
            "INSERT INTO t (k) VALUES (1) IF NOT EXISTS",
            "INSERT IF NOT EXISTS",
        ),
        ("CREATE INDEX ON t (v)", "create-index statements"),
        ("GRANT r TO s", "grant-role statements"),
    ] {
        match parse(query).unwrap() {
            Stmt::Unsupported { what: found, .. } => assert_eq!(found, what, "{query}"),
            other => panic!("{query}: {other:?}"),
        }
    }
    assert!(matches!(
        parse("INSERT INTO t (k) VALUES (1) USING TTL 3").unwrap(),
        Stmt::Insert { .. }
    ));
}

#[test]
fn errors_name_where_the_text_went_wrong() {
    let error = parse("REVOKE MODIFY ON KEYSPACE secret FROMr").unwrap_err();
    assert_eq!(
        error.to_string(),
        "at 33: expected FROM, found Word(\"FROMr\")"
    );
    assert_eq!(
        parse("SELECT * FROM t WHERE k = 1-1")
            .unwrap_err()
            .to_string(),
        "at 27: expected the end of the query, found Integer(\"-1\")"
    );
    assert_eq!(
        parse("SELECT * FROM t --").unwrap_err().to_string(),
        "line comment at 16 has no line end"
    );
}
