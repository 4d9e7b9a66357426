//! A store wrapper for tests that need to see or change what reaches a real store.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use async_trait::async_trait;
use eventlog::{
    AppendChain, AppendRequest, Appended, EventStore, IdempotentResponse, PendingAppend, Position,
    RecordedEvent, Snapshot, StoreError, Version,
};
use tokio::sync::watch;
use uuid::Uuid;

/// A store that hands every call to `inner`, counting the snapshots it gave to cold
/// loads and the snapshot details asked for, and letting a test change a chained append before it is queued.
pub struct Probe<S> {
    inner: S,
    /// How many reads of a snapshot and the events after it found a snapshot.
    pub snapshots_used: AtomicUsize,
    /// How many snapshot details were asked for, and how many of those were found.
    pub details_asked: AtomicUsize,
    pub details_found: AtomicUsize,
    /// Runs once, at the next request for a snapshot detail, before it is answered.
    pub before_detail: std::sync::Mutex<Option<Hook>>,
    /// Runs on every chained append's request before it goes to `inner`.
    tamper: Option<Tamper>,
}

type Tamper = Box<dyn Fn(&mut AppendRequest) + Send + Sync>;

/// Work a test runs in the middle of a store call.
pub type Hook = std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>;

impl<S> Probe<S> {
    pub fn new(inner: S) -> Self {
        Self {
            inner,
            snapshots_used: AtomicUsize::new(0),
            details_asked: AtomicUsize::new(0),
            details_found: AtomicUsize::new(0),
            before_detail: std::sync::Mutex::new(None),
            tamper: None,
        }
    }

    /// The same store, with `tamper` run on every chained append's request.
    pub fn tampering(
        inner: S,
        tamper: impl Fn(&mut AppendRequest) + Send + Sync + 'static,
    ) -> Self {
        Self {
            tamper: Some(Box::new(tamper)),
            ..Self::new(inner)
        }
    }
}

#[async_trait]
impl<S: EventStore> EventStore for Probe<S> {
    async fn append(&self, request: AppendRequest) -> Result<Appended, StoreError> {
        self.inner.append(request).await
    }

    async fn append_chained(
        &self,
        mut request: AppendRequest,
        chain: Arc<AppendChain>,
    ) -> Result<PendingAppend, StoreError> {
        if let Some(tamper) = &self.tamper {
            tamper(&mut request);
        }
        self.inner.append_chained(request, chain).await
    }

    async fn read_stream(
        &self,
        tenant_id: Uuid,
        stream_id: &str,
        after_version: Version,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        self.inner
            .read_stream(tenant_id, stream_id, after_version)
            .await
    }

    async fn read_all(
        &self,
        after: Position,
        limit: usize,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        self.inner.read_all(after, limit).await
    }

    async fn head(&self) -> Result<Position, StoreError> {
        self.inner.head().await
    }

    fn watch_head(&self) -> watch::Receiver<Position> {
        self.inner.watch_head()
    }

    async fn load_snapshot(
        &self,
        tenant_id: Uuid,
        stream_id: &str,
        snapshot_version: u32,
    ) -> Result<Option<Snapshot>, StoreError> {
        self.inner
            .load_snapshot(tenant_id, stream_id, snapshot_version)
            .await
    }

    async fn read_stream_from_snapshot(
        &self,
        tenant_id: Uuid,
        stream_id: &str,
        snapshot_version: u32,
    ) -> Result<(Option<Snapshot>, Vec<RecordedEvent>), StoreError> {
        let read = self
            .inner
            .read_stream_from_snapshot(tenant_id, stream_id, snapshot_version)
            .await?;
        if read.0.is_some() {
            self.snapshots_used.fetch_add(1, Ordering::Relaxed);
        }
        Ok(read)
    }

    async fn save_snapshot(&self, snapshot: &Snapshot) -> Result<bool, StoreError> {
        self.inner.save_snapshot(snapshot).await
    }

    async fn load_snapshot_detail(
        &self,
        tenant_id: Uuid,
        stream_id: &str,
        snapshot_version: u32,
        version: Version,
    ) -> Result<Option<String>, StoreError> {
        self.details_asked.fetch_add(1, Ordering::Relaxed);
        let hook = self
            .before_detail
            .lock()
            .expect("no test panicked holding the hook")
            .take();
        if let Some(hook) = hook {
            hook.await;
        }
        let detail = self
            .inner
            .load_snapshot_detail(tenant_id, stream_id, snapshot_version, version)
            .await?;
        if detail.is_some() {
            self.details_found.fetch_add(1, Ordering::Relaxed);
        }
        Ok(detail)
    }

    async fn drop_snapshots(&self) -> Result<u64, StoreError> {
        self.inner.drop_snapshots().await
    }

    async fn idempotent_response(
        &self,
        tenant_id: Uuid,
        key: &str,
    ) -> Result<Option<IdempotentResponse>, StoreError> {
        self.inner.idempotent_response(tenant_id, key).await
    }

    async fn remember_response(
        &self,
        tenant_id: Uuid,
        key: &str,
        response: &IdempotentResponse,
    ) -> Result<bool, StoreError> {
        self.inner.remember_response(tenant_id, key, response).await
    }
}
