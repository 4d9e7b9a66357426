//! Projecting from the Kafka topic instead of the store's log, and keeping the Kafka
//! components' progress in the read-model database.
//!
//! A member of the projectors' group gets batches of events with their partition and offset.
//! [`TopicProjector::apply_sourced`] applies a batch and moves each partition's
//! stored offset in ONE transaction, after locking those offsets: a batch that was
//! already applied (redelivered after a crash, or read by the member that inherited
//! the partition when it moved, or read late by a member that lost its lease) finds the
//! offsets past it and changes nothing.
//!
//! Offsets alone are not enough: after a crash the relay produces again what
//! followed its checkpoint, so the same event can also arrive at a *later* offset.
//! Within a partition each position first appears after every lower one, so each
//! partition also keeps the highest position applied, and an event at or below it is
//! a copy and is skipped.
//!
//! Read-your-writes: positions are global but partitions are not, so there is no
//! single "applied up to" position when several members share the topic. A tenant's
//! events, though, all travel in one partition, in order. So each batch also records,
//! per tenant, the highest position applied; a tenant-scoped query waiting for
//! `min_position` waits for its tenant's position (or the store-tail projector's
//! global one), see [`ReadModels::wait_for_tenant_position`].

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use async_trait::async_trait;
use eventlog::kafka::{BoxError, OffsetStore, RelayCheckpoint, SourcedEvent};
use eventlog::{Position, StoreError};

use crate::apply::apply;
use crate::batch::Batch;
use crate::projector::ProjectError;
use crate::projector::READ_MODELS;
use crate::readmodel::ReadModels;
use uuid::Uuid;

/// The checkpoint name under which a tenant's highest applied position is stored.
pub fn tenant_checkpoint(tenant: Uuid) -> String {
    format!("tenant:{tenant}")
}

/// The checkpoint name under which a partition's next offset is stored.
pub fn offset_checkpoint(topic: &str, partition: i32) -> String {
    format!("kafka:{topic}:{partition}")
}

/// The checkpoint name under which a partition's highest applied position is stored.
pub fn position_checkpoint(topic: &str, partition: i32) -> String {
    format!("kafka:{topic}:{partition}:position")
}

/// Applies batches read from the topic to the read models.
#[derive(Clone)]
pub struct TopicProjector {
    models: ReadModels,
}

impl TopicProjector {
    pub fn new(models: ReadModels) -> Self {
        Self { models }
    }

    /// Applies the events of `batch` not applied yet, and stores each partition's next
    /// offset, in one transaction. Returns how many events were applied.
    #[tracing::instrument(skip_all, fields(topic, events = batch.len()))]
    pub async fn apply_sourced(
        &self,
        topic: &str,
        batch: &[SourcedEvent],
    ) -> Result<usize, ProjectError> {
        let dialect = self.models.dialect();
        let mut tx = dialect.begin_write(self.models.pool()).await?;
        // Lock the partitions' offsets in partition order, so two members whose
        // batches overlap while a partition moves cannot deadlock on each other's rows.
        let partitions: std::collections::BTreeSet<i32> =
            batch.iter().map(|s| s.partition).collect();
        let mut next: BTreeMap<i32, i64> = BTreeMap::new();
        let mut applied_up_to: BTreeMap<i32, Position> = BTreeMap::new();
        for partition in partitions {
            let stored = dialect
                .lock_checkpoint(&mut tx, &offset_checkpoint(topic, partition))
                .await?;
            next.insert(partition, stored as i64);
            let mark = dialect
                .lock_checkpoint(&mut tx, &position_checkpoint(topic, partition))
                .await?;
            applied_up_to.insert(partition, mark);
        }
        let mut rows = Batch::new(dialect);
        let mut applied = 0;
        let mut highest: Position = 0;
        let mut tenants: BTreeMap<Uuid, Position> = BTreeMap::new();
        for sourced in batch {
            let expected = next.get(&sourced.partition).copied().unwrap_or(0);
            if sourced.offset < expected {
                continue;
            }
            next.insert(sourced.partition, sourced.offset + 1);
            let mark = applied_up_to.entry(sourced.partition).or_default();
            if sourced.event.global_position <= *mark {
                // A copy the relay produced again after a crash.
                continue;
            }
            *mark = sourced.event.global_position;
            apply(&mut rows, &mut tx, &sourced.event).await?;
            highest = highest.max(sourced.event.global_position);
            let tenant = tenants.entry(sourced.event.tenant_id).or_default();
            *tenant = (*tenant).max(sourced.event.global_position);
            applied += 1;
        }
        rows.flush(&mut tx).await?;
        for (tenant, position) in &tenants {
            upsert_checkpoint(&mut tx, &tenant_checkpoint(*tenant), *position as i64, true).await?;
        }
        for (partition, offset) in &next {
            upsert_checkpoint(
                &mut tx,
                &offset_checkpoint(topic, *partition),
                *offset,
                false,
            )
            .await?;
        }
        for (partition, mark) in &applied_up_to {
            upsert_checkpoint(
                &mut tx,
                &position_checkpoint(topic, *partition),
                *mark as i64,
                true,
            )
            .await?;
        }
        tx.commit().await?;
        tracing::debug!(applied, highest, "applied a batch from the topic");
        Ok(applied)
    }
}

impl ReadModels {
    /// Waits until the read models include `position` for `tenant`, up to `timeout`:
    /// when the store-tail projector's global checkpoint reaches it, or the topic
    /// projector has applied the tenant's events up to it. Returns whether they did.
    pub async fn wait_for_tenant_position(
        &self,
        tenant: Uuid,
        position: Position,
        timeout: Duration,
    ) -> Result<bool, sqlx::Error> {
        let deadline = tokio::time::Instant::now() + timeout;
        let name = tenant_checkpoint(tenant);
        let tenant_reached = async {
            let mut pause = Duration::from_millis(5);
            loop {
                if self.checkpoint(&name).await? >= position {
                    return Ok::<bool, sqlx::Error>(true);
                }
                if tokio::time::Instant::now() >= deadline {
                    return Ok(false);
                }
                tokio::time::sleep_until((tokio::time::Instant::now() + pause).min(deadline)).await;
                pause = (pause * 2).min(Duration::from_millis(100));
            }
        };
        tokio::select! {
            global = self.wait_for_position(position, timeout) => {
                if global? {
                    return Ok(true);
                }
                Ok(self.checkpoint(&name).await? >= position || self.checkpoint(READ_MODELS).await? >= position)
            }
            tenant = tenant_reached => {
                if tenant? {
                    return Ok(true);
                }
                Ok(self.checkpoint(READ_MODELS).await? >= position)
            }
        }
    }
}

#[async_trait]
impl OffsetStore for ReadModels {
    async fn load(&self, topic: &str, partitions: &[i32]) -> Result<HashMap<i32, i64>, BoxError> {
        let mut offsets = HashMap::new();
        for partition in partitions {
            let name = offset_checkpoint(topic, *partition);
            let stored: Option<i64> =
                sqlx::query_scalar("SELECT position FROM checkpoints WHERE name = $1")
                    .bind(name)
                    .fetch_optional(self.pool())
                    .await?;
            if let Some(offset) = stored {
                offsets.insert(*partition, offset);
            }
        }
        Ok(offsets)
    }
}

#[async_trait]
impl RelayCheckpoint for ReadModels {
    async fn load(&self, name: &str) -> Result<Position, StoreError> {
        Ok(self.checkpoint(name).await?)
    }

    async fn save(&self, name: &str, position: Position) -> Result<(), StoreError> {
        let mut conn = self.pool().acquire().await?;
        upsert_checkpoint(&mut conn, name, position as i64, true).await?;
        Ok(())
    }
}

/// Stores a checkpoint; with `never_back`, a lower value leaves the stored one.
async fn upsert_checkpoint(
    conn: &mut sqlx::AnyConnection,
    name: &str,
    value: i64,
    never_back: bool,
) -> Result<(), sqlx::Error> {
    let sql = if never_back {
        "INSERT INTO checkpoints (name, position) VALUES ($1, $2)
         ON CONFLICT (name) DO UPDATE SET position =
             CASE WHEN excluded.position > checkpoints.position THEN excluded.position ELSE checkpoints.position END"
    } else {
        "INSERT INTO checkpoints (name, position) VALUES ($1, $2)
         ON CONFLICT (name) DO UPDATE SET position = excluded.position"
    };
    sqlx::query(sql)
        .bind(name)
        .bind(value)
        .execute(conn)
        .await?;
    Ok(())
}
