//! The same log, projected into SQLite and into PostgreSQL, answers every query the same.

use projector::{Dialect, Projector, ReadModels, ReservationStatus, TimerKind};
use tempfile::TempDir;

use crate::support::{
    Log, TestDatabase, assert_same, bounded, scan_times, snapshot, sqlite_reference,
};

#[tokio::test]
async fn postgres_and_sqlite_read_models_answer_every_query_identically() {
    bounded(async {
        let log = Log::full().await;
        let reference = sqlite_reference(&log).await;

        let db = TestDatabase::create().await;
        let models = db.models().await;
        assert_eq!(models.dialect(), Dialect::Postgres);
        let applied = Projector::new(log.store.clone(), models.clone())
            .catch_up()
            .await
            .expect("project into PostgreSQL");
        assert_eq!(applied, log.len().await);
        let postgres = snapshot(&models, &log).await;

        // The comparison only means something if the log reached every kind of answer.
        let budget = |tenant, period: &str| {
            reference
                .budgets
                .iter()
                .find(|(t, p, _)| *t == tenant && p == period)
                .and_then(|(_, _, view)| view.clone())
        };
        let a = log.tenant_a.as_uuid();
        let feb = budget(a, "2026-02").expect("tenant A has a February budget");
        assert!(feb.overrun_micros > 0 && feb.thresholds_crossed == vec![50]);
        let may = budget(a, "2026-05").expect("May shows the limits it would inherit");
        assert_eq!(may.inherited_from.as_deref(), Some("2026-04"));
        assert!(budget(a, "2026-01").is_none());
        for status in [
            ReservationStatus::Open,
            ReservationStatus::Committed,
            ReservationStatus::Released,
            ReservationStatus::Expired,
        ] {
            assert!(
                reference
                    .reservations
                    .iter()
                    .any(|(t, p, s, _, items)| *t == a
                        && p == "2026-02"
                        && *s == Some(status)
                        && !items.is_empty()),
                "no {status:?} reservation in the log"
            );
        }
        assert!(reference.pages.iter().any(|(_, pages)| pages.len() > 2));
        let [_, after_february, after_march, far_ahead] = scan_times();
        let due = |now, kind| {
            reference
                .due_timers
                .iter()
                .find(|(t, limit, _)| *t == now && *limit == 500)
                .map(|(_, _, pages)| pages.iter().flatten().filter(|t| t.kind == kind).count())
        };
        let posts = TimerKind::PostPublish;
        assert_eq!(
            (
                due(after_february, posts),
                due(after_march, posts),
                due(far_ahead, posts)
            ),
            (Some(1), Some(4), Some(5))
        );
        let holds = TimerKind::ReservationExpiry;
        assert!(due(far_ahead, holds).is_some_and(|n| n >= 3));
        // Paged one by one, the scan returns the same timers in the same order.
        for (now, limit, pages) in &reference.due_timers {
            if *limit == 1 {
                let whole = reference
                    .due_timers
                    .iter()
                    .find(|(t, l, _)| t == now && *l == 500)
                    .map(|(_, _, pages)| pages.concat());
                assert_eq!(Some(pages.concat()), whole, "at {now}");
            }
        }
        assert!(reference.posts.iter().any(|(_, _, view)| {
            view.as_ref()
                .is_some_and(|v| v.status == "partially_published")
        }));
        assert!(reference.row_counts.iter().all(|(_, n)| *n > 0));
        assert_eq!(reference.checkpoint, log.head().await);

        assert_same(&postgres, &reference);
        db.drop_database().await;
    })
    .await;
}

/// With one event per batch, every event reads the rows it changes from the database;
/// with the whole log in one batch, it finds them in memory, written back only at the
/// end. Both, and a rebuild over them, must give the same read models, on both
/// databases.
#[tokio::test]
async fn one_event_per_batch_and_the_whole_log_in_one_batch_give_the_same_read_models() {
    bounded(async {
        let log = Log::full().await;
        let events = log.len().await;
        assert!(
            events < 1_000,
            "the reference projects the log in one batch"
        );
        let reference = sqlite_reference(&log).await;

        let dir = TempDir::new().expect("temp dir");
        let sqlite = ReadModels::open(&dir.path().join("read_models.db"))
            .await
            .expect("open SQLite read models");
        let applied = Projector::new(log.store.clone(), sqlite.clone())
            .with_batch_size(1)
            .catch_up()
            .await
            .expect("project into SQLite one event at a time");
        assert_eq!(applied, events);
        assert_same(&snapshot(&sqlite, &log).await, &reference);

        let db = TestDatabase::create().await;
        let postgres = db.models().await;
        let projector = Projector::new(log.store.clone(), postgres.clone()).with_batch_size(1);
        assert_eq!(projector.catch_up().await.expect("project"), events);
        assert_same(&snapshot(&postgres, &log).await, &reference);
        let rebuilt = projector.rebuild(|_, _| {}).await.expect("rebuild");
        assert_eq!(rebuilt, events);
        assert_same(&snapshot(&postgres, &log).await, &reference);
        db.drop_database().await;
    })
    .await;
}

/// A rebuild that writes its rows back every few rows applies the next events while
/// each write-back runs, reading a row it no longer holds only once that write-back has
/// ended: the read models are the same, on both databases.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rebuild_that_applies_events_while_its_write_backs_run_gives_the_same_read_models() {
    bounded(async {
        let log = Log::full().await;
        let events = log.len().await;
        let reference = sqlite_reference(&log).await;

        let dir = TempDir::new().expect("temp dir");
        let sqlite = ReadModels::open(&dir.path().join("read_models.db"))
            .await
            .expect("open SQLite read models");
        let db = TestDatabase::create().await;
        let postgres = db.models().await;
        for models in [sqlite, postgres] {
            for (batch_size, rows_held) in [(1, 1), (2, 5), (7, 30)] {
                let projector = Projector::new(log.store.clone(), models.clone())
                    .with_batch_size(batch_size)
                    .with_rebuild_rows_held(rows_held);
                assert_eq!(projector.rebuild(|_, _| {}).await.expect("rebuild"), events);
                assert_same(&snapshot(&models, &log).await, &reference);
            }
        }
        db.drop_database().await;
    })
    .await;
}

/// With more tenants than one write-back statement names (64), a write-back leaves the
/// transaction scoped to its last group of tenants. The rows a rebuild reads next,
/// while that write-back runs or after it, must still be read under their own tenant's
/// scope, or a row that exists would look missing and be made afresh.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rebuild_over_more_tenants_than_a_write_back_statement_names_reads_each_row_in_its_tenants_scope()
 {
    use std::sync::Arc;

    use command_api::{CommandService, Envelope, SystemClock};
    use domain::budget::Command;
    use domain::{Micros, Period, ReservationId, TenantId};
    use eventlog::EventStore;
    use eventlog::sqlite::SqliteStore;
    use uuid::Uuid;

    bounded(async {
        let dir = TempDir::new().expect("temp dir");
        let store: Arc<dyn EventStore> = Arc::new(
            SqliteStore::open(&dir.path().join("events.db"))
                .await
                .expect("open the event store"),
        );
        let service = CommandService::new(store.clone(), Arc::new(SystemClock));
        let money = |v: i64| Micros::new(v).expect("not negative");
        // In falling id order, so the tenant a rebuild reads last sorts first, into a
        // write-back's first group rather than its last.
        let tenants: Vec<TenantId> = (0..150u128)
            .rev()
            .map(|n| TenantId::from_uuid(Uuid::from_u128(0x7e4a_0000 + n)))
            .collect();
        let reservation =
            |n: usize| ReservationId::from_uuid(Uuid::from_u128(0x4e5e_0000 + n as u128));
        // Round by round over every tenant, so a write-back holds most of them and a
        // reservation's commit comes after the write-back of its hold; each tenant's
        // two commits follow each other, so a write-back can fall between two reads
        // of one tenant.
        let rounds: [&dyn Fn(usize) -> Vec<Command>; 3] = [
            &|_| {
                vec![Command::SetLimits {
                    soft: money(1_000_000),
                    hard: money(2_000_000),
                    alert_thresholds_pct: vec![50],
                }]
            },
            &|n| {
                [2 * n, 2 * n + 1]
                    .map(|r| Command::Reserve {
                        reservation_id: reservation(r),
                        amount: money(10_000 + r as i64),
                        purpose: "many tenants".to_owned(),
                        ttl: chrono::TimeDelta::hours(2),
                    })
                    .to_vec()
            },
            &|n| {
                [2 * n, 2 * n + 1]
                    .map(|r| Command::Commit {
                        reservation_id: reservation(r),
                        actual: money(7_000 + r as i64),
                    })
                    .to_vec()
            },
        ];
        for round in rounds {
            for (n, tenant) in tenants.iter().enumerate() {
                let envelope = Envelope::system(*tenant, "test", None);
                for command in round(n) {
                    service
                        .budget(&envelope, None, command)
                        .await
                        .expect("a budget command the test expects to succeed");
                }
            }
        }
        let period = Period::containing(chrono::Utc::now());

        let reference = ReadModels::open(&dir.path().join("read_models.db"))
            .await
            .expect("open SQLite read models");
        Projector::new(store.clone(), reference.clone())
            .catch_up()
            .await
            .expect("project into SQLite");
        let db = TestDatabase::create().await;
        let postgres = db.models().await;
        Projector::new(store.clone(), postgres.clone())
            .with_batch_size(1)
            .with_rebuild_rows_held(300)
            .rebuild(|_, _| {})
            .await
            .expect("rebuild");
        for tenant in &tenants {
            let tenant = tenant.as_uuid();
            let expected = reference.budget(tenant, period).await.expect("query");
            assert!(expected.is_some(), "every tenant has a budget");
            assert_eq!(
                postgres.budget(tenant, period).await.expect("query"),
                expected,
                "tenant {tenant}'s budget"
            );
            assert_eq!(
                postgres
                    .reservations(tenant, period, None, 10)
                    .await
                    .expect("query"),
                reference
                    .reservations(tenant, period, None, 10)
                    .await
                    .expect("query"),
                "tenant {tenant}'s reservations"
            );
        }
        db.drop_database().await;
    })
    .await;
}

/// The projector writes whole rows, so its description of each table must name every
/// column the migrations made.
#[tokio::test]
async fn the_projector_knows_every_column_of_every_postgres_read_model_table() {
    bounded(async {
        let db = TestDatabase::create().await;
        let models = db.models().await;
        let mut conn = db.connect_as(db.app_role()).await;
        for (table, columns) in projector::described_tables() {
            let found: Vec<String> = sqlx::query_scalar(
                "SELECT column_name::text FROM information_schema.columns
                 WHERE table_schema = 'read_models' AND table_name = $1 ORDER BY ordinal_position",
            )
            .bind(table)
            .fetch_all(&mut conn)
            .await
            .expect("list columns");
            let mut found = found;
            let mut columns: Vec<String> = columns.into_iter().map(String::from).collect();
            found.sort();
            columns.sort();
            assert_eq!(found, columns, "columns of {table}");
        }
        drop(models);
        db.drop_database().await;
    })
    .await;
}
