//! The behaviour every [`EventStore`] must show, as a reusable test suite.
//!
//! The rest of Tidemark relies on the trait, not on SQLite or PostgreSQL, so the
//! promises the trait makes in prose are written down here once, as code, and every
//! implementation runs the same checks: the SQLite store in
//! `tests/sqlite_contract.rs`, the PostgreSQL store next to it. Each check is a
//! public async function that takes a fresh, empty store and panics with a message
//! saying which promise was broken; [`run_all`] runs them all with a store factory.
//!
//! This is test code that ships in the library so other test binaries can call it;
//! panicking (`expect`, `assert!`) is how it reports, as in any test. Every wait is
//! bounded by [`WAIT`]; nothing sleeps or polls.

use std::collections::{BTreeMap, HashSet};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::json;
use tokio::sync::Barrier;
use tokio::task::JoinHandle;
use uuid::Uuid;

use crate::{
    AppendChain, AppendRequest, Appended, ChainProgress, EventStore, ExpectedVersion,
    IdempotencyRecord, IdempotentResponse, Metadata, NewEvent, Position, RecordedEvent, Snapshot,
    StoreError, Version, wait_for_head,
};

/// The longest any single check waits for concurrent work before it fails.
pub const WAIT: Duration = Duration::from_secs(60);

/// Runs every check, each against a fresh store from `make`.
pub async fn run_all<F, Fut, S>(make: F)
where
    F: Fn() -> Fut,
    Fut: Future<Output = S>,
    S: EventStore,
{
    append_then_read_stream_returns_every_event_with_its_envelope(make().await).await;
    an_exact_version_mismatch_conflicts_and_stores_nothing(make().await).await;
    exact_zero_on_an_existing_stream_conflicts(make().await).await;
    any_version_appends_at_the_current_version(make().await).await;
    an_empty_append_is_refused(make().await).await;
    an_append_that_fails_midway_stores_none_of_its_events(make().await).await;
    a_stream_of_one_tenant_is_closed_to_another(make().await).await;
    last_tenant_position_is_the_tenants_own_latest_event_at_or_below(make().await).await;
    read_all_pages_through_the_log_by_position(make().await).await;
    concurrent_appenders_on_one_stream_win_each_version_exactly_once(make().await).await;
    a_tail_sees_every_committed_event_exactly_once_in_order(make().await).await;
    an_idempotency_key_is_stored_with_its_append_and_refused_after(make().await).await;
    head_and_watch_head_follow_commits(make().await).await;
    concurrent_appends_to_different_streams_all_commit_with_dense_positions(make().await).await;
    a_snapshot_is_loaded_back_and_never_replaced_by_an_older_one(make().await).await;
    a_snapshots_detail_is_read_only_on_request_and_only_with_the_version_it_was_saved_with(
        make().await,
    )
    .await;
    a_snapshot_of_a_stream_the_tenant_does_not_own_or_past_its_head_is_refused(make().await).await;
    dropping_snapshots_removes_every_tenants_and_leaves_the_log_alone(make().await).await;
    chained_appends_queued_before_any_commits_all_land_in_order(make().await).await;
    a_chained_append_after_a_refused_one_never_runs_even_where_its_version_matches(make().await)
        .await;
}

/// Appending then reading the stream gives back every event, versions `1..=n`, with
/// the full envelope; `after_version` skips the ones already seen.
pub async fn append_then_read_stream_returns_every_event_with_its_envelope<S: EventStore>(
    store: S,
) {
    let tenant = Uuid::now_v7();
    let metadata = Metadata {
        correlation_id: Uuid::now_v7(),
        causation_id: Some(Uuid::now_v7()),
        actor: "user:7f3a".to_owned(),
    };
    let events = vec![
        NewEvent {
            event_id: Uuid::now_v7(),
            event_type: "post.drafted".to_owned(),
            schema_version: 1,
            occurred_at: at_micros(1_741_964_966_123_456),
            data: json!({ "title": "Grüße aus Köln ✨", "tags": ["a", "b"], "draft": true }),
        },
        NewEvent {
            event_id: Uuid::now_v7(),
            event_type: "post.scheduled".to_owned(),
            schema_version: 3,
            occurred_at: at_micros(1_741_964_967_000_001),
            data: json!({ "at": "2025-03-15T09:00:00Z", "nested": { "list": [1, 2.5, null] } }),
        },
        NewEvent {
            event_id: Uuid::now_v7(),
            event_type: "post.cancelled".to_owned(),
            schema_version: 1,
            occurred_at: at_micros(1_741_964_968_999_999),
            data: json!({}),
        },
    ];
    let before = Utc::now();
    let appended = store
        .append(AppendRequest {
            tenant_id: tenant,
            stream_id: "post-1".to_owned(),
            expected: ExpectedVersion::Exact(0),
            metadata: metadata.clone(),
            events: events.clone(),
            idempotency: None,
        })
        .await
        .expect("appending three events to a new stream with Exact(0) should succeed");
    let after = Utc::now();
    assert_eq!(
        appended.version, 3,
        "the stream should be at version 3 after three events"
    );

    let read = store
        .read_stream(tenant, "post-1", 0)
        .await
        .expect("reading the stream should succeed");
    assert_eq!(read.len(), 3, "read_stream should return all three events");
    assert_eq!(read[0].global_position, appended.first_position);
    assert_eq!(read[2].global_position, appended.last_position);
    for (i, (got, sent)) in read.iter().zip(&events).enumerate() {
        let expected = RecordedEvent {
            global_position: got.global_position,
            event_id: sent.event_id,
            tenant_id: tenant,
            stream_id: "post-1".to_owned(),
            version: i as Version + 1,
            event_type: sent.event_type.clone(),
            schema_version: sent.schema_version,
            occurred_at: sent.occurred_at,
            recorded_at: got.recorded_at,
            correlation_id: metadata.correlation_id,
            causation_id: metadata.causation_id,
            actor: metadata.actor.clone(),
            data: sent.data.clone(),
        };
        assert_eq!(
            got, &expected,
            "event {i} should come back with the envelope it was appended with"
        );
        // A second of slack for a store that takes the time from its database server.
        let slack = chrono::Duration::seconds(1);
        assert!(
            got.recorded_at >= before - slack && got.recorded_at <= after + slack,
            "recorded_at {} should be the time of the append, between {before} and {after}",
            got.recorded_at
        );
    }
    assert!(
        read.windows(2)
            .all(|w| w[0].global_position < w[1].global_position),
        "positions within a stream should increase with the version"
    );

    let rest = store
        .read_stream(tenant, "post-1", 2)
        .await
        .expect("reading after version 2 should succeed");
    assert_eq!(
        versions(&rest),
        vec![3],
        "after_version 2 should skip the first two events"
    );
    let nothing = store
        .read_stream(tenant, "post-2", 0)
        .await
        .expect("reading a stream that does not exist should succeed");
    assert!(
        nothing.is_empty(),
        "a stream that does not exist should read as empty"
    );
}

/// `Exact(v)` against a stream at another version is refused with the real version,
/// and none of the refused events are stored.
pub async fn an_exact_version_mismatch_conflicts_and_stores_nothing<S: EventStore>(store: S) {
    let tenant = Uuid::now_v7();
    append_ok(&store, tenant, "budget-1", ExpectedVersion::Exact(0), 2).await;
    let head = store.head().await.expect("head should be readable");

    for stale in [1, 3, 0] {
        let error = store
            .append(request(
                tenant,
                "budget-1",
                ExpectedVersion::Exact(stale),
                1,
            ))
            .await
            .expect_err("appending with a wrong expected version should fail");
        assert_conflict(&error, "budget-1", stale, 2);
    }
    let error = store
        .append(request(tenant, "budget-2", ExpectedVersion::Exact(4), 1))
        .await
        .expect_err("Exact(4) on a stream that does not exist should fail");
    assert_conflict(&error, "budget-2", 4, 0);

    let read = store
        .read_stream(tenant, "budget-1", 0)
        .await
        .expect("reading the stream should succeed");
    assert_eq!(
        versions(&read),
        vec![1, 2],
        "refused appends should store nothing"
    );
    let missing = store
        .read_stream(tenant, "budget-2", 0)
        .await
        .expect("reading the stream should succeed");
    assert!(
        missing.is_empty(),
        "a refused first append should not create the stream"
    );
    assert_eq!(
        store.head().await.expect("head should be readable"),
        head,
        "refused appends should not move the head"
    );
}

/// `Exact(0)` means "the stream must not exist yet", so it conflicts once it does.
pub async fn exact_zero_on_an_existing_stream_conflicts<S: EventStore>(store: S) {
    let tenant = Uuid::now_v7();
    append_ok(&store, tenant, "content-1", ExpectedVersion::Exact(0), 1).await;
    let error = store
        .append(request(tenant, "content-1", ExpectedVersion::Exact(0), 1))
        .await
        .expect_err("a second Exact(0) on the same stream should fail");
    assert_conflict(&error, "content-1", 0, 1);
}

/// `Any` skips the check and appends at whatever version the stream is at.
pub async fn any_version_appends_at_the_current_version<S: EventStore>(store: S) {
    let tenant = Uuid::now_v7();
    let first = append_ok(&store, tenant, "usage-1", ExpectedVersion::Any, 2).await;
    assert_eq!(first.version, 2, "Any on a new stream should start it at 1");
    let second = append_ok(&store, tenant, "usage-1", ExpectedVersion::Any, 3).await;
    assert_eq!(
        second.version, 5,
        "Any on a stream at 2 should append versions 3..=5"
    );
    assert!(
        second.first_position > first.last_position,
        "a later append should get later positions"
    );
    let read = store
        .read_stream(tenant, "usage-1", 0)
        .await
        .expect("reading the stream should succeed");
    assert_eq!(versions(&read), vec![1, 2, 3, 4, 5]);
}

/// An append with no events is refused before it touches the stream or the key.
pub async fn an_empty_append_is_refused<S: EventStore>(store: S) {
    let tenant = Uuid::now_v7();
    let mut empty = request(tenant, "post-1", ExpectedVersion::Exact(0), 0);
    empty.idempotency = Some(idempotency("key-empty"));
    let error = store
        .append(empty)
        .await
        .expect_err("an append with no events should fail");
    assert!(
        matches!(error, StoreError::EmptyAppend),
        "an append with no events should be EmptyAppend, got {error:?}"
    );
    assert_eq!(
        store
            .idempotent_response(tenant, "key-empty")
            .await
            .expect("reading an idempotency key should succeed"),
        None,
        "a refused empty append should not take its idempotency key"
    );
    append_ok(&store, tenant, "post-1", ExpectedVersion::Exact(0), 1).await;
}

/// An append that fails after some of its rows were written (here: its second event
/// reuses a stored event id) leaves no trace — no event, no stream, no idempotency
/// key — and the store keeps working.
pub async fn an_append_that_fails_midway_stores_none_of_its_events<S: EventStore>(store: S) {
    let tenant = Uuid::now_v7();
    let existing = request(tenant, "first", ExpectedVersion::Exact(0), 1);
    let reused = existing.events[0].clone();
    append_with(&store, existing).await;
    let head = store.head().await.expect("head should be readable");

    let mut broken = request(tenant, "second", ExpectedVersion::Exact(0), 2);
    broken.events[1] = reused;
    broken.idempotency = Some(idempotency("create-second"));
    store
        .append(broken)
        .await
        .expect_err("an append reusing a stored event id should fail");

    assert!(
        store
            .read_stream(tenant, "second", 0)
            .await
            .expect("reading the stream should succeed")
            .is_empty(),
        "the failed append's first event should have been rolled back"
    );
    assert_eq!(
        store.head().await.expect("head should be readable"),
        head,
        "a failed append should not move the head"
    );
    assert_eq!(
        store
            .idempotent_response(tenant, "create-second")
            .await
            .expect("reading an idempotency key should succeed"),
        None,
        "a failed append should not take its idempotency key"
    );
    let retried = append_ok(&store, tenant, "second", ExpectedVersion::Exact(0), 2).await;
    assert_eq!(
        retried.version, 2,
        "the stream should not exist after the failed append, so Exact(0) succeeds"
    );
}

/// A stream belongs to the tenant that created it: another tenant can neither append
/// to it (`WrongTenant`, whatever the expected version) nor read it.
pub async fn a_stream_of_one_tenant_is_closed_to_another<S: EventStore>(store: S) {
    let owner = Uuid::now_v7();
    let intruder = Uuid::now_v7();
    append_ok(&store, owner, "shared-name", ExpectedVersion::Exact(0), 2).await;
    let head = store.head().await.expect("head should be readable");

    for expected in [
        ExpectedVersion::Any,
        ExpectedVersion::Exact(0),
        ExpectedVersion::Exact(2),
    ] {
        let mut attempt = request(intruder, "shared-name", expected, 1);
        attempt.idempotency = Some(idempotency("intruder-key"));
        let error = store
            .append(attempt)
            .await
            .expect_err("another tenant's append should fail");
        assert!(
            matches!(&error, StoreError::WrongTenant { stream_id } if stream_id == "shared-name"),
            "another tenant appending with {expected:?} should get WrongTenant, got {error:?}"
        );
    }
    assert_eq!(
        store
            .idempotent_response(intruder, "intruder-key")
            .await
            .expect("reading an idempotency key should succeed"),
        None,
        "a refused append should not take its idempotency key"
    );

    let seen = store
        .read_stream(intruder, "shared-name", 0)
        .await
        .expect("reading another tenant's stream should succeed, empty");
    assert!(
        seen.is_empty(),
        "another tenant should read nothing from the stream, got {} events",
        seen.len()
    );
    let own = store
        .read_stream(owner, "shared-name", 0)
        .await
        .expect("the owner's read should succeed");
    assert_eq!(
        versions(&own),
        vec![1, 2],
        "the owner's stream is untouched"
    );
    assert_eq!(
        store.head().await.expect("head should be readable"),
        head,
        "refused appends should not move the head"
    );
}

/// `last_tenant_position` answers the tenant's own latest position at or below the one
/// asked about, whatever other tenants appended around it, and `None` where the tenant
/// has nothing there.
pub async fn last_tenant_position_is_the_tenants_own_latest_event_at_or_below<S: EventStore>(
    store: S,
) {
    let a = Uuid::now_v7();
    let b = Uuid::now_v7();
    let a1 = append_ok(&store, a, "a-stream", ExpectedVersion::Exact(0), 2).await;
    let b1 = append_ok(&store, b, "b-stream", ExpectedVersion::Exact(0), 3).await;
    let a2 = append_ok(&store, a, "a-other", ExpectedVersion::Exact(0), 1).await;
    let b2 = append_ok(&store, b, "b-stream", ExpectedVersion::Exact(3), 1).await;
    let last = |tenant: Uuid, at_most: Position| {
        let store = &store;
        async move {
            store
                .last_tenant_position(tenant, at_most)
                .await
                .expect("last_tenant_position should succeed")
        }
    };

    assert_eq!(
        last(a, a1.first_position - 1).await,
        None,
        "nothing of A yet"
    );
    assert_eq!(last(a, a1.first_position).await, Some(a1.first_position));
    assert_eq!(
        last(a, b1.last_position).await,
        Some(a1.last_position),
        "B's events in between do not count for A"
    );
    assert_eq!(last(a, b2.last_position).await, Some(a2.last_position));
    assert_eq!(
        last(a, b2.last_position + 1_000).await,
        Some(a2.last_position)
    );
    assert_eq!(
        last(b, a2.last_position).await,
        Some(b1.last_position),
        "A's events in between do not count for B"
    );
    assert_eq!(last(b, b2.last_position).await, Some(b2.last_position));
    assert_eq!(
        last(Uuid::now_v7(), b2.last_position + 1_000).await,
        None,
        "a tenant with no events has no position"
    );
}

/// `read_all` returns the log in position order, at most `limit` at a time, starting
/// after the given position, across streams.
pub async fn read_all_pages_through_the_log_by_position<S: EventStore>(store: S) {
    let tenant = Uuid::now_v7();
    let a1 = append_ok(&store, tenant, "s-a", ExpectedVersion::Exact(0), 2).await;
    let b1 = append_ok(&store, tenant, "s-b", ExpectedVersion::Exact(0), 1).await;
    let a2 = append_ok(&store, tenant, "s-a", ExpectedVersion::Exact(2), 2).await;
    let expected_order = [("s-a", 1), ("s-a", 2), ("s-b", 1), ("s-a", 3), ("s-a", 4)];

    assert!(
        store
            .read_all(0, 0)
            .await
            .expect("read_all should succeed")
            .is_empty(),
        "a limit of 0 should return nothing"
    );

    let mut after: Position = 0;
    let mut pages = Vec::new();
    let mut seen = Vec::new();
    loop {
        let page = store
            .read_all(after, 2)
            .await
            .expect("read_all should succeed");
        assert!(page.len() <= 2, "read_all should honour its limit of 2");
        let Some(last) = page.last() else { break };
        after = last.global_position;
        pages.push(page.len());
        seen.extend(page);
        assert!(
            pages.len() <= 3,
            "five events should take three pages of two"
        );
    }
    assert_eq!(
        pages,
        vec![2, 2, 1],
        "five events should come in pages of 2, 2, 1"
    );
    let order: Vec<_> = seen
        .iter()
        .map(|e| (e.stream_id.as_str(), e.version))
        .collect();
    assert_eq!(
        order, expected_order,
        "read_all should follow the order of the appends"
    );
    let positions: Vec<_> = seen.iter().map(|e| e.global_position).collect();
    assert_eq!(positions[0], a1.first_position);
    assert_eq!(positions[2], b1.first_position);
    assert_eq!(positions[4], a2.last_position);
    assert!(
        positions.windows(2).all(|w| w[0] < w[1]),
        "positions should strictly increase, got {positions:?}"
    );

    let tail = store
        .read_all(a1.last_position, 100)
        .await
        .expect("read_all should succeed");
    assert_eq!(
        tail.first().map(|e| e.global_position),
        Some(b1.first_position),
        "read_all should start right after the given position"
    );
}

/// Sixteen tasks race on one stream, each reading its version `v` and appending with
/// `Exact(v)`. Exactly one append wins each version, the stream ends at `1..=N` with
/// no gap, and every loser is told a version the stream really reached.
pub async fn concurrent_appenders_on_one_stream_win_each_version_exactly_once<S: EventStore>(
    store: S,
) {
    const APPENDERS: usize = 16;
    const ATTEMPTS: usize = 8;
    let store = Arc::new(store);
    let tenant = Uuid::now_v7();
    let start = Arc::new(Barrier::new(APPENDERS));

    let tasks = (0..APPENDERS)
        .map(|appender| {
            let store = Arc::clone(&store);
            let start = Arc::clone(&start);
            tokio::spawn(async move {
                start.wait().await;
                let mut wins = Vec::new();
                let mut conflicts = Vec::new();
                for _ in 0..ATTEMPTS {
                    let current = store
                        .read_stream(tenant, "hot", 0)
                        .await
                        .expect("reading the hot stream should succeed")
                        .last()
                        .map_or(0, |e| e.version);
                    let attempt = request(tenant, "hot", ExpectedVersion::Exact(current), 1);
                    let event_id = attempt.events[0].event_id;
                    match store.append(attempt).await {
                        Ok(appended) => {
                            assert_eq!(
                                appended.version,
                                current + 1,
                                "appender {appender}: a won Exact({current}) should land at {}",
                                current + 1
                            );
                            wins.push((appended.version, event_id));
                        }
                        Err(StoreError::VersionConflict {
                            stream_id,
                            expected,
                            actual,
                        }) => {
                            assert_eq!(stream_id, "hot");
                            assert_eq!(expected, current, "a conflict should echo the expectation");
                            assert!(
                                actual > current,
                                "appender {appender}: after reading {current}, a conflict can \
                                 only be with a later version, got {actual}"
                            );
                            conflicts.push(actual);
                        }
                        Err(other) => panic!("appender {appender}: unexpected error {other:?}"),
                    }
                }
                (wins, conflicts)
            })
        })
        .collect();
    let results = within("sixteen appenders on one stream", join_all(tasks)).await;

    let mut winners: BTreeMap<Version, Uuid> = BTreeMap::new();
    let mut conflicts = Vec::new();
    for (wins, lost) in results {
        for (version, event_id) in wins {
            assert!(
                winners.insert(version, event_id).is_none(),
                "version {version} was won by two appenders"
            );
        }
        conflicts.extend(lost);
    }
    let final_version = winners.len() as Version;
    assert!(final_version > 0, "at least one append should win");
    assert_eq!(
        winners.keys().copied().collect::<Vec<_>>(),
        (1..=final_version).collect::<Vec<_>>(),
        "the winners' versions should be 1..=N with no gap"
    );
    assert_eq!(
        (winners.len() + conflicts.len()),
        APPENDERS * ATTEMPTS,
        "every attempt should either win or conflict"
    );
    for actual in &conflicts {
        assert!(
            (1..=final_version).contains(actual),
            "a conflict reported version {actual}, which the stream (at {final_version}) never had"
        );
    }

    let stored = store
        .read_stream(tenant, "hot", 0)
        .await
        .expect("reading the hot stream should succeed");
    assert_eq!(
        versions(&stored),
        (1..=final_version).collect::<Vec<_>>(),
        "the stored stream should be 1..=N with no gap"
    );
    for event in &stored {
        assert_eq!(
            Some(&event.event_id),
            winners.get(&event.version),
            "version {} should hold the winner's event",
            event.version
        );
    }
}

/// A tailer that only uses `watch_head` and `read_all` — no sleeping, no polling —
/// while eight writers append to many streams sees every committed event exactly
/// once, in increasing position order, and then nothing more.
pub async fn a_tail_sees_every_committed_event_exactly_once_in_order<S: EventStore>(store: S) {
    const WRITERS: usize = 8;
    const STREAMS_PER_WRITER: usize = 4;
    const APPENDS_PER_WRITER: usize = 24;
    const EVENTS_PER_APPEND: usize = 2;
    const TOTAL: usize = WRITERS * APPENDS_PER_WRITER * EVENTS_PER_APPEND;
    let store = Arc::new(store);
    let tenant = Uuid::now_v7();

    let tail = {
        let store = Arc::clone(&store);
        tokio::spawn(async move {
            let deadline = tokio::time::Instant::now() + WAIT;
            let mut head = store.watch_head();
            let mut after: Position = 0;
            let mut seen: Vec<RecordedEvent> = Vec::with_capacity(TOTAL);
            while seen.len() < TOTAL {
                // Mark the current head as seen *before* reading: a commit that lands
                // after this line changes the watch, so `changed` below cannot miss it.
                head.borrow_and_update();
                let page = store
                    .read_all(after, 50)
                    .await
                    .expect("read_all should succeed while tailing");
                if page.is_empty() {
                    let woke = tokio::time::timeout_at(deadline, head.changed()).await;
                    match woke {
                        Ok(Ok(())) => continue,
                        Ok(Err(_)) => panic!("the store closed while the tail was waiting"),
                        Err(_) => panic!(
                            "the tail saw {} of {TOTAL} events within {WAIT:?}, after position \
                             {after}; a committed event was skipped or never announced",
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
            (seen, after)
        })
    };

    let writers = (0..WRITERS)
        .map(|writer| {
            let store = Arc::clone(&store);
            tokio::spawn(async move {
                let mut versions = [0; STREAMS_PER_WRITER];
                let mut written = Vec::new();
                for i in 0..APPENDS_PER_WRITER {
                    let slot = i % STREAMS_PER_WRITER;
                    let stream = format!("tail-{writer}-{slot}");
                    let expected = ExpectedVersion::Exact(versions[slot]);
                    let attempt = request(tenant, &stream, expected, EVENTS_PER_APPEND);
                    written.extend(attempt.events.iter().map(|e| e.event_id));
                    let appended = store
                        .append(attempt)
                        .await
                        .expect("a writer's append to its own stream should succeed");
                    versions[slot] = appended.version;
                }
                written
            })
        })
        .collect();
    let written: Vec<Uuid> = within("eight writers", join_all(writers))
        .await
        .into_iter()
        .flatten()
        .collect();
    let (seen, last) = within("the tail", join_one(tail)).await;

    let seen_ids: Vec<Uuid> = seen.iter().map(|e| e.event_id).collect();
    let distinct: HashSet<Uuid> = seen_ids.iter().copied().collect();
    assert_eq!(
        distinct.len(),
        seen_ids.len(),
        "the tail saw an event twice"
    );
    assert_eq!(
        distinct,
        written.iter().copied().collect::<HashSet<_>>(),
        "the tail should see exactly the events that were written"
    );
    let more = store
        .read_all(last, 10)
        .await
        .expect("read_all should succeed");
    assert!(
        more.is_empty(),
        "nothing should follow the last event the writers committed"
    );
}

/// An append carrying an idempotency record stores the record with its events, in one
/// transaction: a later append with the same key stores nothing and is told
/// `IdempotencyKeyTaken` — even a retry whose expected version is now stale, since
/// "already done" is the answer a retry needs — `remember_response` refuses a taken
/// key, an append refused for another reason leaves its key free, and keys are per
/// tenant.
pub async fn an_idempotency_key_is_stored_with_its_append_and_refused_after<S: EventStore>(
    store: S,
) {
    let tenant = Uuid::now_v7();
    let record = idempotency("create-post-42");

    let mut first = request(tenant, "post-42", ExpectedVersion::Exact(0), 2);
    first.idempotency = Some(record.clone());
    let appended = append_with(&store, first).await;
    // An object body gains the append's last position, for the replayed answer.
    let mut expected = record.response.clone();
    if let serde_json::Value::Object(body) = &mut expected.body {
        body.insert("position".to_owned(), appended.last_position.into());
    }
    assert_eq!(
        store
            .idempotent_response(tenant, "create-post-42")
            .await
            .expect("reading an idempotency key should succeed"),
        Some(expected.clone()),
        "the key should hold the response stored with the append, with its position"
    );
    let head = store.head().await.expect("head should be readable");

    // A retry of the same command, and an unrelated command reusing the key.
    for (stream, expected) in [
        ("post-42", ExpectedVersion::Exact(0)),
        ("post-43", ExpectedVersion::Any),
    ] {
        let mut retry = request(tenant, stream, expected, 1);
        retry.idempotency = Some(idempotency("create-post-42"));
        let error = store
            .append(retry)
            .await
            .expect_err("an append reusing a taken key should fail");
        assert!(
            matches!(&error, StoreError::IdempotencyKeyTaken(key) if key == "create-post-42"),
            "reusing a key should give IdempotencyKeyTaken, got {error:?}"
        );
    }
    assert_eq!(
        store.head().await.expect("head should be readable"),
        head,
        "appends refused for a taken key should store no events"
    );
    assert_eq!(
        versions(
            &store
                .read_stream(tenant, "post-42", 0)
                .await
                .expect("reading the stream should succeed")
        ),
        vec![1, 2]
    );

    let other = IdempotentResponse {
        request_hash: "f".repeat(64),
        status: 409,
        body: json!({ "code": "different" }),
    };
    assert!(
        !store
            .remember_response(tenant, "create-post-42", &other)
            .await
            .expect("remember_response should succeed"),
        "remember_response should return false for a taken key"
    );
    assert_eq!(
        store
            .idempotent_response(tenant, "create-post-42")
            .await
            .expect("reading an idempotency key should succeed"),
        Some(expected),
        "a refused remember_response should change nothing"
    );

    // Atomicity: an append refused for its version leaves its key untaken.
    let mut stale = request(tenant, "post-42", ExpectedVersion::Exact(1), 1);
    stale.idempotency = Some(idempotency("update-post-42"));
    let error = store
        .append(stale)
        .await
        .expect_err("a stale append should fail");
    assert_conflict(&error, "post-42", 1, 2);
    assert_eq!(
        store
            .idempotent_response(tenant, "update-post-42")
            .await
            .expect("reading an idempotency key should succeed"),
        None,
        "a refused append should not take its key"
    );

    // A rejection is remembered on its own, once.
    let rejection = idempotency("update-post-42").response;
    assert!(
        store
            .remember_response(tenant, "update-post-42", &rejection)
            .await
            .expect("remember_response should succeed"),
        "remember_response should return true for a free key"
    );
    assert_eq!(
        store
            .idempotent_response(tenant, "update-post-42")
            .await
            .expect("reading an idempotency key should succeed"),
        Some(rejection.clone())
    );
    assert!(
        !store
            .remember_response(tenant, "update-post-42", &rejection)
            .await
            .expect("remember_response should succeed"),
        "remembering the same key twice should return false the second time"
    );

    // Keys are scoped to their tenant.
    let neighbour = Uuid::now_v7();
    assert_eq!(
        store
            .idempotent_response(neighbour, "create-post-42")
            .await
            .expect("reading an idempotency key should succeed"),
        None,
        "another tenant should not see this tenant's key"
    );
    let mut theirs = request(neighbour, "their-post", ExpectedVersion::Exact(0), 1);
    theirs.idempotency = Some(idempotency("create-post-42"));
    append_with(&store, theirs).await;
}

/// `head` is 0 on an empty store and the last committed position afterwards, and
/// `watch_head` announces each commit; a refused append moves neither.
pub async fn head_and_watch_head_follow_commits<S: EventStore>(store: S) {
    let tenant = Uuid::now_v7();
    assert_eq!(
        store.head().await.expect("head should be readable"),
        0,
        "an empty store's head should be 0"
    );
    let mut watch = store.watch_head();
    assert_eq!(
        *watch.borrow_and_update(),
        0,
        "an empty store's watch should be 0"
    );

    let first = append_ok(&store, tenant, "h-1", ExpectedVersion::Exact(0), 3).await;
    assert_eq!(
        store.head().await.expect("head should be readable"),
        first.last_position,
        "head should be the last position of the last commit"
    );
    within("the watch to announce the first commit", watch.changed())
        .await
        .expect("the store should still be open");
    assert_eq!(
        wait_for_head(&mut watch, first.last_position, WAIT).await,
        first.last_position,
        "the watch should reach the first commit's last position"
    );

    let error = store
        .append(request(tenant, "h-1", ExpectedVersion::Exact(0), 1))
        .await
        .expect_err("a stale append should fail");
    assert_conflict(&error, "h-1", 0, 3);
    assert_eq!(
        store.head().await.expect("head should be readable"),
        first.last_position,
        "a refused append should not move the head"
    );

    let second = append_ok(&store, tenant, "h-2", ExpectedVersion::Exact(0), 1).await;
    assert!(second.last_position > first.last_position);
    assert_eq!(
        wait_for_head(&mut watch, second.last_position, WAIT).await,
        second.last_position,
        "the watch should reach the second commit's last position"
    );
    assert_eq!(
        *store.watch_head().borrow(),
        second.last_position,
        "a new receiver should start at the current head"
    );
}

/// Many appends to different streams issued at once (the case group commit batches)
/// all succeed, each with its own answer, and their positions are unique and dense.
pub async fn concurrent_appends_to_different_streams_all_commit_with_dense_positions<
    S: EventStore,
>(
    store: S,
) {
    const APPENDS: usize = 64;
    const EVENTS: usize = 2;
    let store = Arc::new(store);
    let tenant = Uuid::now_v7();
    let start = Arc::new(Barrier::new(APPENDS));

    let tasks = (0..APPENDS)
        .map(|i| {
            let store = Arc::clone(&store);
            let start = Arc::clone(&start);
            tokio::spawn(async move {
                let stream = format!("group-{i}");
                start.wait().await;
                let appended = store
                    .append(request(tenant, &stream, ExpectedVersion::Exact(0), EVENTS))
                    .await
                    .expect("an append to its own new stream should succeed");
                (stream, appended)
            })
        })
        .collect();
    let results = within("sixty-four concurrent appends", join_all(tasks)).await;

    for (stream, appended) in &results {
        assert_eq!(
            appended.version, EVENTS as Version,
            "{stream} should be at 2"
        );
        let events = store
            .read_stream(tenant, stream, 0)
            .await
            .expect("reading a stream should succeed");
        let positions: Vec<_> = events.iter().map(|e| e.global_position).collect();
        assert_eq!(
            (positions.first(), positions.last()),
            (
                Some(&appended.first_position),
                Some(&appended.last_position)
            ),
            "{stream}: the answer should name the positions its events got"
        );
    }

    let total = APPENDS * EVENTS;
    let all = store
        .read_all(0, total + 10)
        .await
        .expect("read_all should succeed");
    let positions: Vec<Position> = all.iter().map(|e| e.global_position).collect();
    assert_eq!(
        positions,
        (1..=total as Position).collect::<Vec<_>>(),
        "positions should be unique and dense from 1"
    );
}

fn at_micros(micros: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_micros(micros).expect("the test timestamps are in range")
}

fn versions(events: &[RecordedEvent]) -> Vec<Version> {
    events.iter().map(|e| e.version).collect()
}

/// Appends of one chain, all queued before the first has an answer, land in the order
/// they were queued, each at the version it expected, and confirm the chain as far as
/// the last.
pub async fn chained_appends_queued_before_any_commits_all_land_in_order<S: EventStore>(store: S) {
    const APPENDS: u64 = 20;
    let tenant = Uuid::now_v7();
    let chain = AppendChain::new(0);
    let answers = chained_one_event_each(&store, &chain, tenant, 0..APPENDS).await;
    let versions_answered: Vec<Version> = answers
        .into_iter()
        .map(|a| {
            a.expect("every append of an unbroken chain should land")
                .version
        })
        .collect();
    assert_eq!(versions_answered, (1..=APPENDS).collect::<Vec<_>>());
    let read = store
        .read_stream(tenant, "budget-1", 0)
        .await
        .expect("reading the stream should succeed");
    assert_eq!(versions(&read), (1..=APPENDS).collect::<Vec<_>>());
    assert_eq!(chain.progress(), ChainProgress::Confirmed(APPENDS));
    assert_eq!(chain.settled(APPENDS).await, Ok(()));
}

/// The rule chains exist for: an append decided after one that is refused never runs,
/// even when the stream's version matches what it expects (here another writer moved
/// the stream on, so the refused append's version is taken by that writer's event and
/// the next one's expectation is met through it). Whether the later appends share the
/// refused one's batch or come after it, they are refused, and the chain stays broken;
/// a new chain from the real version appends as usual.
pub async fn a_chained_append_after_a_refused_one_never_runs_even_where_its_version_matches<
    S: EventStore,
>(
    store: S,
) {
    let tenant = Uuid::now_v7();
    // Another writer, unseen by the chain's owner, takes version 1.
    append_ok(&store, tenant, "budget-1", ExpectedVersion::Exact(0), 1).await;

    let stale = AppendChain::new(0);
    let mut answers = chained_one_event_each(&store, &stale, tenant, 0..3)
        .await
        .into_iter();
    let first = answers.next().and_then(Result::err);
    assert!(
        matches!(first, Some(StoreError::VersionConflict { actual: 1, .. })),
        "the stale first append should conflict, got {first:?}"
    );
    for (n, answer) in answers.enumerate() {
        assert!(
            matches!(&answer, Err(StoreError::EarlierAppendFailed { stream_id }) if stream_id == "budget-1"),
            "chained append {} should be refused after the conflict, got {answer:?}",
            n + 2
        );
    }
    assert!(stale.is_broken(), "the chain should stay broken");
    // Queued after the failure is known: refused without running as well.
    let late = store
        .append_chained(
            request(tenant, "budget-1", ExpectedVersion::Exact(1), 1),
            Arc::clone(&stale),
        )
        .await
        .expect("queuing a chained append should succeed")
        .await;
    assert!(
        matches!(late, Err(StoreError::EarlierAppendFailed { .. })),
        "an append queued on a broken chain should be refused, got {late:?}"
    );
    let read = store
        .read_stream(tenant, "budget-1", 0)
        .await
        .expect("reading the stream should succeed");
    assert_eq!(
        versions(&read),
        vec![1],
        "only the other writer's event should be stored"
    );

    let fresh = AppendChain::new(1);
    let appended = store
        .append_chained(
            request(tenant, "budget-1", ExpectedVersion::Exact(1), 2),
            Arc::clone(&fresh),
        )
        .await
        .expect("queuing a chained append should succeed")
        .await
        .expect("a new chain from the real version should append");
    assert_eq!(appended.version, 3);
    assert_eq!(fresh.progress(), ChainProgress::Confirmed(3));
}

/// Queues one one-event append to `budget-1` on `chain` per expected version, all
/// before awaiting any, then waits for their answers, in queuing order.
async fn chained_one_event_each<S: EventStore>(
    store: &S,
    chain: &Arc<AppendChain>,
    tenant: Uuid,
    expected: std::ops::Range<Version>,
) -> Vec<Result<Appended, StoreError>> {
    let mut queued = Vec::new();
    for version in expected {
        queued.push(
            store
                .append_chained(
                    request(tenant, "budget-1", ExpectedVersion::Exact(version), 1),
                    Arc::clone(chain),
                )
                .await
                .expect("queuing a chained append should succeed"),
        );
    }
    tokio::time::timeout(WAIT, futures::future::join_all(queued))
        .await
        .expect("every chained append should be answered")
}

/// A request with `count` small events and fresh ids.
fn request(tenant: Uuid, stream: &str, expected: ExpectedVersion, count: usize) -> AppendRequest {
    AppendRequest {
        tenant_id: tenant,
        stream_id: stream.to_owned(),
        expected,
        metadata: Metadata {
            correlation_id: Uuid::now_v7(),
            causation_id: None,
            actor: "contract".to_owned(),
        },
        events: (0..count)
            .map(|n| NewEvent {
                event_id: Uuid::now_v7(),
                event_type: "contract.happened".to_owned(),
                schema_version: 1,
                occurred_at: Utc::now(),
                data: json!({ "stream": stream, "n": n }),
            })
            .collect(),
        idempotency: None,
    }
}

/// A snapshot is stored per stream and format version, comes back exactly as written,
/// and a save never replaces one at the same or a newer stream version.
pub async fn a_snapshot_is_loaded_back_and_never_replaced_by_an_older_one<S: EventStore>(store: S) {
    let tenant = Uuid::now_v7();
    append_ok(&store, tenant, "budget-1", ExpectedVersion::Exact(0), 5).await;
    let load = |format: u32| store.load_snapshot(tenant, "budget-1", format);
    assert_eq!(
        load(1).await.expect("loading a snapshot should succeed"),
        None,
        "a stream without snapshots has none to load"
    );

    let at3 = snapshot(tenant, "budget-1", 1, 3);
    let saved = store.save_snapshot(&at3).await;
    assert!(
        matches!(saved, Ok(true)),
        "the first snapshot should be stored, got {saved:?}"
    );
    assert_eq!(
        load(1).await.expect("loading should succeed"),
        Some(at3.clone()),
        "the snapshot should come back exactly as saved, its data text unchanged"
    );

    for older in [2, 3] {
        let stale = Snapshot {
            data: r#"{"stale":true}"#.to_owned(),
            ..snapshot(tenant, "budget-1", 1, older)
        };
        let saved = store.save_snapshot(&stale).await;
        assert!(
            matches!(saved, Ok(false)),
            "a snapshot at version {older} must not replace the one at 3, got {saved:?}"
        );
    }
    assert_eq!(load(1).await.expect("loading should succeed"), Some(at3));

    let at5 = snapshot(tenant, "budget-1", 1, 5);
    assert!(matches!(store.save_snapshot(&at5).await, Ok(true)));
    assert_eq!(
        load(1).await.expect("loading should succeed"),
        Some(at5.clone()),
        "a newer snapshot replaces the older one"
    );

    // Another format version is kept apart: neither format ever sees the other.
    assert_eq!(load(2).await.expect("loading should succeed"), None);
    let other_format = snapshot(tenant, "budget-1", 2, 4);
    assert!(matches!(store.save_snapshot(&other_format).await, Ok(true)));
    assert_eq!(
        load(2).await.expect("loading should succeed"),
        Some(other_format)
    );
    assert_eq!(load(1).await.expect("loading should succeed"), Some(at5));
}

/// A snapshot's detail is stored with it but never handed out with it: only
/// `load_snapshot_detail` reads it, for the exact stream version it was saved with, so a
/// caller holding an older snapshot's state never gets a newer snapshot's detail. It is
/// tenant-scoped like the snapshot, replaced with it, and dropped with it.
pub async fn a_snapshots_detail_is_read_only_on_request_and_only_with_the_version_it_was_saved_with<
    S: EventStore,
>(
    store: S,
) {
    let tenant = Uuid::now_v7();
    append_ok(&store, tenant, "budget-1", ExpectedVersion::Exact(0), 5).await;
    let detail = |version: Version| store.load_snapshot_detail(tenant, "budget-1", 1, version);
    assert_eq!(
        detail(3).await.expect("asking for a detail should succeed"),
        None,
        "a stream without snapshots has no detail"
    );

    // A megabyte, as a busy month's settled list is, with text that must come back
    // byte for byte.
    let big = format!(
        r#"{{"settled": "{}", "note": "Grüße ✨"}}"#,
        "QUJD".repeat(262_144)
    );
    let at3 = Snapshot {
        detail: Some(big.clone()),
        ..snapshot(tenant, "budget-1", 1, 3)
    };
    assert!(matches!(store.save_snapshot(&at3).await, Ok(true)));
    let loaded = store
        .load_snapshot(tenant, "budget-1", 1)
        .await
        .expect("loading should succeed")
        .expect("the snapshot is stored");
    assert_eq!(
        loaded.detail, None,
        "a loaded snapshot leaves its detail behind"
    );
    assert_eq!(loaded.data, at3.data);
    let (from_read, _) = store
        .read_stream_from_snapshot(tenant, "budget-1", 1)
        .await
        .expect("reading should succeed");
    assert_eq!(
        from_read.map(|s| s.detail),
        Some(None),
        "a cold load's read leaves the detail behind too"
    );
    assert_eq!(
        detail(3).await.expect("asking should succeed").as_deref(),
        Some(big.as_str()),
        "the detail comes back exactly as saved"
    );
    for other in [2, 4] {
        assert_eq!(
            detail(other).await.expect("asking should succeed"),
            None,
            "no snapshot covers version {other}"
        );
    }
    assert_eq!(
        store
            .load_snapshot_detail(Uuid::now_v7(), "budget-1", 1, 3)
            .await
            .expect("asking as another tenant should succeed"),
        None,
        "another tenant never sees the detail"
    );
    assert_eq!(
        store
            .load_snapshot_detail(tenant, "budget-1", 2, 3)
            .await
            .expect("asking should succeed"),
        None,
        "another format has no detail here"
    );

    // A newer snapshot without a detail replaces the old one and its detail.
    let at5 = snapshot(tenant, "budget-1", 1, 5);
    assert!(matches!(store.save_snapshot(&at5).await, Ok(true)));
    assert_eq!(detail(3).await.expect("asking should succeed"), None);
    assert_eq!(detail(5).await.expect("asking should succeed"), None);

    let stale = Snapshot {
        detail: Some(r#"{"stale": true}"#.to_owned()),
        ..snapshot(tenant, "budget-1", 1, 4)
    };
    assert!(matches!(store.save_snapshot(&stale).await, Ok(false)));
    assert_eq!(
        detail(4).await.expect("asking should succeed"),
        None,
        "a refused save stores no detail"
    );

    let at5_with = Snapshot {
        detail: Some(r#"{"settled": ""}"#.to_owned()),
        ..snapshot(tenant, "budget-1", 1, 5)
    };
    assert!(matches!(store.save_snapshot(&at5_with).await, Ok(false)));
    store.drop_snapshots().await.expect("snapshots drop");
    assert_eq!(detail(5).await.expect("asking should succeed"), None);
}

/// Snapshots are tenant-scoped like streams: another tenant can neither save one for a
/// stream it does not own nor load one, and no snapshot may claim events the stream
/// does not have.
pub async fn a_snapshot_of_a_stream_the_tenant_does_not_own_or_past_its_head_is_refused<
    S: EventStore,
>(
    store: S,
) {
    let owner = Uuid::now_v7();
    let intruder = Uuid::now_v7();
    append_ok(&store, owner, "budget-a", ExpectedVersion::Exact(0), 3).await;
    let mine = snapshot(owner, "budget-a", 1, 2);
    assert!(matches!(store.save_snapshot(&mine).await, Ok(true)));

    let planted = store
        .save_snapshot(&snapshot(intruder, "budget-a", 1, 3))
        .await;
    assert!(
        matches!(&planted, Err(StoreError::NoSuchStream { stream_id }) if stream_id == "budget-a"),
        "another tenant's stream must look missing to a snapshot, got {planted:?}"
    );
    assert_eq!(
        store
            .load_snapshot(intruder, "budget-a", 1)
            .await
            .expect("loading should succeed"),
        None,
        "another tenant must not load the owner's snapshot"
    );
    let missing = store
        .save_snapshot(&snapshot(owner, "never-written", 1, 1))
        .await;
    assert!(
        matches!(missing, Err(StoreError::NoSuchStream { .. })),
        "a snapshot of a stream with no events is refused, got {missing:?}"
    );
    let ahead = store
        .save_snapshot(&snapshot(owner, "budget-a", 1, 4))
        .await;
    assert!(
        matches!(
            ahead,
            Err(StoreError::SnapshotPastStream {
                snapshot: 4,
                actual: 3,
                ..
            })
        ),
        "a snapshot past the stream's version is refused, got {ahead:?}"
    );
    assert_eq!(
        store
            .load_snapshot(owner, "budget-a", 1)
            .await
            .expect("loading should succeed"),
        Some(mine),
        "refused saves leave the stored snapshot alone"
    );
}

/// Dropping snapshots removes every tenant's, and the log does not notice.
pub async fn dropping_snapshots_removes_every_tenants_and_leaves_the_log_alone<S: EventStore>(
    store: S,
) {
    let tenants = [Uuid::now_v7(), Uuid::now_v7()];
    for tenant in tenants {
        append_ok(
            &store,
            tenant,
            &format!("budget-{tenant}"),
            ExpectedVersion::Exact(0),
            2,
        )
        .await;
        let saved = store
            .save_snapshot(&snapshot(tenant, &format!("budget-{tenant}"), 1, 2))
            .await;
        assert!(matches!(saved, Ok(true)), "{saved:?}");
    }
    let dropped = store
        .drop_snapshots()
        .await
        .expect("dropping snapshots should succeed");
    assert_eq!(dropped, 2, "both tenants' snapshots are dropped");
    for tenant in tenants {
        let stream = format!("budget-{tenant}");
        assert_eq!(
            store
                .load_snapshot(tenant, &stream, 1)
                .await
                .expect("loading should succeed"),
            None
        );
        let events = store
            .read_stream(tenant, &stream, 0)
            .await
            .expect("reading should succeed");
        assert_eq!(events.len(), 2, "the stream keeps its events");
        append_ok(&store, tenant, &stream, ExpectedVersion::Exact(2), 1).await;
    }
    assert_eq!(
        store
            .drop_snapshots()
            .await
            .expect("dropping again succeeds"),
        0
    );
}

fn snapshot(tenant: Uuid, stream: &str, format: u32, version: Version) -> Snapshot {
    Snapshot {
        tenant_id: tenant,
        stream_id: stream.to_owned(),
        snapshot_version: format,
        version,
        data: format!(r#"{{"stream": "{stream}", "covers": {version}, "note": "Grüße ✨"}}"#),
        detail: None,
    }
}

fn idempotency(key: &str) -> IdempotencyRecord {
    IdempotencyRecord {
        key: key.to_owned(),
        response: IdempotentResponse {
            request_hash: "0".repeat(64),
            status: 201,
            body: json!({ "key": key }),
        },
    }
}

async fn append_ok<S: EventStore>(
    store: &S,
    tenant: Uuid,
    stream: &str,
    expected: ExpectedVersion,
    count: usize,
) -> Appended {
    append_with(store, request(tenant, stream, expected, count)).await
}

async fn append_with<S: EventStore>(store: &S, request: AppendRequest) -> Appended {
    let what = format!("{:?} to {}", request.expected, request.stream_id);
    let count = request.events.len() as Version;
    let appended = store
        .append(request)
        .await
        .unwrap_or_else(|e| panic!("appending with {what} should succeed, got {e:?}"));
    assert!(
        appended.last_position >= appended.first_position + count - 1,
        "appending {count} events with {what} should span at least {count} positions"
    );
    appended
}

fn assert_conflict(error: &StoreError, stream: &str, expected: Version, actual: Version) {
    match error {
        StoreError::VersionConflict {
            stream_id,
            expected: e,
            actual: a,
        } => assert_eq!(
            (stream_id.as_str(), *e, *a),
            (stream, expected, actual),
            "the conflict should name the stream, the expectation and the real version"
        ),
        other => panic!(
            "Exact({expected}) on {stream} at {actual} should be VersionConflict, got {other:?}"
        ),
    }
}

async fn within<T>(what: &str, work: impl Future<Output = T>) -> T {
    tokio::time::timeout(WAIT, work)
        .await
        .unwrap_or_else(|_| panic!("{what} did not finish within {WAIT:?}"))
}

/// Awaits spawned tasks, re-raising a task's panic so its message reaches the test.
async fn join_all<T>(tasks: Vec<JoinHandle<T>>) -> Vec<T> {
    let mut out = Vec::with_capacity(tasks.len());
    for task in tasks {
        out.push(join_one(task).await);
    }
    out
}

async fn join_one<T>(task: JoinHandle<T>) -> T {
    match task.await {
        Ok(value) => value,
        Err(error) if error.is_panic() => std::panic::resume_unwind(error.into_panic()),
        Err(error) => panic!("a spawned check task did not finish: {error}"),
    }
}
