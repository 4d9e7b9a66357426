//! The baseline every command figure is divided by: the raw rate at which plain sqlx
//! can insert the same event rows into the same SQLite table, one row per transaction.
//!
//! It is what a naive event store does per command, minus everything Tidemark adds
//! (HTTP, auth, decide, the version check, JSON): each worker owns a connection and
//! runs `BEGIN IMMEDIATE; INSERT one event row; COMMIT`, with the store's own settings
//! (WAL, `synchronous=FULL`, the same busy timeout). Workers contend for SQLite's one
//! write lock exactly as a naive store's connections would. The row is a real
//! `post.created` event, encoded by `schemas` like the command side does. The only
//! difference from the store's path: foreign keys are not enforced (the store inserts
//! the stream row first), which makes the baseline a little faster, never slower.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use async_trait::async_trait;
use chrono::{SecondsFormat, Utc};
use domain::{Channel, PostId, StreamName, TenantId, post};
use schemas::DomainEvent;
use sqlx::SqlitePool;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use tokio::time::Instant;
use uuid::Uuid;

use super::load::{Operation, Outcome, Progress, Sample, Tally, Window, closed_loop};

/// The store's busy timeout, so a worker waits for the write lock as long as the store would.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// Tenants the rows are spread over, like the create-post workload.
const TENANTS: usize = 1_000;

/// Runs the baseline against the (already migrated) database at `path`.
pub async fn sqlite_inserts(
    path: &Path,
    concurrency: usize,
    window: Window,
    progress: &Progress,
) -> anyhow::Result<Tally> {
    let options = SqliteConnectOptions::new()
        .filename(path)
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(SqliteSynchronous::Full)
        .busy_timeout(BUSY_TIMEOUT)
        .foreign_keys(false);
    let pool = SqlitePoolOptions::new()
        .max_connections(u32::try_from(concurrency.max(1)).unwrap_or(u32::MAX))
        .min_connections(u32::try_from(concurrency.max(1)).unwrap_or(u32::MAX))
        .acquire_timeout(Duration::from_secs(60))
        .connect_with(options)
        .await
        .context("failed to open the baseline database")?;
    let encoded = schemas::encode(&DomainEvent::Post(post::Event::Created {
        channel: Channel::new("linkedin").map_err(|e| anyhow::anyhow!(e))?,
        body: "A benchmark post: the same body every time.".to_owned(),
        campaign_id: None,
    }));
    let op = Arc::new(InsertRow {
        pool: pool.clone(),
        tenants: (0..TENANTS).map(|_| Uuid::now_v7()).collect(),
        event_type: encoded.event_type,
        schema_version: i64::from(encoded.schema_version),
        data: encoded.data.to_string(),
    });
    let tally = closed_loop(op, concurrency, window, progress).await;
    pool.close().await;
    Ok(tally)
}

struct InsertRow {
    pool: SqlitePool,
    tenants: Vec<Uuid>,
    event_type: &'static str,
    schema_version: i64,
    data: String,
}

impl InsertRow {
    async fn insert(&self, seq: u64) -> Result<(), sqlx::Error> {
        let tenant = self.tenants[(seq as usize) % self.tenants.len()];
        let stream = StreamName::post(
            TenantId::from_uuid(tenant),
            PostId::from_uuid(Uuid::now_v7()),
        );
        let now = Utc::now().to_rfc3339_opts(SecondsFormat::Nanos, true);
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        sqlx::query(
            "INSERT INTO events (event_id, tenant_id, stream_id, version, event_type, \
             schema_version, occurred_at, recorded_at, correlation_id, causation_id, actor, data) \
             VALUES (?, ?, ?, 1, ?, ?, ?, ?, ?, NULL, 'bench', ?)",
        )
        .bind(Uuid::now_v7().to_string())
        .bind(tenant.to_string())
        .bind(stream.as_str())
        .bind(self.event_type)
        .bind(self.schema_version)
        .bind(&now)
        .bind(&now)
        .bind(Uuid::now_v7().to_string())
        .bind(&self.data)
        .execute(&mut *tx)
        .await?;
        tx.commit().await
    }
}

#[async_trait]
impl Operation for InsertRow {
    async fn call(&self, seq: u64, intended: Instant) -> Vec<Sample> {
        let outcome = match self.insert(seq).await {
            Ok(()) => Outcome::Ok,
            Err(error) => Outcome::Failed(error.to_string()),
        };
        vec![Sample::now("insert", intended, outcome)]
    }
}
