//! `tidemark snapshots rebuild|drop`: the operator's handle on the command side's
//! snapshots.
//!
//! Snapshots are a cache of folded stream states (see `command_api::service`), so both
//! actions are always safe. `drop` deletes every snapshot; the next cold load of each
//! stream folds it from its first event and, for a long stream, takes a new one.
//! `rebuild` drops them all and then takes a fresh one at the head of every stream
//! long enough to have one: after a format change, or to warm a restored database
//! before traffic arrives.

use std::collections::HashMap;
use std::sync::Arc;

use anyhow::Context;
use command_api::{CommandService, SystemClock};
use domain::ids::StreamKind;
use domain::{StreamName, TenantId};
use eventlog::EventStore;

/// Events per read of the global log while looking for long streams.
const READ_BATCH: usize = 1_000;

/// What a rebuild did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Rebuilt {
    /// Snapshots that were dropped first.
    pub dropped: u64,
    /// Events of the log read to find the long streams.
    pub events_read: u64,
    /// Snapshots taken.
    pub taken: u64,
}

/// Drops every snapshot and takes one at the head of every budget and post stream
/// that holds at least `min_events` events. `progress` hears (snapshots taken, of how
/// many) as it goes.
pub async fn rebuild(
    store: Arc<dyn EventStore>,
    min_events: u64,
    mut progress: impl FnMut(u64, u64),
) -> anyhow::Result<Rebuilt> {
    let dropped = store
        .drop_snapshots()
        .await
        .context("failed to drop the snapshots")?;
    let mut lengths: HashMap<String, (TenantId, u64)> = HashMap::new();
    let mut from = 0;
    let mut events_read = 0u64;
    loop {
        let batch = store
            .read_all(from, READ_BATCH)
            .await
            .context("failed to read the event log")?;
        let Some(last) = batch.last() else {
            break;
        };
        from = last.global_position;
        events_read += batch.len() as u64;
        for event in batch {
            if let Some(entry) = lengths.get_mut(&event.stream_id) {
                entry.1 += 1;
                continue;
            }
            // Only the aggregates that keep snapshots; any other name is skipped.
            if let Ok((tenant, StreamKind::Budget(_) | StreamKind::Post(_))) =
                StreamName::parse(&event.stream_id)
            {
                lengths.insert(event.stream_id, (tenant, 1));
            }
        }
    }
    let long: Vec<(String, TenantId)> = lengths
        .into_iter()
        .filter(|(_, (_, events))| *events >= min_events)
        .map(|(stream, (tenant, _))| (stream, tenant))
        .collect();
    let service = CommandService::new(store, Arc::new(SystemClock));
    let total = long.len() as u64;
    let mut taken = 0;
    for (stream, tenant) in long {
        let name = stream_name(&stream, tenant)?;
        if service
            .snapshot_stream(tenant, &name)
            .await
            .with_context(|| format!("failed to snapshot {stream}"))?
            .is_some()
        {
            taken += 1;
        }
        progress(taken, total);
    }
    Ok(Rebuilt {
        dropped,
        events_read,
        taken,
    })
}

/// The typed name of a stream whose raw name already parsed.
fn stream_name(raw: &str, tenant: TenantId) -> anyhow::Result<StreamName> {
    let (_, kind) = StreamName::parse(raw).with_context(|| format!("bad stream name {raw}"))?;
    Ok(match kind {
        StreamKind::Budget(period) => StreamName::budget(tenant, period),
        StreamKind::Post(post) => StreamName::post(tenant, post),
        StreamKind::Generation(generation) => StreamName::generation(tenant, generation),
    })
}
