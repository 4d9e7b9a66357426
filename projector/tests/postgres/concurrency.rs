//! Rebuilds and concurrent projectors on PostgreSQL: the checkpoint row lock makes
//! every event land exactly once, whoever applies it.

use std::time::Duration;

use projector::{Outcome, Projector, READ_MODELS};

use crate::common::{created, post_count};
use crate::support::{Log, TestDatabase, assert_same, bounded, snapshot, sqlite_reference};

#[tokio::test]
async fn a_rebuild_on_postgres_equals_the_live_projection() {
    bounded(async {
        let mut log = Log::new().await;
        let db = TestDatabase::create().await;
        let models = db.models().await;
        // Live: small batches, the log growing between them.
        let live = Projector::new(log.store.clone(), models.clone()).with_batch_size(4);
        log.phase_one().await;
        assert!(matches!(
            live.project_batch().await,
            Ok(Outcome::Projected(4))
        ));
        live.catch_up().await.expect("catch up after phase one");
        log.phase_two().await;
        live.catch_up().await.expect("catch up after phase two");
        let before = snapshot(&models, &log).await;
        assert_same(&before, &sqlite_reference(&log).await);

        let mut reported = Vec::new();
        let rebuilt = Projector::new(log.store.clone(), models.clone())
            .rebuild(|done, head| reported.push((done, head)))
            .await
            .expect("rebuild");
        assert_eq!(rebuilt, log.len().await);
        assert_eq!(reported.last(), Some(&(log.head().await, log.head().await)));
        assert_same(&snapshot(&models, &log).await, &before);

        // The live projector carries on from the rebuild's checkpoint.
        assert_eq!(
            live.project_batch().await.expect("batch"),
            Outcome::CaughtUp
        );
        db.drop_database().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_projectors_racing_on_postgres_apply_every_event_exactly_once() {
    bounded(async {
        let log = Log::full().await;
        let head = log.head().await;
        let db = TestDatabase::create().await;
        // Three handles with pools of their own, as three processes would have, set up
        // at the same time (migrations and grants race too).
        let (first, second, reader) = tokio::join!(db.models(), db.models(), db.models());

        // A reader that runs no projector learns of the progress only from the
        // stored checkpoint, as in another process.
        let waiting = tokio::spawn({
            let reader = reader.clone();
            async move {
                reader
                    .wait_for_position(head, Duration::from_secs(60))
                    .await
            }
        });

        let one = Projector::new(log.store.clone(), first.clone()).with_batch_size(3);
        let two = Projector::new(log.store.clone(), second.clone()).with_batch_size(3);
        let (applied_one, applied_two) = tokio::join!(one.catch_up(), two.catch_up());
        let (applied_one, applied_two) = (
            applied_one.expect("first projector"),
            applied_two.expect("second projector"),
        );
        assert_eq!(applied_one + applied_two, log.len().await);
        assert_eq!(
            reader.checkpoint(READ_MODELS).await.expect("checkpoint"),
            head
        );
        assert!(waiting.await.expect("waiter").expect("wait"));
        assert!(
            !reader
                .wait_for_position(head + 1, Duration::from_millis(250))
                .await
                .expect("wait"),
            "a position beyond the head is never reached"
        );

        assert_same(
            &snapshot(&reader, &log).await,
            &sqlite_reference(&log).await,
        );
        db.drop_database().await;
    })
    .await;
}

/// Two topic projectors given the same batches at once (as while a partition moves),
/// each batch naming the partitions in the other's reverse order, starting before any
/// partition has a checkpoint row: each event is applied once, and neither waits on
/// the other for good (the rows are locked in one statement, in name order).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_topic_projectors_given_the_same_batches_apply_each_event_once() {
    use eventlog::kafka::SourcedEvent;
    use projector::kafka::TopicProjector;

    bounded(async {
        const PARTITIONS: i32 = 4;
        const PER_PARTITION: i64 = 12;
        let db = TestDatabase::create().await;
        let (first, second) = tokio::join!(db.models(), db.models());
        let tenants: Vec<domain::TenantId> = (0..PARTITIONS)
            .map(|_| domain::TenantId::from_uuid(uuid::Uuid::now_v7()))
            .collect();
        // Partition p holds tenant p's posts; positions interleave across partitions.
        let mut position = 0;
        let mut by_partition: Vec<Vec<SourcedEvent>> = vec![Vec::new(); PARTITIONS as usize];
        for offset in 0..PER_PARTITION {
            for partition in 0..PARTITIONS {
                position += 1;
                by_partition[partition as usize].push(SourcedEvent {
                    partition,
                    offset,
                    event: created(tenants[partition as usize], position),
                });
            }
        }
        let batches = |reverse: bool| -> Vec<Vec<SourcedEvent>> {
            (0..PER_PARTITION as usize)
                .step_by(3)
                .map(|start| {
                    let mut order: Vec<usize> = (0..PARTITIONS as usize).collect();
                    if reverse {
                        order.reverse();
                    }
                    order
                        .into_iter()
                        .flat_map(|p| by_partition[p][start..start + 3].iter().cloned())
                        .collect()
                })
                .collect()
        };
        let run = |models: projector::ReadModels, batches: Vec<Vec<SourcedEvent>>| async move {
            let projector = TopicProjector::new(models);
            let mut applied = 0;
            for batch in batches {
                applied += projector
                    .apply_sourced("events", &batch)
                    .await
                    .expect("a batch applies");
            }
            applied
        };
        let (one, two) = tokio::join!(
            run(first.clone(), batches(false)),
            run(second.clone(), batches(true))
        );
        assert_eq!(
            one + two,
            (PARTITIONS as i64 * PER_PARTITION) as usize,
            "events applied by the two (first {one}, second {two})"
        );
        for tenant in &tenants {
            assert_eq!(
                post_count(&first, *tenant).await,
                PER_PARTITION as usize,
                "each post once"
            );
        }
        db.drop_database().await;
    })
    .await;
}
