//! Where a relay remembers how far it got.
//!
//! The relay saves a position only after every message up to it was acknowledged, so
//! the checkpoint is the promise "everything at or below this is in Kafka". It is
//! small and written once per batch. [`RelayCheckpoint`] is the seam: the SQLite
//! implementation keeps it in the event store's own file (table `relay_checkpoints`,
//! migration `0003`), and the PostgreSQL store will keep it in its database the same
//! way, so a restored store never carries a checkpoint ahead of its events.

use std::path::Path;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{SecondsFormat, Utc};
use sqlx::sqlite::{SqliteConnectOptions, SqlitePool, SqlitePoolOptions, SqliteSynchronous};

use crate::{Position, StoreError};

/// Durable storage for relay checkpoints, one position per relay name.
///
/// Object safe, so a relay holds an `Arc<dyn RelayCheckpoint>` whatever the database.
#[async_trait]
pub trait RelayCheckpoint: Send + Sync + 'static {
    /// The saved position for `name`, or 0 (before everything) if none was saved.
    async fn load(&self, name: &str) -> Result<Position, StoreError>;

    /// Saves `position` for `name`. A checkpoint never moves back: saving a lower
    /// position than the stored one leaves the stored one. (To relay everything again,
    /// an operator deletes the row while the relay is stopped.)
    async fn save(&self, name: &str, position: Position) -> Result<(), StoreError>;
}

/// How long a checkpoint write waits for the store's writer to release the file.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// [`RelayCheckpoint`] in a SQLite event store's file.
///
/// It opens its own small connection pool to the file; its writes are tiny and wait
/// (up to a few seconds) for the store's group commit to release the write lock.
#[derive(Debug, Clone)]
pub struct SqliteRelayCheckpoint {
    pool: SqlitePool,
}

impl SqliteRelayCheckpoint {
    /// Opens the checkpoints of the event store at `path`. Open the store first
    /// ([`crate::sqlite::SqliteStore::open`] creates the file and runs the migrations
    /// that make the `relay_checkpoints` table); this refuses a file that does not
    /// exist rather than create an empty store.
    pub async fn open(path: &Path) -> Result<Self, StoreError> {
        let options = SqliteConnectOptions::new()
            .filename(path)
            .busy_timeout(BUSY_TIMEOUT)
            // A lost checkpoint only means messages produced again, but FULL keeps the
            // promise simple: a saved checkpoint survives a power cut.
            .synchronous(SqliteSynchronous::Full)
            .create_if_missing(false);
        let pool = SqlitePoolOptions::new()
            .max_connections(1)
            .connect_with(options)
            .await?;
        Ok(Self { pool })
    }
}

#[async_trait]
impl RelayCheckpoint for SqliteRelayCheckpoint {
    async fn load(&self, name: &str) -> Result<Position, StoreError> {
        let position: Option<i64> =
            sqlx::query_scalar("SELECT position FROM relay_checkpoints WHERE name = ?")
                .bind(name)
                .fetch_optional(&self.pool)
                .await?;
        let position = position.unwrap_or(0);
        Ok(
            u64::try_from(position).map_err(|e| sqlx::Error::ColumnDecode {
                index: "position".to_owned(),
                source: e.into(),
            })?,
        )
    }

    #[tracing::instrument(skip(self))]
    async fn save(&self, name: &str, position: Position) -> Result<(), StoreError> {
        let position = i64::try_from(position).map_err(|e| sqlx::Error::Encode(e.into()))?;
        let now = Utc::now().to_rfc3339_opts(SecondsFormat::Nanos, true);
        sqlx::query(
            "INSERT INTO relay_checkpoints (name, position, updated_at) VALUES (?, ?, ?) \
             ON CONFLICT (name) DO UPDATE SET \
                position = MAX(position, excluded.position), updated_at = excluded.updated_at",
        )
        .bind(name)
        .bind(position)
        .bind(now)
        .execute(&self.pool)
        .await?;
        Ok(())
    }
}
