//! Fixture events for the workloads that need a big log before they can start: the
//! rebuild (a million events over many streams) and decide-vs-history (one stream of
//! 100,000 events).
//!
//! Going through the command side would take minutes: a long stream cannot share a
//! group commit (its commands queue behind each other, one fsync each). So the fixture
//! is written straight into the store's tables with plain sqlx, in large transactions,
//! after the store's own migrations made them. The events are real domain events that
//! `schemas` encodes, in an order the domain accepts (limits before reservations, a
//! reservation before its commit, a post created before it is edited), so the command
//! side and the projector read them like any others. What is timed afterwards (loading
//! a stream, rebuilding the read models) does not depend on how the rows got there.
//!
//! On PostgreSQL ([`write_postgres`]) the rows go in as the database's owner (a
//! superuser on the benchmark's server, so row-level security does not apply), a few
//! thousand per `INSERT … SELECT FROM unnest(…)`, with positions taken from the
//! store's own sequence, which is set past them afterwards.

use std::collections::{HashMap, VecDeque};
use std::path::Path;
use std::sync::Arc;

use anyhow::Context;
use chrono::{DateTime, SecondsFormat, TimeDelta, Utc};
use domain::budget;
use domain::{Channel, Micros, Period, PostId, ReservationId, StreamName, TenantId, post};
use schemas::DomainEvent;
use sqlx::postgres::PgConnectOptions;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqliteSynchronous};
use sqlx::types::Json;
use sqlx::{ConnectOptions, Connection, QueryBuilder, Sqlite};
use uuid::Uuid;

use super::load::Counters;

/// Rows per multi-row INSERT (12 parameters each, well under SQLite's limit).
const ROWS_PER_STATEMENT: usize = 200;
/// Rows per transaction.
const ROWS_PER_TRANSACTION: usize = 20_000;
/// The hard limit of every fixture budget: large enough never to refuse anything.
pub const HUGE_BUDGET_MICROS: i64 = 1_000_000_000_000_000;
/// Amount of every fixture reservation, and what its commit costs.
const RESERVED_MICROS: i64 = 1_000;
const ACTUAL_MICROS: i64 = 900;

/// What to write.
#[derive(Debug, Clone)]
pub enum FixturePlan {
    /// `events` events over `tenants` tenants, interleaved as live traffic would be:
    /// each tenant's month gets its limits, then every round adds to each tenant a post
    /// (created, edited) and a reservation (reserved, committed).
    Mixed { events: u64, tenants: usize },
    /// Long single streams.
    Long(Vec<LongStream>),
}

/// One long stream of a [`FixturePlan::Long`].
#[derive(Debug, Clone, Copy)]
pub struct LongStream {
    /// The tenant the stream belongs to.
    pub tenant: TenantId,
    /// Which kind of stream, and its id.
    pub aggregate: Aggregate,
    /// How many events the stream holds.
    pub events: u64,
}

/// Which kind of stream.
#[derive(Debug, Clone, Copy)]
pub enum Aggregate {
    /// A budget month: limits, then reservation/commit pairs.
    Budget(Period),
    /// A post: created, then edited again and again.
    Post(PostId),
}

impl LongStream {
    /// The stream's name.
    pub fn stream(&self) -> StreamName {
        match self.aggregate {
            Aggregate::Budget(period) => StreamName::budget(self.tenant, period),
            Aggregate::Post(id) => StreamName::post(self.tenant, id),
        }
    }
}

/// One event of the fixture, before encoding.
struct Planned {
    tenant: TenantId,
    stream: StreamName,
    event: DomainEvent,
}

/// Writes the fixture of `plan` into the migrated event store at `path`, reporting
/// rows written to `progress`.
pub async fn write_sqlite(
    path: &Path,
    plan: &FixturePlan,
    progress: Option<Arc<Counters>>,
) -> anyhow::Result<u64> {
    let mut conn = SqliteConnectOptions::new()
        .filename(path)
        .journal_mode(SqliteJournalMode::Wal)
        // Set-up, not measurement: durability of the fixture does not matter.
        .synchronous(SqliteSynchronous::Normal)
        // A large page cache keeps the indexes in memory while a million rows go in.
        .pragma("cache_size", "-262144")
        .foreign_keys(false)
        .connect()
        .await
        .context("failed to open the fixture store")?;
    let now = Utc::now();
    let recorded_at = timestamp(&now);
    let mut events = Events::new(plan, now)?;
    let mut versions: HashMap<String, (Uuid, i64)> = HashMap::new();
    let mut written = 0u64;
    let mut rows: Vec<Row> = Vec::with_capacity(ROWS_PER_STATEMENT);
    loop {
        let mut tx = conn.begin().await?;
        let mut in_tx = 0;
        let mut exhausted = false;
        while in_tx < ROWS_PER_TRANSACTION {
            rows.clear();
            while rows.len() < ROWS_PER_STATEMENT {
                let Some(planned) = events.next() else {
                    exhausted = true;
                    break;
                };
                let entry = versions
                    .entry(planned.stream.as_str().to_owned())
                    .or_insert((planned.tenant.as_uuid(), 0));
                entry.1 += 1;
                let encoded = schemas::encode(&planned.event);
                rows.push(Row {
                    tenant: planned.tenant.as_uuid().to_string(),
                    stream: planned.stream.as_str().to_owned(),
                    version: entry.1,
                    event_type: encoded.event_type,
                    schema_version: i64::from(encoded.schema_version),
                    data: encoded.data.to_string(),
                });
            }
            if rows.is_empty() {
                break;
            }
            insert_events(&mut tx, &rows, &recorded_at).await?;
            in_tx += rows.len();
            written += rows.len() as u64;
            if let Some(progress) = &progress {
                progress.add(rows.len() as u64);
            }
            if exhausted {
                break;
            }
        }
        tx.commit().await?;
        if exhausted || in_tx == 0 {
            break;
        }
    }
    let streams: Vec<(String, (Uuid, i64))> = versions.into_iter().collect();
    let mut tx = conn.begin().await?;
    for chunk in streams.chunks(1_000) {
        let mut insert: QueryBuilder<Sqlite> =
            QueryBuilder::new("INSERT INTO streams (stream_id, tenant_id, version) ");
        insert.push_values(chunk, |mut b, (stream, (tenant, version))| {
            b.push_bind(stream.clone())
                .push_bind(tenant.to_string())
                .push_bind(*version);
        });
        insert.push(" ON CONFLICT (stream_id) DO UPDATE SET version = excluded.version");
        insert.build().execute(&mut *tx).await?;
    }
    tx.commit().await?;
    conn.close().await?;
    Ok(written)
}

/// Rows per `INSERT … unnest` on PostgreSQL.
const PG_ROWS_PER_STATEMENT: usize = 5_000;

/// Writes the fixture of `plan` into the migrated PostgreSQL event store that `owner`
/// (a role exempt from row-level security) reaches, reporting rows to `progress`.
pub async fn write_postgres(
    owner: &PgConnectOptions,
    plan: &FixturePlan,
    progress: Option<Arc<Counters>>,
) -> anyhow::Result<u64> {
    let mut conn = owner
        .connect()
        .await
        .context("failed to connect to the fixture database")?;
    let exempt: bool = sqlx::query_scalar(
        "SELECT rolsuper OR rolbypassrls FROM pg_roles WHERE rolname = current_user",
    )
    .fetch_one(&mut conn)
    .await?;
    anyhow::ensure!(
        exempt,
        "the PostgreSQL fixture is written across tenants in one statement, which needs a \
         role exempt from row-level security (the benchmark's server role)"
    );
    // Set-up, not measurement: durability of the fixture does not matter.
    sqlx::query("SET synchronous_commit = off")
        .execute(&mut conn)
        .await?;
    let now = Utc::now();
    let mut events = Events::new(plan, now)?;
    let mut versions: HashMap<String, (Uuid, i64)> = HashMap::new();
    let mut position: i64 = 0;
    let mut written = 0u64;
    loop {
        let mut new_streams: Vec<(String, Uuid)> = Vec::new();
        let mut batch = PgBatch::default();
        while batch.positions.len() < PG_ROWS_PER_STATEMENT {
            let Some(planned) = events.next() else {
                break;
            };
            let stream = planned.stream.as_str().to_owned();
            let entry = versions.entry(stream.clone()).or_insert_with(|| {
                new_streams.push((stream.clone(), planned.tenant.as_uuid()));
                (planned.tenant.as_uuid(), 0)
            });
            entry.1 += 1;
            position += 1;
            let encoded = schemas::encode(&planned.event);
            batch.positions.push(position);
            batch.event_ids.push(Uuid::now_v7());
            batch.tenants.push(planned.tenant.as_uuid());
            batch.streams.push(stream);
            batch.versions.push(entry.1);
            batch.types.push(encoded.event_type);
            batch
                .schema_versions
                .push(i64::from(encoded.schema_version));
            batch.data.push(Json(encoded.data));
        }
        if batch.positions.is_empty() {
            break;
        }
        let mut tx = conn.begin().await?;
        // The stream rows go first: events reference them by foreign key. Their
        // versions are set once every event is in.
        sqlx::query(
            "INSERT INTO streams (stream_id, tenant_id, version) \
             SELECT s, t, 0 FROM unnest($1::text[], $2::uuid[]) AS u (s, t) \
             ON CONFLICT (stream_id) DO NOTHING",
        )
        .bind(
            new_streams
                .iter()
                .map(|(s, _)| s.as_str())
                .collect::<Vec<_>>(),
        )
        .bind(new_streams.iter().map(|(_, t)| *t).collect::<Vec<_>>())
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "INSERT INTO events (global_position, event_id, tenant_id, stream_id, version, \
             event_type, schema_version, occurred_at, correlation_id, actor, data) \
             SELECT p, e, t, s, v, ty, sv, $9, e, 'bench-fixture', d \
             FROM unnest($1::bigint[], $2::uuid[], $3::uuid[], $4::text[], $5::bigint[], \
                         $6::text[], $7::bigint[], $8::jsonb[]) \
                  AS u (p, e, t, s, v, ty, sv, d)",
        )
        .bind(&batch.positions)
        .bind(&batch.event_ids)
        .bind(&batch.tenants)
        .bind(&batch.streams)
        .bind(&batch.versions)
        .bind(&batch.types)
        .bind(&batch.schema_versions)
        .bind(&batch.data)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        written += batch.positions.len() as u64;
        if let Some(progress) = &progress {
            progress.add(batch.positions.len() as u64);
        }
    }
    let (streams, stream_versions): (Vec<String>, Vec<i64>) = versions
        .into_iter()
        .map(|(stream, (_, version))| (stream, version))
        .unzip();
    sqlx::query(
        "UPDATE streams SET version = u.v \
         FROM unnest($1::text[], $2::bigint[]) AS u (s, v) WHERE streams.stream_id = u.s",
    )
    .bind(&streams)
    .bind(&stream_versions)
    .execute(&mut conn)
    .await?;
    if position > 0 {
        // The store hands out positions from this sequence: the next append follows.
        sqlx::query("SELECT setval('event_positions', $1)")
            .bind(position)
            .execute(&mut conn)
            .await?;
    }
    sqlx::query("ANALYZE events").execute(&mut conn).await?;
    conn.close().await?;
    Ok(written)
}

/// One statement's rows, column by column, for `unnest`.
#[derive(Default)]
struct PgBatch {
    positions: Vec<i64>,
    event_ids: Vec<Uuid>,
    tenants: Vec<Uuid>,
    streams: Vec<String>,
    versions: Vec<i64>,
    types: Vec<&'static str>,
    schema_versions: Vec<i64>,
    data: Vec<Json<serde_json::Value>>,
}

struct Row {
    tenant: String,
    stream: String,
    version: i64,
    event_type: &'static str,
    schema_version: i64,
    data: String,
}

async fn insert_events(
    conn: &mut sqlx::SqliteConnection,
    rows: &[Row],
    recorded_at: &str,
) -> Result<(), sqlx::Error> {
    let mut insert: QueryBuilder<Sqlite> = QueryBuilder::new(
        "INSERT INTO events (event_id, tenant_id, stream_id, version, event_type, \
         schema_version, occurred_at, recorded_at, correlation_id, causation_id, actor, data) ",
    );
    insert.push_values(rows, |mut b, row| {
        b.push_bind(Uuid::now_v7().to_string())
            .push_bind(row.tenant.clone())
            .push_bind(row.stream.clone())
            .push_bind(row.version)
            .push_bind(row.event_type)
            .push_bind(row.schema_version)
            .push_bind(recorded_at.to_owned())
            .push_bind(recorded_at.to_owned())
            .push_bind(Uuid::now_v7().to_string())
            .push_bind(None::<String>)
            .push_bind("bench-fixture")
            .push_bind(row.data.clone());
    });
    insert.build().execute(conn).await.map(drop)
}

/// RFC 3339 in UTC with nine fractional digits, as the store writes its timestamps.
fn timestamp(time: &DateTime<Utc>) -> String {
    time.to_rfc3339_opts(SecondsFormat::Nanos, true)
}

/// The fixture's events, generated lazily in log order.
struct Events {
    plan: FixturePlan,
    now: DateTime<Utc>,
    period: Period,
    channel: Channel,
    limits: (Micros, Micros),
    reserved: Micros,
    actual: Micros,
    emitted: u64,
    buffer: VecDeque<Planned>,
    /// Mixed: the tenants, the round, and the next tenant in the round.
    tenants: Vec<TenantId>,
    round: u64,
    next_tenant: usize,
    /// Long: which stream, and how many of its events are out.
    stream_index: usize,
    stream_emitted: u64,
}

impl Events {
    fn new(plan: &FixturePlan, now: DateTime<Utc>) -> anyhow::Result<Self> {
        let micros = |v: i64| Micros::new(v).map_err(|e| anyhow::anyhow!(e));
        let tenants = match plan {
            FixturePlan::Mixed { tenants, .. } => (0..(*tenants).max(1))
                .map(|_| TenantId::from_uuid(Uuid::now_v7()))
                .collect(),
            FixturePlan::Long(_) => Vec::new(),
        };
        Ok(Self {
            plan: plan.clone(),
            now,
            period: Period::containing(now),
            channel: Channel::new("linkedin").map_err(|e| anyhow::anyhow!(e))?,
            limits: (micros(HUGE_BUDGET_MICROS)?, micros(HUGE_BUDGET_MICROS)?),
            reserved: micros(RESERVED_MICROS)?,
            actual: micros(ACTUAL_MICROS)?,
            emitted: 0,
            buffer: VecDeque::new(),
            tenants,
            round: 0,
            next_tenant: 0,
            stream_index: 0,
            stream_emitted: 0,
        })
    }

    fn next(&mut self) -> Option<Planned> {
        if self.buffer.is_empty() {
            self.refill();
        }
        self.buffer.pop_front()
    }

    fn limits_set(&self) -> DomainEvent {
        DomainEvent::Budget(budget::Event::LimitsSet {
            soft: self.limits.0,
            hard: self.limits.1,
            alert_thresholds_pct: Vec::new(),
            inherited_from: None,
        })
    }

    fn reservation(&self) -> [DomainEvent; 2] {
        let reservation_id = ReservationId::from_uuid(Uuid::now_v7());
        [
            DomainEvent::Budget(budget::Event::Reserved {
                reservation_id,
                amount: self.reserved,
                purpose: "fixture".to_owned(),
                expires_at: self.now + TimeDelta::days(1),
            }),
            DomainEvent::Budget(budget::Event::Committed {
                reservation_id,
                reserved: self.reserved,
                actual: self.actual,
            }),
        ]
    }

    fn post_created(&self, n: u64) -> DomainEvent {
        DomainEvent::Post(post::Event::Created {
            channels: vec![self.channel.clone()],
            body: format!("Fixture post number {n}."),
            campaign_id: None,
        })
    }

    fn post_edited(&self, n: u64) -> DomainEvent {
        DomainEvent::Post(post::Event::Edited {
            body: format!("Fixture post, edit number {n}."),
        })
    }

    /// Adds the next few events to the buffer, or nothing when the plan is done.
    fn refill(&mut self) {
        match self.plan.clone() {
            FixturePlan::Mixed { events, .. } => {
                if self.emitted >= events {
                    return;
                }
                let tenant = self.tenants[self.next_tenant];
                let budget_stream = StreamName::budget(tenant, self.period);
                let mut unit: Vec<(StreamName, DomainEvent)> = Vec::with_capacity(4);
                if self.round == 0 {
                    unit.push((budget_stream, self.limits_set()));
                } else {
                    let post_stream = StreamName::post(tenant, PostId::from_uuid(Uuid::now_v7()));
                    unit.push((post_stream.clone(), self.post_created(self.round)));
                    unit.push((post_stream, self.post_edited(1)));
                    for event in self.reservation() {
                        unit.push((budget_stream.clone(), event));
                    }
                }
                for (stream, event) in unit {
                    if self.emitted >= events {
                        break;
                    }
                    self.emitted += 1;
                    self.buffer.push_back(Planned {
                        tenant,
                        stream,
                        event,
                    });
                }
                self.next_tenant += 1;
                if self.next_tenant == self.tenants.len() {
                    self.next_tenant = 0;
                    self.round += 1;
                }
            }
            FixturePlan::Long(streams) => {
                while let Some(long) = streams.get(self.stream_index) {
                    if self.stream_emitted >= long.events {
                        self.stream_index += 1;
                        self.stream_emitted = 0;
                        continue;
                    }
                    let first = self.stream_emitted == 0;
                    let events: Vec<DomainEvent> = match long.aggregate {
                        Aggregate::Budget(_) if first => vec![self.limits_set()],
                        Aggregate::Budget(_) => self.reservation().into(),
                        Aggregate::Post(_) if first => vec![self.post_created(0)],
                        Aggregate::Post(_) => vec![self.post_edited(self.stream_emitted)],
                    };
                    for event in events {
                        if self.stream_emitted >= long.events {
                            break;
                        }
                        self.stream_emitted += 1;
                        self.emitted += 1;
                        self.buffer.push_back(Planned {
                            tenant: long.tenant,
                            stream: long.stream(),
                            event,
                        });
                    }
                    return;
                }
            }
        }
    }
}
