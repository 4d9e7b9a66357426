//! Plans the projector depends on, checked before the planner has any statistics:
//! a new database is read and written for its first minute, until autovacuum
//! analyses it, with nothing but the tables' sizes to plan by.

use crate::support::{TestDatabase, bounded};

/// A reservation read by its whole key — what the projector does when an event
/// settles a reservation its batch does not hold — takes the primary key, not an index
/// that shares the key's first columns and would then filter every reservation of the
/// tenant's month (migration 0009; it took 1 ms a read in the benchmark before).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reservation_read_by_its_key_takes_the_primary_key_before_any_statistics() {
    bounded(async {
        let db = TestDatabase::create().await;
        let models = db.models().await;
        drop(models);
        let mut conn = db.connect_as(db.owner_role()).await;
        // Row-level security is forced on the owner too: scope the session to the tenant.
        sqlx::query("SELECT set_config('app.tenant', 'tenant', false)")
            .execute(&mut conn)
            .await
            .expect("the tenant is set");
        sqlx::raw_sql(
            "INSERT INTO read_models.reservations
                 (tenant_id, reservation_id, period, amount_micros, purpose, status,
                  expires_at, created_at)
             SELECT 'tenant', 'r' || g, '2026-12', 1, 'p',
                    CASE WHEN g % 2 = 0 THEN 'open' ELSE 'committed' END,
                    '2026-12-08T00:00:00Z', '2026-12-01T00:00:00Z'
               FROM generate_series(1, 5000) AS g",
        )
        .execute(&mut conn)
        .await
        .expect("a hot tenant's month of reservations");
        let analysed: Option<i64> = sqlx::query_scalar(
            "SELECT analyze_count + autoanalyze_count FROM pg_stat_user_tables
              WHERE schemaname = 'read_models' AND relname = 'reservations'",
        )
        .fetch_optional(&mut conn)
        .await
        .expect("statistics are readable");
        assert_eq!(
            analysed.unwrap_or(0),
            0,
            "the table must not have been analysed"
        );

        let plan = sqlx::query_scalar::<_, String>(
            "EXPLAIN (FORMAT TEXT) SELECT * FROM read_models.reservations
              WHERE tenant_id = 'tenant' AND period = '2026-12' AND reservation_id = 'r5'",
        )
        .fetch_all(&mut conn)
        .await
        .expect("the read can be explained")
        .join("\n");
        assert!(
            plan.contains("reservations_pkey") && !plan.contains("reservations_by_"),
            "the key read should take the primary key:\n{plan}"
        );
        drop(conn);
        db.drop_database().await;
    })
    .await;
}
