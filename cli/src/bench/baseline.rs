//! The baselines the Tidemark figures are divided by: the raw rate at which plain sqlx
//! can insert the same event rows into the same table, one row per transaction, and on
//! the production path the raw rate at which plain rdkafka can produce the same event
//! messages to the same broker.
//!
//! An insert is what a naive event store does per command, minus everything Tidemark
//! adds (HTTP, auth, decide, the version check, JSON): each worker owns a connection and
//! runs `BEGIN; INSERT one event row; COMMIT`. The row is a real `post.created` event,
//! encoded by `schemas` like the command side does.
//!
//! - **SQLite**: `BEGIN IMMEDIATE`, with the store's own settings (WAL,
//!   `synchronous=FULL`, the same busy timeout), so workers contend for SQLite's one
//!   write lock exactly as a naive store's connections would. Foreign keys are not
//!   enforced (the store inserts the stream row first), which makes the baseline a
//!   little faster, never slower.
//! - **PostgreSQL**: the store's migrated tables, the position from the store's own
//!   sequence, the server's default durability (`synchronous_commit` as configured).
//!   The foreign key to `streams` is enforced, so the rows go to one existing stream
//!   row per tenant (1,000), each with its own version. It connects as the owner, so
//!   row-level security costs it nothing unless the owner is subject to it.
//!
//! A produce sends one message and awaits its delivery report before the next, from
//! one producer shared by the workers: the relay's message (key, headers and value of
//! a recorded event) and its durability settings (`acks=all`, idempotence), without
//! its `linger.ms` (so one message alone goes out at once).

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::Context;
use async_trait::async_trait;
use chrono::{SecondsFormat, Utc};
use domain::{Channel, PostId, StreamName, TenantId, post};
use eventlog::RecordedEvent;
use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::util::Timeout;
use schemas::DomainEvent;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{PgPool, SqlitePool};
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
    let encoded = post_created()?;
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

/// The event every baseline writes: a `post.created`, encoded as the command side does.
fn post_created() -> anyhow::Result<schemas::Encoded> {
    Ok(schemas::encode(&DomainEvent::Post(post::Event::Created {
        channels: vec![Channel::new("linkedin").map_err(|e| anyhow::anyhow!(e))?],
        body: "A benchmark post: the same body every time.".to_owned(),
        campaign_id: None,
    })))
}

/// Runs the PostgreSQL baseline against the (already migrated) database of `owner`.
pub async fn postgres_inserts(
    owner: PgConnectOptions,
    concurrency: usize,
    duration: Duration,
    progress: &Progress,
) -> anyhow::Result<Tally> {
    let connections = u32::try_from(concurrency.max(1)).unwrap_or(u32::MAX);
    let pool = PgPoolOptions::new()
        .max_connections(connections)
        .min_connections(connections)
        .acquire_timeout(Duration::from_secs(60))
        .connect_with(owner)
        .await
        .context("failed to open the PostgreSQL baseline database")?;
    let bypasses_rls: bool = sqlx::query_scalar(
        "SELECT rolsuper OR rolbypassrls FROM pg_roles WHERE rolname = current_user",
    )
    .fetch_one(&pool)
    .await
    .context("failed to read the baseline role's attributes")?;

    // One stream row per tenant, made before the clock starts: the events' foreign key
    // needs it, and the store too creates a stream once, not per event.
    let mut streams = Vec::with_capacity(TENANTS);
    for _ in 0..TENANTS {
        let tenant = TenantId::from_uuid(Uuid::now_v7());
        let stream = StreamName::post(tenant, PostId::from_uuid(Uuid::now_v7()));
        let mut tx = pool.begin().await?;
        if !bypasses_rls {
            scope_to_tenant(&mut tx, tenant.as_uuid()).await?;
        }
        sqlx::query("INSERT INTO streams (stream_id, tenant_id, version) VALUES ($1, $2, 0)")
            .bind(stream.as_str())
            .bind(tenant.as_uuid())
            .execute(&mut *tx)
            .await
            .context("failed to create the baseline's streams")?;
        tx.commit().await?;
        streams.push((tenant.as_uuid(), stream.as_str().to_owned()));
    }

    let encoded = post_created()?;
    let op = Arc::new(PgInsertRow {
        pool: pool.clone(),
        streams,
        scope: !bypasses_rls,
        next_version: AtomicU64::new(1),
        event_type: encoded.event_type,
        schema_version: i64::from(encoded.schema_version),
        data: encoded.data,
    });
    let window = Window::starting_now(duration);
    let tally = closed_loop(op, concurrency, window, progress).await;
    pool.close().await;
    Ok(tally)
}

/// Row-level security admits a row only for the transaction's tenant.
async fn scope_to_tenant(
    tx: &mut sqlx::Transaction<'_, sqlx::Postgres>,
    tenant: Uuid,
) -> Result<(), sqlx::Error> {
    sqlx::query("SELECT set_config('app.tenant', $1, true)")
        .bind(tenant.to_string())
        .execute(&mut **tx)
        .await
        .map(drop)
}

struct PgInsertRow {
    pool: PgPool,
    /// `(tenant, stream)` pairs, used round-robin.
    streams: Vec<(Uuid, String)>,
    /// Whether each transaction must set `app.tenant` first (row-level security).
    scope: bool,
    /// Versions are unique across all streams, so never taken twice in one stream.
    next_version: AtomicU64,
    event_type: &'static str,
    schema_version: i64,
    data: serde_json::Value,
}

impl PgInsertRow {
    async fn insert(&self, seq: u64) -> Result<(), sqlx::Error> {
        let (tenant, stream) = &self.streams[(seq as usize) % self.streams.len()];
        let version = self.next_version.fetch_add(1, Ordering::Relaxed);
        let now = Utc::now();
        let mut tx = self.pool.begin().await?;
        if self.scope {
            scope_to_tenant(&mut tx, *tenant).await?;
        }
        sqlx::query(
            "INSERT INTO events (global_position, event_id, tenant_id, stream_id, version, \
             event_type, schema_version, occurred_at, correlation_id, causation_id, actor, data) \
             VALUES (nextval('event_positions'), $1, $2, $3, $4, $5, $6, $7, $8, NULL, 'bench', $9)",
        )
        .bind(Uuid::now_v7())
        .bind(tenant)
        .bind(stream)
        .bind(i64::try_from(version).unwrap_or(i64::MAX))
        .bind(self.event_type)
        .bind(self.schema_version)
        .bind(now)
        .bind(Uuid::now_v7())
        .bind(&self.data)
        .execute(&mut *tx)
        .await?;
        tx.commit().await
    }
}

#[async_trait]
impl Operation for PgInsertRow {
    async fn call(&self, seq: u64, intended: Instant) -> Vec<Sample> {
        let outcome = match self.insert(seq).await {
            Ok(()) => Outcome::Ok,
            Err(error) => Outcome::Failed(error.to_string()),
        };
        vec![Sample::now("insert", intended, outcome)]
    }
}

/// How long a produce may wait for its delivery report.
const DELIVERY_TIMEOUT: Duration = Duration::from_secs(30);

/// Runs the produce baseline against the broker at `brokers`, on `topic`, which it
/// creates with `partitions` partitions. The caller deletes the topic (the production
/// target does at the end of the run).
pub async fn kafka_produce(
    brokers: &str,
    topic: &str,
    partitions: i32,
    concurrency: usize,
    duration: Duration,
    progress: &Progress,
) -> anyhow::Result<Tally> {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()
        .context("failed to create a Kafka admin client")?;
    let options = AdminOptions::new().operation_timeout(Some(Timeout::After(DELIVERY_TIMEOUT)));
    let created = admin
        .create_topics(
            [&NewTopic::new(
                topic,
                partitions,
                TopicReplication::Fixed(1),
            )],
            &options,
        )
        .await
        .with_context(|| format!("failed to create the topic {topic} on {brokers}"))?;
    for result in created {
        if let Err((name, code)) = result {
            anyhow::bail!("the broker at {brokers} refused to create {name}: {code}");
        }
    }
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("client.id", "tidemark-bench")
        .set("partitioner", "murmur2_random")
        .set("linger.ms", "0")
        .set(
            "message.timeout.ms",
            DELIVERY_TIMEOUT.as_millis().to_string(),
        )
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("max.in.flight.requests.per.connection", "1")
        .create()
        .context("failed to create a Kafka producer")?;

    let encoded = post_created()?;
    let op = Arc::new(ProduceOne {
        producer: producer.clone(),
        topic: topic.to_owned(),
        tenants: (0..TENANTS).map(|_| Uuid::now_v7()).collect(),
        event_type: encoded.event_type,
        schema_version: encoded.schema_version,
        data: encoded.data,
    });
    warm_up(&op).await?;
    let window = Window::starting_now(duration);
    let tally = closed_loop(op, concurrency, window, progress).await;
    drop(producer);
    Ok(tally)
}

/// Produces one message before the window opens, so that what only the first
/// produce to a new topic pays (the producer's id, the topic's metadata and leader,
/// the broker's first write to the topic; a second or more on tansu) is not counted:
/// a short window would otherwise count nothing at all.
async fn warm_up(op: &ProduceOne) -> anyhow::Result<()> {
    op.produce(0)
        .await
        .map_err(|error| anyhow::anyhow!("the first produce to {} failed: {error}", op.topic))
}

struct ProduceOne {
    producer: FutureProducer,
    topic: String,
    tenants: Vec<Uuid>,
    event_type: &'static str,
    schema_version: u32,
    data: serde_json::Value,
}

impl ProduceOne {
    /// The `seq`-th message, as the relay would make it for a stored event.
    fn event(&self, seq: u64) -> RecordedEvent {
        let tenant = self.tenants[(seq as usize) % self.tenants.len()];
        let now = Utc::now();
        RecordedEvent {
            global_position: seq + 1,
            event_id: Uuid::now_v7(),
            tenant_id: tenant,
            stream_id: StreamName::post(
                TenantId::from_uuid(tenant),
                PostId::from_uuid(Uuid::now_v7()),
            )
            .as_str()
            .to_owned(),
            version: 1,
            event_type: self.event_type.to_owned(),
            schema_version: self.schema_version,
            occurred_at: now,
            recorded_at: now,
            correlation_id: Uuid::now_v7(),
            causation_id: None,
            actor: "bench".to_owned(),
            data: self.data.clone(),
        }
    }

    async fn produce(&self, seq: u64) -> Result<(), String> {
        let event = self.event(seq);
        let payload = eventlog::kafka::encode_value(&event).map_err(|e| e.to_string())?;
        let key = eventlog::kafka::message_key(&event);
        let record = FutureRecord::to(&self.topic)
            .key(&key)
            .payload(&payload)
            .headers(eventlog::kafka::message_headers(&event));
        self.producer
            .send(record, Timeout::After(DELIVERY_TIMEOUT))
            .await
            .map(drop)
            .map_err(|(error, _)| error.to_string())
    }
}

#[async_trait]
impl Operation for ProduceOne {
    async fn call(&self, seq: u64, intended: Instant) -> Vec<Sample> {
        let outcome = match self.produce(seq).await {
            Ok(()) => Outcome::Ok,
            Err(error) => Outcome::Failed(error),
        };
        vec![Sample::now("produce", intended, outcome)]
    }
}
