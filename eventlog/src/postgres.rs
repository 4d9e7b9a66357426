//! The production event store: PostgreSQL, shared by many processes, group commit in each.
//!
//! Production runs the command API, projector, relay and workflows as separate
//! processes against one database, so this store has to be correct *across*
//! processes, not only within one: the expected-version check locks the stream's row
//! in `streams` (`SELECT … FOR UPDATE`), so two processes racing on one stream are
//! ordered by PostgreSQL, and readers tailing the global log never skip an event
//! however the processes' transactions interleave (below). Within a process it keeps
//! the SQLite store's shape for speed: appends go through a small, fixed set of
//! **writer tasks** (see [`PostgresOptions::writers`]); a stream always goes to the
//! same writer, so commands for a hot stream queue behind each other instead of racing.
//! Each writer takes whatever is queued (up to [`MAX_BATCH`]) and runs it in one
//! transaction — one commit, one WAL flush — and, for the appends, one round trip:
//! `tidemark_append_batch` (migrations 0005, 0013) takes the whole batch. It runs the
//! requests in segments: one subtransaction (a PL/pgSQL `EXCEPTION` block, i.e. a
//! savepoint) for a run of requests, one statement each, the version check inside it.
//! A request that is refused (a conflict, another tenant's stream) or fails runs alone
//! in a subtransaction of its own, and the next segment starts after it, so every
//! caller gets the answer its request would get alone and one request's refusal rolls
//! back only that request. Issued statement by statement, a request would cost about
//! six round trips, which on a busy server, not the commit, would bound the throughput.
//! For chained appends (`chain`) the call also gets each request's chain id and
//! refuses a request whose chain had one refused earlier in the batch (migration 0008);
//! the writer refuses, before sending a batch, those whose chain broke in an earlier one.
//! `remember_response` jobs follow in the same transaction, each in an explicit
//! `SAVEPOINT`. A batch locks all its streams up front in key order (below), so two
//! processes' batches cannot deadlock on streams.
//!
//! # Why tailing by position is gap-safe here
//!
//! A tailer remembers the last position it saw and asks for everything after it, so no
//! event may ever become visible *below* a position a reader has already been given.
//! With positions from a sequence that can happen: transaction A takes position 5,
//! transaction B takes 6 and commits, a reader sees 6, then A commits 5 behind it.
//!
//! The store records the writing transaction's id on every event
//! (`transaction_id xid8 DEFAULT pg_current_xact_id()`) and readers return only events
//! whose transaction id is below a *horizon*. Filtering by
//! `pg_snapshot_xmin(pg_current_snapshot())` alone is not enough, because transaction
//! ids and sequence values are handed out independently: A can get its id before B,
//! B its positions before A, and once A commits while B is still open a reader with
//! `xmin = B` returns A's higher positions — and B's lower ones appear later. Two
//! rules close that hole:
//!
//! 1. **Ids and positions are handed out in the same order.** A batch's first write
//!    is `tidemark_reserve_positions(streams, n)` (migration 0004, called first thing
//!    by `tidemark_append_batch`). Under one advisory lock it assigns the
//!    transaction's id and takes `n` consecutive positions from the sequence; it
//!    refuses to run if the transaction already has an id. So for any two log
//!    writers, the one with the smaller transaction id holds the smaller positions.
//!    The lock is taken in a subtransaction that is rolled back at once, which
//!    releases it (sequences and the top-level id are not transactional): the
//!    critical section is one function call, not the whole batch.
//! 2. **Readers stop at the oldest log writer still running.** A log writer is
//!    recognised by its locks: before the function above gives a transaction its id,
//!    it takes a transaction-level advisory lock on each of the batch's streams (a
//!    one-key lock), held until the transaction ends. `tidemark_log_horizon()`
//!    (migration 0011) takes `H` = the smallest id in its snapshot's in-progress list
//!    whose backend holds a one-key advisory lock in *this* database (from one read of
//!    `pg_locks`; or a transaction prepared in it), or the snapshot's `xmax` if there
//!    is none. `tidemark_read_log` / `tidemark_log_head` then read, in a *later*
//!    statement with a newer snapshot, only events with `transaction_id < H`.
//!
//! Before reserving, the same function takes a transaction-level advisory lock per
//! stream of the batch (in key order, so batches cannot deadlock on them). Those need
//! no transaction id, so a batch waiting for a busy stream holds no reader back, and
//! since a batch reserves only once it holds its streams, two processes appending to
//! one stream get positions in the order they append: each stream's versions increase
//! with position in the log, not only within one process. (The `FOR UPDATE` on the
//! stream's row stays as the expected-version guard for any writer.)
//!
//! Proof that nothing can appear below a returned event `e` (position `p`, transaction
//! `T`, `id(T) < H`): let `W` be a transaction holding a position `q < p`. By rule 1,
//! `W` reserved before `T`, so `id(W) < id(T) < H ≤ xmax(s1)`, where `s1` is the
//! horizon statement's snapshot; `xmax(s1)` is one past the newest id completed at
//! `s1`, so `W` had its id by then, and with it its stream locks. Let `r` be when that
//! statement read `pg_locks` (after `s1`) and `s2` the snapshot of the read that
//! follows (after `r`). Either `W` had finished at `s1` — then `s2` sees its commit, or
//! it rolled back and `q` never exists; or it was running at `s1` and at `r` — then its
//! id is in `s1`'s in-progress list and its backend holds, at `r`, both that id and a
//! one-key advisory lock in this database, so `H ≤ id(W)`: a contradiction; or it was
//! running at `s1` and finished before `r`
//! — then it finished before `s2`, which sees it. So every position below `p` is
//! visible to `s2` or never will exist, and the read, in position order, returns it
//! before `p`.
//! Positions are unique (primary key) and increase in visibility order; they are not
//! dense: a rolled-back batch leaves its reserved block unused. (Within a batch a
//! failed request's positions are reused by the next request, so a batch in which
//! every request succeeds leaves no gap.)
//!
//! Consequences: a log writer that stays open — an `idle in transaction` session in
//! the middle of an append — holds every tailer back until it ends (nothing is lost,
//! only delayed; set `idle_in_transaction_session_timeout`), and so does anything else
//! that holds a one-key advisory lock with a transaction id (a migration under sqlx's
//! lock). Transactions that only write other tables of the database — the read models,
//! the checkpoints, a rebuild that runs for minutes — hold nothing back (until
//! migration 0011 they did, since the horizon counted every transaction of the
//! database that had an id), nor do read-only sessions or transactions in other
//! databases of the cluster, which is why the horizon is not the cluster-wide
//! `pg_snapshot_xmin`. Read the log from the primary: a hot standby's `pg_locks`
//! does not show the primary's writers. Own commits still become
//! visible only when every older writer of the database has finished, so `head`
//! right after an append can be below the append's position under concurrent load;
//! consistency tokens wait on [`EventStore::watch_head`] for that reason.
//!
//! # Waking tailers in every process
//!
//! Right after a batch that stored events commits, its writer reads the visible head
//! and, in the same statement, announces it to every listening session of the
//! database: `pg_notify('tidemark_events', 'head:<position>')`. It publishes the head on
//! its own store's watch channel before answering its callers. A head read after a
//! commit is visible to every later snapshot of every session, so each store's
//! background `PgListener` task publishes an announced head as it is, without reading
//! the head again: one head read per commit, however many processes follow the log.
//! When several writers commit at once, each announces what it saw; the last to read
//! sees what all of them wrote, unless an older transaction is still open.
//!
//! The store reads the head itself on a reconnect (which may have lost notifications),
//! on a notification without a head (a writer of an earlier release signalled from
//! inside its batch), and every [`PostgresOptions::head_refresh_interval`] as a fallback:
//! a horizon also moves when a writer that stored nothing ends (a failed batch, a
//! migration), and nothing announces that. `read_all` and `head` apply the horizon themselves, so a session
//! that forges an announcement can make a tailer look early, never make a reader skip
//! or see an invisible event. The query API's read-your-writes wait does take the
//! watch at its word (a position at or below it needs no head read): a forged
//! announcement could end such a wait early, a stale read, which only a session of
//! the platform's own database roles can cause.
//!
//! # Tenant isolation and roles
//!
//! Row-level security is enabled and forced on all four tables (migrations 0003 and
//! 0007; the decision is in `docs/adr/0002-postgres-tenant-isolation.md`). Every
//! tenant-scoped statement — the whole of an append, `read_stream`, the idempotency
//! lookups, the snapshots — runs in a transaction that first does
//! `SELECT set_config('app.tenant', …, true)` (a read sends it with its `BEGIN`, one
//! round trip); without it a role sees no rows. The global log (`read_all`, `head`) serves every tenant, so
//! it is read through two `SECURITY DEFINER` functions owned by the migrating role,
//! the only role with a policy that lets it SELECT every tenant's events. There is no
//! setting a session could forge to widen its view: the capability is EXECUTE on those
//! functions, granted by [`setup_roles`].
//!
//! The intended production setup uses two roles: the **owner** runs the migrations
//! ([`PostgresOptions::migrate_as`], [`migrate`]) and owns the tables and functions;
//! the **runtime role** ([`setup_roles`]: not the owner, no `BYPASSRLS`, not a
//! superuser) is what the store's connections use ([`PostgresStore::connect_with`]).
//! [`PostgresStore::connect`] uses one URL for both, which suits development; if that
//! role is a superuser, row-level security does not apply to it at all.
//!
//! # Shutdown
//!
//! [`PostgresStore`] is a cheap handle around an `Arc`. When the last clone is
//! dropped, the writers drain their queues and end, the head follower stops, and
//! receivers from [`EventStore::watch_head`] then report the store as closed.

pub mod testing;

use std::hash::{DefaultHasher, Hash, Hasher};
use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use sqlx::pool::PoolConnection;
use sqlx::postgres::{PgConnectOptions, PgConnection, PgListener, PgPool, PgPoolOptions, PgRow};
use sqlx::types::Json;
use sqlx::{Connection, Row};
use tokio::sync::{Notify, mpsc, oneshot, watch};
use uuid::Uuid;

use crate::batch::{Job, Settled};
use crate::chain::Link;
use crate::column::{decode_error, encode_error, saturating_i64, to_i64, to_u64};
use crate::{
    AppendChain, AppendRequest, Appended, EventStore, ExpectedVersion, IdempotentResponse,
    PendingAppend, Position, RecordedEvent, Snapshot, StoreError, Version,
};

/// The most requests one group commit takes. Large enough that a burst shares one
/// commit, small enough that the first caller in a batch does not wait long for the
/// last.
pub const MAX_BATCH: usize = 256;

/// Writer tasks of a store unless [`PostgresOptions::writers`] says otherwise. One: on
/// two cores a second writer made more, smaller commits, each with its own head read
/// and announcement, and cost about 0.1 core at 2,834 commands a second
/// (docs/benchmarks.md); a server with more cores may want more.
pub const DEFAULT_WRITERS: usize = 1;

/// The notification channel on which a writer announces the head it read right after
/// its commit, as `head:<position>` (migration 0010). Writers of releases before it
/// signalled here from inside the batch, with its last position as the payload.
pub const NOTIFY_CHANNEL: &str = "tidemark_events";

/// What a head announcement's payload starts with; the position follows.
const HEAD_PAYLOAD_PREFIX: &str = "head:";

/// How long a writer keeps its connection unused before it checks, at the next batch,
/// that the server still answers on it. A writer keeps the connection of its last
/// batch for the next one; the pool would check a connection with a round trip each
/// time it hands it out.
pub const HELD_CONNECTION_CHECK_AFTER: Duration = Duration::from_secs(1);

/// How many requests may wait for one writer before `append` itself waits. This is
/// back-pressure, not a limit on concurrency: a full queue only slows callers down.
const QUEUE_CAPACITY: usize = 1024;

/// Advisory lock that serializes concurrent grants: PostgreSQL refuses two GRANTs
/// updating one object's privileges at the same time ("tuple concurrently updated").
/// "tidemark" in ASCII plus one, next to the position lock of migration 0004.
const GRANT_LOCK: i64 = 8_388_346_167_743_836_780;

const EVENT_COLUMNS: &str = "global_position, event_id, tenant_id, stream_id, version, \
     event_type, schema_version, occurred_at, recorded_at, correlation_id, causation_id, \
     actor, data";

/// How to reach the database, as which roles, and how many connections to use.
///
/// `Debug` prints neither role's password.
#[derive(Clone)]
pub struct PostgresOptions {
    run_as: PgConnectOptions,
    migrate_as: Option<PgConnectOptions>,
    writers: usize,
    read_connections: u32,
    head_refresh_interval: Duration,
}

impl PostgresOptions {
    /// Connects as `run_as` for everything the store does at runtime, and runs no
    /// migrations (the deployment ran them as the owner, see [`migrate`]).
    pub fn new(run_as: PgConnectOptions) -> Self {
        Self {
            run_as,
            migrate_as: None,
            writers: DEFAULT_WRITERS,
            read_connections: 4,
            head_refresh_interval: Duration::from_secs(1),
        }
    }

    /// Runs the migrations as `owner` before connecting. When the runtime role is a
    /// different role, the owner then grants it what it needs on every object (the
    /// role itself must exist: [`setup_roles`]), so a migration that adds an object
    /// never leaves the runtime role without access to it.
    pub fn migrate_as(mut self, owner: PgConnectOptions) -> Self {
        self.migrate_as = Some(owner);
        self
    }

    /// How many writer tasks (each with its own connection and its own group commit)
    /// serve this store. A stream always maps to the same writer. At least one; the
    /// default is [`DEFAULT_WRITERS`].
    pub fn writers(mut self, writers: usize) -> Self {
        self.writers = writers.max(1);
        self
    }

    /// How many connections serve reads (`read_stream`, `read_all`, `head`, lookups
    /// and the head refreshes). At least one.
    pub fn read_connections(mut self, connections: u32) -> Self {
        self.read_connections = connections.max(1);
        self
    }

    /// How often the head is re-read even without a notification: the fallback for a
    /// notification lost on reconnect, for an announcement a writer could not send
    /// (its connection failed right after the commit), and for a horizon held back by
    /// a transaction that was not an append.
    pub fn head_refresh_interval(mut self, every: Duration) -> Self {
        self.head_refresh_interval = every.max(Duration::from_millis(10));
        self
    }
}

impl std::fmt::Debug for PostgresOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresOptions")
            .field("run_as", &self.run_as.get_username())
            .field(
                "migrate_as",
                &self.migrate_as.as_ref().map(PgConnectOptions::get_username),
            )
            .field("database", &self.run_as.get_database())
            .field("writers", &self.writers)
            .field("read_connections", &self.read_connections)
            .field("head_refresh_interval", &self.head_refresh_interval)
            .finish()
    }
}

/// The PostgreSQL implementation of [`EventStore`], for production.
///
/// Cloning is cheap and every clone talks to the same writer tasks; they end when the
/// last clone is dropped (see the module docs).
#[derive(Clone)]
pub struct PostgresStore {
    inner: Arc<Inner>,
}

struct Inner {
    writers: Vec<mpsc::Sender<Job>>,
    reads: PgPool,
    head: watch::Receiver<Position>,
    /// Dropping this (with the last handle) stops the head follower.
    _stop_following: oneshot::Sender<()>,
}

impl std::fmt::Debug for PostgresStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresStore")
            .field("writers", &self.inner.writers.len())
            .field("head", &*self.inner.head.borrow())
            .finish_non_exhaustive()
    }
}

impl PostgresStore {
    /// Connects with one role for everything: runs the migrations as it and then uses
    /// it at runtime. Convenient for development; production should use
    /// [`PostgresStore::connect_with`] so the runtime role is not the owner.
    #[tracing::instrument(skip_all)]
    pub async fn connect(url: &str) -> Result<Self, StoreError> {
        let options = PgConnectOptions::from_str(url)?;
        Self::open(PostgresOptions::new(options.clone()).migrate_as(options)).await
    }

    /// Runs the migrations as the owner at `owner_url`, grants the runtime role at
    /// `app_url` its privileges, and then serves everything as the runtime role.
    #[tracing::instrument(skip_all)]
    pub async fn connect_with(owner_url: &str, app_url: &str) -> Result<Self, StoreError> {
        let owner = PgConnectOptions::from_str(owner_url)?;
        let app = PgConnectOptions::from_str(app_url)?;
        Self::open(PostgresOptions::new(app).migrate_as(owner)).await
    }

    /// Opens the store as `options` say, then starts its writer tasks and its head
    /// follower on the current tokio runtime.
    #[tracing::instrument(skip_all, fields(options = ?options))]
    pub async fn open(options: PostgresOptions) -> Result<Self, StoreError> {
        if let Some(owner) = &options.migrate_as {
            let pool = single_connection(owner).await?;
            migrate(&pool).await?;
            let runtime_role = options.run_as.get_username();
            if runtime_role != owner.get_username() {
                grant_runtime_privileges(&pool, runtime_role).await?;
            }
            pool.close().await;
        }

        let writes = PgPoolOptions::new()
            .max_connections(u32::try_from(options.writers).unwrap_or(u32::MAX))
            .connect_with(options.run_as.clone())
            .await?;
        let reads = PgPoolOptions::new()
            .max_connections(options.read_connections)
            .connect_with(options.run_as.clone())
            .await?;

        // Listen before reading the head, so no commit falls between the two unseen.
        let listen_pool = PgPoolOptions::new()
            .max_connections(1)
            .idle_timeout(None)
            .max_lifetime(None)
            .connect_with(options.run_as.clone())
            .await?;
        let mut listener = PgListener::connect_with(&listen_pool).await?;
        listener.listen(NOTIFY_CHANNEL).await?;
        let head = query_head(&reads).await?;

        let (head_tx, head_rx) = watch::channel(head);
        let head_tx = Arc::new(head_tx);
        let writers = (0..options.writers)
            .map(|_| {
                let (queue, jobs) = mpsc::channel(QUEUE_CAPACITY);
                let writer = Writer {
                    pool: writes.clone(),
                    jobs,
                    head: Arc::clone(&head_tx),
                    held: None,
                };
                tokio::spawn(writer.run());
                queue
            })
            .collect();

        let (stop_following, stop) = oneshot::channel();
        tokio::spawn(follow_head(
            listener,
            reads.clone(),
            head_tx,
            stop,
            options.head_refresh_interval,
        ));

        Ok(Self {
            inner: Arc::new(Inner {
                writers,
                reads,
                head: head_rx,
                _stop_following: stop_following,
            }),
        })
    }

    /// Queues a job for the writer that owns `key` and waits for its answer.
    async fn submit<T>(
        &self,
        key: impl Hash,
        job: impl FnOnce(oneshot::Sender<Result<T, StoreError>>) -> Job,
    ) -> Result<T, StoreError> {
        self.enqueue(key, job)
            .await?
            .await
            .map_err(|_| StoreError::Closed)?
    }

    /// Queues a job for the writer that owns `key` and returns once it is queued.
    async fn enqueue<T>(
        &self,
        key: impl Hash,
        job: impl FnOnce(oneshot::Sender<Result<T, StoreError>>) -> Job,
    ) -> Result<oneshot::Receiver<Result<T, StoreError>>, StoreError> {
        let mut hasher = DefaultHasher::new();
        key.hash(&mut hasher);
        let writers = &self.inner.writers;
        // The modulo keeps the index below `writers.len()`, which fits in a u64.
        let index = usize::try_from(hasher.finish() % writers.len() as u64).unwrap_or(0);
        let (reply, answer) = oneshot::channel();
        writers[index]
            .send(job(reply))
            .await
            .map_err(|_| StoreError::Closed)?;
        Ok(answer)
    }

    /// Queues an append for its stream's writer and returns once it is queued.
    async fn queue_append(
        &self,
        request: AppendRequest,
        link: Option<Link>,
    ) -> Result<PendingAppend, StoreError> {
        if request.events.is_empty() {
            return Err(StoreError::EmptyAppend);
        }
        let stream = request.stream_id.clone();
        let answer = self
            .enqueue(stream, |reply| Job::Append {
                request,
                reply,
                link,
            })
            .await?;
        Ok(PendingAppend(answer))
    }
}

/// Runs the store's migrations. Call it as the role that should own the tables (the
/// owner); it is what [`PostgresOptions::migrate_as`] does. Concurrent calls from
/// several processes are safe: sqlx serializes them with an advisory lock.
#[tracing::instrument(skip_all)]
pub async fn migrate(owner: &PgPool) -> Result<(), StoreError> {
    sqlx::migrate!("./migrations/postgres").run(owner).await?;
    Ok(())
}

/// Creates (or updates) the runtime role `app_role` and grants it exactly what the
/// store needs. Idempotent; run it after [`migrate`], on a pool connected to the
/// store's database as a role that may create roles and owns the tables (the owner
/// with `CREATEROLE`) or as a superuser.
///
/// With a password the role can log in with it; without one it is a `NOLOGIN` group
/// role to grant to the login roles of individual services. The role is created
/// without `SUPERUSER` or `BYPASSRLS`, and this refuses to go on if an existing role of
/// that name has either, or owns the event tables: row-level security would not apply
/// to it. The password is sent as a bound parameter, never inside statement text.
#[tracing::instrument(skip(admin, password), fields(role = %app_role))]
pub async fn setup_roles(
    admin: &PgPool,
    app_role: &str,
    password: Option<&str>,
) -> Result<(), StoreError> {
    if password == Some("") {
        return Err(configuration_error("the runtime role's password is empty"));
    }
    let mut tx = admin.begin().await?;
    sqlx::query(
        "SELECT set_config('tidemark.setup_role', $1, true), \
                set_config('tidemark.setup_password', $2, true)",
    )
    .bind(app_role)
    .bind(password.unwrap_or(""))
    .execute(&mut *tx)
    .await?;
    sqlx::raw_sql(
        r#"
        DO $$
        DECLARE
            app_role text := current_setting('tidemark.setup_role');
            app_password text := NULLIF(current_setting('tidemark.setup_password'), '');
        BEGIN
            BEGIN
                EXECUTE format('CREATE ROLE %I NOSUPERUSER NOCREATEDB NOCREATEROLE '
                               'NOREPLICATION NOBYPASSRLS NOLOGIN', app_role);
            EXCEPTION WHEN duplicate_object OR unique_violation THEN
                NULL; -- It exists already, perhaps created concurrently: update it below.
            END;
            IF app_password IS NULL THEN
                EXECUTE format('ALTER ROLE %I NOLOGIN', app_role);
            ELSE
                EXECUTE format('ALTER ROLE %I LOGIN PASSWORD %L', app_role, app_password);
            END IF;
            IF EXISTS (SELECT FROM pg_roles
                        WHERE rolname = app_role AND (rolsuper OR rolbypassrls)) THEN
                RAISE EXCEPTION 'tidemark: role % bypasses row-level security', app_role;
            END IF;
            IF EXISTS (SELECT FROM pg_tables
                        WHERE schemaname = 'public'
                          AND tablename IN ('events', 'streams', 'idempotency_keys',
                                            'snapshots')
                          AND tableowner = app_role) THEN
                RAISE EXCEPTION 'tidemark: role % owns the event tables', app_role;
            END IF;
        END
        $$
        "#,
    )
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    grant_runtime_privileges(admin, app_role).await
}

/// Grants `role` what the runtime needs on every object the migrations create: read
/// and insert events (not `transaction_id` or `recorded_at`, which the database fills
/// in), read, create and lock streams, read and insert idempotency keys, read, insert
/// and replace snapshots, call the append functions, read the global log and drop
/// every snapshot through its function. No DELETE anywhere; no UPDATE of events or
/// keys.
async fn grant_runtime_privileges(owner: &PgPool, role: &str) -> Result<(), StoreError> {
    let mut tx = owner.begin().await?;
    sqlx::query("SELECT set_config('tidemark.runtime_role', $1, true), pg_advisory_xact_lock($2)")
        .bind(role)
        .bind(GRANT_LOCK)
        .execute(&mut *tx)
        .await?;
    sqlx::raw_sql(
        r#"
        DO $$
        DECLARE
            runtime_role text := current_setting('tidemark.runtime_role');
        BEGIN
            EXECUTE format('GRANT USAGE ON SCHEMA public TO %I', runtime_role);
            EXECUTE format('GRANT SELECT, INSERT, UPDATE ON public.streams TO %I', runtime_role);
            EXECUTE format('GRANT SELECT, INSERT (global_position, event_id, tenant_id, '
                           'stream_id, version, event_type, schema_version, occurred_at, '
                           'correlation_id, causation_id, actor, data) '
                           'ON public.events TO %I', runtime_role);
            EXECUTE format('GRANT SELECT, INSERT (tenant_id, key, request_hash, status, body) '
                           'ON public.idempotency_keys TO %I', runtime_role);
            EXECUTE format('GRANT SELECT, INSERT (stream_id, snapshot_version, tenant_id, '
                           'version, data, detail), UPDATE (version, data, detail, taken_at) '
                           'ON public.snapshots TO %I', runtime_role);
            EXECUTE format('GRANT EXECUTE ON FUNCTION '
                           'public.tidemark_reserve_positions(text[], bigint), '
                           'public.tidemark_append(uuid, text, bigint, bigint, uuid, uuid, '
                           'text, uuid[], text[], bigint[], timestamptz[], jsonb[], text, '
                           'text, integer, jsonb), '
                           'public.tidemark_append_batch(uuid[], text[], bigint[], uuid[], '
                           'uuid[], text[], integer[], uuid[], text[], bigint[], '
                           'timestamptz[], jsonb[], text[], text[], integer[], jsonb[]), '
                           'public.tidemark_append_batch(uuid[], text[], bigint[], uuid[], '
                           'uuid[], text[], integer[], uuid[], text[], bigint[], '
                           'timestamptz[], jsonb[], text[], text[], integer[], jsonb[], '
                           'bigint[]), '
                           'public.tidemark_read_log(bigint, bigint), '
                           'public.tidemark_log_head(), '
                           'public.tidemark_drop_snapshots() TO %I', runtime_role);
        END
        $$
        "#,
    )
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(())
}

#[async_trait]
impl EventStore for PostgresStore {
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

    /// Through the stream's own writer, like every append of the stream, so the
    /// chain's appends run in the order they were queued.
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
        let mut tx = begin_as(&self.inner.reads, tenant_id).await?;
        let events = stream_events(&mut tx, tenant_id, stream_id, after_version).await?;
        tx.commit().await?;
        Ok(events)
    }

    /// One transaction, one tenant setting, for both reads.
    #[tracing::instrument(skip(self), fields(tenant = %tenant_id, stream = %stream_id))]
    async fn read_stream_from_snapshot(
        &self,
        tenant_id: Uuid,
        stream_id: &str,
        snapshot_version: u32,
    ) -> Result<(Option<Snapshot>, Vec<RecordedEvent>), StoreError> {
        let mut tx = begin_as(&self.inner.reads, tenant_id).await?;
        let snapshot = snapshot_row(&mut tx, tenant_id, stream_id, snapshot_version).await?;
        let after = snapshot.as_ref().map_or(0, |s| s.version);
        let events = stream_events(&mut tx, tenant_id, stream_id, after).await?;
        tx.commit().await?;
        Ok((snapshot, events))
    }

    #[tracing::instrument(skip(self), fields(tenant = %tenant_id))]
    async fn last_tenant_position(
        &self,
        tenant_id: Uuid,
        at_most: Position,
    ) -> Result<Option<Position>, StoreError> {
        let mut tx = begin_as(&self.inner.reads, tenant_id).await?;
        let last: Option<i64> = sqlx::query_scalar(
            "SELECT MAX(global_position) FROM events WHERE tenant_id = $1 AND global_position <= $2",
        )
        .bind(tenant_id)
        .bind(saturating_i64(at_most))
        .fetch_one(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(last.and_then(|p| u64::try_from(p).ok()))
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
        let sql = format!("SELECT {EVENT_COLUMNS} FROM tidemark_read_log($1, $2)");
        let rows = sqlx::query(&sql)
            .bind(saturating_i64(after))
            .bind(i64::try_from(limit).unwrap_or(i64::MAX))
            .fetch_all(&self.inner.reads)
            .await?;
        Ok(rows.iter().map(decode_event).collect::<Result<_, _>>()?)
    }

    #[tracing::instrument(skip(self))]
    async fn head(&self) -> Result<Position, StoreError> {
        query_head(&self.inner.reads).await
    }

    fn watch_head(&self) -> watch::Receiver<Position> {
        self.inner.head.clone()
    }

    #[tracing::instrument(skip(self), fields(tenant = %tenant_id))]
    async fn idempotent_response(
        &self,
        tenant_id: Uuid,
        key: &str,
    ) -> Result<Option<IdempotentResponse>, StoreError> {
        let mut tx = begin_as(&self.inner.reads, tenant_id).await?;
        let row = sqlx::query(
            "SELECT request_hash, status, body FROM idempotency_keys \
             WHERE tenant_id = $1 AND key = $2",
        )
        .bind(tenant_id)
        .bind(key)
        .fetch_optional(&mut *tx)
        .await?;
        tx.commit().await?;
        let Some(row) = row else {
            return Ok(None);
        };
        let status: i32 = row.try_get("status")?;
        Ok(Some(IdempotentResponse {
            request_hash: row.try_get("request_hash")?,
            status: u16::try_from(status).map_err(|e| decode_error("status", e))?,
            body: row.try_get("body")?,
        }))
    }

    #[tracing::instrument(skip(self), fields(tenant = %tenant_id, stream = %stream_id))]
    async fn load_snapshot(
        &self,
        tenant_id: Uuid,
        stream_id: &str,
        snapshot_version: u32,
    ) -> Result<Option<Snapshot>, StoreError> {
        let mut tx = begin_as(&self.inner.reads, tenant_id).await?;
        let snapshot = snapshot_row(&mut tx, tenant_id, stream_id, snapshot_version).await?;
        tx.commit().await?;
        Ok(snapshot)
    }

    /// In a transaction of its own on the read pool, not through a writer: a snapshot
    /// is no part of the log, reserves no position, and should not hold up appends.
    #[tracing::instrument(
        skip_all,
        fields(tenant = %snapshot.tenant_id, stream = %snapshot.stream_id, version = snapshot.version)
    )]
    async fn save_snapshot(&self, snapshot: &Snapshot) -> Result<bool, StoreError> {
        let mut tx = begin_as(&self.inner.reads, snapshot.tenant_id).await?;
        // Row-level security hides another tenant's stream: it looks missing.
        let actual: Option<i64> =
            sqlx::query_scalar("SELECT version FROM streams WHERE stream_id = $1")
                .bind(&snapshot.stream_id)
                .fetch_optional(&mut *tx)
                .await?;
        let Some(actual) = actual else {
            return Err(StoreError::NoSuchStream {
                stream_id: snapshot.stream_id.clone(),
            });
        };
        let actual = to_u64(actual, "version")?;
        if snapshot.version > actual || snapshot.version == 0 {
            return Err(StoreError::SnapshotPastStream {
                stream_id: snapshot.stream_id.clone(),
                snapshot: snapshot.version,
                actual,
            });
        }
        let stored = sqlx::query(
            "INSERT INTO snapshots (stream_id, snapshot_version, tenant_id, version, data, detail) \
             VALUES ($1, $2, $3, $4, $5::json, $6) \
             ON CONFLICT (stream_id, snapshot_version) DO UPDATE \
             SET version = excluded.version, data = excluded.data, detail = excluded.detail, \
                 taken_at = now() \
             WHERE snapshots.version < excluded.version",
        )
        .bind(&snapshot.stream_id)
        .bind(i32::try_from(snapshot.snapshot_version).map_err(encode_error)?)
        .bind(snapshot.tenant_id)
        .bind(to_i64(snapshot.version)?)
        .bind(&snapshot.data)
        .bind(snapshot.detail.as_deref())
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(stored.rows_affected() == 1)
    }

    #[tracing::instrument(skip(self), fields(tenant = %tenant_id, stream = %stream_id))]
    async fn load_snapshot_detail(
        &self,
        tenant_id: Uuid,
        stream_id: &str,
        snapshot_version: u32,
        version: Version,
    ) -> Result<Option<String>, StoreError> {
        let mut tx = begin_as(&self.inner.reads, tenant_id).await?;
        let detail: Option<Option<String>> = sqlx::query_scalar(
            "SELECT detail FROM snapshots \
             WHERE stream_id = $1 AND tenant_id = $2 AND snapshot_version = $3 AND version = $4",
        )
        .bind(stream_id)
        .bind(tenant_id)
        .bind(i32::try_from(snapshot_version).map_err(encode_error)?)
        .bind(to_i64(version)?)
        .fetch_optional(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(detail.flatten())
    }

    #[tracing::instrument(skip(self))]
    async fn drop_snapshots(&self) -> Result<u64, StoreError> {
        let dropped: i64 = sqlx::query_scalar("SELECT tidemark_drop_snapshots()")
            .fetch_one(&self.inner.reads)
            .await?;
        Ok(to_u64(dropped, "dropped")?)
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
        self.submit((tenant_id, key.clone()), |reply| Job::Remember {
            tenant_id,
            key,
            response,
            reply,
        })
        .await
    }
}

/// One writer task: takes the queued jobs of the streams it owns and commits them in
/// batches.
struct Writer {
    pool: PgPool,
    jobs: mpsc::Receiver<Job>,
    head: Arc<watch::Sender<Position>>,
    /// The connection of the last batch that succeeded, and when it was kept.
    held: Option<(PoolConnection<sqlx::Postgres>, Instant)>,
}

impl Writer {
    /// The connection for the next batch: the last batch's, kept by [`Writer::keep`].
    ///
    /// Taken from the pool for every batch, a connection cost about an eighth of a group
    /// commit under load: the pool checks it with a round trip (`test_before_acquire`),
    /// and a connection given back returns only through a task of the runtime, which the
    /// next acquire waits for (docs/benchmarks.md). A kept connection unused for
    /// [`HELD_CONNECTION_CHECK_AFTER`] is checked the same way first, so a server that
    /// restarted while the writer was idle costs no batch; if it does not answer, it is
    /// closed and the pool opens another. A batch that fails gives its connection back
    /// to the pool (see [`Writer::keep`]), which checks it before anyone uses it again.
    async fn connection(&mut self) -> Result<PoolConnection<sqlx::Postgres>, sqlx::Error> {
        if let Some((mut connection, kept)) = self.held.take() {
            if kept.elapsed() < HELD_CONNECTION_CHECK_AFTER {
                return Ok(connection);
            }
            match connection.ping().await {
                Ok(()) => return Ok(connection),
                Err(error) => {
                    tracing::info!(%error, "the writer's idle connection no longer answers");
                    connection.close_on_drop();
                }
            }
        }
        self.pool.acquire().await
    }

    /// Keeps the connection of a batch that succeeded for the next one. Only those are
    /// kept: after a failure the connection may be broken, so it goes back to the pool.
    fn keep(&mut self, connection: PoolConnection<sqlx::Postgres>) {
        self.held = Some((connection, Instant::now()));
    }

    async fn run(mut self) {
        let mut batch = Vec::with_capacity(MAX_BATCH);
        // `recv_many` waits for the first job, then takes whatever else is queued.
        // It returns 0 only when every store handle is gone and the queue is empty.
        while self.jobs.recv_many(&mut batch, MAX_BATCH).await > 0 {
            self.write_batch(std::mem::take(&mut batch)).await;
        }
        tracing::debug!("event store writer stopped");
    }

    #[tracing::instrument(skip_all, fields(requests = jobs.len()))]
    async fn write_batch(&mut self, jobs: Vec<Job>) {
        // An abandoned chained append is dropped here, which breaks its chain; so this
        // runs over the whole batch before any chain is looked at.
        let jobs: Vec<Job> = jobs.into_iter().filter(|j| !j.is_abandoned()).collect();
        // A chained append whose chain broke in an earlier batch is refused without
        // running; within this batch, `tidemark_append_batch` keeps the same rule.
        let (refused, jobs): (Vec<Job>, Vec<Job>) =
            jobs.into_iter().partition(Job::follows_a_failure);
        refused
            .into_iter()
            .for_each(|job| job.refuse_after_failure().answer());
        let (appends, remembers): (Vec<Job>, Vec<Job>) = jobs
            .into_iter()
            .partition(|j| matches!(j, Job::Append { .. }));
        if appends.is_empty() && remembers.is_empty() {
            return;
        }
        if remembers.is_empty() {
            self.write_appends(appends).await;
            return;
        }

        // One connection for the batch and the announcement after it, kept for the next
        // batch (see `Writer::connection`).
        let mut connection = match self.connection().await {
            Ok(connection) => connection,
            Err(error) => return fail_unstarted(appends.into_iter().chain(remembers), error),
        };
        let mut tx = match connection.begin().await {
            Ok(tx) => tx,
            Err(error) => return fail_unstarted(appends.into_iter().chain(remembers), error),
        };

        let mut settled = Vec::with_capacity(appends.len() + remembers.len());
        let mut fatal = None;
        // The appends go first: the batch function reserves the positions, which must
        // be the transaction's first write (see "gap-safe" in the module docs).
        if !appends.is_empty() {
            match append_batch(&mut tx, &appends).await {
                Ok(results) => settled.extend(appends.into_iter().zip(results).map(
                    |(job, result)| match job {
                        Job::Append { reply, link, .. } => Settled::Append(reply, result, link),
                        // Partitioned above: every job here is an append.
                        other => other.unrun(),
                    },
                )),
                Err(error) => {
                    settled.extend(appends.into_iter().map(Job::unrun));
                    fatal = Some(error);
                }
            }
        }
        for job in remembers {
            if fatal.is_some() {
                settled.push(job.unrun());
                continue;
            }
            let (done, error) = remember_in_savepoint(&mut tx, job).await;
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
                if self.answer_committed(&mut connection, settled).await {
                    self.keep(connection);
                }
            }
            Err(error) => {
                tracing::error!(%error, requests = settled.len(), "group commit failed");
                let cause = Arc::new(error);
                settled.into_iter().for_each(|s| s.fail(&cause));
            }
        }
    }
}

impl Writer {
    /// Answers the requests of a committed batch, after publishing the new head (read
    /// on the batch's own connection, now free). Says whether the connection answered.
    async fn answer_committed(&self, connection: &mut PgConnection, settled: Vec<Settled>) -> bool {
        let last = settled.iter().filter_map(Settled::last_position).max();
        let mut answered = true;
        if last.is_some() {
            // Published before anyone is answered, so a caller that appended and then
            // looks at the watch sees its own events once they are visible. On the
            // batch's connection, so answering never waits behind a busy read pool.
            if let Err(error) = publish_head(connection, &self.head).await {
                tracing::warn!(%error, "could not read and announce the head after a commit");
                answered = false;
            }
        }
        tracing::debug!(
            requests = settled.len(),
            succeeded = settled.iter().filter(|s| s.is_ok()).count(),
            last_position = last,
            "group commit"
        );
        settled.into_iter().for_each(Settled::answer);
        answered
    }

    /// A batch of appends alone: one call of `tidemark_append_batch`, which is its own
    /// transaction (autocommit), so the batch costs one round trip instead of three
    /// (`BEGIN`, the call, `COMMIT`). The function runs a refused request alone in its
    /// own subtransaction, so one request's refusal does not undo the others.
    async fn write_appends(&mut self, appends: Vec<Job>) {
        let mut connection = match self.connection().await {
            Ok(connection) => connection,
            Err(error) => return fail_unstarted(appends, error),
        };
        let result = append_batch(&mut connection, &appends).await;
        match result {
            Ok(results) => {
                let settled = appends
                    .into_iter()
                    .zip(results)
                    .map(|(job, result)| match job {
                        Job::Append { reply, link, .. } => Settled::Append(reply, result, link),
                        // Only appends are routed here.
                        other => other.unrun(),
                    })
                    .collect();
                if self.answer_committed(&mut connection, settled).await {
                    self.keep(connection);
                }
            }
            Err(error) => {
                tracing::error!(%error, requests = appends.len(), "group commit failed");
                let cause = Arc::new(error);
                appends.into_iter().for_each(|job| job.unrun().fail(&cause));
            }
        }
    }
}

/// Fails every job of a batch that could not start (no connection, no transaction):
/// none of them ran.
fn fail_unstarted(jobs: impl IntoIterator<Item = Job>, error: sqlx::Error) {
    tracing::error!(%error, "could not start a group commit");
    let cause = Arc::new(error);
    jobs.into_iter().for_each(|job| job.unrun().fail(&cause));
}

/// Runs a `remember_response` job in its own savepoint, so a failure undoes only its
/// own work. The second value is an error that leaves the transaction unusable (the
/// savepoint itself failed), which fails the whole batch.
async fn remember_in_savepoint(
    conn: &mut PgConnection,
    job: Job,
) -> (Settled, Option<sqlx::Error>) {
    let Job::Remember {
        tenant_id,
        key,
        response,
        reply,
    } = job
    else {
        // Only remember jobs are routed here; an append would be a bug, not a crash.
        return (job.unrun(), None);
    };
    if let Err(error) = sqlx::query("SAVEPOINT request").execute(&mut *conn).await {
        return (
            Settled::Remember(reply, Err(StoreError::Closed)),
            Some(error),
        );
    }
    let result = async {
        set_tenant(conn, tenant_id).await?;
        remember_one(conn, tenant_id, &key, &response).await
    }
    .await;
    // ROLLBACK TO undoes the work but keeps the savepoint open; RELEASE pops it.
    let end = match &result {
        Ok(_) => release(conn).await,
        Err(_) => match sqlx::query("ROLLBACK TO request").execute(&mut *conn).await {
            Ok(_) => release(conn).await,
            Err(error) => Err(error),
        },
    };
    (
        Settled::Remember(reply, result.map_err(StoreError::from)),
        end.err(),
    )
}

async fn release(conn: &mut PgConnection) -> Result<(), sqlx::Error> {
    sqlx::query("RELEASE request").execute(conn).await.map(drop)
}

/// Begins a transaction on `pool` scoped to `tenant_id`. `BEGIN` and the tenant setting
/// travel as one simple-protocol message, so a tenant-scoped read costs one round trip
/// less than `BEGIN` followed by [`set_tenant`]. The setting is local to the
/// transaction, as there. The tenant is written into the text, which is safe because a
/// [`Uuid`] formats as hex digits and hyphens only.
async fn begin_as(
    pool: &PgPool,
    tenant_id: Uuid,
) -> Result<sqlx::Transaction<'static, sqlx::Postgres>, sqlx::Error> {
    pool.begin_with(format!(
        "BEGIN; SELECT set_config('app.tenant', '{}', true)",
        tenant_id.hyphenated()
    ))
    .await
}

/// Scopes the rest of the transaction to one tenant (SET LOCAL): row-level security
/// shows and accepts only that tenant's rows from here on.
async fn set_tenant(conn: &mut PgConnection, tenant_id: Uuid) -> Result<(), sqlx::Error> {
    sqlx::query("SELECT set_config('app.tenant', $1, true)")
        .bind(tenant_id.to_string())
        .execute(conn)
        .await
        .map(drop)
}

/// All the appends of a batch in one call of `tidemark_append_batch` (migrations 0005,
/// 0008, 0013): it locks the streams, reserves the positions and runs the requests in
/// segments, a refused one alone, answering one row per request. The outer
/// error is one that broke the transaction; the inner results are the callers' answers,
/// in the order of `jobs`.
async fn append_batch(
    conn: &mut PgConnection,
    jobs: &[Job],
) -> Result<Vec<Result<Appended, StoreError>>, sqlx::Error> {
    let (requests, chains): (Vec<&AppendRequest>, Vec<Option<i64>>) = jobs
        .iter()
        .filter_map(|job| match job {
            Job::Append { request, link, .. } => Some((
                request,
                link.as_ref().map(|link| saturating_i64(link.chain_id())),
            )),
            Job::Remember { .. } | Job::SaveSnapshot { .. } | Job::DropSnapshots { .. } => None,
        })
        .unzip();
    let events = || requests.iter().flat_map(|r| &r.events);
    let records = || requests.iter().map(|r| r.idempotency.as_ref());
    let mut expected = Vec::with_capacity(requests.len());
    let mut counts = Vec::with_capacity(requests.len());
    for request in &requests {
        expected.push(match request.expected {
            ExpectedVersion::Any => None,
            ExpectedVersion::Exact(version) => Some(to_i64(version)?),
        });
        counts.push(i32::try_from(request.events.len()).map_err(encode_error)?);
    }

    let rows = sqlx::query(
        "SELECT outcome, stream_version, first_position, last_position, error_code, \
                error_message \
         FROM tidemark_append_batch($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, \
                                    $13, $14, $15, $16, $17)",
    )
    .bind(requests.iter().map(|r| r.tenant_id).collect::<Vec<_>>())
    .bind(
        requests
            .iter()
            .map(|r| r.stream_id.as_str())
            .collect::<Vec<_>>(),
    )
    .bind(&expected)
    .bind(
        requests
            .iter()
            .map(|r| r.metadata.correlation_id)
            .collect::<Vec<_>>(),
    )
    .bind(
        requests
            .iter()
            .map(|r| r.metadata.causation_id)
            .collect::<Vec<_>>(),
    )
    .bind(
        requests
            .iter()
            .map(|r| r.metadata.actor.as_str())
            .collect::<Vec<_>>(),
    )
    .bind(counts)
    .bind(events().map(|e| e.event_id).collect::<Vec<_>>())
    .bind(events().map(|e| e.event_type.as_str()).collect::<Vec<_>>())
    .bind(
        events()
            .map(|e| i64::from(e.schema_version))
            .collect::<Vec<_>>(),
    )
    .bind(events().map(|e| e.occurred_at).collect::<Vec<_>>())
    .bind(events().map(|e| Json(&e.data)).collect::<Vec<_>>())
    .bind(
        records()
            .map(|r| r.map(|r| r.key.as_str()))
            .collect::<Vec<_>>(),
    )
    .bind(
        records()
            .map(|r| r.map(|r| r.response.request_hash.as_str()))
            .collect::<Vec<_>>(),
    )
    .bind(
        records()
            .map(|r| r.map(|r| i32::from(r.response.status)))
            .collect::<Vec<_>>(),
    )
    .bind(
        records()
            .map(|r| r.map(|r| Json(&r.response.body)))
            .collect::<Vec<_>>(),
    )
    .bind(chains)
    .fetch_all(&mut *conn)
    .await?;
    if rows.len() != requests.len() {
        return Err(sqlx::Error::Protocol(format!(
            "tidemark_append_batch answered {} rows for {} requests",
            rows.len(),
            requests.len()
        )));
    }
    requests
        .iter()
        .zip(&rows)
        .zip(&expected)
        .map(|((request, row), expected)| appended(request, row, *expected))
        .collect()
}

/// Turns one row of `tidemark_append_batch` into the caller's answer.
fn appended(
    request: &AppendRequest,
    row: &PgRow,
    expected: Option<i64>,
) -> Result<Result<Appended, StoreError>, sqlx::Error> {
    let outcome: String = row.try_get("outcome")?;
    let version = || -> Result<Version, sqlx::Error> {
        let version: Option<i64> = row.try_get("stream_version")?;
        to_u64(version.unwrap_or_default(), "stream_version")
    };
    let position = |column: &str| -> Result<Position, sqlx::Error> {
        let position: Option<i64> = row.try_get(column)?;
        to_u64(position.unwrap_or_default(), column)
    };
    let stream_id = || request.stream_id.clone();
    Ok(match outcome.as_str() {
        "appended" => Ok(Appended {
            version: version()?,
            first_position: position("first_position")?,
            last_position: position("last_position")?,
        }),
        "conflict" => Err(StoreError::VersionConflict {
            stream_id: stream_id(),
            // `Exact` is the only expectation that can conflict.
            expected: to_u64(expected.unwrap_or_default(), "expected_version")?,
            actual: version()?,
        }),
        "after_failed" => Err(StoreError::EarlierAppendFailed {
            stream_id: stream_id(),
        }),
        "wrong_tenant" => Err(StoreError::WrongTenant {
            stream_id: stream_id(),
        }),
        "key_taken" => Err(StoreError::IdempotencyKeyTaken(
            request
                .idempotency
                .as_ref()
                .map(|record| record.key.clone())
                .unwrap_or_default(),
        )),
        "failed" => Err(StoreError::Database(sqlx::Error::Database(Box::new(
            RequestFailed {
                code: row.try_get("error_code")?,
                message: row.try_get("error_message")?,
            },
        )))),
        other => {
            return Err(sqlx::Error::Protocol(format!(
                "tidemark_append_batch answered an unknown outcome {other:?}"
            )));
        }
    })
}

/// A database error that `tidemark_append` caught inside its subtransaction and
/// reported back, so that only its request failed. It keeps the SQLSTATE, so callers
/// can still tell, say, a unique violation from other failures.
#[derive(Debug, thiserror::Error)]
#[error("{message} (SQLSTATE {code})")]
struct RequestFailed {
    code: String,
    message: String,
}

impl sqlx::error::DatabaseError for RequestFailed {
    fn message(&self) -> &str {
        &self.message
    }

    fn code(&self) -> Option<std::borrow::Cow<'_, str>> {
        Some(std::borrow::Cow::Borrowed(&self.code))
    }

    fn as_error(&self) -> &(dyn std::error::Error + Send + Sync + 'static) {
        self
    }

    fn as_error_mut(&mut self) -> &mut (dyn std::error::Error + Send + Sync + 'static) {
        self
    }

    fn into_error(self: Box<Self>) -> Box<dyn std::error::Error + Send + Sync + 'static> {
        self
    }

    fn kind(&self) -> sqlx::error::ErrorKind {
        use sqlx::error::ErrorKind;
        match self.code.as_str() {
            "23505" => ErrorKind::UniqueViolation,
            "23503" => ErrorKind::ForeignKeyViolation,
            "23502" => ErrorKind::NotNullViolation,
            "23514" => ErrorKind::CheckViolation,
            _ => ErrorKind::Other,
        }
    }
}

/// A stream's events after `after_version`, in a transaction scoped to `tenant_id`.
async fn stream_events(
    conn: &mut PgConnection,
    tenant_id: Uuid,
    stream_id: &str,
    after_version: Version,
) -> Result<Vec<RecordedEvent>, StoreError> {
    let sql = format!(
        "SELECT {EVENT_COLUMNS} FROM events \
         WHERE stream_id = $1 AND tenant_id = $2 AND version > $3 ORDER BY version"
    );
    let rows = sqlx::query(&sql)
        .bind(stream_id)
        .bind(tenant_id)
        .bind(saturating_i64(after_version))
        .fetch_all(&mut *conn)
        .await?;
    Ok(rows.iter().map(decode_event).collect::<Result<_, _>>()?)
}

/// A stream's snapshot of one format, in a transaction scoped to `tenant_id`.
async fn snapshot_row(
    conn: &mut PgConnection,
    tenant_id: Uuid,
    stream_id: &str,
    snapshot_version: u32,
) -> Result<Option<Snapshot>, StoreError> {
    // `::text` hands back the json exactly as it was written, with no re-encoding.
    let row = sqlx::query_as::<_, (i64, String)>(
        "SELECT version, data::text FROM snapshots \
         WHERE stream_id = $1 AND tenant_id = $2 AND snapshot_version = $3",
    )
    .bind(stream_id)
    .bind(tenant_id)
    .bind(i32::try_from(snapshot_version).map_err(encode_error)?)
    .fetch_optional(&mut *conn)
    .await?;
    Ok(row
        .map(|(version, data)| -> Result<Snapshot, sqlx::Error> {
            Ok(Snapshot {
                tenant_id,
                stream_id: stream_id.to_owned(),
                snapshot_version,
                version: to_u64(version, "version")?,
                data,
                detail: None,
            })
        })
        .transpose()?)
}

/// Stores an answer under an idempotency key unless the key is taken; true if stored.
/// The transaction must already be scoped to `tenant_id`.
async fn remember_one(
    conn: &mut PgConnection,
    tenant_id: Uuid,
    key: &str,
    response: &IdempotentResponse,
) -> Result<bool, sqlx::Error> {
    // ON CONFLICT DO NOTHING: only a taken key is ignored, any other constraint
    // failure still surfaces as an error.
    let inserted = sqlx::query(
        "INSERT INTO idempotency_keys (tenant_id, key, request_hash, status, body) \
         VALUES ($1, $2, $3, $4, $5) ON CONFLICT (tenant_id, key) DO NOTHING",
    )
    .bind(tenant_id)
    .bind(key)
    .bind(&response.request_hash)
    .bind(i32::from(response.status))
    .bind(Json(&response.body))
    .execute(&mut *conn)
    .await?;
    Ok(inserted.rows_affected() == 1)
}

/// The highest position a reader of the global log may be given now.
async fn query_head(reads: &PgPool) -> Result<Position, StoreError> {
    let head: i64 = sqlx::query_scalar("SELECT tidemark_log_head()")
        .fetch_one(reads)
        .await?;
    Ok(to_u64(head, "global_position")?)
}

/// Re-reads the head and publishes it if it moved forward.
async fn refresh_head(reads: &PgPool, head: &watch::Sender<Position>) -> Result<(), StoreError> {
    let seen = query_head(reads).await?;
    advance(head, seen);
    Ok(())
}

/// Reads the head after a commit and, in the same statement, tells every listening
/// store of the database what it is (`head:<position>`, see [`NOTIFY_CHANNEL`]); then
/// publishes it to this store's watch. A head read after a commit is visible to every
/// later snapshot of every session, so the listeners take it without reading it again.
async fn publish_head(
    connection: &mut PgConnection,
    head: &watch::Sender<Position>,
) -> Result<(), StoreError> {
    let seen: i64 = sqlx::query_scalar(
        "SELECT h FROM tidemark_log_head() AS h, \
         pg_notify($1, $2 || h::text) AS sent",
    )
    .bind(NOTIFY_CHANNEL)
    .bind(HEAD_PAYLOAD_PREFIX)
    .fetch_one(connection)
    .await?;
    advance(head, to_u64(seen, "global_position")?);
    Ok(())
}

/// Moves the watch up to `seen`. Several tasks publish concurrently and may finish out
/// of order, so the watch only ever moves up.
fn advance(head: &watch::Sender<Position>, seen: Position) {
    head.send_if_modified(|current| {
        let moved = seen > *current;
        if moved {
            *current = seen;
        }
        moved
    });
}

/// The head a notification's payload announces, if it is a `head:<position>` one.
fn announced_head(payload: &str) -> Option<Position> {
    payload.strip_prefix(HEAD_PAYLOAD_PREFIX)?.parse().ok()
}

/// Keeps the head watch current with commits made by any process: publishes announced
/// heads, and reads the head itself when [`listen`] asks (a reconnect, a notification
/// without a head) and on every tick of `every`, until `stop` fires (the last store
/// handle was dropped).
async fn follow_head(
    listener: PgListener,
    reads: PgPool,
    head: Arc<watch::Sender<Position>>,
    mut stop: oneshot::Receiver<()>,
    every: Duration,
) {
    // The listener runs in its own task because its `try_recv` cannot be cancelled
    // halfway through a message; aborting the task drops the listener whole instead.
    let wake = Arc::new(Notify::new());
    let listening = tokio::spawn(listen(
        listener,
        Arc::clone(&head),
        Arc::clone(&wake),
        every,
    ));
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            biased;
            _ = &mut stop => break,
            () = wake.notified() => {}
            _ = tick.tick() => {}
        }
        if let Err(error) = refresh_head(&reads, &head).await {
            tracing::warn!(%error, "could not re-read the event log's head");
        }
    }
    listening.abort();
    tracing::debug!("event store head follower stopped");
}

/// Publishes the heads that notifications announce. Anything else that may mean the
/// head moved unseen wakes the follower to read it: a notification without a head (a
/// writer of an earlier release) and a reconnect (notifications may have been lost
/// meanwhile). A burst of notifications is handled as one.
async fn listen(
    mut listener: PgListener,
    head: Arc<watch::Sender<Position>>,
    wake: Arc<Notify>,
    retry_after: Duration,
) {
    loop {
        let first = match listener.try_recv().await {
            Ok(Some(notification)) => notification,
            Ok(None) => {
                tracing::info!("the notification connection was re-established");
                wake.notify_one();
                continue;
            }
            Err(error) => {
                tracing::warn!(%error, "listening for event log notifications failed");
                wake.notify_one();
                // Not a busy loop while the database is unreachable; the follower's
                // periodic refresh covers the time in between.
                tokio::time::sleep(retry_after).await;
                continue;
            }
        };
        let mut announced = None;
        let mut unannounced = false;
        for notification in
            std::iter::once(first).chain(std::iter::from_fn(|| listener.next_buffered()))
        {
            match announced_head(notification.payload()) {
                Some(seen) => announced = announced.max(Some(seen)),
                None => unannounced = true,
            }
        }
        if let Some(seen) = announced {
            advance(&head, seen);
        }
        if unannounced {
            wake.notify_one();
        }
    }
}

/// A pool of one connection, for short administrative work.
async fn single_connection(options: &PgConnectOptions) -> Result<PgPool, sqlx::Error> {
    PgPoolOptions::new()
        .max_connections(1)
        .connect_with(options.clone())
        .await
}

fn decode_event(row: &PgRow) -> Result<RecordedEvent, sqlx::Error> {
    let schema_version: i64 = row.try_get("schema_version")?;
    Ok(RecordedEvent {
        global_position: to_u64(row.try_get("global_position")?, "global_position")?,
        event_id: row.try_get("event_id")?,
        tenant_id: row.try_get("tenant_id")?,
        stream_id: row.try_get("stream_id")?,
        version: to_u64(row.try_get("version")?, "version")?,
        event_type: row.try_get("event_type")?,
        schema_version: u32::try_from(schema_version)
            .map_err(|e| decode_error("schema_version", e))?,
        occurred_at: row.try_get("occurred_at")?,
        recorded_at: row.try_get("recorded_at")?,
        correlation_id: row.try_get("correlation_id")?,
        causation_id: row.try_get("causation_id")?,
        actor: row.try_get("actor")?,
        data: row.try_get("data")?,
    })
}

fn configuration_error(message: &str) -> StoreError {
    StoreError::Database(sqlx::Error::Configuration(message.into()))
}
