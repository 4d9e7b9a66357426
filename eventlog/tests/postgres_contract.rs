//! Runs the event store contract against the PostgreSQL store, and proves what only a
//! shared database needs: gap-safe tailing while several processes write, head
//! wake-ups across processes, and expected versions that hold across processes.
//!
//! Each test gets its own database from `eventlog::postgres::testing` and runs the
//! store as a non-owner role, as production does, so row-level security is on for
//! every check. "Several processes" are several `PostgresStore`s on one database: each
//! has its own pools, writer tasks and listener, so their transactions interleave in
//! PostgreSQL exactly as separate processes' would. Every wait is bounded by
//! `contract::WAIT`; nothing sleeps but the test of a writer's idle connection, which
//! waits for it to count as idle.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use eventlog::postgres::testing::TestDatabase;
use eventlog::postgres::{NOTIFY_CHANNEL, PostgresOptions, PostgresStore};
use eventlog::{
    AppendRequest, Appended, EventStore, ExpectedVersion, Metadata, NewEvent, Position,
    RecordedEvent, StoreError, contract, wait_for_head,
};
use sqlx::postgres::{PgListener, PgPoolOptions};
use sqlx::{ConnectOptions, Connection, PgConnection, Postgres, Transaction};
use tokio::sync::Barrier;
use uuid::Uuid;

macro_rules! contract_tests {
    ($($check:ident),* $(,)?) => {$(
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $check() {
            let db = TestDatabase::create().await;
            contract::$check(db.store().await).await;
            db.drop_database().await;
        }
    )*};
}

contract_tests!(
    append_then_read_stream_returns_every_event_with_its_envelope,
    an_exact_version_mismatch_conflicts_and_stores_nothing,
    exact_zero_on_an_existing_stream_conflicts,
    any_version_appends_at_the_current_version,
    an_empty_append_is_refused,
    an_append_that_fails_midway_stores_none_of_its_events,
    a_stream_of_one_tenant_is_closed_to_another,
    last_tenant_position_is_the_tenants_own_latest_event_at_or_below,
    read_all_pages_through_the_log_by_position,
    concurrent_appenders_on_one_stream_win_each_version_exactly_once,
    a_tail_sees_every_committed_event_exactly_once_in_order,
    an_idempotency_key_is_stored_with_its_append_and_refused_after,
    head_and_watch_head_follow_commits,
    concurrent_appends_to_different_streams_all_commit_with_dense_positions,
    a_snapshot_is_loaded_back_and_never_replaced_by_an_older_one,
    a_snapshots_detail_is_read_only_on_request_and_only_with_the_version_it_was_saved_with,
    a_snapshot_of_a_stream_the_tenant_does_not_own_or_past_its_head_is_refused,
    dropping_snapshots_removes_every_tenants_and_leaves_the_log_alone,
    chained_appends_queued_before_any_commits_all_land_in_order,
    a_chained_append_after_a_refused_one_never_runs_even_where_its_version_matches,
);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_whole_suite_runs_through_run_all_with_a_store_factory() {
    let databases = Mutex::new(Vec::new());
    contract::run_all(|| async {
        let db = TestDatabase::create().await;
        let store = db.store().await;
        databases
            .lock()
            .expect("no test panicked holding the lock")
            .push(db);
        store
    })
    .await;
    let databases = databases
        .into_inner()
        .expect("no test panicked holding the lock");
    assert_eq!(
        databases.len(),
        20,
        "run_all should open one store per check"
    );
    for db in databases {
        db.drop_database().await;
    }
}

/// Three writing stores, four tasks each, append to private streams and to streams
/// all three share (so their transactions contend on the same rows), while a fourth
/// store that never writes tails the log through `watch_head` and `read_all` alone. The
/// tail must see every committed event exactly once, in increasing position order, and
/// each stream's events in version order.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_tail_in_another_process_sees_every_event_of_interleaved_writers_exactly_once() {
    const STORES: usize = 3;
    const TASKS_PER_STORE: usize = 4;
    const APPENDS_PER_TASK: usize = 25;
    const EVENTS_PER_APPEND: usize = 2;
    const SHARED_STREAMS: usize = 3;
    const TOTAL: usize = STORES * TASKS_PER_STORE * APPENDS_PER_TASK * EVENTS_PER_APPEND;

    let db = TestDatabase::create().await;
    let mut writers = Vec::new();
    for _ in 0..STORES {
        writers.push(Arc::new(db.store().await));
    }
    let reader = db.store().await;
    let tenant = Uuid::now_v7();

    let tail = tokio::spawn(async move {
        let deadline = tokio::time::Instant::now() + contract::WAIT;
        let mut head = reader.watch_head();
        let mut after: Position = 0;
        let mut seen: Vec<RecordedEvent> = Vec::with_capacity(TOTAL);
        while seen.len() < TOTAL {
            // Marked before reading, so a commit after this line wakes `changed`.
            head.borrow_and_update();
            let page = reader
                .read_all(after, 37)
                .await
                .expect("read_all succeeds while tailing");
            if page.is_empty() {
                match tokio::time::timeout_at(deadline, head.changed()).await {
                    Ok(Ok(())) => continue,
                    Ok(Err(_)) => panic!("the reading store closed while tailing"),
                    Err(_) => panic!(
                        "the tail saw {} of {TOTAL} events after position {after}: an event \
                         was skipped or its commit never announced",
                        seen.len()
                    ),
                }
            }
            for event in page {
                assert!(
                    event.global_position > after,
                    "the tail got position {} after {after}: out of order or repeated",
                    event.global_position
                );
                after = event.global_position;
                seen.push(event);
            }
        }
        let more = reader.read_all(after, 10).await.expect("read_all succeeds");
        (seen, more)
    });

    let start = Arc::new(Barrier::new(STORES * TASKS_PER_STORE));
    let mut tasks = Vec::new();
    for (s, store) in writers.iter().enumerate() {
        for t in 0..TASKS_PER_STORE {
            let store = Arc::clone(store);
            let start = Arc::clone(&start);
            tasks.push(tokio::spawn(async move {
                start.wait().await;
                let mut own_version = 0;
                let mut written = Vec::new();
                for i in 0..APPENDS_PER_TASK {
                    // Every other append goes to a stream all stores write to.
                    let (stream, expected) = if i % 2 == 0 {
                        (format!("own-{s}-{t}"), ExpectedVersion::Exact(own_version))
                    } else {
                        (
                            format!("shared-{}", (s + t + i) % SHARED_STREAMS),
                            ExpectedVersion::Any,
                        )
                    };
                    let attempt = request(tenant, &stream, expected, EVENTS_PER_APPEND);
                    written.extend(attempt.events.iter().map(|e| e.event_id));
                    let appended = store
                        .append(attempt)
                        .await
                        .unwrap_or_else(|e| panic!("store {s} task {t}: append failed: {e:?}"));
                    if i % 2 == 0 {
                        own_version = appended.version;
                    }
                }
                written
            }));
        }
    }
    let mut written = HashSet::new();
    for task in tasks {
        let ids = tokio::time::timeout(contract::WAIT, task)
            .await
            .expect("the writers finish in time")
            .expect("a writer task panicked");
        written.extend(ids);
    }
    let (seen, more) = tokio::time::timeout(contract::WAIT, tail)
        .await
        .expect("the tail finishes in time")
        .expect("the tail panicked");

    let seen_ids: HashSet<Uuid> = seen.iter().map(|e| e.event_id).collect();
    assert_eq!(seen_ids.len(), seen.len(), "the tail saw an event twice");
    assert_eq!(
        seen_ids, written,
        "the tail should see exactly the events written"
    );
    assert!(
        more.is_empty(),
        "nothing should follow the last written event"
    );
    let mut stream_versions: HashMap<&str, u64> = HashMap::new();
    for event in &seen {
        let last = stream_versions.entry(&event.stream_id).or_insert(0);
        assert_eq!(
            event.version,
            *last + 1,
            "{}: the log should carry each stream's versions in order",
            event.stream_id
        );
        *last = event.version;
    }
    drop(writers);
    db.drop_database().await;
}

/// Two stores on one database: an append through one wakes the other's `watch_head`,
/// which has no way to learn of it but the database's notification (or its fallback).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_append_in_one_process_wakes_watch_head_in_another() {
    let db = TestDatabase::create().await;
    let writer = db.store().await;
    let watcher = db.store().await;
    let mut head = watcher.watch_head();
    assert_eq!(*head.borrow_and_update(), 0);

    let appended = writer
        .append(request(Uuid::now_v7(), "s-1", ExpectedVersion::Exact(0), 3))
        .await
        .expect("the append succeeds");
    assert_eq!(
        wait_for_head(&mut head, appended.last_position, contract::WAIT).await,
        appended.last_position,
        "the other store's watch should reach the appended position"
    );

    let again = writer
        .append(request(Uuid::now_v7(), "s-2", ExpectedVersion::Exact(0), 1))
        .await
        .expect("the second append succeeds");
    assert_eq!(
        wait_for_head(&mut head, again.last_position, contract::WAIT).await,
        again.last_position,
        "the watch should follow every commit, not only the first"
    );
    drop((writer, watcher));
    db.drop_database().await;
}

/// Starts a transaction on `conn` that writes one event, the first of a new stream,
/// the way the store's append protocol does (its position reserved first), and leaves
/// it open: another process's append in flight. Returns it and the event's position.
async fn begin_one_event_by_hand<'c>(
    conn: &'c mut PgConnection,
    tenant: Uuid,
    stream: &str,
) -> (Transaction<'c, Postgres>, i64) {
    let mut tx = conn.begin().await.expect("a transaction starts");
    let position: i64 = sqlx::query_scalar("SELECT tidemark_reserve_positions(ARRAY[$1], 1)")
        .bind(stream)
        .fetch_one(&mut *tx)
        .await
        .expect("positions can be reserved");
    sqlx::query("SELECT set_config('app.tenant', $1, true)")
        .bind(tenant.to_string())
        .execute(&mut *tx)
        .await
        .expect("the tenant is set");
    sqlx::query("INSERT INTO streams (stream_id, tenant_id, version) VALUES ($1, $2, 1)")
        .bind(stream)
        .bind(tenant)
        .execute(&mut *tx)
        .await
        .expect("the stream is created");
    sqlx::query(
        "INSERT INTO events (global_position, event_id, tenant_id, stream_id, version, \
         event_type, schema_version, occurred_at, correlation_id, actor, data) \
         VALUES ($1, $2, $3, $4, 1, 'test.by_hand', 1, now(), $2, 'test', '{}')",
    )
    .bind(position)
    .bind(Uuid::now_v7())
    .bind(tenant)
    .bind(stream)
    .execute(&mut *tx)
    .await
    .expect("the event is inserted");
    (tx, position)
}

/// A store that re-reads the head on its own only once an hour, so that within a test
/// its watch moves only on what notifications tell it.
async fn store_without_periodic_reads(db: &TestDatabase) -> PostgresStore {
    PostgresStore::open(
        db.store_options()
            .head_refresh_interval(Duration::from_secs(3600)),
    )
    .await
    .expect("the store opens")
}

/// An append is announced once, after its commit, with the head the writer read then:
/// the notification no longer comes from inside the batch with its last position.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_append_announces_the_head_once_after_its_commit() {
    let db = TestDatabase::create().await;
    let store = db.store().await;
    let mut listener = PgListener::connect_with(
        &PgPoolOptions::new()
            .max_connections(1)
            .connect_with(db.app_options())
            .await
            .expect("the runtime role connects"),
    )
    .await
    .expect("a listener connects");
    listener
        .listen(NOTIFY_CHANNEL)
        .await
        .expect("the listener listens");

    let appended = store
        .append(request(Uuid::now_v7(), "s-1", ExpectedVersion::Exact(0), 3))
        .await
        .expect("the append succeeds");
    let announced = tokio::time::timeout(contract::WAIT, listener.recv())
        .await
        .expect("the append is announced")
        .expect("the notification arrives");
    assert_eq!(
        announced.payload(),
        format!("head:{}", appended.last_position),
        "the announcement carries the head read after the commit"
    );
    let another = tokio::time::timeout(Duration::from_millis(300), listener.recv()).await;
    assert!(
        another.is_err(),
        "one append is announced once, not also from inside its batch: {another:?}"
    );
    drop((store, listener));
    db.drop_database().await;
}

/// A store takes an announced head as it is, without reading the head itself: the
/// announcement below names a position the log does not have, and the watch shows it
/// (the watch is only a wake-up; `head` and `read_all` still apply the horizon).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_announced_head_moves_the_watch_without_a_read() {
    let db = TestDatabase::create().await;
    let store = store_without_periodic_reads(&db).await;
    let mut head = store.watch_head();
    assert_eq!(*head.borrow_and_update(), 0);

    let mut other = db
        .app_options()
        .connect()
        .await
        .expect("the runtime role connects");
    sqlx::query("SELECT pg_notify($1, 'head:7')")
        .bind(NOTIFY_CHANNEL)
        .execute(&mut other)
        .await
        .expect("the notification is sent");
    assert_eq!(
        wait_for_head(&mut head, 7, contract::WAIT).await,
        7,
        "the watch moves to the announced head"
    );
    assert_eq!(
        store.head().await.expect("head is readable"),
        0,
        "head() reads the log, not the announcement"
    );
    other.close().await.ok();
    drop(store);
    db.drop_database().await;
}

/// A notification without a head — what a writer of the release before announcements
/// sends from inside its batch — makes the store read the head itself, and publish
/// what it read rather than the payload.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_notification_without_a_head_makes_the_store_read_it() {
    let db = TestDatabase::create().await;
    let store = store_without_periodic_reads(&db).await;
    let mut head = store.watch_head();
    let tenant = Uuid::now_v7();

    let mut old = db
        .app_options()
        .connect()
        .await
        .expect("the runtime role connects");
    let (mut tx, position) = begin_one_event_by_hand(&mut old, tenant, "old").await;
    sqlx::query("SELECT pg_notify($1, '999')")
        .bind(NOTIFY_CHANNEL)
        .execute(&mut *tx)
        .await
        .expect("the notification is queued");
    tx.commit().await.expect("the transaction commits");

    let position = Position::try_from(position).expect("positions are positive");
    assert_eq!(
        wait_for_head(&mut head, position, contract::WAIT).await,
        position,
        "the notification makes the store read the head"
    );
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(
        *head.borrow(),
        position,
        "the store publishes the head it read, not the notification's payload"
    );
    old.close().await.ok();
    drop(store);
    db.drop_database().await;
}

/// A transaction that holds a lower position and commits after a higher one holds the
/// head and `read_all` back until it commits; then both appear, in position order.
/// The "other process" here is a raw connection following the store's write protocol.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_open_transaction_with_a_lower_position_holds_back_the_head_until_it_commits() {
    let db = TestDatabase::create().await;
    let store = db.store().await;
    let tenant = Uuid::now_v7();
    let mut head = store.watch_head();

    let mut slow = db
        .app_options()
        .connect()
        .await
        .expect("the runtime role connects");
    let (tx, low) = begin_one_event_by_hand(&mut slow, tenant, "slow").await;

    let fast = store
        .append(request(tenant, "fast", ExpectedVersion::Exact(0), 1))
        .await
        .expect("the fast append commits while the slow one is open");
    assert!(
        fast.first_position > low as Position,
        "the later reservation gets the higher position"
    );
    assert_eq!(
        store.head().await.expect("head is readable"),
        0,
        "the head must not pass the open transaction's position"
    );
    assert!(
        store
            .read_all(0, 10)
            .await
            .expect("read_all works")
            .is_empty(),
        "read_all must not return the fast event while a lower position is in flight"
    );

    tx.commit().await.expect("the slow transaction commits");
    assert_eq!(
        wait_for_head(&mut head, fast.last_position, contract::WAIT).await,
        fast.last_position,
        "once the slow transaction ends the head moves past both"
    );
    let positions: Vec<Position> = store
        .read_all(0, 10)
        .await
        .expect("read_all works")
        .iter()
        .map(|e| e.global_position)
        .collect();
    assert_eq!(positions, vec![low as Position, fast.last_position]);
    slow.close().await.ok();
    drop(store);
    db.drop_database().await;
}

/// The horizon is per database: a long transaction elsewhere on the server (another
/// service's database, or another test's) must not stall this log's readers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transaction_in_another_database_does_not_hold_back_the_head() {
    let db = TestDatabase::create().await;
    let store = db.store().await;
    let mut elsewhere = eventlog::postgres::testing::server_options()
        .connect()
        .await
        .expect("the server's own database is reachable");
    let mut tx = elsewhere.begin().await.expect("a transaction starts");
    sqlx::query("SELECT pg_current_xact_id()")
        .execute(&mut *tx)
        .await
        .expect("it takes a transaction id, as a writer would");

    let appended = store
        .append(request(Uuid::now_v7(), "s", ExpectedVersion::Exact(0), 2))
        .await
        .expect("the append succeeds");
    assert_eq!(
        store.head().await.expect("head is readable"),
        appended.last_position,
        "an open transaction in another database must not hide this commit"
    );
    tx.rollback().await.expect("the other transaction ends");
    elsewhere.close().await.ok();
    drop(store);
    db.drop_database().await;
}

/// The horizon waits for log writers only (migration 0011): a transaction of the same
/// database that has an id and writes other tables — a projector's batch, a
/// checkpoint, a rebuild — must not hide a later commit from `head`, `read_all` or the
/// announced head, however long it stays open.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transaction_that_writes_other_tables_does_not_hold_back_the_head() {
    let db = TestDatabase::create().await;
    let store = db.store().await;
    let mut head = store.watch_head();
    let mut other = db
        .owner_options()
        .connect()
        .await
        .expect("the owner connects");
    sqlx::query("CREATE TABLE read_model_rows (id bigint PRIMARY KEY)")
        .execute(&mut other)
        .await
        .expect("a table besides the log's");
    let mut tx = other.begin().await.expect("a transaction starts");
    sqlx::query("INSERT INTO read_model_rows VALUES (1)")
        .execute(&mut *tx)
        .await
        .expect("it writes, so it has a transaction id older than the append's");

    let appended = store
        .append(request(Uuid::now_v7(), "s", ExpectedVersion::Exact(0), 2))
        .await
        .expect("the append succeeds");
    assert_eq!(
        store.head().await.expect("head is readable"),
        appended.last_position,
        "a transaction that holds no position must not hide this commit"
    );
    assert_eq!(
        store.read_all(0, 10).await.expect("read_all works").len(),
        2,
        "read_all returns the committed events while the other transaction is open"
    );
    assert_eq!(
        wait_for_head(&mut head, appended.last_position, contract::WAIT).await,
        appended.last_position,
        "the writer announces a head that includes its commit"
    );
    tx.rollback().await.expect("the other transaction ends");
    other.close().await.ok();
    drop(store);
    db.drop_database().await;
}

/// A reservation must name a stream: its stream locks are what mark the transaction
/// as a log writer for the horizon, so one without them is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reservation_that_names_no_stream_is_refused() {
    let db = TestDatabase::create().await;
    let _store = db.store().await;
    let mut conn = db
        .app_options()
        .connect()
        .await
        .expect("the runtime role connects");
    for streams in ["{}", "{NULL}"] {
        let refused = sqlx::query("SELECT tidemark_reserve_positions($1::text[], 1)")
            .bind(streams)
            .execute(&mut conn)
            .await
            .expect_err("a reservation of no stream is refused");
        assert!(
            refused.to_string().contains("names at least one stream"),
            "{streams}: {refused}"
        );
    }
    let position: i64 = sqlx::query_scalar("SELECT tidemark_reserve_positions(ARRAY['s'], 1)")
        .fetch_one(&mut conn)
        .await
        .expect("a reservation of one stream goes through");
    assert_eq!(position, 1, "the refused ones took no position");
    conn.close().await.ok();
    db.drop_database().await;
}

/// Sixteen tasks spread over four stores race on one stream with `Exact` versions:
/// every version is won exactly once, because the check locks the stream's row in
/// PostgreSQL, not only in one process's writer.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn expected_versions_hold_across_processes() {
    const STORES: usize = 4;
    const TASKS_PER_STORE: usize = 4;
    const ATTEMPTS: usize = 8;
    let db = TestDatabase::create().await;
    let mut stores = Vec::new();
    for _ in 0..STORES {
        stores.push(Arc::new(db.store().await));
    }
    let tenant = Uuid::now_v7();
    let start = Arc::new(Barrier::new(STORES * TASKS_PER_STORE));
    let mut tasks = Vec::new();
    for store in &stores {
        for _ in 0..TASKS_PER_STORE {
            let store = Arc::clone(store);
            let start = Arc::clone(&start);
            tasks.push(tokio::spawn(async move {
                start.wait().await;
                let mut wins = Vec::new();
                let mut conflicts = 0;
                for _ in 0..ATTEMPTS {
                    let current = store
                        .read_stream(tenant, "hot", 0)
                        .await
                        .expect("the hot stream is readable")
                        .last()
                        .map_or(0, |e| e.version);
                    let attempt = request(tenant, "hot", ExpectedVersion::Exact(current), 1);
                    let id = attempt.events[0].event_id;
                    match store.append(attempt).await {
                        Ok(appended) => {
                            assert_eq!(appended.version, current + 1);
                            wins.push((appended.version, id));
                        }
                        Err(StoreError::VersionConflict { actual, .. }) => {
                            assert!(actual > current, "a conflict names a later version");
                            conflicts += 1;
                        }
                        Err(other) => panic!("unexpected error {other:?}"),
                    }
                }
                (wins, conflicts)
            }));
        }
    }
    let mut winners = BTreeMap::new();
    let mut conflicts = 0;
    for task in tasks {
        let (wins, lost) = tokio::time::timeout(contract::WAIT, task)
            .await
            .expect("the racers finish in time")
            .expect("a racer panicked");
        for (version, id) in wins {
            assert!(
                winners.insert(version, id).is_none(),
                "version {version} won twice"
            );
        }
        conflicts += lost;
    }
    let last = winners.len() as u64;
    assert_eq!(
        winners.keys().copied().collect::<Vec<_>>(),
        (1..=last).collect::<Vec<_>>()
    );
    assert_eq!(
        winners.len() + conflicts,
        STORES * TASKS_PER_STORE * ATTEMPTS
    );
    let stored = stores[0]
        .read_stream(tenant, "hot", 0)
        .await
        .expect("the hot stream is readable");
    for event in &stored {
        assert_eq!(Some(&event.event_id), winners.get(&event.version));
    }
    assert_eq!(stored.len() as u64, last);
    drop(stores);
    db.drop_database().await;
}

/// Concurrent appends through one store share transactions (group commit): fewer
/// transactions than appends, each append still with its own answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_appends_in_one_process_share_transactions() {
    const APPENDS: usize = 64;
    let db = TestDatabase::create().await;
    let store = Arc::new(
        PostgresStore::open(db.store_options().writers(1))
            .await
            .expect("the store opens"),
    );
    let tenant = Uuid::now_v7();
    let start = Arc::new(Barrier::new(APPENDS));
    let tasks: Vec<_> = (0..APPENDS)
        .map(|i| {
            let store = Arc::clone(&store);
            let start = Arc::clone(&start);
            tokio::spawn(async move {
                start.wait().await;
                store
                    .append(request(
                        tenant,
                        &format!("g-{i}"),
                        ExpectedVersion::Exact(0),
                        1,
                    ))
                    .await
                    .expect("each append succeeds")
            })
        })
        .collect();
    let mut answers: Vec<Appended> = Vec::new();
    for task in tasks {
        answers.push(
            tokio::time::timeout(contract::WAIT, task)
                .await
                .expect("the appends finish in time")
                .expect("an append task panicked"),
        );
    }
    let positions: HashSet<Position> = answers.iter().map(|a| a.last_position).collect();
    assert_eq!(positions.len(), APPENDS, "each append got its own position");

    let owner = PgPoolOptions::new()
        .max_connections(1)
        .connect_with(db.owner_options())
        .await
        .expect("the owner connects");
    let transactions: i64 =
        sqlx::query_scalar("SELECT count(DISTINCT transaction_id::text) FROM events")
            .fetch_one(&owner)
            .await
            .expect("the owner can count transactions");
    assert!(
        transactions < APPENDS as i64,
        "{APPENDS} concurrent appends should share transactions, took {transactions}"
    );
    owner.close().await;
    drop(store);
    db.drop_database().await;
}

/// A writer keeps its connection from one batch to the next. When the server ends that
/// connection, at most the next batch fails, with an error and nothing stored, and the
/// one after it gets a fresh connection; a connection that sat unused for
/// `HELD_CONNECTION_CHECK_AFTER` is checked before use, so after an idle spell the end
/// of the connection costs no batch at all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_writer_whose_connection_the_server_ended_carries_on_with_a_fresh_one() {
    let db = TestDatabase::create().await;
    let store = PostgresStore::open(db.store_options().writers(1))
        .await
        .expect("the store opens");
    let tenant = Uuid::now_v7();
    let mut admin = db
        .owner_options()
        .connect()
        .await
        .expect("the test server's role connects");
    store
        .append(request(tenant, "held-1", ExpectedVersion::Exact(0), 1))
        .await
        .expect("the first append succeeds");
    end_the_writers_connection(&mut admin).await;

    // Right away: the kept connection is used unchecked, so this batch may fail; if it
    // does, it stored nothing.
    let second = store
        .append(request(tenant, "held-2", ExpectedVersion::Exact(0), 1))
        .await;
    let stored = store
        .read_stream(tenant, "held-2", 0)
        .await
        .expect("the stream reads");
    match &second {
        Ok(appended) => assert_eq!(stored.len(), 1, "{appended:?} was answered, and stored"),
        Err(error) => assert!(
            stored.is_empty(),
            "{error} was answered, yet {stored:?} is stored"
        ),
    }
    store
        .append(request(tenant, "held-3", ExpectedVersion::Exact(0), 1))
        .await
        .expect("the batch after a failed one runs on a fresh connection");

    // After an idle spell the kept connection is checked first: no batch fails.
    end_the_writers_connection(&mut admin).await;
    tokio::time::sleep(
        eventlog::postgres::HELD_CONNECTION_CHECK_AFTER + Duration::from_millis(100),
    )
    .await;
    store
        .append(request(tenant, "held-4", ExpectedVersion::Exact(0), 1))
        .await
        .expect("an append after an idle spell finds the ended connection and opens another");

    let mut streams = Vec::new();
    for stream in ["held-1", "held-3", "held-4"] {
        let events = store.read_stream(tenant, stream, 0).await.expect("reads");
        streams.push((stream, events.len()));
    }
    assert_eq!(streams, [("held-1", 1), ("held-3", 1), ("held-4", 1)]);
    admin.close().await.ok();
    drop(store);
    db.drop_database().await;
}

/// Ends the connection of the store's one writer: the one whose last statement was the
/// announcement after a commit. The test role is the server's, which sees every
/// session's query.
async fn end_the_writers_connection(admin: &mut PgConnection) {
    let ended: i64 = sqlx::query_scalar(
        "WITH writer AS MATERIALIZED ( \
             SELECT pid FROM pg_stat_activity \
              WHERE datname = current_database() AND pid <> pg_backend_pid() \
                AND query LIKE 'SELECT h FROM tidemark_log_head() AS h, pg_notify%') \
         SELECT count(*) FROM writer WHERE pg_terminate_backend(pid, 5000)",
    )
    .fetch_one(admin)
    .await
    .expect("ending the writer's connection");
    assert_eq!(ended, 1, "the writer has one connection, and it was ended");
}

/// `connect` (one role for migrations and runtime) works; `connect_with` (migrate as
/// the owner, run as the runtime role) on the same database finds it migrated, sees
/// the first store's events and appends as the runtime role; and a store that runs
/// no migrations at all (`PostgresOptions::new`) serves too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_and_connect_with_share_one_migrated_database() {
    let db = TestDatabase::create().await;
    let owner_url = db.owner_url();
    let app_url = db.app_url();
    let first = PostgresStore::connect(&owner_url)
        .await
        .expect("connect works");
    let appended = first
        .append(request(Uuid::now_v7(), "s", ExpectedVersion::Exact(0), 1))
        .await
        .expect("the append succeeds");

    let second = PostgresStore::connect_with(&owner_url, &app_url)
        .await
        .expect("connect_with opens on the migrated database");
    assert_eq!(
        second.head().await.expect("head is readable"),
        appended.last_position
    );
    assert_eq!(*second.watch_head().borrow(), appended.last_position);
    let again = second
        .append(request(Uuid::now_v7(), "t", ExpectedVersion::Exact(0), 1))
        .await
        .expect("the runtime role appends");

    let third = PostgresStore::open(PostgresOptions::new(db.app_options()))
        .await
        .expect("a store without migrations opens");
    let all = third.read_all(0, 10).await.expect("read_all works");
    assert_eq!(
        all.iter().map(|e| e.global_position).collect::<Vec<_>>(),
        vec![appended.last_position, again.last_position]
    );
    drop((first, second, third));
    db.drop_database().await;
}

/// Dropping every handle ends the writers and the head follower, closing the watch.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_watch_closes_when_the_last_handle_is_dropped() {
    let db = TestDatabase::create().await;
    let store = db.store().await;
    let clone = store.clone();
    let mut watch = store.watch_head();
    let appended = clone
        .append(request(Uuid::now_v7(), "s", ExpectedVersion::Any, 1))
        .await
        .expect("an append through a clone succeeds");
    assert_eq!(*watch.borrow_and_update(), appended.last_position);
    drop(store);
    drop(clone);
    let closed = tokio::time::timeout(contract::WAIT, watch.changed()).await;
    assert!(
        matches!(closed, Ok(Err(_))),
        "dropping every handle should end the background tasks and close the watch"
    );
    db.drop_database().await;
}

fn request(tenant: Uuid, stream: &str, expected: ExpectedVersion, count: usize) -> AppendRequest {
    AppendRequest {
        tenant_id: tenant,
        stream_id: stream.to_owned(),
        expected,
        metadata: Metadata {
            correlation_id: Uuid::now_v7(),
            causation_id: None,
            actor: "test".to_owned(),
        },
        events: (0..count)
            .map(|n| NewEvent {
                event_id: Uuid::now_v7(),
                event_type: "test.happened".to_owned(),
                schema_version: 1,
                occurred_at: chrono::Utc::now(),
                data: serde_json::json!({ "stream": stream, "n": n }),
            })
            .collect(),
        idempotency: None,
    }
}

/// Inside one batch, `tidemark_append_batch` refuses a chained append that follows a
/// refused append of its chain (migration 0008), even where the stream's version
/// matches, and leaves appends outside that chain alone: the in-batch half of the
/// chained-append rule, which the writer cannot check itself because it learns a
/// batch's outcomes only when the whole call returns. Called directly, as the runtime
/// role, so the requests are in one batch for certain; the previous release's
/// sixteen-argument form is called too, and answers as it did.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chained_append_after_a_refused_one_of_its_chain_in_the_same_batch_is_refused() {
    let db = TestDatabase::create().await;
    let store = db.store().await;
    let tenant = Uuid::now_v7();
    store
        .append(request(tenant, "s", ExpectedVersion::Exact(0), 1))
        .await
        .expect("the first append succeeds");

    // s is at 1. Chain 7: Exact(0) conflicts, so its Exact(1) must not run although it
    // would match. Outside the chain: a racer's Exact(1) on s lands; a second racer's
    // Exact(1) then conflicts as usual; t, in chain 8, is unrelated.
    let streams = ["s", "s", "s", "s", "t"];
    let expected: [Option<i64>; 5] = [Some(0), Some(1), Some(1), Some(1), Some(0)];
    let chains: [Option<i64>; 5] = [Some(7), Some(7), None, None, Some(8)];
    let mut app = sqlx::postgres::PgConnection::connect_with(&db.app_options())
        .await
        .expect("the runtime role connects");
    let rows = call_append_batch(&mut app, tenant, &streams, &expected, Some(&chains)).await;
    assert_eq!(
        rows,
        vec![
            ("conflict".to_owned(), Some(1)),
            ("after_failed".to_owned(), None),
            ("appended".to_owned(), Some(2)),
            ("conflict".to_owned(), Some(2)),
            ("appended".to_owned(), Some(1)),
        ]
    );
    let s = store.read_stream(tenant, "s", 0).await.expect("s reads");
    assert_eq!(s.len(), 2, "s holds its first event and the racer's");

    // The sixteen-argument form, which the previous release calls, knows no chains:
    // after a conflict the next request on s runs and lands, as it always did.
    let rows = call_append_batch(&mut app, tenant, &["s", "s"], &[Some(1), Some(2)], None).await;
    assert_eq!(
        rows,
        vec![
            ("conflict".to_owned(), Some(2)),
            ("appended".to_owned(), Some(3)),
        ]
    );
    app.close().await.expect("closes");
    drop(store);
    db.drop_database().await;
}

/// A batch whose requests succeed, are refused and fail in turn (migration 0013: the
/// requests run in segments, and a refused or failing one alone): every request is
/// answered as it would be alone, in order, the appended ones take consecutive
/// positions, the refused ones store nothing, and a request after a failure that undid
/// its segment lands all the same. Called directly as the runtime role, so the
/// requests are in one batch for certain.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_answers_each_request_as_alone_around_refusals_and_failures() {
    let db = TestDatabase::create().await;
    let store = db.store().await;
    let tenant = Uuid::now_v7();
    let other = Uuid::now_v7();
    store
        .append(request(tenant, "a", ExpectedVersion::Exact(0), 1))
        .await
        .expect("a is made");
    store
        .append(request(other, "theirs", ExpectedVersion::Exact(0), 1))
        .await
        .expect("the other tenant's stream is made");
    let mut app = sqlx::postgres::PgConnection::connect_with(&db.app_options())
        .await
        .expect("the runtime role connects");
    let taken = BatchRequest::new(tenant, "k0", Some(0), 1).key("taken");
    let rows = call_batch(&mut app, &[taken]).await;
    assert_eq!(rows[0].0, "appended", "the key is claimed");
    let before = store.head().await.expect("the head reads");

    let batch = [
        BatchRequest::new(tenant, "n1", Some(0), 1),
        BatchRequest::new(tenant, "a", Some(1), 1),
        // Refused before it writes: a conflict, then a new segment.
        BatchRequest::new(tenant, "a", Some(1), 1),
        BatchRequest::new(tenant, "n2", Some(0), 1).key("fresh"),
        // Another tenant's stream, under this tenant: refused before it writes.
        BatchRequest::new(tenant, "theirs", Some(0), 1),
        // A new stream under "any version": runs alone, and lands.
        BatchRequest::new(tenant, "n3", None, 1),
        BatchRequest::new(tenant, "n4", Some(0), 2),
        // Refused after it wrote (its key is taken): its segment is undone, and the
        // requests before it in that segment run again.
        BatchRequest::new(tenant, "n5", Some(0), 1).key("taken"),
        BatchRequest::new(tenant, "a", Some(2), 3),
        BatchRequest::new(tenant, "n4", Some(2), 1),
        BatchRequest::new(tenant, "n4", None, 1),
    ];
    let rows = call_batch(&mut app, &batch).await;
    let outcomes: Vec<(&str, Option<i64>)> = rows.iter().map(|r| (r.0.as_str(), r.1)).collect();
    assert_eq!(
        outcomes,
        vec![
            ("appended", Some(1)),
            ("appended", Some(2)),
            ("conflict", Some(2)),
            ("appended", Some(1)),
            ("wrong_tenant", None),
            ("appended", Some(1)),
            ("appended", Some(2)),
            ("key_taken", None),
            ("appended", Some(5)),
            ("appended", Some(3)),
            ("appended", Some(4)),
        ]
    );
    // The appended requests' positions follow each other from the head, in order.
    let mut next = i64::try_from(before).expect("positions fit i64") + 1;
    for ((request, row), (outcome, ..)) in batch.iter().zip(&rows).zip(&outcomes) {
        if *outcome == "appended" {
            let count = i64::from(request.events);
            assert_eq!((row.2, row.3), (Some(next), Some(next + count - 1)));
            next += count;
        } else {
            assert_eq!((row.2, row.3), (None, None), "a refusal has no positions");
        }
    }
    let log = store.read_all(before, 100).await.expect("the log reads");
    let positions: Vec<i64> = log
        .iter()
        .map(|e| i64::try_from(e.global_position).expect("fits"))
        .collect();
    let first = i64::try_from(before).expect("fits") + 1;
    assert_eq!(
        positions,
        (first..next).collect::<Vec<_>>(),
        "no gap, no extra event"
    );
    for (stream, versions) in [
        ("a", vec![1, 2, 3, 4, 5]),
        ("n1", vec![1]),
        ("n2", vec![1]),
        ("n3", vec![1]),
        ("n4", vec![1, 2, 3, 4]),
        ("n5", vec![]),
    ] {
        let events = store
            .read_stream(tenant, stream, 0)
            .await
            .expect("the stream reads");
        let stored: Vec<u64> = events.iter().map(|e| e.version).collect();
        assert_eq!(stored, versions, "stream {stream}");
    }
    let key: (String, serde_json::Value) = {
        let mut tx = app.begin().await.expect("begins");
        sqlx::query("SELECT set_config('app.tenant', $1, true)")
            .bind(tenant.to_string())
            .execute(&mut *tx)
            .await
            .expect("scopes");
        let key =
            sqlx::query_as("SELECT request_hash, body FROM idempotency_keys WHERE key = 'fresh'")
                .fetch_one(&mut *tx)
                .await
                .expect("the fresh key is stored");
        tx.rollback().await.expect("rolls back");
        key
    };
    assert_eq!(key.0, "hash-fresh");
    assert_eq!(
        key.1["position"],
        serde_json::json!(rows[3].3.expect("n2 landed")),
        "the stored answer names where its event landed"
    );
    app.close().await.expect("closes");
    drop(store);
    db.drop_database().await;
}

/// One request of [`call_batch`].
struct BatchRequest {
    tenant: Uuid,
    stream: &'static str,
    expected: Option<i64>,
    events: i32,
    key: Option<&'static str>,
}

impl BatchRequest {
    fn new(tenant: Uuid, stream: &'static str, expected: Option<i64>, events: i32) -> Self {
        Self {
            tenant,
            stream,
            expected,
            events,
            key: None,
        }
    }

    fn key(mut self, key: &'static str) -> Self {
        self.key = Some(key);
        self
    }
}

/// Calls `tidemark_append_batch` with `requests`, answering each one's outcome, stream
/// version and first and last positions.
async fn call_batch(
    conn: &mut sqlx::postgres::PgConnection,
    requests: &[BatchRequest],
) -> Vec<(String, Option<i64>, Option<i64>, Option<i64>)> {
    let n = requests.len();
    let events: usize = requests
        .iter()
        .map(|r| usize::try_from(r.events).expect("a count"))
        .sum();
    sqlx::query_as(
        "SELECT outcome, stream_version, first_position, last_position FROM tidemark_append_batch( \
           $1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17)",
    )
    .bind(requests.iter().map(|r| r.tenant).collect::<Vec<_>>())
    .bind(requests.iter().map(|r| r.stream).collect::<Vec<_>>())
    .bind(requests.iter().map(|r| r.expected).collect::<Vec<_>>())
    .bind((0..n).map(|_| Uuid::now_v7()).collect::<Vec<_>>())
    .bind(vec![None::<Uuid>; n])
    .bind(vec!["contract"; n])
    .bind(requests.iter().map(|r| r.events).collect::<Vec<_>>())
    .bind((0..events).map(|_| Uuid::now_v7()).collect::<Vec<_>>())
    .bind(vec!["contract.happened"; events])
    .bind(vec![1i64; events])
    .bind(vec![chrono::Utc::now(); events])
    .bind(vec![sqlx::types::Json(serde_json::json!({})); events])
    .bind(requests.iter().map(|r| r.key).collect::<Vec<_>>())
    .bind(
        requests
            .iter()
            .map(|r| r.key.map(|k| format!("hash-{k}")))
            .collect::<Vec<_>>(),
    )
    .bind(
        requests
            .iter()
            .map(|r| r.key.map(|_| 201))
            .collect::<Vec<_>>(),
    )
    .bind(
        requests
            .iter()
            .map(|r| {
                r.key
                    .map(|_| sqlx::types::Json(serde_json::json!({"ok": true})))
            })
            .collect::<Vec<_>>(),
    )
    .bind(vec![None::<i64>; n])
    .fetch_all(conn)
    .await
    .expect("the batch runs")
}

/// Calls `tidemark_append_batch` with one one-event request per stream, in the
/// seventeen-argument form with `chains`, or without them in the sixteen-argument one.
async fn call_append_batch(
    conn: &mut sqlx::postgres::PgConnection,
    tenant: Uuid,
    streams: &[&str],
    expected: &[Option<i64>],
    chains: Option<&[Option<i64>]>,
) -> Vec<(String, Option<i64>)> {
    let n = streams.len();
    let sql = format!(
        "SELECT outcome, stream_version FROM tidemark_append_batch( \
           $1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16{})",
        if chains.is_some() { ", $17" } else { "" }
    );
    let query = sqlx::query_as(&sql)
        .bind(vec![tenant; n])
        .bind(streams.to_vec())
        .bind(expected.to_vec())
        .bind((0..n).map(|_| Uuid::now_v7()).collect::<Vec<_>>())
        .bind(vec![None::<Uuid>; n])
        .bind(vec!["contract"; n])
        .bind(vec![1i32; n])
        .bind((0..n).map(|_| Uuid::now_v7()).collect::<Vec<_>>())
        .bind(vec!["contract.happened"; n])
        .bind(vec![1i64; n])
        .bind(vec![chrono::Utc::now(); n])
        .bind(vec![sqlx::types::Json(serde_json::json!({})); n])
        .bind(vec![None::<String>; n])
        .bind(vec![None::<String>; n])
        .bind(vec![None::<i32>; n])
        .bind(vec![None::<sqlx::types::Json<serde_json::Value>>; n]);
    let query = match chains {
        Some(chains) => query.bind(chains.to_vec()),
        None => query,
    };
    query.fetch_all(conn).await.expect("the batch runs")
}
