//! The event store: the source of truth every other part of Tidemark is derived from.
//!
//! Appends are per stream with an expected version (optimistic concurrency); each
//! appended event also gets a global position, and readers tail the global log by
//! position. The store knows nothing of the domain: events arrive already encoded
//! (`type`, `schema_version`, JSON `data`) by the `schemas` crate.
//!
//! [`EventStore`] is implemented by [`sqlite::SqliteStore`] (the embedded default) and
//! [`postgres::PostgresStore`] (production, shared by many processes); `contract` holds
//! the test suite every implementation must pass.

mod batch;
mod chain;
mod column;
pub mod contract;
pub mod kafka;
pub mod postgres;
pub mod sqlite;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use tokio::sync::{oneshot, watch};
use uuid::Uuid;

pub use chain::{AppendChain, ChainBroken, ChainProgress};

/// A stream's version: the number of events in it. A stream that does not exist yet
/// is at version 0; its first event has version 1.
pub type Version = u64;

/// A position in the global log. The first event ever appended has position 1; 0
/// means "before everything".
pub type Position = u64;

/// What the caller believes the stream's version is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExpectedVersion {
    /// Append whatever the version (no concurrency check).
    Any,
    /// Append only if the stream is exactly at this version (0: the stream must not exist).
    Exact(Version),
}

/// Who did it and why, carried in every envelope.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Metadata {
    pub correlation_id: Uuid,
    pub causation_id: Option<Uuid>,
    /// The subject of the token that issued the command, or the component's name.
    pub actor: String,
}

/// An encoded event about to be appended.
#[derive(Debug, Clone, PartialEq)]
pub struct NewEvent {
    pub event_id: Uuid,
    pub event_type: String,
    pub schema_version: u32,
    pub occurred_at: DateTime<Utc>,
    pub data: serde_json::Value,
}

/// An event as stored, with its full envelope.
#[derive(Debug, Clone, PartialEq)]
pub struct RecordedEvent {
    pub global_position: Position,
    pub event_id: Uuid,
    pub tenant_id: Uuid,
    pub stream_id: String,
    pub version: Version,
    pub event_type: String,
    pub schema_version: u32,
    pub occurred_at: DateTime<Utc>,
    pub recorded_at: DateTime<Utc>,
    pub correlation_id: Uuid,
    pub causation_id: Option<Uuid>,
    pub actor: String,
    pub data: serde_json::Value,
}

/// The answer a command gave, kept under its `Idempotency-Key` so a retry returns it.
#[derive(Debug, Clone, PartialEq)]
pub struct IdempotentResponse {
    /// SHA-256 of the command name and canonical request body, hex encoded.
    pub request_hash: String,
    pub status: u16,
    pub body: serde_json::Value,
}

/// An idempotency key to record in the same transaction as the append, so the events
/// and the memory of having produced them can never disagree. When the response body
/// is a JSON object, the store adds the append's last global `position` to it.
#[derive(Debug, Clone, PartialEq)]
pub struct IdempotencyRecord {
    pub key: String,
    pub response: IdempotentResponse,
}

/// One atomic append to one stream.
#[derive(Debug, Clone, PartialEq)]
pub struct AppendRequest {
    pub tenant_id: Uuid,
    pub stream_id: String,
    pub expected: ExpectedVersion,
    pub metadata: Metadata,
    pub events: Vec<NewEvent>,
    pub idempotency: Option<IdempotencyRecord>,
}

/// A chained append that is queued, resolving to its outcome (see
/// [`EventStore::append_chained`]). Dropping it before the append ran withdraws it,
/// which breaks its chain.
#[derive(Debug)]
pub struct PendingAppend(oneshot::Receiver<Result<Appended, StoreError>>);

impl Future for PendingAppend {
    type Output = Result<Appended, StoreError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        Pin::new(&mut self.0)
            .poll(cx)
            .map(|answer| answer.unwrap_or(Err(StoreError::Closed)))
    }
}

/// Where an append landed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Appended {
    /// The stream's version after the append.
    pub version: Version,
    /// Global position of the first and last appended event.
    pub first_position: Position,
    pub last_position: Position,
}

/// A stream's folded state as of one of its versions: a cache the command side may
/// start a cold load from instead of the stream's first event (see `schemas::states`).
///
/// The store knows nothing of the state: `data` is JSON text that `schemas` wrote in
/// format version `snapshot_version`. Snapshots of different format versions are kept
/// apart, so a reader asks for the version it understands and never sees another.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    pub tenant_id: Uuid,
    pub stream_id: String,
    /// The version of the state's stored format, not of the stream.
    pub snapshot_version: u32,
    /// The stream version the state covers: every event up to and including it.
    pub version: Version,
    /// The encoded state, JSON text.
    pub data: String,
    /// The part of the state a cold load does not read (JSON text), for formats that
    /// have one. Stored with the snapshot; only [`EventStore::load_snapshot_detail`]
    /// reads it back, so a loaded snapshot has `None` here.
    pub detail: Option<String>,
}

/// Why an append or read failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("stream {stream_id} is at version {actual}, not the expected {expected}")]
    VersionConflict {
        stream_id: String,
        expected: Version,
        actual: Version,
    },
    #[error("idempotency key {0:?} was already used")]
    IdempotencyKeyTaken(String),
    #[error("stream {stream_id} belongs to another tenant")]
    WrongTenant { stream_id: String },
    #[error("an append must carry at least one event")]
    EmptyAppend,
    /// A chained append ([`EventStore::append_chained`]) that did not run because an
    /// earlier append of its chain failed: it was decided on that append's outcome.
    #[error("an earlier append to stream {stream_id} that this one was decided after failed")]
    EarlierAppendFailed { stream_id: String },
    /// A snapshot of a stream this tenant has no stream of that name (it does not
    /// exist, or belongs to another tenant, which is not revealed).
    #[error("stream {stream_id} does not exist for this tenant")]
    NoSuchStream { stream_id: String },
    #[error(
        "a snapshot of {stream_id} at version {snapshot} is past the stream's version {actual}"
    )]
    SnapshotPastStream {
        stream_id: String,
        snapshot: Version,
        actual: Version,
    },
    #[error("the event store is shutting down")]
    Closed,
    #[error("event store database error")]
    Database(#[from] sqlx::Error),
    #[error("event store migration failed")]
    Migration(#[from] sqlx::migrate::MigrateError),
}

/// The event store contract.
#[async_trait]
pub trait EventStore: Send + Sync + 'static {
    /// Appends events to one stream atomically if it is at the expected version.
    /// With an idempotency record, the record is stored in the same transaction; if
    /// the key is already taken nothing is appended and `IdempotencyKeyTaken` is returned.
    async fn append(&self, request: AppendRequest) -> Result<Appended, StoreError>;

    /// Queues an append as the next of `chain` and returns as soon as it is queued,
    /// before it runs; the returned [`PendingAppend`] resolves to its outcome. Appends
    /// of one chain run in the order they were queued, and one runs only if every
    /// earlier append of the chain succeeded; otherwise it fails with
    /// [`StoreError::EarlierAppendFailed`] without running (see `chain`). Otherwise it
    /// is [`EventStore::append`]: the same checks, the same answers.
    async fn append_chained(
        &self,
        request: AppendRequest,
        chain: Arc<AppendChain>,
    ) -> Result<PendingAppend, StoreError>;

    /// Reads a stream's events with `version > after_version`, in version order.
    async fn read_stream(
        &self,
        tenant_id: Uuid,
        stream_id: &str,
        after_version: Version,
    ) -> Result<Vec<RecordedEvent>, StoreError>;

    /// Reads up to `limit` events of the global log with `position > after`, in order.
    async fn read_all(
        &self,
        after: Position,
        limit: usize,
    ) -> Result<Vec<RecordedEvent>, StoreError>;

    /// Highest position that is committed and visible to `read_all`.
    async fn head(&self) -> Result<Position, StoreError>;

    /// A receiver of the head position, updated after every commit this store (or,
    /// for a shared database, any process) makes visible. Tailers await changes on it
    /// instead of polling in a loop. Its value is a head that was visible when it was
    /// published, so every position at or below it is in the log; it may trail
    /// [`EventStore::head`], never lead it (on PostgreSQL, unless a session of the
    /// database forges an announcement: see the module docs of `postgres`).
    fn watch_head(&self) -> watch::Receiver<Position>;

    /// The highest position at or below `at_most` that holds an event of `tenant`, or
    /// `None` if the tenant has none there. A tenant-scoped reader that must include
    /// position `at_most` (read-your-writes) needs only the tenant's own events up to
    /// it: through a partitioned log there is no single global "applied up to".
    ///
    /// The default answers `at_most` itself, which is always safe (a reader then waits
    /// for that exact position); stores answer precisely.
    async fn last_tenant_position(
        &self,
        tenant_id: Uuid,
        at_most: Position,
    ) -> Result<Option<Position>, StoreError> {
        let _ = tenant_id;
        Ok(Some(at_most))
    }

    /// The newest snapshot of a stream in format `snapshot_version`, if there is one.
    async fn load_snapshot(
        &self,
        tenant_id: Uuid,
        stream_id: &str,
        snapshot_version: u32,
    ) -> Result<Option<Snapshot>, StoreError>;

    /// A cold load's reads in one go: the newest snapshot of format `snapshot_version`,
    /// if any, and the stream's events after the version it covers (all of them without
    /// one). The default makes the two calls; a store may answer both in one round of
    /// its own.
    async fn read_stream_from_snapshot(
        &self,
        tenant_id: Uuid,
        stream_id: &str,
        snapshot_version: u32,
    ) -> Result<(Option<Snapshot>, Vec<RecordedEvent>), StoreError> {
        let snapshot = self
            .load_snapshot(tenant_id, stream_id, snapshot_version)
            .await?;
        let after = snapshot.as_ref().map_or(0, |s| s.version);
        let events = self.read_stream(tenant_id, stream_id, after).await?;
        Ok((snapshot, events))
    }

    /// Stores a snapshot unless one of the same format at the same or a newer stream
    /// version is already stored: a slow writer never replaces a newer snapshot with an
    /// older one. Returns whether it was stored. A snapshot of a stream that belongs to
    /// another tenant is refused (`WrongTenant`); one of a stream that does not exist,
    /// or that claims a version past the stream's, is refused as an encoding error.
    async fn save_snapshot(&self, snapshot: &Snapshot) -> Result<bool, StoreError>;

    /// The detail of the snapshot of format `snapshot_version` that covers exactly
    /// stream version `version`: `None` when that snapshot has no detail, or is no
    /// longer stored (a newer one replaced it, or snapshots were dropped). A caller
    /// holding a state decoded from that snapshot then loads the stream again.
    async fn load_snapshot_detail(
        &self,
        tenant_id: Uuid,
        stream_id: &str,
        snapshot_version: u32,
        version: Version,
    ) -> Result<Option<String>, StoreError>;

    /// Deletes every snapshot of every tenant and returns how many there were. Always
    /// safe: a cold load without a snapshot folds the stream from its first event.
    async fn drop_snapshots(&self) -> Result<u64, StoreError>;

    /// The stored answer for an idempotency key, if any.
    async fn idempotent_response(
        &self,
        tenant_id: Uuid,
        key: &str,
    ) -> Result<Option<IdempotentResponse>, StoreError>;

    /// Stores an answer that appended nothing (a rejection) under an idempotency key.
    /// Returns false when the key was already taken, in which case nothing changes.
    async fn remember_response(
        &self,
        tenant_id: Uuid,
        key: &str,
        response: &IdempotentResponse,
    ) -> Result<bool, StoreError>;
}

/// Waits until the store's head reaches `position` or `timeout` passes; returns the
/// head seen last. Shared by every tailer so none of them polls in a busy loop.
pub async fn wait_for_head(
    head: &mut watch::Receiver<Position>,
    position: Position,
    timeout: Duration,
) -> Position {
    let reached = match tokio::time::timeout(timeout, head.wait_for(|h| *h >= position)).await {
        Ok(Ok(seen)) => Some(*seen),
        _ => None,
    };
    // Timed out, or the store was dropped: report what we last saw.
    reached.unwrap_or_else(|| *head.borrow())
}
