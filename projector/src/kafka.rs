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
use tokio::sync::watch;

use crate::apply::apply;
use crate::batch::{Batch, Lane};
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
        // One statement locks every partition's offset and dedup mark (in name order,
        // so two members whose batches overlap while a partition moves cannot
        // deadlock on each other's rows).
        let partitions: std::collections::BTreeSet<i32> =
            batch.iter().map(|s| s.partition).collect();
        let named: Vec<(i32, String, String)> = partitions
            .into_iter()
            .map(|p| {
                (
                    p,
                    offset_checkpoint(topic, p),
                    position_checkpoint(topic, p),
                )
            })
            .collect();
        let names: Vec<&str> = named
            .iter()
            .flat_map(|(_, offset, mark)| [offset.as_str(), mark.as_str()])
            .collect();
        let held = dialect.lock_checkpoints(&mut tx, &names).await?;
        let stored = |name: &String| held.get(name).copied().unwrap_or(0);
        let mut next: BTreeMap<i32, i64> = BTreeMap::new();
        let mut applied_up_to: BTreeMap<i32, Position> = BTreeMap::new();
        for (partition, offset, mark) in &named {
            next.insert(*partition, stored(offset) as i64);
            applied_up_to.insert(*partition, stored(mark));
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
            apply(&mut rows, &mut Lane::Borrowed(&mut tx), &sourced.event).await?;
            highest = highest.max(sourced.event.global_position);
            let tenant = tenants.entry(sourced.event.tenant_id).or_default();
            *tenant = (*tenant).max(sourced.event.global_position);
            applied += 1;
        }
        rows.flush(&mut tx).await?;
        // Positions never go back; offsets follow what was consumed.
        let positions: Vec<(String, i64)> =
            tenants
                .iter()
                .map(|(tenant, position)| (tenant_checkpoint(*tenant), *position as i64))
                .chain(applied_up_to.iter().map(|(partition, mark)| {
                    (position_checkpoint(topic, *partition), *mark as i64)
                }))
                .collect();
        upsert_checkpoints(&mut tx, dialect, &positions, true).await?;
        let offsets: Vec<(String, i64)> = next
            .iter()
            .map(|(partition, offset)| (offset_checkpoint(topic, *partition), *offset))
            .collect();
        upsert_checkpoints(&mut tx, dialect, &offsets, false).await?;
        tx.commit().await?;
        tracing::debug!(applied, highest, "applied a batch from the topic");
        Ok(applied)
    }
}

/// How often the one poller of a process reads the checkpoints its waiting queries
/// need, while any query waits.
const WAIT_POLL: Duration = Duration::from_millis(5);

/// The tenant-scoped queries of one process that wait for the read models to reach a
/// position (`min_position`), and what the checkpoints said when last read.
///
/// In production the query API and the projectors are separate processes, so a query
/// learns the projectors' progress only from their checkpoints. Each waiting query
/// reading them on its own costs a query every few milliseconds per waiter: at a few
/// hundred commands a second, each followed by a read-your-writes query, that was
/// thousands of checkpoint reads a second, which starved the pipeline they waited for
/// (docs/benchmarks.md). Instead one poller per process, running only while something
/// waits, reads the checkpoints of every waiting tenant (and the store-tail
/// projector's) in one statement every [`WAIT_POLL`], and wakes the waiters.
#[derive(Debug)]
pub(crate) struct TenantWaits {
    state: std::sync::Mutex<WaitState>,
    /// Bumped after every read of the checkpoints.
    read: watch::Sender<u64>,
}

impl Default for TenantWaits {
    fn default() -> Self {
        Self {
            state: std::sync::Mutex::default(),
            read: watch::channel(0).0,
        }
    }
}

#[derive(Debug, Default)]
struct WaitState {
    polling: bool,
    /// Waiting queries per tenant.
    waiting: HashMap<Uuid, usize>,
    /// Each waiting tenant's checkpoint as last read.
    known: HashMap<Uuid, Position>,
    /// The store-tail projector's checkpoint as last read.
    global: Position,
}

impl TenantWaits {
    fn lock(&self) -> std::sync::MutexGuard<'_, WaitState> {
        // A panic while holding this lock leaves plain numbers behind, still usable.
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn reached(&self, tenant: Uuid, position: Position) -> bool {
        let state = self.lock();
        state.global >= position || state.known.get(&tenant).is_some_and(|p| *p >= position)
    }
}

/// One waiting query, counted in [`TenantWaits`] until dropped.
struct Waiting<'a> {
    waits: &'a TenantWaits,
    tenant: Uuid,
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        let mut state = self.waits.lock();
        if let Some(count) = state.waiting.get_mut(&self.tenant) {
            *count -= 1;
            if *count == 0 {
                state.waiting.remove(&self.tenant);
                state.known.remove(&self.tenant);
            }
        }
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
        let mut progress = self.progress.subscribe();
        if *progress.borrow_and_update() >= position {
            return Ok(true);
        }
        let waits = &*self.waits;
        let mut read = waits.read.subscribe();
        let _waiting = self.start_waiting(tenant);
        // Most queries find their position reached at once: one read, no waiting.
        self.read_waited(&[tenant]).await?;
        loop {
            if waits.reached(tenant, position) || *progress.borrow_and_update() >= position {
                return Ok(true);
            }
            tokio::select! {
                _ = read.changed() => {}
                _ = progress.changed() => {}
                _ = tokio::time::sleep_until(deadline) => {
                    return Ok(self.read_waited(&[tenant]).await?.reached(tenant, position));
                }
            }
        }
    }

    /// Counts a waiting query in, starting the poller if it is not running.
    fn start_waiting(&self, tenant: Uuid) -> Waiting<'_> {
        let mut state = self.waits.lock();
        *state.waiting.entry(tenant).or_default() += 1;
        if !state.polling {
            state.polling = true;
            let models = self.clone();
            tokio::spawn(async move { models.poll_waited().await });
        }
        Waiting {
            waits: &self.waits,
            tenant,
        }
    }

    /// The poller: while any query waits, reads the checkpoints they need.
    async fn poll_waited(self) {
        loop {
            let tenants: Vec<Uuid> = {
                let mut state = self.waits.lock();
                if state.waiting.is_empty() {
                    state.polling = false;
                    return;
                }
                state.waiting.keys().copied().collect()
            };
            if let Err(error) = self.read_waited(&tenants).await {
                tracing::warn!(%error, "reading the checkpoints of waiting queries failed");
            }
            tokio::time::sleep(WAIT_POLL).await;
        }
    }

    /// Reads the checkpoints of `tenants` and of the store-tail projector in one
    /// statement, records them, and wakes the waiting queries.
    async fn read_waited(&self, tenants: &[Uuid]) -> Result<&TenantWaits, sqlx::Error> {
        let names: Vec<String> = tenants
            .iter()
            .map(|t| tenant_checkpoint(*t))
            .chain([READ_MODELS.to_owned()])
            .collect();
        let sql = format!(
            "SELECT name, position FROM checkpoints WHERE name IN ({})",
            crate::batch::parameters(self.dialect(), 1, names.len())
        );
        let mut query = sqlx::query_as::<_, (String, i64)>(&sql).persistent(false);
        for name in &names {
            query = query.bind(name.as_str());
        }
        let rows = query.fetch_all(self.pool()).await?;
        {
            let mut state = self.waits.lock();
            for (name, position) in rows {
                let position = position as Position;
                if name == READ_MODELS {
                    state.global = state.global.max(position);
                } else if let Some(tenant) = name
                    .strip_prefix("tenant:")
                    .and_then(|t| Uuid::parse_str(t).ok())
                    && state.waiting.contains_key(&tenant)
                {
                    let known = state.known.entry(tenant).or_default();
                    *known = (*known).max(position);
                }
            }
        }
        self.waits.read.send_modify(|n| *n = n.wrapping_add(1));
        Ok(&self.waits)
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
        let checkpoint = [(name.to_owned(), position as i64)];
        upsert_checkpoints(&mut conn, self.dialect(), &checkpoint, true).await?;
        Ok(())
    }
}

/// Stores checkpoints, all of them in one statement per thousand (a batch from the
/// topic moves one per tenant it touched). With `never_back`, a stored position
/// higher than the new one stays.
async fn upsert_checkpoints(
    conn: &mut sqlx::AnyConnection,
    dialect: crate::Dialect,
    checkpoints: &[(String, i64)],
    never_back: bool,
) -> Result<(), sqlx::Error> {
    let set = if never_back {
        "CASE WHEN excluded.position > checkpoints.position THEN excluded.position ELSE checkpoints.position END"
    } else {
        "excluded.position"
    };
    for chunk in checkpoints.chunks(1_000) {
        let sql = format!(
            "INSERT INTO checkpoints (name, position) VALUES {}
             ON CONFLICT (name) DO UPDATE SET position = {set}",
            crate::batch::placeholders(dialect, chunk.len(), 2)
        );
        let mut query = sqlx::query(&sql).persistent(chunk.len() == 1);
        for (name, value) in chunk {
            query = query.bind(name.as_str()).bind(*value);
        }
        query.execute(&mut *conn).await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn many_waiting_queries_share_one_poller_and_each_wakes_at_its_tenants_position() {
        let dir = tempfile::TempDir::new().expect("temp dir");
        let models = ReadModels::open(&dir.path().join("read_models.db"))
            .await
            .expect("open read models");
        let tenants: Vec<Uuid> = (0..5).map(|_| Uuid::new_v4()).collect();
        let mut waiting = Vec::new();
        for (n, tenant) in tenants.iter().enumerate() {
            for _ in 0..10 {
                let models = models.clone();
                let tenant = *tenant;
                let position = 100 + n as Position;
                waiting.push(tokio::spawn(async move {
                    models
                        .wait_for_tenant_position(tenant, position, Duration::from_secs(30))
                        .await
                }));
            }
        }
        // One that is never reached gives up at its deadline.
        let stranded = {
            let models = models.clone();
            let tenant = Uuid::new_v4();
            tokio::spawn(async move {
                models
                    .wait_for_tenant_position(tenant, 1, Duration::from_millis(200))
                    .await
            })
        };
        assert!(!stranded.await.expect("join").expect("wait"));
        assert!(
            models.waits.lock().polling,
            "the poller runs while queries wait"
        );
        for (n, tenant) in tenants.iter().enumerate() {
            models
                .save_checkpoint(&tenant_checkpoint(*tenant), 100 + n as Position)
                .await
                .expect("save");
        }
        for wait in waiting {
            assert!(wait.await.expect("join").expect("wait"));
        }
        let state = models.waits.lock();
        assert!(
            state.waiting.is_empty() && state.known.is_empty(),
            "{state:?}"
        );
    }
}
