use super::*;

fn node() -> SocketAddr {
    "127.0.0.1:9042".parse().unwrap()
}

fn run(
    store: &mut Store,
    current: Option<&str>,
    query: &str,
    values: &[Bound],
) -> Result<Outcome, CqlError> {
    let stmt = parse(query)?;
    store.execute(&stmt, current, values, node())
}

fn rows(store: &mut Store, current: Option<&str>, query: &str) -> (Vec<String>, Vec<Row>) {
    match run(store, current, query, &[]).unwrap() {
        Outcome::Rows(spec, rows) => (spec.columns.into_iter().map(|c| c.name).collect(), rows),
        other => panic!("{other:?}"),
    }
}

fn int(n: i32) -> Option<Vec<u8>> {
    Some(n.to_be_bytes().to_vec())
}

fn text(s: &str) -> Option<Vec<u8>> {
    Some(s.as_bytes().to_vec())
}

fn with_table() -> Store {
    let mut store = Store::new();
    run(&mut store, None, "CREATE KEYSPACE ks WITH replication = {'class': 'SimpleStrategy', 'replication_factor': 1}", &[]).unwrap();
    run(
        &mut store,
        None,
        "CREATE TABLE ks.t (k int, c int, v text, \"Flag\" boolean, PRIMARY KEY (k, c))",
        &[],
    )
    .unwrap();
    store
}

#[test]
fn schema_changes_and_their_errors() {
    let mut store = Store::new();
    assert_eq!(
        run(
            &mut store,
            None,
            "CREATE KEYSPACE ks WITH replication = {}",
            &[]
        ),
        Ok(schema_change("CREATED", "ks", None))
    );
    assert!(matches!(
        run(
            &mut store,
            None,
            "CREATE KEYSPACE ks WITH replication = {}",
            &[]
        ),
        Err(CqlError::AlreadyExists { .. })
    ));
    assert_eq!(
        run(
            &mut store,
            None,
            "CREATE KEYSPACE IF NOT EXISTS ks WITH replication = {}",
            &[]
        ),
        Ok(Outcome::Void)
    );
    assert_eq!(
        run(
            &mut store,
            Some("ks"),
            "CREATE TABLE t (k text PRIMARY KEY, v int)",
            &[]
        ),
        Ok(schema_change("CREATED", "ks", Some("t")))
    );
    assert_eq!(
        run(&mut store, None, "CREATE TABLE t (k text PRIMARY KEY)", &[]).map_err(|e| e.code()),
        Err(0x2200)
    );
    assert_eq!(
        run(
            &mut store,
            None,
            "CREATE TABLE ks.u (k text PRIMARY KEY (x))",
            &[]
        )
        .map_err(|e| e.code()),
        Err(0x2000)
    );
    assert_eq!(
        run(&mut store, None, "USE ks", &[]),
        Ok(Outcome::SetKeyspace("ks".into()))
    );
    assert_eq!(
        run(&mut store, None, "USE nope", &[]).map_err(|e| e.code()),
        Err(0x2200)
    );
    assert_eq!(
        run(&mut store, None, "DROP TABLE ks.t", &[]),
        Ok(schema_change("DROPPED", "ks", Some("t")))
    );
    assert_eq!(
        run(&mut store, None, "DROP KEYSPACE ks", &[]),
        Ok(schema_change("DROPPED", "ks", None))
    );
    assert_eq!(
        run(
            &mut store,
            None,
            "INSERT INTO system.peers (peer) VALUES ('1.2.3.4')",
            &[]
        )
        .map_err(|e| e.code()),
        Err(0x2200)
    );
}

#[test]
fn insert_select_update_delete() {
    let mut store = with_table();
    for (k, c, v) in [(2, 1, "b"), (1, 2, "a2"), (1, 1, "a1"), (-1, 0, "neg")] {
        run(
            &mut store,
            None,
            &format!("INSERT INTO ks.t (k, c, v) VALUES ({k}, {c}, '{v}')"),
            &[],
        )
        .unwrap();
    }
    let (columns, all) = rows(&mut store, None, "SELECT * FROM ks.t");
    assert_eq!(columns, ["k", "c", "Flag", "v"]);
    assert_eq!(
        all.iter().map(|r| r[3].clone()).collect::<Vec<_>>(),
        [text("neg"), text("a1"), text("a2"), text("b")]
    );
    let (columns, one) = rows(
        &mut store,
        Some("ks"),
        "SELECT v, k FROM t WHERE k = 1 LIMIT 1",
    );
    assert_eq!(
        (columns, one),
        (vec!["v".into(), "k".into()], vec![vec![text("a1"), int(1)]])
    );
    run(
        &mut store,
        None,
        "UPDATE ks.t SET v = 'x', \"Flag\" = true WHERE k = 2 AND c = 1",
        &[],
    )
    .unwrap();
    let (_, updated) = rows(&mut store, None, "SELECT \"Flag\", v FROM ks.t WHERE k = 2");
    assert_eq!(updated, [vec![Some(vec![1]), text("x")]]);
    run(
        &mut store,
        None,
        "DELETE v FROM ks.t WHERE k = 2 AND c = 1",
        &[],
    )
    .unwrap();
    assert_eq!(
        rows(&mut store, None, "SELECT v FROM ks.t WHERE k = 2").1,
        [vec![None]]
    );
    run(&mut store, None, "DELETE FROM ks.t WHERE k = 1", &[]).unwrap();
    assert_eq!(
        rows(&mut store, None, "SELECT k FROM ks.t WHERE k IN (1, 2)").1,
        [vec![int(2)]]
    );
    assert_eq!(
        rows(&mut store, None, "SELECT COUNT(*) FROM ks.t").1,
        [vec![Some(2i64.to_be_bytes().to_vec())]]
    );
    let missing_key = run(
        &mut store,
        None,
        "INSERT INTO ks.t (k, v) VALUES (5, 'x')",
        &[],
    );
    assert_eq!(missing_key.map_err(|e| e.code()), Err(0x2200));
    let bad_column = run(&mut store, None, "SELECT nope FROM ks.t", &[]);
    assert_eq!(
        bad_column.map_err(|e| e.message()),
        Err("Undefined column name nope".into())
    );
    let unqualified = run(&mut store, None, "SELECT * FROM t", &[]);
    assert_eq!(unqualified.map_err(|e| e.code()), Err(0x2200));
}

#[test]
fn bound_values_prepared_statements_and_batches() {
    let mut store = with_table();
    let insert = store
        .prepare("INSERT INTO t (k, c, v) VALUES (?, ?, ?)", Some("ks"))
        .unwrap();
    assert_eq!(
        insert
            .bind
            .columns
            .iter()
            .map(|c| c.name.as_str())
            .collect::<Vec<_>>(),
        ["k", "c", "v"]
    );
    assert_eq!(insert.pk_indexes, [0]);
    assert_eq!(insert.result, None);
    let again = store
        .prepare("INSERT INTO t (k, c, v) VALUES (?, ?, ?)", Some("ks"))
        .unwrap();
    assert_eq!(again.id, insert.id);
    let values = |k: i32, c: i32, v: &str| {
        vec![
            Bound::Value(k.to_be_bytes().to_vec()),
            Bound::Value(c.to_be_bytes().to_vec()),
            Bound::Value(v.as_bytes().to_vec()),
        ]
    };
    store
        .execute_prepared(&insert.id, &values(7, 1, "seven"), node())
        .unwrap();
    let wrong = store.execute_prepared(&insert.id, &[Bound::Value(vec![1])], node());
    assert_eq!(wrong.map_err(|e| e.code()), Err(0x2200));
    let bad_size = store.execute_prepared(
        &insert.id,
        &[Bound::Value(vec![1]), Bound::Value(vec![0; 4]), Bound::Null],
        node(),
    );
    assert_eq!(bad_size.map_err(|e| e.code()), Err(0x2200));
    assert_eq!(
        store.execute_prepared(b"nope", &[], node()),
        Err(CqlError::Unprepared(b"nope".to_vec()))
    );

    let select = store
        .prepare("SELECT v FROM ks.t WHERE k = ? LIMIT ?", None)
        .unwrap();
    assert_eq!(select.bind.columns[1].name, "[limit]");
    assert_eq!(select.result.as_ref().unwrap().columns[0].name, "v");
    let found = store.execute_prepared(
        &select.id,
        &[
            Bound::Value(7i32.to_be_bytes().to_vec()),
            Bound::Value(5i32.to_be_bytes().to_vec()),
        ],
        node(),
    );
    assert!(matches!(found, Ok(Outcome::Rows(_, rows)) if rows == [vec![text("seven")]]));

    let batch = "BEGIN BATCH INSERT INTO ks.t (k, c, v) VALUES (?, ?, ?); UPDATE ks.t SET v = ? WHERE k = 8 AND c = ?; APPLY BATCH";
    let mut bound = values(8, 1, "eight");
    bound.extend([
        Bound::Value(b"ate".to_vec()),
        Bound::Value(1i32.to_be_bytes().to_vec()),
    ]);
    run(&mut store, None, batch, &bound).unwrap();
    assert_eq!(
        rows(&mut store, None, "SELECT v FROM ks.t WHERE k = 8").1,
        [vec![text("ate")]]
    );
    // "Not set" leaves a column as it was.
    store
        .execute_prepared(
            &insert.id,
            &[bound[0].clone(), bound[1].clone(), Bound::Unset],
            node(),
        )
        .unwrap();
    assert_eq!(
        rows(&mut store, None, "SELECT v FROM ks.t WHERE k = 8").1,
        [vec![text("ate")]]
    );
}

#[test]
fn system_tables() {
    let mut store = Store::new();
    let (columns, local) = rows(
        &mut store,
        None,
        "SELECT * FROM system.local WHERE key='local'",
    );
    assert_eq!(columns[0], "key");
    assert_eq!(local.len(), 1);
    let (columns, local) = rows(
        &mut store,
        None,
        "SELECT rpc_address, release_version, tokens FROM system.local WHERE key='local'",
    );
    assert_eq!(columns, ["rpc_address", "release_version", "tokens"]);
    assert_eq!(local[0][0], Some(vec![127, 0, 0, 1]));
    assert!(local[0].iter().all(Option::is_some));
    assert!(rows(&mut store, None, "SELECT * FROM system.peers")
        .1
        .is_empty());
    for table in [
        "keyspaces",
        "tables",
        "columns",
        "types",
        "functions",
        "aggregates",
        "indexes",
        "triggers",
        "views",
    ] {
        let (columns, found) = rows(
            &mut store,
            None,
            &format!("SELECT * FROM system_schema.{table}"),
        );
        assert_eq!(columns[0], "keyspace_name");
        assert!(found.is_empty());
    }
    assert!(rows(
        &mut store,
        None,
        "SELECT * from system_virtual_schema.keyspaces"
    )
    .1
    .is_empty());
    assert_eq!(
        run(&mut store, None, "SELECT * FROM system.peers_v2", &[]),
        Err(CqlError::Invalid("unconfigured table peers_v2".into()))
    );
}
