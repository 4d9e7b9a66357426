//! The embedded event store: one SQLite file, one writer task, group commit.
//!
//! `tidemark dev` and single-node installs keep their whole log here, so this store
//! has to be both safe (WAL, `synchronous=FULL`: a commit that was answered survives
//! a power cut) and fast enough that the fsync per transaction is not the limit.
//! Both come from the same shape: every write goes through **one writer task** that
//! owns the only write connection. It takes the first queued request, drains whatever
//! else is already waiting (up to [`MAX_BATCH`]), and runs them all in one
//! `BEGIN IMMEDIATE` transaction — one fsync for the whole batch. Each request runs
//! inside its own `SAVEPOINT`, so one request's conflict (wrong version, idempotency
//! key taken, wrong tenant) rolls back only that request and every caller still gets
//! its own answer. Reads use a separate pool of read-only connections and never wait
//! for the writer.
//!
//! # Why tailing by position is gap-safe here
//!
//! A tailer remembers the last position it saw and asks for everything after it. That
//! is only safe if no event can ever become visible *below* a position a reader has
//! already seen. In PostgreSQL it can: positions come from a sequence, and two
//! transactions may commit in the opposite order of their sequence values. In SQLite
//! it cannot: positions are rowids assigned inside the write transaction, and SQLite
//! allows one write transaction per database file at a time (even across processes,
//! `BEGIN IMMEDIATE` takes the file's write lock). So batch N+1 cannot assign a
//! position before batch N has committed or rolled back, and a WAL reader sees a
//! whole commit or none of it. Every position at or below a visible one is therefore
//! already committed — there is no hole for a tailer to step over. Savepoint and batch
//! rollbacks undo their rowids (and the AUTOINCREMENT counter) too, so positions stay
//! dense.
//!
//! # Shutdown
//!
//! [`SqliteStore`] is a cheap handle around an `Arc`. When the last clone is dropped
//! the request channel closes; the writer drains what is left in the queue, closes
//! its connection (which checkpoints the WAL) and ends. Receivers from
//! [`EventStore::watch_head`] then report the store as closed. No explicit shutdown
//! call is needed: a caller holds a handle for as long as it waits, so no caller is
//! left without its answer, and every answered commit is already on disk.
//!
//! The head watch is fed by this process's writer only; another process writing to
//! the same file does not wake it (use [`EventStore::head`] to see such writes).

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, SecondsFormat, SubsecRound, Utc};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteConnection, SqliteJournalMode, SqlitePool, SqlitePoolOptions,
    SqliteRow, SqliteSynchronous,
};
use sqlx::{ConnectOptions, Connection, Row};
use tokio::sync::{mpsc, oneshot, watch};
use uuid::Uuid;

use crate::batch::{Job, Settled};
use crate::chain::Link;
use crate::column::{decode_error, encode_error, saturating_i64, to_i64, to_u64};
use crate::{
    AppendChain, AppendRequest, Appended, EventStore, ExpectedVersion, IdempotentResponse,
    PendingAppend, Position, RecordedEvent, Snapshot, StoreError, Version,
};

/// The most requests one group commit takes. Large enough that a burst shares one
/// fsync, small enough that the first caller in a batch does not wait long for the
/// last.
pub const MAX_BATCH: usize = 256;

/// How many requests may wait for the writer before `append` itself waits. This is
/// back-pressure, not a limit on concurrency: a full queue only slows callers down.
const QUEUE_CAPACITY: usize = 1024;

/// How many read-only connections serve `read_stream`, `read_all` and friends.
const READ_CONNECTIONS: u32 = 4;

/// How long a connection waits for another process's lock before giving up.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

const EVENT_COLUMNS: &str = "global_position, event_id, tenant_id, stream_id, version, \
     event_type, schema_version, occurred_at, recorded_at, correlation_id, causation_id, \
     actor, data";

/// The SQLite implementation of [`EventStore`]: the embedded default.
///
/// Cloning is cheap and every clone talks to the same writer task; the writer ends when
/// the last clone is dropped (see the module docs).
#[derive(Clone, Debug)]
pub struct SqliteStore {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    writes: mpsc::Sender<Job>,
    reads: SqlitePool,
    head: watch::Receiver<Position>,
}

impl SqliteStore {
    /// Opens the store at `path`, creating the file if it is missing and running the
    /// migrations, then starts the writer task on the current tokio runtime.
    #[tracing::instrument(skip_all, fields(path = %path.display()))]
    pub async fn open(path: &Path) -> Result<Self, StoreError> {
        let options = SqliteConnectOptions::new()
            .filename(path)
            .busy_timeout(BUSY_TIMEOUT)
            .foreign_keys(true);

        let mut conn = options
            .clone()
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            // FULL: a commit is on disk before its callers are answered.
            .synchronous(SqliteSynchronous::Full)
            .connect()
            .await?;
        sqlx::migrate!("./migrations/sqlite").run(&mut conn).await?;

        let head =
            sqlx::query_scalar::<_, i64>("SELECT COALESCE(MAX(global_position), 0) FROM events")
                .fetch_one(&mut conn)
                .await?;
        let head = to_u64(head, "global_position")?;
        let last_recorded_at = sqlx::query_scalar::<_, String>(
            "SELECT recorded_at FROM events ORDER BY global_position DESC LIMIT 1",
        )
        .fetch_optional(&mut conn)
        .await?
        .map(|text| parse_time(&text, "recorded_at"))
        .transpose()?;

        // The read pool is opened after the migrations so it never sees a half-made schema,
        // and after the writer switched the file to WAL, which read-only connections need.
        let reads = SqlitePoolOptions::new()
            .max_connections(READ_CONNECTIONS)
            .connect_with(options.read_only(true))
            .await?;

        let (writes, jobs) = mpsc::channel(QUEUE_CAPACITY);
        let (head_tx, head_rx) = watch::channel(head);
        let writer = Writer {
            conn,
            jobs,
            head: head_tx,
            last_recorded_at: last_recorded_at.unwrap_or(DateTime::<Utc>::MIN_UTC),
        };
        tokio::spawn(writer.run());

        Ok(Self {
            inner: Arc::new(Inner {
                writes,
                reads,
                head: head_rx,
            }),
        })
    }

    /// Queues a job for the writer and waits for its answer.
    async fn submit<T>(
        &self,
        job: impl FnOnce(oneshot::Sender<Result<T, StoreError>>) -> Job,
    ) -> Result<T, StoreError> {
        self.enqueue(job)
            .await?
            .await
            .map_err(|_| StoreError::Closed)?
    }

    /// Queues a job for the writer and returns once it is queued.
    async fn enqueue<T>(
        &self,
        job: impl FnOnce(oneshot::Sender<Result<T, StoreError>>) -> Job,
    ) -> Result<oneshot::Receiver<Result<T, StoreError>>, StoreError> {
        let (reply, answer) = oneshot::channel();
        self.inner
            .writes
            .send(job(reply))
            .await
            .map_err(|_| StoreError::Closed)?;
        Ok(answer)
    }

    /// Queues an append for the writer and returns once it is queued.
    async fn queue_append(
        &self,
        request: AppendRequest,
        link: Option<Link>,
    ) -> Result<PendingAppend, StoreError> {
        if request.events.is_empty() {
            return Err(StoreError::EmptyAppend);
        }
        let answer = self
            .enqueue(|reply| Job::Append {
                request,
                reply,
                link,
            })
            .await?;
        Ok(PendingAppend(answer))
    }
}

#[async_trait]
impl EventStore for SqliteStore {
    #[tracing::instrument(
        skip_all,
        fields(
            tenant = %request.tenant_id,
            stream = %request.stream_id,
            expected = ?request.expected,
            events = request.events.len(),
        )
    )]
    async fn append(&self, request: AppendRequest) -> Result<Appended, StoreError> {
        self.queue_append(request, None).await?.await
    }

    #[tracing::instrument(skip_all, fields(stream = %request.stream_id, expected = ?request.expected))]
    async fn append_chained(
        &self,
        request: AppendRequest,
        chain: Arc<AppendChain>,
    ) -> Result<PendingAppend, StoreError> {
        self.queue_append(request, Some(Link::new(chain))).await
    }

    #[tracing::instrument(skip(self), fields(tenant = %tenant_id, stream = %stream_id))]
    async fn read_stream(
        &self,
        tenant_id: Uuid,
        stream_id: &str,
        after_version: Version,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        let sql = format!(
            "SELECT {EVENT_COLUMNS} FROM events \
             WHERE stream_id = ? AND tenant_id = ? AND version > ? ORDER BY version"
        );
        let rows = sqlx::query(&sql)
            .bind(stream_id)
            .bind(tenant_id.to_string())
            .bind(saturating_i64(after_version))
            .fetch_all(&self.inner.reads)
            .await?;
        Ok(rows.iter().map(decode_event).collect::<Result<_, _>>()?)
    }

    #[tracing::instrument(skip(self))]
    async fn read_all(
        &self,
        after: Position,
        limit: usize,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let sql = format!(
            "SELECT {EVENT_COLUMNS} FROM events \
             WHERE global_position > ? ORDER BY global_position LIMIT ?"
        );
        let rows = sqlx::query(&sql)
            .bind(saturating_i64(after))
            .bind(i64::try_from(limit).unwrap_or(i64::MAX))
            .fetch_all(&self.inner.reads)
            .await?;
        Ok(rows.iter().map(decode_event).collect::<Result<_, _>>()?)
    }

    async fn head(&self) -> Result<Position, StoreError> {
        // Asking the file rather than the watch also sees other processes' commits.
        let head =
            sqlx::query_scalar::<_, i64>("SELECT COALESCE(MAX(global_position), 0) FROM events")
                .fetch_one(&self.inner.reads)
                .await?;
        Ok(to_u64(head, "global_position")?)
    }

    fn watch_head(&self) -> watch::Receiver<Position> {
        self.inner.head.clone()
    }

    #[tracing::instrument(skip(self), fields(tenant = %tenant_id))]
    async fn last_tenant_position(
        &self,
        tenant_id: Uuid,
        at_most: Position,
    ) -> Result<Option<Position>, StoreError> {
        let last = sqlx::query_scalar::<_, Option<i64>>(
            "SELECT MAX(global_position) FROM events WHERE tenant_id = ? AND global_position <= ?",
        )
        .bind(tenant_id.to_string())
        .bind(to_i64(at_most)?)
        .fetch_one(&self.inner.reads)
        .await?;
        last.map(|p| to_u64(p, "global_position"))
            .transpose()
            .map_err(Into::into)
    }

    #[tracing::instrument(skip(self), fields(tenant = %tenant_id))]
    async fn idempotent_response(
        &self,
        tenant_id: Uuid,
        key: &str,
    ) -> Result<Option<IdempotentResponse>, StoreError> {
        let row = sqlx::query(
            "SELECT request_hash, status, body FROM idempotency_keys \
             WHERE tenant_id = ? AND key = ?",
        )
        .bind(tenant_id.to_string())
        .bind(key)
        .fetch_optional(&self.inner.reads)
        .await?;
        let Some(row) = row else {
            return Ok(None);
        };
        let status: i64 = row.try_get("status")?;
        let body: String = row.try_get("body")?;
        Ok(Some(IdempotentResponse {
            request_hash: row.try_get("request_hash")?,
            status: u16::try_from(status).map_err(|e| decode_error("status", e))?,
            body: serde_json::from_str(&body).map_err(|e| decode_error("body", e))?,
        }))
    }

    #[tracing::instrument(skip(self), fields(tenant = %tenant_id, stream = %stream_id))]
    async fn load_snapshot(
        &self,
        tenant_id: Uuid,
        stream_id: &str,
        snapshot_version: u32,
    ) -> Result<Option<Snapshot>, StoreError> {
        let row = sqlx::query_as::<_, (i64, String)>(
            "SELECT version, data FROM snapshots \
             WHERE stream_id = ? AND tenant_id = ? AND snapshot_version = ?",
        )
        .bind(stream_id)
        .bind(tenant_id.to_string())
        .bind(i64::from(snapshot_version))
        .fetch_optional(&self.inner.reads)
        .await?;
        row.map(|(version, data)| {
            Ok(Snapshot {
                tenant_id,
                stream_id: stream_id.to_owned(),
                snapshot_version,
                version: to_u64(version, "version")?,
                data,
                detail: None,
            })
        })
        .transpose()
    }

    #[tracing::instrument(skip(self), fields(tenant = %tenant_id, stream = %stream_id))]
    async fn load_snapshot_detail(
        &self,
        tenant_id: Uuid,
        stream_id: &str,
        snapshot_version: u32,
        version: Version,
    ) -> Result<Option<String>, StoreError> {
        let detail: Option<Option<String>> = sqlx::query_scalar(
            "SELECT detail FROM snapshots \
             WHERE stream_id = ? AND tenant_id = ? AND snapshot_version = ? AND version = ?",
        )
        .bind(stream_id)
        .bind(tenant_id.to_string())
        .bind(i64::from(snapshot_version))
        .bind(to_i64(version)?)
        .fetch_optional(&self.inner.reads)
        .await?;
        Ok(detail.flatten())
    }

    /// Goes through the writer like an append: SQLite has one write connection, and a
    /// snapshot shares its group commit rather than waiting on the file's lock.
    #[tracing::instrument(
        skip_all,
        fields(tenant = %snapshot.tenant_id, stream = %snapshot.stream_id, version = snapshot.version)
    )]
    async fn save_snapshot(&self, snapshot: &Snapshot) -> Result<bool, StoreError> {
        let snapshot = snapshot.clone();
        self.submit(|reply| Job::SaveSnapshot { snapshot, reply })
            .await
    }

    #[tracing::instrument(skip(self))]
    async fn drop_snapshots(&self) -> Result<u64, StoreError> {
        self.submit(|reply| Job::DropSnapshots { reply }).await
    }

    #[tracing::instrument(skip(self, response), fields(tenant = %tenant_id))]
    async fn remember_response(
        &self,
        tenant_id: Uuid,
        key: &str,
        response: &IdempotentResponse,
    ) -> Result<bool, StoreError> {
        let key = key.to_owned();
        let response = response.clone();
        self.submit(|reply| Job::Remember {
            tenant_id,
            key,
            response,
            reply,
        })
        .await
    }
}

/// The task that owns the only write connection.
struct Writer {
    conn: SqliteConnection,
    jobs: mpsc::Receiver<Job>,
    head: watch::Sender<Position>,
    /// `recorded_at` of the newest event, so a clock stepping back never makes a later
    /// position look older.
    last_recorded_at: DateTime<Utc>,
}

impl Writer {
    async fn run(mut self) {
        let mut batch = Vec::with_capacity(MAX_BATCH);
        // `recv_many` waits for the first job, then takes whatever else is queued.
        // It returns 0 only when every store handle is gone and the queue is empty.
        while self.jobs.recv_many(&mut batch, MAX_BATCH).await > 0 {
            self.write_batch(std::mem::take(&mut batch)).await;
        }
        if let Err(error) = self.conn.close().await {
            tracing::warn!(%error, "closing the event store's write connection failed");
        }
        tracing::debug!("event store writer stopped");
    }

    #[tracing::instrument(skip_all, fields(requests = jobs.len()))]
    async fn write_batch(&mut self, jobs: Vec<Job>) {
        let jobs: Vec<Job> = jobs.into_iter().filter(|j| !j.is_abandoned()).collect();
        if jobs.is_empty() {
            return;
        }

        // Microseconds, like PostgreSQL's timestamptz, so both stores record alike.
        let now = Utc::now().trunc_subsecs(6);
        let recorded_at = now.max(self.last_recorded_at);
        let recorded_text = timestamp(&recorded_at);

        let mut tx = match self.conn.begin_with("BEGIN IMMEDIATE").await {
            Ok(tx) => tx,
            Err(error) => {
                tracing::error!(%error, "could not start a group commit");
                let cause = Arc::new(error);
                jobs.into_iter().for_each(|job| job.unrun().fail(&cause));
                return;
            }
        };

        let mut settled = Vec::with_capacity(jobs.len());
        let mut fatal = None;
        for job in jobs {
            if fatal.is_some() {
                settled.push(job.unrun());
                continue;
            }
            let (done, error) = run_in_savepoint(&mut tx, job, &recorded_text).await;
            settled.push(done);
            fatal = error;
        }

        let committed = match fatal {
            None => tx.commit().await,
            Some(error) => {
                if let Err(rollback) = tx.rollback().await {
                    tracing::warn!(error = %rollback, "rolling back a failed group commit failed");
                }
                Err(error)
            }
        };

        match committed {
            Ok(()) => {
                let head = settled.iter().filter_map(Settled::last_position).max();
                if let Some(head) = head {
                    self.last_recorded_at = recorded_at;
                    // Published before anyone is answered, so a caller that appended and
                    // then looks at the watch already sees its own events.
                    self.head.send_replace(head);
                }
                tracing::debug!(
                    requests = settled.len(),
                    succeeded = settled.iter().filter(|s| s.is_ok()).count(),
                    head = head.unwrap_or_else(|| *self.head.borrow()),
                    "group commit"
                );
                settled.into_iter().for_each(Settled::answer);
            }
            Err(error) => {
                tracing::error!(%error, requests = settled.len(), "group commit failed");
                let cause = Arc::new(error);
                settled.into_iter().for_each(|s| s.fail(&cause));
            }
        }
    }
}

/// Runs one job inside its own savepoint and keeps or undoes its effects depending on
/// its answer. The second value is an error that leaves the transaction unusable (the
/// savepoint itself failed), which fails the whole batch.
async fn run_in_savepoint(
    conn: &mut SqliteConnection,
    job: Job,
    recorded_at: &str,
) -> (Settled, Option<sqlx::Error>) {
    // Checked here, not when the batch starts: an earlier append of the same chain in
    // this batch may have just failed.
    if job.follows_a_failure() {
        return (job.refuse_after_failure(), None);
    }
    if let Err(error) = sqlx::query("SAVEPOINT request").execute(&mut *conn).await {
        return (job.unrun(), Some(error));
    }
    let settled = match job {
        Job::Append {
            request,
            reply,
            link,
        } => {
            let result = append_one(conn, &request, recorded_at).await;
            if let (Err(_), Some(link)) = (&result, &link) {
                // Final whether or not the batch commits: later appends of the chain,
                // in this batch or the next, must not run.
                link.break_off();
            }
            Settled::Append(reply, result, link)
        }
        Job::Remember {
            tenant_id,
            key,
            response,
            reply,
        } => {
            let result = remember_one(conn, tenant_id, &key, &response, recorded_at).await;
            Settled::Remember(reply, result.map_err(StoreError::from))
        }
        Job::SaveSnapshot { snapshot, reply } => {
            let result = save_snapshot_one(conn, &snapshot, recorded_at).await;
            Settled::Remember(reply, result)
        }
        Job::DropSnapshots { reply } => {
            let result = sqlx::query("DELETE FROM snapshots")
                .execute(&mut *conn)
                .await
                .map(|done| done.rows_affected())
                .map_err(StoreError::from);
            Settled::Dropped(reply, result)
        }
    };
    let end = if settled.is_ok() {
        release(conn).await
    } else {
        // ROLLBACK TO undoes the work but keeps the savepoint open; RELEASE pops it.
        match sqlx::query("ROLLBACK TO request").execute(&mut *conn).await {
            Ok(_) => release(conn).await,
            Err(error) => Err(error),
        }
    };
    (settled, end.err())
}

async fn release(conn: &mut SqliteConnection) -> Result<(), sqlx::Error> {
    sqlx::query("RELEASE request").execute(conn).await.map(drop)
}

/// The checks and inserts of one append, inside the caller's savepoint.
async fn append_one(
    conn: &mut SqliteConnection,
    request: &AppendRequest,
    recorded_at: &str,
) -> Result<Appended, StoreError> {
    let tenant = request.tenant_id.to_string();
    let stream = sqlx::query_as::<_, (String, i64)>(
        "SELECT tenant_id, version FROM streams WHERE stream_id = ?",
    )
    .bind(&request.stream_id)
    .fetch_optional(&mut *conn)
    .await?;
    let current = match stream {
        None => 0,
        // Checked first, so another tenant learns nothing about the stream's version.
        Some((owner, _)) if owner != tenant => {
            return Err(StoreError::WrongTenant {
                stream_id: request.stream_id.clone(),
            });
        }
        Some((_, version)) => to_u64(version, "version")?,
    };

    // The key is claimed before the version is checked: a retry of a command that
    // already succeeded should hear "already done", not "someone else wrote first".
    if let Some(record) = &request.idempotency
        && !remember_one(
            conn,
            request.tenant_id,
            &record.key,
            &record.response,
            recorded_at,
        )
        .await?
    {
        return Err(StoreError::IdempotencyKeyTaken(record.key.clone()));
    }

    if let ExpectedVersion::Exact(expected) = request.expected
        && expected != current
    {
        return Err(StoreError::VersionConflict {
            stream_id: request.stream_id.clone(),
            expected,
            actual: current,
        });
    }

    let count = u64::try_from(request.events.len()).map_err(encode_error)?;
    let new_version = current
        .checked_add(count)
        .ok_or_else(|| encode_error(format!("stream {} would overflow", request.stream_id)))?;

    // The stream row goes first: events reference it by foreign key.
    sqlx::query(
        "INSERT INTO streams (stream_id, tenant_id, version) VALUES (?, ?, ?) \
         ON CONFLICT (stream_id) DO UPDATE SET version = excluded.version",
    )
    .bind(&request.stream_id)
    .bind(&tenant)
    .bind(to_i64(new_version)?)
    .execute(&mut *conn)
    .await?;

    let metadata = &request.metadata;
    let correlation_id = metadata.correlation_id.to_string();
    let causation_id = metadata.causation_id.map(|id| id.to_string());
    let mut first_position = None;
    let mut last_position = 0;
    for (version, event) in (current + 1..).zip(&request.events) {
        let data = serde_json::to_string(&event.data).map_err(encode_error)?;
        let position: i64 = sqlx::query_scalar(
            "INSERT INTO events (event_id, tenant_id, stream_id, version, event_type, \
             schema_version, occurred_at, recorded_at, correlation_id, causation_id, actor, data) \
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING global_position",
        )
        .bind(event.event_id.to_string())
        .bind(&tenant)
        .bind(&request.stream_id)
        .bind(to_i64(version)?)
        .bind(&event.event_type)
        .bind(i64::from(event.schema_version))
        .bind(timestamp(&event.occurred_at))
        .bind(recorded_at)
        .bind(&correlation_id)
        .bind(causation_id.as_deref())
        .bind(&metadata.actor)
        .bind(data)
        .fetch_one(&mut *conn)
        .await?;
        let position = to_u64(position, "global_position")?;
        first_position.get_or_insert(position);
        last_position = position;
    }

    // The answer to replay includes where the events landed, known only now.
    if let Some(record) = &request.idempotency
        && let serde_json::Value::Object(body) = &record.response.body
    {
        let mut body = body.clone();
        body.insert(
            "position".to_owned(),
            serde_json::Value::from(last_position),
        );
        sqlx::query("UPDATE idempotency_keys SET body = ? WHERE tenant_id = ? AND key = ?")
            .bind(serde_json::Value::Object(body).to_string())
            .bind(&tenant)
            .bind(&record.key)
            .execute(&mut *conn)
            .await?;
    }

    Ok(Appended {
        version: new_version,
        // The caller refused empty appends before queueing, so the loop ran at least once.
        first_position: first_position.unwrap_or(last_position),
        last_position,
    })
}

/// Stores a snapshot of a stream the tenant owns, at most at the stream's version,
/// unless one of the same format at the same or a newer version is kept.
async fn save_snapshot_one(
    conn: &mut SqliteConnection,
    snapshot: &Snapshot,
    taken_at: &str,
) -> Result<bool, StoreError> {
    let tenant = snapshot.tenant_id.to_string();
    let stream = sqlx::query_as::<_, (String, i64)>(
        "SELECT tenant_id, version FROM streams WHERE stream_id = ?",
    )
    .bind(&snapshot.stream_id)
    .fetch_optional(&mut *conn)
    .await?;
    let actual = match stream {
        Some((owner, version)) if owner == tenant => to_u64(version, "version")?,
        // Missing and another tenant's look the same, as on PostgreSQL.
        _ => {
            return Err(StoreError::NoSuchStream {
                stream_id: snapshot.stream_id.clone(),
            });
        }
    };
    if snapshot.version > actual || snapshot.version == 0 {
        return Err(StoreError::SnapshotPastStream {
            stream_id: snapshot.stream_id.clone(),
            snapshot: snapshot.version,
            actual,
        });
    }
    let stored = sqlx::query(
        "INSERT INTO snapshots \
             (stream_id, snapshot_version, tenant_id, version, data, taken_at, detail) \
         VALUES (?, ?, ?, ?, ?, ?, ?) \
         ON CONFLICT (stream_id, snapshot_version) DO UPDATE \
         SET version = excluded.version, data = excluded.data, taken_at = excluded.taken_at, \
             detail = excluded.detail \
         WHERE excluded.version > snapshots.version",
    )
    .bind(&snapshot.stream_id)
    .bind(i64::from(snapshot.snapshot_version))
    .bind(&tenant)
    .bind(to_i64(snapshot.version)?)
    .bind(&snapshot.data)
    .bind(taken_at)
    .bind(snapshot.detail.as_deref())
    .execute(&mut *conn)
    .await?;
    Ok(stored.rows_affected() == 1)
}

/// Stores an answer under an idempotency key unless the key is taken; true if stored.
async fn remember_one(
    conn: &mut SqliteConnection,
    tenant_id: Uuid,
    key: &str,
    response: &IdempotentResponse,
    created_at: &str,
) -> Result<bool, sqlx::Error> {
    let body = serde_json::to_string(&response.body).map_err(encode_error)?;
    // ON CONFLICT DO NOTHING rather than INSERT OR IGNORE: only a taken key is
    // ignored, any other constraint failure still surfaces as an error.
    let inserted = sqlx::query(
        "INSERT INTO idempotency_keys (tenant_id, key, request_hash, status, body, created_at) \
         VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (tenant_id, key) DO NOTHING",
    )
    .bind(tenant_id.to_string())
    .bind(key)
    .bind(&response.request_hash)
    .bind(i64::from(response.status))
    .bind(body)
    .bind(created_at)
    .execute(&mut *conn)
    .await?;
    Ok(inserted.rows_affected() == 1)
}

fn decode_event(row: &SqliteRow) -> Result<RecordedEvent, sqlx::Error> {
    let schema_version: i64 = row.try_get("schema_version")?;
    let data: String = row.try_get("data")?;
    let causation_id: Option<String> = row.try_get("causation_id")?;
    Ok(RecordedEvent {
        global_position: to_u64(row.try_get("global_position")?, "global_position")?,
        event_id: uuid_column(row, "event_id")?,
        tenant_id: uuid_column(row, "tenant_id")?,
        stream_id: row.try_get("stream_id")?,
        version: to_u64(row.try_get("version")?, "version")?,
        event_type: row.try_get("event_type")?,
        schema_version: u32::try_from(schema_version)
            .map_err(|e| decode_error("schema_version", e))?,
        occurred_at: parse_time(&row.try_get::<String, _>("occurred_at")?, "occurred_at")?,
        recorded_at: parse_time(&row.try_get::<String, _>("recorded_at")?, "recorded_at")?,
        correlation_id: uuid_column(row, "correlation_id")?,
        causation_id: causation_id
            .map(|text| Uuid::parse_str(&text).map_err(|e| decode_error("causation_id", e)))
            .transpose()?,
        actor: row.try_get("actor")?,
        data: serde_json::from_str(&data).map_err(|e| decode_error("data", e))?,
    })
}

/// RFC 3339 in UTC with a fixed nine fractional digits, so text order is time order.
fn timestamp(time: &DateTime<Utc>) -> String {
    time.to_rfc3339_opts(SecondsFormat::Nanos, true)
}

fn parse_time(text: &str, column: &str) -> Result<DateTime<Utc>, sqlx::Error> {
    DateTime::parse_from_rfc3339(text)
        .map(|time| time.with_timezone(&Utc))
        .map_err(|e| decode_error(column, e))
}

fn uuid_column(row: &SqliteRow, column: &str) -> Result<Uuid, sqlx::Error> {
    let text: String = row.try_get(column)?;
    Uuid::parse_str(&text).map_err(|e| decode_error(column, e))
}
