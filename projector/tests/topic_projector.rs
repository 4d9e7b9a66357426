//! The topic projector applies each event once, however Kafka delivers it: a batch
//! redelivered at the same offsets (a crash before the consumer's commit, a
//! rebalance) and copies at later offsets (the relay producing again after a crash)
//! change nothing.

mod common;

use common::{created, post_count};
use domain::TenantId;
use eventlog::RecordedEvent;
use eventlog::kafka::SourcedEvent;
use projector::ReadModels;
use projector::kafka::TopicProjector;
use uuid::Uuid;

fn at(partition: i32, offset: i64, event: &RecordedEvent) -> SourcedEvent {
    SourcedEvent {
        partition,
        offset,
        event: event.clone(),
    }
}

#[tokio::test]
async fn redelivered_batches_and_relayed_copies_are_applied_once() {
    let dir = tempfile::tempdir().expect("temp dir");
    let models = ReadModels::open(&dir.path().join("rm.db"))
        .await
        .expect("read models");
    let projector = TopicProjector::new(models.clone());
    let tenant = TenantId::from_uuid(Uuid::now_v7());
    let events: Vec<RecordedEvent> = (1..=4).map(|p| created(tenant, p)).collect();

    let first: Vec<SourcedEvent> = events[..3]
        .iter()
        .enumerate()
        .map(|(i, e)| at(0, i as i64, e))
        .collect();
    assert_eq!(
        projector.apply_sourced("t", &first).await.expect("apply"),
        3
    );
    // The same batch again, as after a crash before the consumer committed.
    assert_eq!(
        projector.apply_sourced("t", &first).await.expect("apply"),
        0
    );
    // The relay restarted from an older checkpoint: events 2 and 3 again at new
    // offsets, followed by the new event 4.
    let copies = vec![
        at(0, 3, &events[1]),
        at(0, 4, &events[2]),
        at(0, 5, &events[3]),
    ];
    assert_eq!(
        projector.apply_sourced("t", &copies).await.expect("apply"),
        1
    );

    assert_eq!(post_count(&models, tenant).await, 4, "each post once");
    assert!(
        models
            .wait_for_tenant_position(tenant.as_uuid(), 4, std::time::Duration::from_millis(10))
            .await
            .expect("wait"),
        "the tenant's position reached 4"
    );
}
