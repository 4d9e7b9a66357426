//! The read-model database and every query over it.
//!
//! Rows are always selected by tenant first; a tenant can only ever see its own rows
//! because every query here takes the tenant from the caller's verified token. On
//! PostgreSQL the database enforces it too: each tenant-scoped query runs in a
//! transaction that first sets `app.tenant`, and row-level security hides every other
//! tenant's rows. The few scans that must cross tenants (due timers, open deliveries,
//! row counts) read views that expose only what those scans need.
//!
//! The same SQL text runs on both backends (see [`crate::dialect`] and
//! docs/adr/0003-read-models-on-sqlite-and-postgresql.md).

use std::collections::HashMap;
use std::path::Path;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Utc};
use domain::budget::{Limits, status_of};
use domain::{Micros, Period};
use eventlog::Position;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use sqlx::any::AnyRow;
use sqlx::{Any, AnyPool, Row, Transaction};
use tokio::sync::watch;
use uuid::Uuid;

use crate::dialect::{self, Dialect};

/// The error every read-model query can fail with.
pub type DbError = sqlx::Error;

/// Handle on the read-model database: SQLite ([`ReadModels::open`]) or PostgreSQL
/// ([`ReadModels::connect_postgres`]). Cloning is cheap; clones share one pool.
#[derive(Clone)]
pub struct ReadModels {
    pool: AnyPool,
    dialect: Dialect,
    pub(crate) progress: Arc<watch::Sender<Position>>,
    /// Tenant-scoped queries waiting for the topic projectors (see `kafka.rs`).
    pub(crate) waits: Arc<crate::kafka::TenantWaits>,
}

impl std::fmt::Debug for ReadModels {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReadModels")
            .field("dialect", &self.dialect)
            .field("progress", &*self.progress.borrow())
            .finish_non_exhaustive()
    }
}

/// The live balance of one tenant's month.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct BudgetView {
    /// The month, `YYYY-MM` (UTC).
    pub period: String,
    pub soft_limit_micros: i64,
    pub hard_limit_micros: i64,
    /// Alert thresholds, percent of the hard limit reached by committed spend.
    pub alert_thresholds_pct: Vec<u8>,
    pub committed_micros: i64,
    pub reserved_micros: i64,
    /// `hard - committed - reserved`, never below zero.
    pub available_micros: i64,
    /// Total by which commits exceeded their reservations this month.
    pub overrun_micros: i64,
    /// `ok`, `soft_exceeded` (committed + reserved above the soft limit) or
    /// `hard_reached` (committed + reserved at or above the hard limit).
    pub status: String,
    /// Alert thresholds already crossed this month.
    pub thresholds_crossed: Vec<u8>,
    /// Set when the limits were carried over from an earlier month (or will be, at
    /// the month's first reservation).
    pub inherited_from: Option<String>,
}

/// Where a reservation stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ReservationStatus {
    Open,
    Committed,
    Released,
    Expired,
}

impl ReservationStatus {
    /// The status as stored and as the query API spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            ReservationStatus::Open => "open",
            ReservationStatus::Committed => "committed",
            ReservationStatus::Released => "released",
            ReservationStatus::Expired => "expired",
        }
    }
}

impl FromStr for ReservationStatus {
    type Err = ();
    fn from_str(s: &str) -> Result<Self, ()> {
        match s {
            "open" => Ok(Self::Open),
            "committed" => Ok(Self::Committed),
            "released" => Ok(Self::Released),
            "expired" => Ok(Self::Expired),
            _ => Err(()),
        }
    }
}

/// One budget reservation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ReservationView {
    pub reservation_id: Uuid,
    pub period: String,
    pub amount_micros: i64,
    pub purpose: String,
    pub status: ReservationStatus,
    pub expires_at: DateTime<Utc>,
    /// The committed cost, once committed.
    pub actual_micros: Option<i64>,
    pub created_at: DateTime<Utc>,
    pub settled_at: Option<DateTime<Utc>>,
}

/// One post.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct PostView {
    pub post_id: Uuid,
    /// The post's first channel (for a post of one channel, its channel); every
    /// channel is in `targets`.
    pub channel: String,
    pub body: String,
    pub campaign_id: Option<Uuid>,
    /// `draft`, `scheduled` or `cancelled`; once publishing was requested, derived
    /// from the targets' states: `publishing`, `failed_retryable`, `unconfirmed`,
    /// `published`, `partially_published`, `failed` or `removed` (docs/publishing.md).
    pub status: String,
    pub publish_at: Option<DateTime<Utc>>,
    /// The first target's network id, once published there.
    pub network_post_id: Option<String>,
    /// The first target's public address, once published there.
    pub url: Option<String>,
    /// Why the first target's last attempt failed or is unconfirmed.
    pub failure_reason: Option<String>,
    /// The delivery to the first target, once publishing was requested (the only
    /// delivery of a post with one channel); every target's is in `targets`.
    pub delivery: Option<DeliveryView>,
    /// Every channel of the post, in the order given, with its delivery.
    pub targets: Vec<TargetView>,
    /// The post stream's version; pass it as `expected_version` to guard an edit.
    pub version: u64,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// One channel of a post and the delivery to it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct TargetView {
    pub channel: String,
    /// `pending`, `publishing`, `published`, `failed_retryable`, `failed_permanent`,
    /// `unconfirmed` or `removed`; `null` until publishing is requested.
    pub state: Option<String>,
    /// The network of the last attempt: `local`, `mastodon` or `webhook`.
    pub network: Option<String>,
    /// The network's id of the post, once published.
    pub network_post_id: Option<String>,
    /// The post's public address on the network, when it gives one.
    pub url: Option<String>,
    /// When the next attempt is due, while `failed_retryable`.
    pub next_attempt_at: Option<DateTime<Utc>>,
    /// Why the last attempt failed or is unconfirmed.
    pub reason: Option<String>,
    /// Every attempt, oldest first.
    pub attempts: Vec<DeliveryAttemptView>,
}

/// The delivery of a post to its first channel.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct DeliveryView {
    /// `pending`, `publishing`, `published`, `failed_retryable`, `failed_permanent`,
    /// `unconfirmed` or `removed`.
    pub state: String,
    /// The network of the last attempt: `local`, `mastodon` or `webhook`.
    pub network: Option<String>,
    /// When the next attempt is due, while `failed_retryable`.
    pub next_attempt_at: Option<DateTime<Utc>>,
    /// Every attempt, oldest first.
    pub attempts: Vec<DeliveryAttemptView>,
}

/// One delivery attempt.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct DeliveryAttemptView {
    /// From 1 over the target's life.
    pub attempt: u32,
    pub network: String,
    /// `started`, `succeeded`, `failed` or `unconfirmed`.
    pub status: String,
    /// The failure's class, e.g. `network_rate_limited`, when failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<String>,
    /// What went wrong, when failed or unconfirmed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Whether another attempt followed the failure.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retryable: Option<bool>,
    pub started_at: DateTime<Utc>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ended_at: Option<DateTime<Utc>>,
}

/// A delivery to one target that the publisher must act on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpenDelivery {
    pub tenant: Uuid,
    pub post: Uuid,
    pub channel: String,
    /// `pending`, `publishing` (an attempt in flight) or `failed_retryable`.
    pub state: String,
    pub next_attempt_at: Option<DateTime<Utc>>,
}

/// What a timer does when it fires.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum TimerKind {
    /// Publish a scheduled post (`subject`: the post id) with the expected version.
    PostPublish,
    /// Expire the due reservations of a month (`subject`: `YYYY-MM`).
    ReservationExpiry,
}

impl TimerKind {
    /// The kind as stored.
    pub fn as_str(self) -> &'static str {
        match self {
            TimerKind::PostPublish => "post_publish",
            TimerKind::ReservationExpiry => "reservation_expiry",
        }
    }

    fn parse(raw: &str) -> Result<Self, sqlx::Error> {
        match raw {
            "post_publish" => Ok(TimerKind::PostPublish),
            "reservation_expiry" => Ok(TimerKind::ReservationExpiry),
            other => Err(sqlx::Error::Decode(
                format!("unknown timer kind {other}").into(),
            )),
        }
    }
}

/// A timer whose time has come.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct DueTimer {
    pub tenant: Uuid,
    pub kind: TimerKind,
    /// Unique per tenant and kind: the post id, or `<month>/<reservation id>`.
    pub key: String,
    /// What the command acts on: the post id, or the month `YYYY-MM`.
    pub subject: String,
    pub due_at: DateTime<Utc>,
    /// The post's version the publish command expects; `None` for expiry timers.
    pub version: Option<u64>,
}

/// Where a scan of due timers goes on: after this timer, in due order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TimerCursor {
    due_at: String,
    tenant: String,
    kind: String,
    key: String,
}

impl TimerCursor {
    /// The position just after `timer`.
    pub fn after(timer: &DueTimer) -> Self {
        Self {
            due_at: ts(timer.due_at),
            tenant: timer.tenant.to_string(),
            kind: timer.kind.as_str().to_owned(),
            key: timer.key.clone(),
        }
    }
}

/// A page of posts, oldest first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct PostPage {
    pub items: Vec<PostView>,
    /// Pass as `cursor` to get the next page; absent on the last page.
    pub next_cursor: Option<String>,
}

/// Which posts to list.
#[derive(Debug, Clone, Default)]
pub struct PostFilter {
    /// Only posts in this status.
    pub status: Option<String>,
    /// Only posts with a target on this channel.
    pub channel: Option<String>,
    /// Only posts of this campaign.
    pub campaign_id: Option<Uuid>,
    /// Only posts created after this keyset position (a decoded cursor).
    pub after: Option<i64>,
    /// Page size, clamped to 1..=200.
    pub limit: u32,
}

/// A cursor that could not be decoded.
#[derive(Debug, thiserror::Error)]
#[error("the cursor is not one this API issued")]
pub struct BadCursor;

/// Encodes a keyset position as an opaque cursor.
pub fn encode_cursor(created_position: i64) -> String {
    URL_SAFE_NO_PAD.encode(format!("p{created_position}"))
}

/// Decodes a cursor from [`encode_cursor`].
pub fn decode_cursor(cursor: &str) -> Result<i64, BadCursor> {
    let raw = URL_SAFE_NO_PAD.decode(cursor).map_err(|_| BadCursor)?;
    let text = String::from_utf8(raw).map_err(|_| BadCursor)?;
    text.strip_prefix('p')
        .and_then(|n| n.parse().ok())
        .ok_or(BadCursor)
}

pub(crate) fn ts(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
}

pub(crate) fn parse_ts(raw: &str) -> Result<DateTime<Utc>, sqlx::Error> {
    DateTime::parse_from_rfc3339(raw)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|e| sqlx::Error::Decode(Box::new(e)))
}

pub(crate) fn parse_uuid(raw: &str) -> Result<Uuid, sqlx::Error> {
    Uuid::parse_str(raw).map_err(|e| sqlx::Error::Decode(Box::new(e)))
}

fn json_list(raw: &str) -> Vec<u8> {
    serde_json::from_str(raw).unwrap_or_default()
}

impl ReadModels {
    /// Opens (creating if needed) the SQLite read-model database at `path` and
    /// migrates it. The file is in WAL mode with `synchronous = FULL`.
    #[tracing::instrument(skip_all, fields(path = %path.display()))]
    pub async fn open(path: &Path) -> Result<Self, sqlx::Error> {
        let pool = dialect::open_sqlite(path).await?;
        Self::with_pool(pool, Dialect::Sqlite).await
    }

    /// Connects to PostgreSQL read models. Runs the migrations (schema
    /// [`POSTGRES_SCHEMA`](crate::POSTGRES_SCHEMA)) as the owner at `owner_url`; when
    /// `app_url` names another role, grants it what it needs (as
    /// [`ReadModels::setup_app_role`]) and runs every query as that role, so row-level
    /// security applies as in production. Without `app_url` queries run as the owner,
    /// which is tenant-scoped for writes but may read every tenant's rows: fine for
    /// development, not for production. Several processes may connect at once.
    // The URLs may carry passwords: never record them.
    #[tracing::instrument(skip_all)]
    pub async fn connect_postgres(
        owner_url: &str,
        app_url: Option<&str>,
    ) -> Result<Self, sqlx::Error> {
        let pool = dialect::connect_postgres(owner_url, app_url).await?;
        Self::with_pool(pool, Dialect::Postgres).await
    }

    /// Migrates the PostgreSQL read models as the owner at `owner_url` and grants the
    /// existing role `role` what the runtime needs on them; refuses a role that is a
    /// superuser, has `BYPASSRLS` or owns the tables, since row-level security would
    /// not apply to it. Idempotent. The role itself (a `LOGIN` role, or a group role
    /// granted to the services' login roles) is created by whoever provisions the
    /// database, e.g. `eventlog`'s role setup; roles are cluster-wide, so one role can
    /// serve the event store and the read models even in separate databases.
    #[tracing::instrument(skip(owner_url))]
    pub async fn setup_app_role(owner_url: &str, role: &str) -> Result<(), sqlx::Error> {
        dialect::setup_app_role(owner_url, role).await
    }

    async fn with_pool(pool: AnyPool, dialect: Dialect) -> Result<Self, sqlx::Error> {
        let models = Self {
            pool,
            dialect,
            progress: Arc::new(watch::channel(0).0),
            waits: Arc::default(),
        };
        let position = models.checkpoint(crate::READ_MODELS).await?;
        models.progress.send_replace(position);
        Ok(models)
    }

    /// Which database these read models are in.
    pub fn dialect(&self) -> Dialect {
        self.dialect
    }

    pub(crate) fn pool(&self) -> &AnyPool {
        &self.pool
    }

    /// A read-only transaction scoped to `tenant` (see the module docs).
    pub(crate) async fn read_as(
        &self,
        tenant: Uuid,
    ) -> Result<Transaction<'static, Any>, sqlx::Error> {
        self.dialect.begin_read_as(&self.pool, tenant).await
    }

    pub(crate) fn publish_progress(&self, position: Position) {
        self.progress.send_replace(position);
    }

    /// The position a named tailer has processed up to (0 if it never ran).
    pub async fn checkpoint(&self, name: &str) -> Result<Position, sqlx::Error> {
        let row = sqlx::query("SELECT position FROM checkpoints WHERE name = $1")
            .bind(name)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.map(|r| r.get::<i64, _>(0) as Position).unwrap_or(0))
    }

    /// Stores a tailer's checkpoint on its own (for tailers whose effects live
    /// elsewhere, such as the publishing workflow).
    pub async fn save_checkpoint(&self, name: &str, position: Position) -> Result<(), sqlx::Error> {
        sqlx::query(
            "INSERT INTO checkpoints (name, position) VALUES ($1, $2)
             ON CONFLICT (name) DO UPDATE SET position = excluded.position",
        )
        .bind(name)
        .bind(position as i64)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Waits until the read models include `position`, up to `timeout`. Returns
    /// whether they did. Wakes on the in-process projector's progress and re-reads the
    /// stored checkpoint now and then, so it also works when the projector runs in
    /// another process.
    pub async fn wait_for_position(
        &self,
        position: Position,
        timeout: Duration,
    ) -> Result<bool, sqlx::Error> {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut progress = self.progress.subscribe();
        loop {
            if *progress.borrow_and_update() >= position {
                return Ok(true);
            }
            let stored = self.checkpoint(crate::READ_MODELS).await?;
            if stored >= position {
                return Ok(true);
            }
            let tick = tokio::time::sleep_until(
                (tokio::time::Instant::now() + Duration::from_millis(100)).min(deadline),
            );
            tokio::select! {
                _ = progress.changed() => {}
                _ = tick => {}
            }
            if tokio::time::Instant::now() >= deadline {
                let stored = self.checkpoint(crate::READ_MODELS).await?;
                return Ok(stored >= position || *progress.borrow() >= position);
            }
        }
    }

    /// The balance of a tenant's month. A month with no row yet shows the limits it
    /// will inherit from the most recent earlier month (within a year), with nothing
    /// spent; a tenant that never set limits gets `None`.
    pub async fn budget(
        &self,
        tenant: Uuid,
        period: Period,
    ) -> Result<Option<BudgetView>, sqlx::Error> {
        let mut tx = self.read_as(tenant).await?;
        let row = sqlx::query(
            "SELECT period, soft_limit_micros, hard_limit_micros, alert_thresholds_pct, committed_micros,
                    reserved_micros, overrun_micros, thresholds_crossed, inherited_from, limits_set
             FROM budgets WHERE tenant_id = $1 AND period = $2",
        )
        .bind(tenant.to_string())
        .bind(period.to_string())
        .fetch_optional(&mut *tx)
        .await?;
        if let Some(row) = row
            && row.get::<i64, _>("limits_set") != 0
        {
            tx.commit().await?;
            return Ok(Some(budget_view(&row)));
        }
        let earliest = (0..12).fold(period, |p, _| p.previous());
        let earlier = sqlx::query(
            "SELECT period, soft_limit_micros, hard_limit_micros, alert_thresholds_pct
             FROM budgets WHERE tenant_id = $1 AND period < $2 AND period >= $3 AND limits_set = 1
             ORDER BY period DESC LIMIT 1",
        )
        .bind(tenant.to_string())
        .bind(period.to_string())
        .bind(earliest.to_string())
        .fetch_optional(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(earlier.map(|row| {
            let soft: i64 = row.get("soft_limit_micros");
            let hard: i64 = row.get("hard_limit_micros");
            BudgetView {
                period: period.to_string(),
                soft_limit_micros: soft,
                hard_limit_micros: hard,
                alert_thresholds_pct: json_list(row.get("alert_thresholds_pct")),
                committed_micros: 0,
                reserved_micros: 0,
                available_micros: hard,
                overrun_micros: 0,
                status: status(soft, hard, 0, 0),
                thresholds_crossed: Vec::new(),
                inherited_from: Some(row.get("period")),
            }
        }))
    }

    /// A tenant's reservations in a month, newest first, optionally of one status.
    pub async fn reservations(
        &self,
        tenant: Uuid,
        period: Period,
        status: Option<ReservationStatus>,
        limit: u32,
    ) -> Result<Vec<ReservationView>, sqlx::Error> {
        let mut tx = self.read_as(tenant).await?;
        let rows = sqlx::query(
            "SELECT reservation_id, period, amount_micros, purpose, status, expires_at, actual_micros,
                    created_at, settled_at
             FROM reservations
             WHERE tenant_id = $1 AND period = $2 AND ($3 IS NULL OR status = $3)
             ORDER BY created_at DESC, reservation_id DESC LIMIT $4",
        )
        .bind(tenant.to_string())
        .bind(period.to_string())
        .bind(status.map(|s| s.as_str()))
        .bind(i64::from(limit))
        .fetch_all(&mut *tx)
        .await?;
        tx.commit().await?;
        rows.iter().map(reservation_view).collect()
    }

    /// One post of a tenant.
    pub async fn post(&self, tenant: Uuid, post_id: Uuid) -> Result<Option<PostView>, sqlx::Error> {
        let mut tx = self.read_as(tenant).await?;
        let row = sqlx::query(&format!(
            "SELECT {POST_COLUMNS} FROM posts WHERE tenant_id = $1 AND post_id = $2"
        ))
        .bind(tenant.to_string())
        .bind(post_id.to_string())
        .fetch_optional(&mut *tx)
        .await?;
        let Some(row) = row else {
            tx.commit().await?;
            return Ok(None);
        };
        let mut targets = targets_of(&mut tx, tenant, &[post_id.to_string()]).await?;
        tx.commit().await?;
        post_view(&row, targets.remove(&post_id).unwrap_or_default()).map(Some)
    }

    /// A page of a tenant's posts in creation order (keyset pagination).
    pub async fn posts(&self, tenant: Uuid, filter: &PostFilter) -> Result<PostPage, sqlx::Error> {
        let limit = filter.limit.clamp(1, 200);
        let mut tx = self.read_as(tenant).await?;
        let rows = sqlx::query(&format!(
            "SELECT {POST_COLUMNS}, created_position FROM posts
             WHERE tenant_id = $1 AND created_position > $2
               AND ($3 IS NULL OR status = $3)
               AND ($4 IS NULL OR EXISTS (
                   SELECT 1 FROM post_targets t
                   WHERE t.tenant_id = posts.tenant_id AND t.post_id = posts.post_id
                     AND t.channel = $4))
               AND ($5 IS NULL OR campaign_id = $5)
             ORDER BY created_position LIMIT $6"
        ))
        .bind(tenant.to_string())
        .bind(filter.after.unwrap_or(0))
        .bind(filter.status.as_deref())
        .bind(filter.channel.as_deref())
        .bind(filter.campaign_id.map(|c| c.to_string()))
        .bind(i64::from(limit) + 1)
        .fetch_all(&mut *tx)
        .await?;
        let more = rows.len() > limit as usize;
        let rows = &rows[..rows.len().min(limit as usize)];
        let ids: Vec<String> = rows.iter().map(|r| r.get("post_id")).collect();
        let mut targets = targets_of(&mut tx, tenant, &ids).await?;
        tx.commit().await?;
        let items = rows
            .iter()
            .map(|row| {
                let id = parse_uuid(row.get("post_id"))?;
                post_view(row, targets.remove(&id).unwrap_or_default())
            })
            .collect::<Result<Vec<_>, _>>()?;
        let next_cursor = match (more, rows.last()) {
            (true, Some(last)) => Some(encode_cursor(last.get("created_position"))),
            _ => None,
        };
        Ok(PostPage { items, next_cursor })
    }

    /// Deliveries waiting for a first attempt, due for a retry at `now`, or with an
    /// attempt in flight, across tenants, in tenant, post and channel order.
    pub async fn open_deliveries(
        &self,
        now: DateTime<Utc>,
        limit: u32,
    ) -> Result<Vec<OpenDelivery>, sqlx::Error> {
        let rows = sqlx::query(
            "SELECT tenant_id, post_id, channel, delivery_state, next_attempt_at
             FROM open_deliveries
             WHERE delivery_state <> 'failed_retryable' OR next_attempt_at <= $1
             ORDER BY tenant_id, post_id, channel LIMIT $2",
        )
        .bind(ts(now))
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(OpenDelivery {
                    tenant: parse_uuid(r.get("tenant_id"))?,
                    post: parse_uuid(r.get("post_id"))?,
                    channel: r.get("channel"),
                    state: r.get("delivery_state"),
                    next_attempt_at: r
                        .get::<Option<String>, _>("next_attempt_at")
                        .as_deref()
                        .map(parse_ts)
                        .transpose()?,
                })
            })
            .collect()
    }

    /// Up to `limit` timers due at `now`, across tenants, after `cursor` in due order
    /// (due time, then tenant, kind and key), however long ago they fell due.
    pub async fn due_timers(
        &self,
        now: DateTime<Utc>,
        cursor: &TimerCursor,
        limit: u32,
    ) -> Result<Vec<DueTimer>, sqlx::Error> {
        let rows = sqlx::query(
            "SELECT tenant_id, kind, timer_key, subject, due_at, version FROM timer_schedule
             WHERE due_at <= $1
               AND (due_at > $2 OR (due_at = $2 AND (tenant_id > $3 OR (tenant_id = $3
                    AND (kind > $4 OR (kind = $4 AND timer_key > $5))))))
             ORDER BY due_at, tenant_id, kind, timer_key LIMIT $6",
        )
        .bind(ts(now))
        .bind(&cursor.due_at)
        .bind(&cursor.tenant)
        .bind(&cursor.kind)
        .bind(&cursor.key)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(DueTimer {
                    tenant: parse_uuid(r.get("tenant_id"))?,
                    kind: TimerKind::parse(r.get("kind"))?,
                    key: r.get("timer_key"),
                    subject: r.get("subject"),
                    due_at: parse_ts(r.get("due_at"))?,
                    version: r.get::<Option<i64>, _>("version").map(|v| v as u64),
                })
            })
            .collect()
    }

    /// Row counts per table, across tenants, for `tidemark projections status`.
    pub async fn row_counts(&self) -> Result<Vec<(&'static str, i64)>, sqlx::Error> {
        let rows = sqlx::query("SELECT table_name, row_count FROM read_model_row_counts")
            .fetch_all(&self.pool)
            .await?;
        Ok(crate::TABLES
            .iter()
            .map(|&table| {
                let count = rows
                    .iter()
                    .find(|row| row.get::<&str, _>("table_name") == table)
                    .map_or(0, |row| row.get::<i64, _>("row_count"));
                (table, count)
            })
            .collect())
    }
}

const POST_COLUMNS: &str =
    "post_id, channel, body, campaign_id, status, publish_at, version, created_at, updated_at";

const TARGET_COLUMNS: &str = "post_id, channel, state, network, next_attempt_at, network_post_id,
        url, failure_reason, delivery_attempts";

/// The targets of the tenant's posts `ids`, each post's in the order its channels were
/// given.
async fn targets_of(
    tx: &mut Transaction<'static, Any>,
    tenant: Uuid,
    ids: &[String],
) -> Result<HashMap<Uuid, Vec<TargetView>>, sqlx::Error> {
    let mut targets: HashMap<Uuid, Vec<TargetView>> = HashMap::new();
    if ids.is_empty() {
        return Ok(targets);
    }
    let placeholders = (0..ids.len())
        .map(|i| format!("${}", i + 2))
        .collect::<Vec<_>>()
        .join(", ");
    let sql = format!(
        "SELECT {TARGET_COLUMNS} FROM post_targets
         WHERE tenant_id = $1 AND post_id IN ({placeholders})
         ORDER BY post_id, position"
    );
    let mut query = sqlx::query(&sql).bind(tenant.to_string());
    for id in ids {
        query = query.bind(id.clone());
    }
    for row in query.fetch_all(&mut **tx).await? {
        let post = parse_uuid(row.get("post_id"))?;
        targets.entry(post).or_default().push(target_view(&row)?);
    }
    Ok(targets)
}

fn status(soft: i64, hard: i64, committed: i64, reserved: i64) -> String {
    let micros = |v: i64| Micros::new(v.max(0)).unwrap_or(Micros::ZERO);
    let limits = Limits {
        soft: micros(soft),
        hard: micros(hard),
        alert_thresholds_pct: Vec::new(),
    };
    status_of(Some(&limits), micros(committed), micros(reserved))
        .as_str()
        .to_owned()
}

fn budget_view(row: &AnyRow) -> BudgetView {
    let soft: i64 = row.get("soft_limit_micros");
    let hard: i64 = row.get("hard_limit_micros");
    let committed: i64 = row.get("committed_micros");
    let reserved: i64 = row.get("reserved_micros");
    BudgetView {
        period: row.get("period"),
        soft_limit_micros: soft,
        hard_limit_micros: hard,
        alert_thresholds_pct: json_list(row.get("alert_thresholds_pct")),
        committed_micros: committed,
        reserved_micros: reserved,
        available_micros: (hard - committed - reserved).max(0),
        overrun_micros: row.get("overrun_micros"),
        status: status(soft, hard, committed, reserved),
        thresholds_crossed: json_list(row.get("thresholds_crossed")),
        inherited_from: row.get("inherited_from"),
    }
}

fn reservation_view(row: &AnyRow) -> Result<ReservationView, sqlx::Error> {
    let status: String = row.get("status");
    Ok(ReservationView {
        reservation_id: parse_uuid(row.get("reservation_id"))?,
        period: row.get("period"),
        amount_micros: row.get("amount_micros"),
        purpose: row.get("purpose"),
        status: status.parse().map_err(|()| {
            sqlx::Error::Decode(format!("unknown reservation status {status}").into())
        })?,
        expires_at: parse_ts(row.get("expires_at"))?,
        actual_micros: row.get("actual_micros"),
        created_at: parse_ts(row.get("created_at"))?,
        settled_at: row
            .get::<Option<String>, _>("settled_at")
            .as_deref()
            .map(parse_ts)
            .transpose()?,
    })
}

fn post_view(row: &AnyRow, targets: Vec<TargetView>) -> Result<PostView, sqlx::Error> {
    let first = targets.first();
    let delivery = first.and_then(|target| {
        target.state.clone().map(|state| DeliveryView {
            state,
            network: target.network.clone(),
            next_attempt_at: target.next_attempt_at,
            attempts: target.attempts.clone(),
        })
    });
    Ok(PostView {
        post_id: parse_uuid(row.get("post_id"))?,
        channel: row.get("channel"),
        body: row.get("body"),
        campaign_id: row
            .get::<Option<String>, _>("campaign_id")
            .as_deref()
            .map(parse_uuid)
            .transpose()?,
        status: row.get("status"),
        publish_at: row
            .get::<Option<String>, _>("publish_at")
            .as_deref()
            .map(parse_ts)
            .transpose()?,
        network_post_id: first.and_then(|t| t.network_post_id.clone()),
        url: first.and_then(|t| t.url.clone()),
        failure_reason: first.and_then(|t| t.reason.clone()),
        delivery,
        version: row.get::<i64, _>("version") as u64,
        created_at: parse_ts(row.get("created_at"))?,
        updated_at: parse_ts(row.get("updated_at"))?,
        targets,
    })
}

fn target_view(row: &AnyRow) -> Result<TargetView, sqlx::Error> {
    let attempts: String = row.get("delivery_attempts");
    let attempts = serde_json::from_str(&attempts).map_err(|e| sqlx::Error::ColumnDecode {
        index: "delivery_attempts".into(),
        source: Box::new(e),
    })?;
    Ok(TargetView {
        channel: row.get("channel"),
        state: row.get("state"),
        network: row.get("network"),
        network_post_id: row.get("network_post_id"),
        url: row.get("url"),
        next_attempt_at: row
            .get::<Option<String>, _>("next_attempt_at")
            .as_deref()
            .map(parse_ts)
            .transpose()?,
        reason: row.get("failure_reason"),
        attempts,
    })
}
