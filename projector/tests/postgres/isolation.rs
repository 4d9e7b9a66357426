//! Row-level security on the read models, tested as the non-owner runtime role over
//! raw SQL (a superuser would bypass it, so `SET ROLE` from one would prove nothing):
//! without `app.tenant` no tenant row is visible; scoped to one tenant, another
//! tenant's rows can be neither read, changed, deleted nor created.

use projector::{Projector, ReadModels};
use sqlx::{Connection, Executor, PgConnection};

use crate::support::{Log, TestDatabase, assert_same, bounded, snapshot};

const TABLES: [&str; 7] = [
    "budgets",
    "reservations",
    "posts",
    "post_targets",
    "generations",
    "generation_attempts",
    "timers",
];

/// `true` when `error` is PostgreSQL's "insufficient privilege" (42501), which is how
/// it refuses a row that violates a policy, or a statement the role may not run.
fn refused(error: &sqlx::Error) -> bool {
    error
        .as_database_error()
        .and_then(|e| e.code())
        .is_some_and(|code| code == "42501")
}

async fn count(conn: &mut PgConnection, sql: &str) -> i64 {
    sqlx::query_scalar(sql)
        .fetch_one(&mut *conn)
        .await
        .unwrap_or_else(|e| panic!("`{sql}` failed: {e}"))
}

/// Runs `sql` in a transaction scoped to `tenant`; returns the rows it affected, or
/// the error that refused it. Rolls back either way.
async fn as_tenant(conn: &mut PgConnection, tenant: &str, sql: &str) -> Result<u64, sqlx::Error> {
    let mut tx = conn.begin().await.expect("begin");
    sqlx::query("SELECT set_config('app.tenant', $1, true)")
        .bind(tenant)
        .execute(&mut *tx)
        .await
        .expect("set the tenant");
    let result = tx.execute(sql).await.map(|done| done.rows_affected());
    tx.rollback().await.expect("rollback");
    result
}

/// The full log, projected into a fresh PostgreSQL database.
async fn projected() -> (Log, TestDatabase, ReadModels) {
    let log = Log::full().await;
    let db = TestDatabase::create().await;
    let models = db.models().await;
    Projector::new(log.store.clone(), models.clone())
        .catch_up()
        .await
        .expect("project");
    (log, db, models)
}

#[tokio::test]
async fn the_runtime_role_sees_and_touches_only_the_tenant_it_sets() {
    bounded(async {
        let (log, db, models) = projected().await;
        let before = snapshot(&models, &log).await;
        let (a, b) = (log.tenant_a.to_string(), log.tenant_b.to_string());

        let mut app = db.connect_as(db.app_role()).await;
        let (user, superuser, bypass): (String, bool, bool) = sqlx::query_as(
            "SELECT rolname::text, rolsuper, rolbypassrls FROM pg_roles WHERE rolname = current_user",
        )
        .fetch_one(&mut app)
        .await
        .expect("who am I");
        assert_eq!((user.as_str(), superuser, bypass), (db.app_role(), false, false));

        // Without a tenant: no rows at all, though the tables are full.
        for table in TABLES {
            assert_eq!(count(&mut app, &format!("SELECT count(*) FROM read_models.{table}")).await, 0);
        }
        assert!(models.row_counts().await.expect("counts").iter().all(|(_, n)| *n > 0));
        for table in TABLES {
            let update = format!("UPDATE read_models.{table} SET tenant_id = tenant_id");
            assert_eq!(app.execute(update.as_str()).await.expect("update").rows_affected(), 0);
            let delete = format!("DELETE FROM read_models.{table}");
            assert_eq!(app.execute(delete.as_str()).await.expect("delete").rows_affected(), 0);
        }

        // Scoped to B: B's rows are there, A's are not — to read, change or delete.
        for table in TABLES {
            let own = format!("SELECT count(*) FROM read_models.{table} WHERE tenant_id = '{b}'");
            let mut tx = app.begin().await.expect("begin");
            sqlx::query("SELECT set_config('app.tenant', $1, true)")
                .bind(&b)
                .execute(&mut *tx)
                .await
                .expect("set the tenant");
            assert!(count(&mut tx, &own).await > 0, "B sees its own {table}");
            let others = format!("SELECT count(*) FROM read_models.{table} WHERE tenant_id <> '{b}'");
            assert_eq!(count(&mut tx, &others).await, 0, "B sees no other tenant's {table}");
            tx.rollback().await.expect("rollback");

            let update = format!("UPDATE read_models.{table} SET tenant_id = tenant_id WHERE tenant_id = '{a}'");
            assert_eq!(as_tenant(&mut app, &b, &update).await.expect("update"), 0);
            let delete = format!("DELETE FROM read_models.{table} WHERE tenant_id = '{a}'");
            assert_eq!(as_tenant(&mut app, &b, &delete).await.expect("delete"), 0);
            // Nor can B hand its own rows to A.
            let hand_over = format!("UPDATE read_models.{table} SET tenant_id = '{a}'");
            let error = as_tenant(&mut app, &b, &hand_over).await.expect_err("hand over");
            assert!(refused(&error), "{table}: {error}");
        }

        // Inserting a row for A while scoped to B is refused, in every table.
        let inserts = [
            format!(
                "INSERT INTO read_models.budgets (tenant_id, period, version, updated_at)
                 VALUES ('{a}', '2030-01', 1, '2030-01-01T00:00:00.000000Z')"
            ),
            format!(
                "INSERT INTO read_models.reservations (tenant_id, reservation_id, period, amount_micros,
                     purpose, status, expires_at, created_at)
                 VALUES ('{a}', 'r', '2030-01', 1, 'p', 'open', '2030-01-01T00:00:00.000000Z',
                         '2030-01-01T00:00:00.000000Z')"
            ),
            format!(
                "INSERT INTO read_models.posts (tenant_id, post_id, channel, body, status, version,
                     created_position, created_at, updated_at)
                 VALUES ('{a}', 'p', 'x', 'injected', 'draft', 1, 1, '2030-01-01T00:00:00.000000Z',
                         '2030-01-01T00:00:00.000000Z')"
            ),
            format!(
                "INSERT INTO read_models.post_targets (tenant_id, post_id, channel, position)
                 VALUES ('{a}', 'p', 'x', 0)"
            ),
            format!(
                "INSERT INTO read_models.timers (tenant_id, kind, timer_key, subject, due_at)
                 VALUES ('{a}', 'post_publish', 'p', 'p', '2030-01-01T00:00:00.000000Z')"
            ),
            format!(
                "INSERT INTO read_models.generations (tenant_id, generation_id, status, brief, channel,
                     priority, provider, model, reservation_id, period, reserved_micros, version,
                     created_at, updated_at)
                 VALUES ('{a}', 'g', 'pending', 'injected', 'x', 'core', 'local', 'm', 'r', '2030-01',
                         1, 1, '2030-01-01T00:00:00.000000Z', '2030-01-01T00:00:00.000000Z')"
            ),
            format!(
                "INSERT INTO read_models.generation_attempts (tenant_id, generation_id, attempt,
                     provider, model, reason, status, started_at)
                 VALUES ('{a}', 'g', 1, 'local', 'm', 'primary', 'started',
                         '2030-01-01T00:00:00.000000Z')"
            ),
        ];
        for insert in &inserts {
            let error = as_tenant(&mut app, &b, insert).await.expect_err("insert for A");
            assert!(refused(&error), "{error}");
        }
        // The same insert without any tenant is refused too.
        let error = app.execute(inserts[2].as_str()).await.expect_err("insert without a tenant");
        assert!(refused(&error), "{error}");
        // And the runtime role may not empty a table wholesale, which RLS would not stop.
        let error = app.execute("TRUNCATE read_models.posts").await.expect_err("truncate");
        assert!(refused(&error), "{error}");

        // FORCE: even the owner writes only inside the tenant it sets.
        let owner_role = db.owner_url();
        let mut owner = PgConnection::connect(&owner_role).await.expect("connect as owner");
        for table in TABLES {
            let delete = format!("DELETE FROM read_models.{table}");
            assert_eq!(owner.execute(delete.as_str()).await.expect("delete").rows_affected(), 0);
        }

        // The query API's path: scoped to the asking tenant, whatever the id.
        let a_post = log
            .posts
            .iter()
            .find(|(tenant, _)| *tenant == log.tenant_a)
            .map(|(_, post)| post.as_uuid())
            .expect("A has posts");
        assert!(models.post(log.tenant_a.as_uuid(), a_post).await.expect("post").is_some());
        assert!(models.post(log.tenant_b.as_uuid(), a_post).await.expect("post").is_none());

        assert_same(&snapshot(&models, &log).await, &before);
        app.close().await.ok();
        owner.close().await.ok();
        db.drop_database().await;
    })
    .await;
}

#[tokio::test]
async fn setting_up_the_app_role_is_idempotent_and_refuses_roles_that_bypass_security() {
    bounded(async {
        let db = TestDatabase::create().await;
        let owner = db.owner_url();
        ReadModels::setup_app_role(&owner, db.app_role())
            .await
            .expect("first setup");
        ReadModels::setup_app_role(&owner, db.app_role())
            .await
            .expect("second setup");
        // Granted ahead, the role can run queries straight away.
        let models = ReadModels::connect_postgres(&owner, Some(&db.app_url()))
            .await
            .expect("connect");
        assert_eq!(
            models.row_counts().await.expect("counts"),
            vec![
                ("budgets", 0),
                ("reservations", 0),
                ("posts", 0),
                ("post_targets", 0),
                ("generations", 0),
                ("generation_attempts", 0),
                ("timers", 0)
            ]
        );

        let bypass = db.create_role("bypass", "NOSUPERUSER BYPASSRLS").await;
        let error = ReadModels::setup_app_role(&owner, &bypass)
            .await
            .expect_err("a BYPASSRLS role is refused");
        assert!(
            error.to_string().contains("bypasses row-level security"),
            "{error}"
        );
        let error = ReadModels::connect_postgres(&owner, Some(&db.url_as(&bypass)))
            .await
            .expect_err("connecting as a BYPASSRLS role is refused");
        assert!(
            error.to_string().contains("bypasses row-level security"),
            "{error}"
        );
        let error = ReadModels::setup_app_role(&owner, "tidemark_rm_no_such_role")
            .await
            .expect_err("a missing role is refused");
        assert!(error.to_string().contains("does not exist"), "{error}");
        db.drop_database().await;
    })
    .await;
}

/// The projector's write-back names several tenants in `app.tenants`
/// (migrations/postgres/0008): exactly those tenants' rows are reachable, no other's,
/// and a list holding only part of an id reaches nothing.
#[tokio::test]
async fn a_write_back_scoped_to_several_tenants_reaches_exactly_those_tenants() {
    bounded(async {
        let (log, db, models) = projected().await;
        let before = snapshot(&models, &log).await;
        let (a, b, c) = (
            log.tenant_a.to_string(),
            log.tenant_b.to_string(),
            log.tenant_c.to_string(),
        );
        let mut app = db.connect_as(db.app_role()).await;
        let scoped = |list: String| {
            format!("SELECT set_config('app.tenant', '', true), set_config('app.tenants', '{list}', true)")
        };

        let mut tx = app.begin().await.expect("begin");
        tx.execute(scoped(format!("{a},{b}")).as_str()).await.expect("scope");
        for table in TABLES {
            let seen: Vec<String> = sqlx::query_scalar(&format!(
                "SELECT DISTINCT tenant_id::text FROM read_models.{table} ORDER BY 1"
            ))
            .fetch_all(&mut *tx)
            .await
            .expect("read");
            assert!(seen.iter().all(|t| *t == a || *t == b), "{table}: {seen:?}");
            let others = format!("DELETE FROM read_models.{table} WHERE tenant_id = '{c}'");
            assert_eq!(tx.execute(others.as_str()).await.expect("delete").rows_affected(), 0);
        }
        let posts: i64 = count(&mut tx, "SELECT count(DISTINCT tenant_id) FROM read_models.posts").await;
        assert_eq!(posts, 2, "both listed tenants' posts are visible");
        tx.rollback().await.expect("rollback");

        let insert = |tenant: &str| {
            format!(
                "INSERT INTO read_models.timers (tenant_id, kind, timer_key, subject, due_at)
                 VALUES ('{tenant}', 'post_publish', 'p', 'p', '2030-01-01T00:00:00.000000Z')"
            )
        };
        for (list, tenant, allowed) in [
            (format!("{a},{b}"), &b, true),
            (format!("{a},{b}"), &c, false),
            // Part of an id, at either end of it, is not the id.
            (a[..35].to_owned(), &a, false),
            (a[1..].to_owned(), &a, false),
        ] {
            let mut tx = app.begin().await.expect("begin");
            tx.execute(scoped(list.clone()).as_str()).await.expect("scope");
            let result = tx.execute(insert(tenant).as_str()).await;
            tx.rollback().await.expect("rollback");
            match result {
                Ok(done) => assert!(allowed && done.rows_affected() == 1, "{list} let {tenant} in"),
                Err(error) => assert!(!allowed && refused(&error), "{list}, {tenant}: {error}"),
            }
        }
        let mut tx = app.begin().await.expect("begin");
        tx.execute(scoped(a[..35].to_owned()).as_str()).await.expect("scope");
        assert_eq!(count(&mut tx, "SELECT count(*) FROM read_models.posts").await, 0);
        tx.rollback().await.expect("rollback");

        assert_same(&snapshot(&models, &log).await, &before);
        app.close().await.ok();
        db.drop_database().await;
    })
    .await;
}

/// The write-back keeps its full-size statements prepared (`batch.rs`, `run_chunked`),
/// so one plan serves many executions under different `app.tenants` lists, and after
/// five executions PostgreSQL may switch to a generic plan. The policy must still be
/// judged against the list of each execution: the same prepared insert, run a dozen
/// times on one connection with the list switching between two tenants, lets in the
/// listed tenant's row and refuses the other's every time.
#[tokio::test]
async fn a_prepared_write_back_statement_is_judged_against_each_executions_tenants() {
    bounded(async {
        let (log, db, models) = projected().await;
        let before = snapshot(&models, &log).await;
        let (a, b) = (log.tenant_a.to_string(), log.tenant_b.to_string());
        let mut app = db.connect_as(db.app_role()).await;
        let insert = "INSERT INTO read_models.timers (tenant_id, kind, timer_key, subject, due_at) \
                      VALUES ($1, 'post_publish', $2, 'p', '2030-01-01T00:00:00.000000Z')";
        for round in 0..12 {
            let (listed, other) = if round % 2 == 0 { (&a, &b) } else { (&b, &a) };
            for (tenant, allowed) in [(listed, true), (other, false)] {
                let mut tx = app.begin().await.expect("begin");
                sqlx::query("SELECT set_config('app.tenant', '', true), set_config('app.tenants', $1, true)")
                    .bind(listed.as_str())
                    .execute(&mut *tx)
                    .await
                    .expect("scope");
                let result = sqlx::query(insert)
                    .persistent(true)
                    .bind(tenant.as_str())
                    .bind(format!("prepared-{round}"))
                    .execute(&mut *tx)
                    .await;
                tx.rollback().await.expect("rollback");
                match result {
                    Ok(done) => assert!(
                        allowed && done.rows_affected() == 1,
                        "round {round}: a list of {listed} let {tenant} in"
                    ),
                    Err(error) => assert!(
                        !allowed && refused(&error),
                        "round {round}, list {listed}, {tenant}: {error}"
                    ),
                }
            }
        }
        assert_same(&snapshot(&models, &log).await, &before);
        app.close().await.ok();
        db.drop_database().await;
    })
    .await;
}
