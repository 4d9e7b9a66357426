//! Events and reads that more than one test binary of this crate needs.

use chrono::Utc;
use domain::post::Event;
use domain::{Channel, PostId, StreamName, TenantId};
use eventlog::RecordedEvent;
use projector::{PostFilter, ReadModels};
use uuid::Uuid;

/// A new post of `tenant` at `position`, as the store would record it.
pub fn created(tenant: TenantId, position: u64) -> RecordedEvent {
    let post = PostId::from_uuid(Uuid::now_v7());
    let encoded = schemas::encode(&schemas::DomainEvent::Post(Event::Created {
        channels: vec![Channel::new("blog").expect("channel")],
        body: format!("post at {position}"),
        campaign_id: None,
    }));
    RecordedEvent {
        global_position: position,
        event_id: Uuid::now_v7(),
        tenant_id: tenant.as_uuid(),
        stream_id: StreamName::post(tenant, post).to_string(),
        version: 1,
        event_type: encoded.event_type.to_owned(),
        schema_version: encoded.schema_version,
        occurred_at: Utc::now(),
        recorded_at: Utc::now(),
        correlation_id: Uuid::now_v7(),
        causation_id: None,
        actor: "test".into(),
        data: encoded.data,
    }
}

/// How many posts the read models hold for `tenant` (up to 50).
pub async fn post_count(models: &ReadModels, tenant: TenantId) -> usize {
    models
        .posts(
            tenant.as_uuid(),
            &PostFilter {
                limit: 50,
                ..PostFilter::default()
            },
        )
        .await
        .expect("posts")
        .items
        .len()
}
