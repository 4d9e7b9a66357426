//! Runs the event store contract against the SQLite store.
//!
//! Each test opens a fresh store in its own temporary directory, so tests share
//! nothing and run in parallel; the checks themselves live in `eventlog::contract`
//! so the PostgreSQL store runs the very same ones. A few SQLite-specific promises
//! (reopening, the shape of the file) are checked here too.

use std::sync::atomic::{AtomicUsize, Ordering};

use eventlog::sqlite::SqliteStore;
use eventlog::{EventStore, ExpectedVersion, contract};
use tempfile::TempDir;

/// A fresh store in a fresh directory; the directory lives as long as the test holds it.
async fn fresh_store() -> (SqliteStore, TempDir) {
    let dir = tempfile::tempdir().expect("a temporary directory can be created");
    let store = SqliteStore::open(&dir.path().join("events.db"))
        .await
        .expect("a new store opens");
    (store, dir)
}

macro_rules! contract_tests {
    ($($check:ident),* $(,)?) => {$(
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $check() {
            let (store, _dir) = fresh_store().await;
            contract::$check(store).await;
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
    let dir = tempfile::tempdir().expect("a temporary directory can be created");
    let opened = AtomicUsize::new(0);
    contract::run_all(|| {
        let n = opened.fetch_add(1, Ordering::Relaxed);
        let path = dir.path().join(format!("events-{n}.db"));
        async move { SqliteStore::open(&path).await.expect("a new store opens") }
    })
    .await;
    assert_eq!(
        opened.load(Ordering::Relaxed),
        20,
        "run_all should open one store per check"
    );
}

#[tokio::test]
async fn the_file_is_in_wal_mode_so_readers_never_block_the_writer() {
    use sqlx::ConnectOptions;

    let (_store, dir) = fresh_store().await;
    let mut conn = sqlx::sqlite::SqliteConnectOptions::new()
        .filename(dir.path().join("events.db"))
        .read_only(true)
        .connect()
        .await
        .expect("the store's file opens read-only");
    let mode: String = sqlx::query_scalar("PRAGMA journal_mode")
        .fetch_one(&mut conn)
        .await
        .expect("the journal mode is readable");
    assert_eq!(mode, "wal");
}

#[tokio::test]
async fn a_reopened_store_keeps_its_events_head_and_versions() {
    let dir = tempfile::tempdir().expect("a temporary directory can be created");
    let path = dir.path().join("events.db");
    let tenant = uuid::Uuid::now_v7();
    let appended = {
        let store = SqliteStore::open(&path).await.expect("a new store opens");
        let appended = store
            .append(request(tenant, "kept", ExpectedVersion::Exact(0)))
            .await
            .expect("the first append succeeds");
        drop(store);
        appended
    };

    let store = SqliteStore::open(&path)
        .await
        .expect("an existing store reopens");
    assert_eq!(
        store.head().await.expect("head is readable"),
        appended.last_position
    );
    assert_eq!(*store.watch_head().borrow(), appended.last_position);
    let again = store
        .append(request(
            tenant,
            "kept",
            ExpectedVersion::Exact(appended.version),
        ))
        .await
        .expect("appending at the stored version succeeds after reopening");
    assert_eq!(again.first_position, appended.last_position + 1);
    assert!(
        again.version > appended.version,
        "the stream's version survives the reopen"
    );
}

#[tokio::test]
async fn clones_share_one_writer_and_the_watch_closes_when_the_last_is_dropped() {
    let (store, _dir) = fresh_store().await;
    let clone = store.clone();
    let mut watch = store.watch_head();
    let appended = clone
        .append(request(uuid::Uuid::now_v7(), "s", ExpectedVersion::Any))
        .await
        .expect("an append through a clone succeeds");
    assert_eq!(*watch.borrow_and_update(), appended.last_position);

    drop(store);
    drop(clone);
    let closed = tokio::time::timeout(contract::WAIT, watch.changed()).await;
    assert!(
        matches!(closed, Ok(Err(_))),
        "dropping every handle should end the writer and close the watch"
    );
}

fn request(tenant: uuid::Uuid, stream: &str, expected: ExpectedVersion) -> eventlog::AppendRequest {
    eventlog::AppendRequest {
        tenant_id: tenant,
        stream_id: stream.to_owned(),
        expected,
        metadata: eventlog::Metadata {
            correlation_id: uuid::Uuid::now_v7(),
            causation_id: None,
            actor: "test".to_owned(),
        },
        events: vec![eventlog::NewEvent {
            event_id: uuid::Uuid::now_v7(),
            event_type: "test.happened".to_owned(),
            schema_version: 1,
            occurred_at: chrono::Utc::now(),
            data: serde_json::json!({ "stream": stream }),
        }],
        idempotency: None,
    }
}
