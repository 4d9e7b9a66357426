//! The projector loop: read a batch of the global log, apply it, move the checkpoint.
//!
//! The batch and the checkpoint commit in one transaction, and the checkpoint is read
//! inside that same transaction under a lock every other writer also takes (SQLite's
//! write lock via `BEGIN IMMEDIATE`, or on PostgreSQL the checkpoint row via
//! `SELECT … FOR UPDATE`), so two projectors (or a projector and a rebuild), in one
//! process or in several, can never apply the same event twice: the second one starts
//! from wherever the first one committed.

use std::sync::Arc;
use std::time::Duration;

use eventlog::{EventStore, Position};
use tokio::sync::watch;

use crate::TABLES;
use crate::apply::{ApplyError, apply};
use crate::batch::{BUDGETS, Batch, Lane};
use crate::readmodel::ReadModels;

/// Checkpoint name of the read-model projector.
pub const READ_MODELS: &str = "read_models";

/// How many read-model rows a rebuild holds in memory before it writes them: about
/// 80 MiB, and enough to span some hundred thousand events.
const REBUILD_ROWS_HELD: usize = 100_000;

/// What one call to [`Projector::project_batch`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Applied this many events; there may be more.
    Projected(usize),
    /// Nothing new to apply.
    CaughtUp,
}

/// Why projecting failed.
#[derive(Debug, thiserror::Error)]
pub enum ProjectError {
    #[error(transparent)]
    Apply(#[from] ApplyError),
    #[error("could not read the event log")]
    Store(#[from] eventlog::StoreError),
    #[error("read-model database error")]
    Database(#[from] sqlx::Error),
}

/// Builds the read models from the event store.
pub struct Projector {
    store: Arc<dyn EventStore>,
    models: ReadModels,
    batch_size: usize,
    /// How many rows a rebuild holds before it writes them back.
    rebuild_rows_held: usize,
}

impl Projector {
    /// A projector from `store` into `models`, applying up to 1,000 events per batch.
    pub fn new(store: Arc<dyn EventStore>, models: ReadModels) -> Self {
        Self {
            store,
            models,
            batch_size: 1_000,
            rebuild_rows_held: REBUILD_ROWS_HELD,
        }
    }

    /// Sets how many events one transaction applies at most.
    /// Makes a rebuild write its rows back whenever it holds `rows` of them (default
    /// 100,000); tests use a few, so that a small log takes many write-backs.
    pub fn with_rebuild_rows_held(mut self, rows: usize) -> Self {
        self.rebuild_rows_held = rows.max(1);
        self
    }

    pub fn with_batch_size(mut self, batch_size: usize) -> Self {
        self.batch_size = batch_size.max(1);
        self
    }

    /// Applies the next batch of events and moves the checkpoint, in one transaction.
    #[tracing::instrument(skip(self))]
    pub async fn project_batch(&self) -> Result<Outcome, ProjectError> {
        let dialect = self.models.dialect();
        let mut tx = dialect.begin_write(self.models.pool()).await?;
        let from = dialect.lock_checkpoint(&mut tx, READ_MODELS).await?;
        let events = self.store.read_all(from, self.batch_size).await?;
        let Some(last) = events.last().map(|e| e.global_position) else {
            tx.rollback().await?;
            return Ok(Outcome::CaughtUp);
        };
        let mut batch = Batch::new(dialect);
        let mut lane = Lane::Borrowed(&mut tx);
        for event in &events {
            apply(&mut batch, &mut lane, event).await?;
        }
        let reads = batch.reads();
        let writes = batch.flush(&mut tx).await?;
        tracing::debug!(events = events.len(), reads, writes, "applied a batch");
        save_checkpoint(&mut tx, last).await?;
        tx.commit().await?;
        self.models.publish_progress(last);
        Ok(Outcome::Projected(events.len()))
    }

    /// Projects until the read models include the store's head.
    pub async fn catch_up(&self) -> Result<usize, ProjectError> {
        let mut total = 0;
        while let Outcome::Projected(n) = self.project_batch().await? {
            total += n;
        }
        Ok(total)
    }

    /// Runs until `shutdown` turns true: catch up, then wait for the store's head to
    /// move. A failing batch is logged and retried after a pause, never skipped.
    pub async fn run(self, mut shutdown: watch::Receiver<bool>) {
        let mut head = self.store.watch_head();
        let mut backoff = Duration::from_millis(100);
        loop {
            if *shutdown.borrow() {
                return;
            }
            match self.project_batch().await {
                Ok(Outcome::Projected(_)) => {
                    backoff = Duration::from_millis(100);
                    continue;
                }
                Ok(Outcome::CaughtUp) => {
                    let done = self.models.checkpoint(READ_MODELS).await.unwrap_or(0);
                    tokio::select! {
                        _ = head.wait_for(|h| *h > done) => {}
                        _ = shutdown.changed() => {}
                    }
                }
                Err(error) => {
                    tracing::error!(error = ?error, "projection batch failed; retrying");
                    tokio::select! {
                        _ = tokio::time::sleep(backoff) => {}
                        _ = shutdown.changed() => {}
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(10));
                }
            }
        }
    }

    /// Rebuilds every read model from the start of the log in ONE transaction, so
    /// readers see the old models until the new ones are complete. Returns the number
    /// of events applied.
    ///
    /// The old rows are deleted tenant by tenant, each under that tenant's scope, so on
    /// PostgreSQL even a rebuild stays inside row-level security.
    #[tracing::instrument(skip_all)]
    pub async fn rebuild(
        &self,
        mut progress: impl FnMut(Position, Position),
    ) -> Result<usize, ProjectError> {
        let head = self.store.head().await?;
        let dialect = self.models.dialect();
        let mut tx = dialect.begin_write(self.models.pool()).await?;
        // Taken only to hold other writers off until the rebuild commits.
        dialect.lock_checkpoint(&mut tx, READ_MODELS).await?;
        let tenants: Vec<String> = sqlx::query_scalar("SELECT tenant_id FROM read_model_tenants")
            .fetch_all(&mut *tx)
            .await?;
        for tenant in &tenants {
            dialect.scope_to_tenant(&mut tx, tenant).await?;
            for table in TABLES {
                sqlx::query(&format!("DELETE FROM {table} WHERE tenant_id = $1"))
                    .bind(tenant)
                    .execute(&mut *tx)
                    .await?;
            }
        }
        // One batch across many reads of the log: the longer it runs, the fewer
        // statements per event (every tenant's rows of a table in one upsert), up to
        // a bound on the rows it holds in memory.
        let mut batch = Batch::new(dialect);
        // The transaction is lent to each write-back while the next events are applied
        // on top of what the batch still holds; a row the batch must read waits for the
        // write-back to end (see `Lane`). The database writes while the projector
        // applies, instead of each waiting for the other.
        let mut lane = Lane::Owned(tx);
        let mut from: Position = 0;
        let mut total = 0;
        loop {
            let events = self.store.read_all(from, self.batch_size).await?;
            let Some(last) = events.last().map(|e| e.global_position) else {
                break;
            };
            for event in &events {
                apply(&mut batch, &mut lane, event).await?;
            }
            if batch.held() >= self.rebuild_rows_held {
                let write_back = batch.take_write_back(&[&BUDGETS]);
                lane.lend(&mut batch, write_back).await?;
            }
            total += events.len();
            from = last;
            progress(from, head.max(from));
        }
        let mut tx = lane.into_transaction().await?;
        batch.flush(&mut tx).await?;
        save_checkpoint(&mut tx, from).await?;
        tx.commit().await?;
        self.models.publish_progress(from);
        Ok(total)
    }
}

async fn save_checkpoint(
    conn: &mut sqlx::AnyConnection,
    position: Position,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO checkpoints (name, position) VALUES ($1, $2)
         ON CONFLICT (name) DO UPDATE SET position = excluded.position",
    )
    .bind(READ_MODELS)
    .bind(position as i64)
    .execute(conn)
    .await?;
    Ok(())
}
