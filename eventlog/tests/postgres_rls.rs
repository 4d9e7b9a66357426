//! Proves that PostgreSQL itself keeps tenants apart (DESIGN principle 2), whatever
//! SQL the runtime role sends: with no tenant set it sees nothing, and with one tenant
//! set it can neither read, change, delete nor create another tenant's rows.
//!
//! The checks connect *as the runtime role* made by `postgres::setup_roles` — a login
//! role that is not the owner and has no `BYPASSRLS` — because a superuser (even after
//! `SET ROLE`) or the owner without `FORCE` would not be subject to the policies at
//! all. Data is written through the store, as in production.

use eventlog::postgres::testing::TestDatabase;
use eventlog::postgres::{PostgresStore, setup_roles};
use eventlog::{
    AppendRequest, EventStore, ExpectedVersion, IdempotencyRecord, IdempotentResponse, Metadata,
    NewEvent, Snapshot,
};
use sqlx::postgres::{PgConnection, PgPoolOptions};
use sqlx::{ConnectOptions, Connection};
use uuid::Uuid;

const TABLES: [&str; 4] = ["events", "streams", "idempotency_keys", "snapshots"];

/// A database where tenant A has a stream of two events, an idempotency key and a
/// snapshot of the stream.
async fn seeded() -> (TestDatabase, Uuid) {
    let db = TestDatabase::create().await;
    let tenant_a = Uuid::now_v7();
    let store: PostgresStore = db.store().await;
    store
        .append(AppendRequest {
            tenant_id: tenant_a,
            stream_id: "a-stream".to_owned(),
            expected: ExpectedVersion::Exact(0),
            metadata: Metadata {
                correlation_id: Uuid::now_v7(),
                causation_id: None,
                actor: "test".to_owned(),
            },
            events: (0..2)
                .map(|n| NewEvent {
                    event_id: Uuid::now_v7(),
                    event_type: "test.happened".to_owned(),
                    schema_version: 1,
                    occurred_at: chrono::Utc::now(),
                    data: serde_json::json!({ "n": n }),
                })
                .collect(),
            idempotency: Some(IdempotencyRecord {
                key: "a-key".to_owned(),
                response: IdempotentResponse {
                    request_hash: "0".repeat(64),
                    status: 201,
                    body: serde_json::json!({}),
                },
            }),
        })
        .await
        .expect("tenant A's append succeeds");
    let saved = store
        .save_snapshot(&Snapshot {
            tenant_id: tenant_a,
            stream_id: "a-stream".to_owned(),
            snapshot_version: 1,
            version: 2,
            data: r#"{"n":1}"#.to_owned(),
            detail: None,
        })
        .await
        .expect("tenant A's snapshot is saved");
    assert!(saved, "tenant A's first snapshot is stored");
    drop(store);
    (db, tenant_a)
}

async fn connect_as_app(db: &TestDatabase) -> PgConnection {
    db.app_options()
        .connect()
        .await
        .expect("the runtime role logs in with its password")
}

async fn count(conn: &mut PgConnection, table: &str) -> i64 {
    sqlx::query_scalar(&format!("SELECT count(*) FROM {table}"))
        .fetch_one(conn)
        .await
        .unwrap_or_else(|e| panic!("the runtime role can query {table}: {e}"))
}

async fn set_tenant(conn: &mut PgConnection, tenant: Uuid) {
    sqlx::query("SELECT set_config('app.tenant', $1, true)")
        .bind(tenant.to_string())
        .execute(conn)
        .await
        .expect("the tenant can be set");
}

/// Runs `sql` (binding `tenant` as $1) in a savepoint and asserts that the row-level
/// security policy refused it; the savepoint keeps the transaction usable.
async fn refused_by_policy(conn: &mut PgConnection, tenant: Uuid, sql: &str) {
    sqlx::query("SAVEPOINT attempt")
        .execute(&mut *conn)
        .await
        .expect("savepoint");
    let result = sqlx::query(sql).bind(tenant).execute(&mut *conn).await;
    sqlx::query("ROLLBACK TO attempt")
        .execute(&mut *conn)
        .await
        .expect("rollback to");
    let error = result.expect_err("writing a row for another tenant must be refused");
    assert_eq!(
        sqlstate(&error).as_deref(),
        Some("42501"),
        "`{sql}` should violate the row-level security policy, got {error}"
    );
}

fn sqlstate(error: &sqlx::Error) -> Option<String> {
    error
        .as_database_error()
        .and_then(|e| e.code())
        .map(|c| c.into_owned())
}

#[tokio::test]
async fn the_runtime_role_is_neither_owner_nor_superuser_nor_exempt_from_row_security() {
    let (db, _) = seeded().await;
    let mut app = connect_as_app(&db).await;
    let (is_super, bypasses): (bool, bool) =
        sqlx::query_as("SELECT rolsuper, rolbypassrls FROM pg_roles WHERE rolname = current_user")
            .fetch_one(&mut app)
            .await
            .expect("the role can read its own attributes");
    assert!(
        !is_super && !bypasses,
        "the runtime role must not bypass row-level security"
    );
    for table in TABLES {
        let (owner, enabled, forced): (String, bool, bool) = sqlx::query_as(
            "SELECT pg_get_userbyid(relowner)::text, relrowsecurity, relforcerowsecurity \
             FROM pg_class WHERE oid = $1::regclass",
        )
        .bind(table)
        .fetch_one(&mut app)
        .await
        .expect("the catalog is readable");
        assert_ne!(
            owner,
            db.app_role(),
            "{table} must not be owned by the runtime role"
        );
        assert!(
            enabled && forced,
            "{table} must enable and force row-level security"
        );
    }
    app.close().await.ok();
    db.drop_database().await;
}

#[tokio::test]
async fn without_a_tenant_the_runtime_role_sees_no_rows() {
    let (db, tenant_a) = seeded().await;
    let mut app = connect_as_app(&db).await;
    for table in TABLES {
        assert_eq!(
            count(&mut app, table).await,
            0,
            "{table} should look empty without a tenant"
        );
    }

    // Sanity: the rows are there for their own tenant, so the zeros above mean something.
    let mut tx = app.begin().await.expect("a transaction starts");
    set_tenant(&mut tx, tenant_a).await;
    assert_eq!(count(&mut tx, "events").await, 2);
    assert_eq!(count(&mut tx, "streams").await, 1);
    assert_eq!(count(&mut tx, "idempotency_keys").await, 1);
    assert_eq!(count(&mut tx, "snapshots").await, 1);
    tx.commit().await.expect("the transaction commits");

    // SET LOCAL ended with the transaction; a reused connection is back to nothing.
    for table in TABLES {
        assert_eq!(
            count(&mut app, table).await,
            0,
            "{table} should be empty again"
        );
    }
    app.close().await.ok();
    db.drop_database().await;
}

/// The runtime role may not delete anything or update events and keys at all; that is
/// privileges. To show that row-level security holds on its own too, the test widens
/// the role's privileges to UPDATE and DELETE everywhere and tries again as tenant B.
#[tokio::test]
async fn another_tenant_can_neither_read_update_delete_nor_insert_a_tenants_rows() {
    let (db, tenant_a) = seeded().await;
    let tenant_b = Uuid::now_v7();
    let mut app = connect_as_app(&db).await;

    for table in ["events", "snapshots"] {
        let refused = sqlx::query(&format!("DELETE FROM {table}"))
            .execute(&mut app)
            .await
            .expect_err("the runtime role has no DELETE privilege");
        assert_eq!(
            sqlstate(&refused).as_deref(),
            Some("42501"),
            "insufficient privilege on {table}"
        );
    }

    let admin = PgPoolOptions::new()
        .max_connections(1)
        .connect_with(db.owner_options())
        .await
        .expect("the owner connects");
    for table in TABLES {
        sqlx::raw_sql(&format!(
            "GRANT UPDATE, DELETE ON {table} TO {}",
            db.app_role()
        ))
        .execute(&admin)
        .await
        .expect("the owner can widen the test role's privileges");
    }

    let mut tx = app.begin().await.expect("a transaction starts");
    set_tenant(&mut tx, tenant_b).await;
    for table in TABLES {
        assert_eq!(
            count(&mut tx, table).await,
            0,
            "tenant B must not read tenant A's {table}"
        );
    }
    let read_by_id: Option<i64> =
        sqlx::query_scalar("SELECT version FROM streams WHERE stream_id = 'a-stream'")
            .fetch_optional(&mut *tx)
            .await
            .expect("the query runs");
    assert_eq!(
        read_by_id, None,
        "naming tenant A's stream does not reveal it"
    );

    for sql in [
        "UPDATE events SET actor = 'intruder'",
        "UPDATE streams SET version = 99 WHERE stream_id = 'a-stream'",
        "UPDATE idempotency_keys SET status = 500",
        "UPDATE snapshots SET version = 1, data = '{}'",
        "DELETE FROM events",
        "DELETE FROM snapshots",
        "DELETE FROM streams",
        "DELETE FROM idempotency_keys WHERE key = 'a-key'",
    ] {
        let done = sqlx::query(sql)
            .execute(&mut *tx)
            .await
            .unwrap_or_else(|e| panic!("`{sql}` runs (and finds nothing): {e}"));
        assert_eq!(
            done.rows_affected(),
            0,
            "`{sql}` must not touch tenant A's rows"
        );
    }

    // Writing a row that names tenant A while scoped to B fails the policy's WITH CHECK.
    refused_by_policy(
        &mut tx,
        tenant_a,
        "INSERT INTO streams (stream_id, tenant_id, version) VALUES ('planted', $1, 0)",
    )
    .await;
    refused_by_policy(
        &mut tx,
        tenant_a,
        "INSERT INTO idempotency_keys (tenant_id, key, request_hash, status, body) \
         VALUES ($1, 'planted', '', 200, '{}')",
    )
    .await;
    refused_by_policy(
        &mut tx,
        tenant_a,
        "INSERT INTO events (global_position, event_id, tenant_id, stream_id, version, \
         event_type, schema_version, occurred_at, correlation_id, actor, data) \
         VALUES (1000, gen_random_uuid(), $1, 'a-stream', 3, 't', 1, now(), \
         gen_random_uuid(), 'intruder', '{}')",
    )
    .await;
    refused_by_policy(
        &mut tx,
        tenant_a,
        "INSERT INTO snapshots (stream_id, snapshot_version, tenant_id, version, data) \
         VALUES ('a-stream', 2, $1, 1, '{}')",
    )
    .await;
    // Moving one's own row over to tenant A is refused the same way.
    sqlx::query("INSERT INTO streams (stream_id, tenant_id, version) VALUES ('b-stream', $1, 0)")
        .bind(tenant_b)
        .execute(&mut *tx)
        .await
        .expect("tenant B may create its own stream");
    refused_by_policy(
        &mut tx,
        tenant_a,
        "UPDATE streams SET tenant_id = $1 WHERE stream_id = 'b-stream'",
    )
    .await;
    tx.rollback().await.expect("the transaction rolls back");

    // And tenant A's rows are exactly as they were.
    let mut tx = app.begin().await.expect("a transaction starts");
    set_tenant(&mut tx, tenant_a).await;
    let (version,): (i64,) =
        sqlx::query_as("SELECT version FROM streams WHERE stream_id = 'a-stream'")
            .fetch_one(&mut *tx)
            .await
            .expect("tenant A sees its stream");
    assert_eq!(version, 2);
    let actors: Vec<String> = sqlx::query_scalar("SELECT actor FROM events ORDER BY version")
        .fetch_all(&mut *tx)
        .await
        .expect("tenant A sees its events");
    assert_eq!(actors, vec!["test", "test"]);
    assert_eq!(count(&mut tx, "idempotency_keys").await, 1);
    let snapshot: (i64, String) =
        sqlx::query_as("SELECT version, data::text FROM snapshots WHERE stream_id = 'a-stream'")
            .fetch_one(&mut *tx)
            .await
            .expect("tenant A sees its snapshot");
    assert_eq!(snapshot, (2, r#"{"n":1}"#.to_owned()));
    tx.commit().await.expect("the transaction commits");

    app.close().await.ok();
    admin.close().await;
    db.drop_database().await;
}

/// The runtime role cannot forge its way to the whole log with a setting: the global
/// log is reachable only through the owner's SECURITY DEFINER functions, whose
/// EXECUTE privilege is the capability (and they return it in position order only).
#[tokio::test]
async fn the_global_log_is_reachable_only_through_the_log_functions() {
    let (db, _) = seeded().await;
    let mut app = connect_as_app(&db).await;
    sqlx::query("SELECT set_config('app.role', 'log_reader', false)")
        .execute(&mut app)
        .await
        .expect("any session can set a custom setting");
    assert_eq!(
        count(&mut app, "events").await,
        0,
        "a custom setting grants nothing"
    );
    let through_function: i64 =
        sqlx::query_scalar("SELECT count(*) FROM tidemark_read_log(0, 100)")
            .fetch_one(&mut app)
            .await
            .expect("the runtime role may execute the log reader");
    assert_eq!(
        through_function, 2,
        "the log function serves every tenant's events"
    );
    app.close().await.ok();

    // A role that setup did not grant the capability to has no such door.
    let outsider = format!("{}_outsider", db.name());
    let admin = PgPoolOptions::new()
        .max_connections(1)
        .connect_with(db.owner_options())
        .await
        .expect("the owner connects");
    sqlx::raw_sql(&format!("CREATE ROLE {outsider} LOGIN PASSWORD 'outsider'"))
        .execute(&admin)
        .await
        .expect("a role without grants can be created");
    let mut conn = db
        .owner_options()
        .username(&outsider)
        .password("outsider")
        .connect()
        .await
        .expect("the outsider logs in");
    let refused = sqlx::query("SELECT count(*) FROM tidemark_read_log(0, 100)")
        .execute(&mut conn)
        .await
        .expect_err("a role without EXECUTE cannot read the log");
    assert_eq!(sqlstate(&refused).as_deref(), Some("42501"));
    let refused = sqlx::query("SELECT tidemark_drop_snapshots()")
        .execute(&mut conn)
        .await
        .expect_err("a role without EXECUTE cannot drop every tenant's snapshots");
    assert_eq!(sqlstate(&refused).as_deref(), Some("42501"));
    conn.close().await.ok();
    drop(admin);
    db.drop_database().await;
    let server = eventlog::postgres::testing::server_options()
        .connect()
        .await;
    if let Ok(mut server) = server {
        sqlx::raw_sql(&format!("DROP ROLE IF EXISTS {outsider}"))
            .execute(&mut server)
            .await
            .ok();
        server.close().await.ok();
    }
}

#[tokio::test]
async fn setup_roles_is_idempotent_and_refuses_an_empty_password() {
    let db = TestDatabase::create().await;
    let admin = PgPoolOptions::new()
        .max_connections(1)
        .connect_with(db.owner_options())
        .await
        .expect("the owner connects");
    setup_roles(&admin, db.app_role(), Some("a-new-password"))
        .await
        .expect("setting up an existing role again succeeds");
    let mut app = db
        .owner_options()
        .username(db.app_role())
        .password("a-new-password")
        .connect()
        .await
        .expect("the role logs in with the new password");
    assert_eq!(count(&mut app, "events").await, 0);
    app.close().await.ok();
    assert!(
        setup_roles(&admin, db.app_role(), Some("")).await.is_err(),
        "an empty password is refused"
    );
    admin.close().await;
    db.drop_database().await;
}
