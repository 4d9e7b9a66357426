//! How each event changes the read models. Matches every event explicitly, so a new
//! event does not compile until this file decides what it means for the read models.
//!
//! The statements are plain SQL with `$N` placeholders that SQLite and PostgreSQL both
//! run. The caller has already scoped the transaction to the event's tenant (see
//! `dialect::TenantScope`), so on PostgreSQL row-level security holds for the projector
//! too: it could not touch another tenant's rows even through a bug here.

use domain::ids::StreamKind;
use domain::{Channel, StreamName, budget, generation, post};
use eventlog::RecordedEvent;
use schemas::DomainEvent;
use sqlx::AnyConnection;
use sqlx::Row;

use crate::readmodel::ts;

/// Why an event could not be applied.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    #[error("event at position {position} could not be decoded")]
    Decode {
        position: u64,
        #[source]
        source: schemas::DecodeError,
    },
    #[error("event at position {position} is on stream {stream}, which does not fit its type")]
    WrongStream { position: u64, stream: String },
    #[error("read-model database error")]
    Database(#[from] sqlx::Error),
}

/// Applies one recorded event inside the caller's transaction.
pub async fn apply(conn: &mut AnyConnection, recorded: &RecordedEvent) -> Result<(), ApplyError> {
    let event = schemas::decode(
        &recorded.event_type,
        recorded.schema_version,
        &recorded.data,
    )
    .map_err(|source| ApplyError::Decode {
        position: recorded.global_position,
        source,
    })?;
    let wrong_stream = || ApplyError::WrongStream {
        position: recorded.global_position,
        stream: recorded.stream_id.clone(),
    };
    let kind = StreamName::parse(&recorded.stream_id)
        .map_err(|_| wrong_stream())?
        .1;
    match (event, kind) {
        (DomainEvent::Budget(event), StreamKind::Budget(period)) => {
            apply_budget(conn, recorded, &period.to_string(), event).await
        }
        (DomainEvent::Post(event), StreamKind::Post(_)) => apply_post(conn, recorded, event).await,
        (DomainEvent::Generation(event), StreamKind::Generation(id)) => {
            apply_generation(conn, recorded, &id.to_string(), event).await
        }
        _ => Err(wrong_stream()),
    }
}

async fn apply_budget(
    conn: &mut AnyConnection,
    recorded: &RecordedEvent,
    period: &str,
    event: budget::Event,
) -> Result<(), ApplyError> {
    let tenant = recorded.tenant_id.to_string();
    let at = ts(recorded.occurred_at);
    // Every budget event touches the month's row; make sure it exists.
    sqlx::query(
        "INSERT INTO budgets (tenant_id, period, version, updated_at) VALUES ($1, $2, $3, $4)
         ON CONFLICT (tenant_id, period) DO UPDATE SET version = excluded.version, updated_at = excluded.updated_at",
    )
    .bind(&tenant)
    .bind(period)
    .bind(recorded.version as i64)
    .bind(&at)
    .execute(&mut *conn)
    .await?;
    let budget_delta = |committed: i64, reserved: i64| {
        sqlx::query(
            "UPDATE budgets SET committed_micros = committed_micros + $1, reserved_micros = reserved_micros + $2
             WHERE tenant_id = $3 AND period = $4",
        )
        .bind(committed)
        .bind(reserved)
        .bind(tenant.clone())
        .bind(period.to_owned())
    };
    // A settled reservation no longer needs its expiry timer.
    let clear_timer = |id: String| {
        sqlx::query(
            "DELETE FROM timers WHERE tenant_id = $1 AND kind = 'reservation_expiry' AND timer_key = $2",
        )
        .bind(tenant.clone())
        .bind(format!("{period}/{id}"))
    };
    let settle = |id: String, status: &'static str, actual: Option<i64>| {
        sqlx::query(
            "UPDATE reservations SET status = $1, actual_micros = $2, settled_at = $3
             WHERE tenant_id = $4 AND period = $5 AND reservation_id = $6",
        )
        .bind(status)
        .bind(actual)
        .bind(at.clone())
        .bind(tenant.clone())
        .bind(period.to_owned())
        .bind(id)
    };
    match event {
        budget::Event::LimitsSet {
            soft,
            hard,
            alert_thresholds_pct,
            inherited_from,
        } => {
            sqlx::query(
                "UPDATE budgets SET soft_limit_micros = $1, hard_limit_micros = $2, alert_thresholds_pct = $3,
                        inherited_from = $4, limits_set = 1
                 WHERE tenant_id = $5 AND period = $6",
            )
            .bind(soft.get())
            .bind(hard.get())
            .bind(serde_json::to_string(&alert_thresholds_pct).unwrap_or_else(|_| "[]".into()))
            .bind(inherited_from.map(|p| p.to_string()))
            .bind(&tenant)
            .bind(period)
            .execute(&mut *conn)
            .await?;
        }
        budget::Event::Reserved {
            reservation_id,
            amount,
            purpose,
            expires_at,
        } => {
            budget_delta(0, amount.get()).execute(&mut *conn).await?;
            sqlx::query(
                "INSERT INTO reservations (tenant_id, reservation_id, period, amount_micros, purpose, status,
                                           expires_at, created_at)
                 VALUES ($1, $2, $3, $4, $5, 'open', $6, $7)",
            )
            .bind(&tenant)
            .bind(reservation_id.to_string())
            .bind(period)
            .bind(amount.get())
            .bind(purpose)
            .bind(ts(expires_at))
            .bind(&at)
            .execute(&mut *conn)
            .await?;
            sqlx::query(
                "INSERT INTO timers (tenant_id, kind, timer_key, subject, due_at, version)
                 VALUES ($1, 'reservation_expiry', $2, $3, $4, NULL)
                 ON CONFLICT (tenant_id, kind, timer_key) DO UPDATE SET due_at = excluded.due_at",
            )
            .bind(&tenant)
            .bind(format!("{period}/{reservation_id}"))
            .bind(period)
            .bind(ts(expires_at))
            .execute(&mut *conn)
            .await?;
        }
        budget::Event::Committed {
            reservation_id,
            reserved,
            actual,
        } => {
            budget_delta(actual.get(), -reserved.get())
                .execute(&mut *conn)
                .await?;
            settle(reservation_id.to_string(), "committed", Some(actual.get()))
                .execute(&mut *conn)
                .await?;
            clear_timer(reservation_id.to_string())
                .execute(&mut *conn)
                .await?;
        }
        budget::Event::Overrun { overrun, .. } => {
            sqlx::query("UPDATE budgets SET overrun_micros = overrun_micros + $1 WHERE tenant_id = $2 AND period = $3")
                .bind(overrun.get())
                .bind(&tenant)
                .bind(period)
                .execute(&mut *conn)
                .await?;
        }
        budget::Event::Released {
            reservation_id,
            amount,
        } => {
            budget_delta(0, -amount.get()).execute(&mut *conn).await?;
            settle(reservation_id.to_string(), "released", None)
                .execute(&mut *conn)
                .await?;
            clear_timer(reservation_id.to_string())
                .execute(&mut *conn)
                .await?;
        }
        budget::Event::Expired {
            reservation_id,
            amount,
            ..
        } => {
            budget_delta(0, -amount.get()).execute(&mut *conn).await?;
            settle(reservation_id.to_string(), "expired", None)
                .execute(&mut *conn)
                .await?;
            clear_timer(reservation_id.to_string())
                .execute(&mut *conn)
                .await?;
        }
        budget::Event::ThresholdCrossed { threshold_pct, .. } => {
            let row = sqlx::query(
                "SELECT thresholds_crossed FROM budgets WHERE tenant_id = $1 AND period = $2",
            )
            .bind(&tenant)
            .bind(period)
            .fetch_one(&mut *conn)
            .await?;
            let mut crossed: Vec<u8> =
                serde_json::from_str(row.get("thresholds_crossed")).unwrap_or_default();
            if !crossed.contains(&threshold_pct) {
                crossed.push(threshold_pct);
                crossed.sort_unstable();
            }
            sqlx::query(
                "UPDATE budgets SET thresholds_crossed = $1 WHERE tenant_id = $2 AND period = $3",
            )
            .bind(serde_json::to_string(&crossed).unwrap_or_else(|_| "[]".into()))
            .bind(&tenant)
            .bind(period)
            .execute(&mut *conn)
            .await?;
        }
    }
    Ok(())
}

async fn apply_post(
    conn: &mut AnyConnection,
    recorded: &RecordedEvent,
    event: post::Event,
) -> Result<(), ApplyError> {
    let tenant = recorded.tenant_id.to_string();
    let post_id = match StreamName::parse(&recorded.stream_id) {
        Ok((_, StreamKind::Post(id))) => id.to_string(),
        _ => {
            return Err(ApplyError::WrongStream {
                position: recorded.global_position,
                stream: recorded.stream_id.clone(),
            });
        }
    };
    let at = ts(recorded.occurred_at);
    let version = recorded.version as i64;
    let post = Post {
        tenant: &tenant,
        post_id: &post_id,
        at: &at,
        version,
    };
    match event {
        post::Event::Created {
            channels,
            body,
            campaign_id,
        } => {
            // A post always has a first channel; a stored list cannot be empty, but an
            // empty one projects as a post without targets rather than stopping here.
            let first = channels.first().map(|c| c.as_str()).unwrap_or_default();
            sqlx::query(
                "INSERT INTO posts (tenant_id, post_id, channel, body, campaign_id, status, version,
                                    created_position, created_at, updated_at)
                 VALUES ($1, $2, $3, $4, $5, 'draft', $6, $7, $8, $9)",
            )
            .bind(&tenant)
            .bind(&post_id)
            .bind(first)
            .bind(body)
            .bind(campaign_id.map(|c| c.to_string()))
            .bind(version)
            .bind(recorded.global_position as i64)
            .bind(&at)
            .bind(&at)
            .execute(&mut *conn)
            .await?;
            for (position, channel) in channels.iter().enumerate() {
                sqlx::query(
                    "INSERT INTO post_targets (tenant_id, post_id, channel, position)
                     VALUES ($1, $2, $3, $4)",
                )
                .bind(&tenant)
                .bind(&post_id)
                .bind(channel.as_str())
                .bind(position as i64)
                .execute(&mut *conn)
                .await?;
            }
        }
        post::Event::Edited { body } => {
            post.touch(conn, "body = $5", Some(body)).await?;
            // A scheduled post's timer publishes with the post's latest version.
            sqlx::query(
                "UPDATE timers SET version = $1
                 WHERE tenant_id = $2 AND kind = 'post_publish' AND timer_key = $3",
            )
            .bind(version)
            .bind(&tenant)
            .bind(&post_id)
            .execute(&mut *conn)
            .await?;
        }
        post::Event::Scheduled { publish_at } => {
            let due = ts(publish_at);
            post.touch(
                conn,
                "status = 'scheduled', publish_at = $5",
                Some(due.clone()),
            )
            .await?;
            sqlx::query(
                "INSERT INTO timers (tenant_id, kind, timer_key, subject, due_at, version)
                 VALUES ($1, 'post_publish', $2, $3, $4, $5)
                 ON CONFLICT (tenant_id, kind, timer_key)
                 DO UPDATE SET due_at = excluded.due_at, version = excluded.version",
            )
            .bind(&tenant)
            .bind(&post_id)
            .bind(&post_id)
            .bind(due)
            .bind(version)
            .execute(&mut *conn)
            .await?;
        }
        post::Event::PublishRequested {
            trigger: _,
            channel,
        } => {
            // One target again (an operator's retry), or every target not delivered.
            let again = "state = 'pending', next_attempt_at = NULL, failure_reason = NULL";
            match channel {
                Some(channel) => {
                    let sql = Target::update(again);
                    let target = post.target(conn, Some(&channel)).await?;
                    target.bound(&sql).execute(&mut *conn).await?;
                }
                None => {
                    sqlx::query(&format!(
                        "UPDATE post_targets SET {again}
                         WHERE tenant_id = $1 AND post_id = $2
                           AND (state IS NULL OR state IN ('failed_permanent', 'failed_retryable'))"
                    ))
                    .bind(&tenant)
                    .bind(&post_id)
                    .execute(&mut *conn)
                    .await?;
                }
            }
            post.clear_timer(conn).await?;
            post.derive_status(conn).await?;
        }
        post::Event::Published {
            channel,
            network_post_id,
            url,
        } => {
            let target = post.target(conn, channel.as_ref()).await?;
            let attempts = end_attempt(conn, &post, &target, |entry| {
                entry.insert("status".into(), "succeeded".into());
            })
            .await?;
            let sql = Target::update(
                "state = 'published', network_post_id = $4, url = $5, next_attempt_at = NULL,
                     delivery_attempts = $6",
            );
            target
                .bound(&sql)
                .bind(network_post_id)
                .bind(url)
                .bind(attempts)
                .execute(&mut *conn)
                .await?;
            post.derive_status(conn).await?;
        }
        post::Event::PublishFailed { channel, reason } => {
            let target = post.target(conn, channel.as_ref()).await?;
            let sql = Target::update(
                "state = 'failed_permanent', failure_reason = $4, next_attempt_at = NULL",
            );
            target.bound(&sql).bind(reason).execute(&mut *conn).await?;
            post.derive_status(conn).await?;
        }
        post::Event::Cancelled => {
            post.touch(conn, "status = 'cancelled'", None).await?;
            post.clear_timer(conn).await?;
        }
        post::Event::DeliveryAttemptStarted {
            channel,
            attempt,
            network,
        } => {
            let target = post.target(conn, channel.as_ref()).await?;
            let mut attempts = load_attempts(conn, &post, &target).await?;
            attempts.push(serde_json::json!({
                "attempt": attempt,
                "network": network,
                "status": "started",
                "started_at": at,
            }));
            let sql = Target::update(
                "state = 'publishing', network = $4, attempts = $5, next_attempt_at = NULL,
                     delivery_attempts = $6",
            );
            target
                .bound(&sql)
                .bind(network)
                .bind(i64::from(attempt))
                .bind(serde_json::Value::Array(attempts).to_string())
                .execute(&mut *conn)
                .await?;
            post.derive_status(conn).await?;
        }
        post::Event::DeliveryAttemptFailed {
            channel,
            attempt: _,
            code,
            reason,
            retry_at,
        } => {
            let target = post.target(conn, channel.as_ref()).await?;
            let attempts = end_attempt(conn, &post, &target, |entry| {
                entry.insert("status".into(), "failed".into());
                entry.insert("code".into(), code.clone().into());
                entry.insert("reason".into(), reason.clone().into());
                entry.insert("retryable".into(), retry_at.is_some().into());
            })
            .await?;
            let state = match retry_at {
                Some(_) => "failed_retryable",
                None => "failed_permanent",
            };
            let sql = Target::update(
                "state = $4, next_attempt_at = $5, failure_reason = $6,
                     delivery_attempts = $7",
            );
            target
                .bound(&sql)
                .bind(state)
                .bind(retry_at.map(ts))
                .bind(reason)
                .bind(attempts)
                .execute(&mut *conn)
                .await?;
            post.derive_status(conn).await?;
        }
        post::Event::DeliveryUnconfirmed {
            channel,
            attempt: _,
            reason,
        } => {
            let target = post.target(conn, channel.as_ref()).await?;
            let attempts = end_attempt(conn, &post, &target, |entry| {
                entry.insert("status".into(), "unconfirmed".into());
                entry.insert("reason".into(), reason.clone().into());
            })
            .await?;
            let sql = Target::update(
                "state = 'unconfirmed', failure_reason = $4, delivery_attempts = $5",
            );
            target
                .bound(&sql)
                .bind(reason)
                .bind(attempts)
                .execute(&mut *conn)
                .await?;
            post.derive_status(conn).await?;
        }
        post::Event::Removed {
            channel,
            network_post_id: _,
        } => {
            let target = post.target(conn, channel.as_ref()).await?;
            let sql = Target::update("state = 'removed'");
            target.bound(&sql).execute(&mut *conn).await?;
            post.derive_status(conn).await?;
        }
    }
    Ok(())
}

/// The post an event is applied to.
struct Post<'a> {
    tenant: &'a str,
    post_id: &'a str,
    at: &'a str,
    version: i64,
}

/// One target of the post an event is applied to.
struct Target {
    tenant: String,
    post_id: String,
    channel: String,
}

impl Post<'_> {
    /// Bumps the post's version and time and sets `set` (with `$5` bound to `value`).
    async fn touch(
        &self,
        conn: &mut AnyConnection,
        set: &str,
        value: Option<String>,
    ) -> Result<(), ApplyError> {
        let sql = format!(
            "UPDATE posts SET version = $1, updated_at = $2, {set}
             WHERE tenant_id = $3 AND post_id = $4"
        );
        let mut query = sqlx::query(&sql)
            .bind(self.version)
            .bind(self.at)
            .bind(self.tenant)
            .bind(self.post_id);
        // A statement takes exactly the parameters it names.
        if let Some(value) = value {
            query = query.bind(value);
        }
        query.execute(&mut *conn).await?;
        Ok(())
    }

    /// The target a delivery event names; without a channel (events stored before a
    /// post could have several), the post's first one.
    async fn target(
        &self,
        conn: &mut AnyConnection,
        channel: Option<&Channel>,
    ) -> Result<Target, ApplyError> {
        let channel = match channel {
            Some(channel) => channel.as_str().to_owned(),
            None => sqlx::query_scalar(
                "SELECT channel FROM post_targets WHERE tenant_id = $1 AND post_id = $2
                 ORDER BY position LIMIT 1",
            )
            .bind(self.tenant)
            .bind(self.post_id)
            .fetch_optional(&mut *conn)
            .await?
            .unwrap_or_default(),
        };
        Ok(Target {
            tenant: self.tenant.to_owned(),
            post_id: self.post_id.to_owned(),
            channel,
        })
    }

    /// Sets the post's status from its targets' states (`post::status_of`), and bumps
    /// its version and time.
    async fn derive_status(&self, conn: &mut AnyConnection) -> Result<(), ApplyError> {
        let states: Vec<Option<String>> = sqlx::query_scalar(
            "SELECT state FROM post_targets WHERE tenant_id = $1 AND post_id = $2",
        )
        .bind(self.tenant)
        .bind(self.post_id)
        .fetch_all(&mut *conn)
        .await?;
        // Only this file writes the states, always as `DeliveryState::as_str`.
        let status = post::status_of(
            states
                .iter()
                .filter_map(|s| s.as_deref().and_then(post::DeliveryState::parse)),
        );
        self.touch(conn, "status = $5", Some(status.as_str().to_owned()))
            .await
    }

    /// Removes the post's publish timer: it was published or cancelled.
    async fn clear_timer(&self, conn: &mut AnyConnection) -> Result<(), ApplyError> {
        sqlx::query(
            "DELETE FROM timers WHERE tenant_id = $1 AND kind = 'post_publish' AND timer_key = $2",
        )
        .bind(self.tenant)
        .bind(self.post_id)
        .execute(&mut *conn)
        .await?;
        Ok(())
    }
}

impl Target {
    /// `UPDATE post_targets SET {set}` on this target, its key as `$1` to `$3`; the
    /// values of `set` are bound from `$4` on.
    fn update(set: &str) -> String {
        format!(
            "UPDATE post_targets SET {set} WHERE tenant_id = $1 AND post_id = $2 AND channel = $3"
        )
    }

    /// `sql` with this target's key bound as `$1` to `$3`.
    fn bound<'q>(&'q self, sql: &'q str) -> AnyQuery<'q> {
        sqlx::query(sql)
            .bind(self.tenant.as_str())
            .bind(self.post_id.as_str())
            .bind(self.channel.as_str())
    }
}

type AnyQuery<'q> = sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments<'q>>;

/// A target's attempts, as stored in its `delivery_attempts` JSON list.
async fn load_attempts(
    conn: &mut AnyConnection,
    post: &Post<'_>,
    target: &Target,
) -> Result<Vec<serde_json::Value>, ApplyError> {
    let raw: Option<String> = sqlx::query_scalar(
        "SELECT delivery_attempts FROM post_targets
         WHERE tenant_id = $1 AND post_id = $2 AND channel = $3",
    )
    .bind(post.tenant)
    .bind(post.post_id)
    .bind(&target.channel)
    .fetch_optional(&mut *conn)
    .await?;
    // The column is only ever written here, as a JSON list; anything else is treated
    // as no attempts rather than stopping the projection.
    Ok(raw
        .and_then(|raw| serde_json::from_str(&raw).ok())
        .unwrap_or_default())
}

/// Ends the target's last attempt if it is still `started`: `end` fills in its
/// outcome. Returns the list to store.
async fn end_attempt(
    conn: &mut AnyConnection,
    post: &Post<'_>,
    target: &Target,
    end: impl FnOnce(&mut serde_json::Map<String, serde_json::Value>),
) -> Result<String, ApplyError> {
    let mut attempts = load_attempts(conn, post, target).await?;
    if let Some(serde_json::Value::Object(entry)) = attempts.last_mut()
        && entry.get("status").and_then(|s| s.as_str()) == Some("started")
    {
        end(entry);
        entry.insert("ended_at".into(), post.at.into());
    }
    Ok(serde_json::Value::Array(attempts).to_string())
}

async fn apply_generation(
    conn: &mut AnyConnection,
    recorded: &RecordedEvent,
    generation_id: &str,
    event: generation::Event,
) -> Result<(), ApplyError> {
    let tenant = recorded.tenant_id.to_string();
    let at = ts(recorded.occurred_at);
    let day = at.get(..10).unwrap_or_default().to_owned();
    let version = recorded.version as i64;
    let touch = |set: &str| touch_sql(set);
    // One attempt's outcome: its row, and its share of the generation's totals.
    let finish_attempt = |attempt: u32,
                          status: &'static str,
                          error: Option<String>,
                          outcome: &generation::AttemptCost| {
        sqlx::query(
            "UPDATE generation_attempts SET status = $1, error = $2, input_tokens = $3, cached_input_tokens = $4,
                    output_tokens = $5, cost_micros = $6, latency_ms = $7, price_version = $8, day = $9,
                    finished_at = $10
             WHERE tenant_id = $11 AND generation_id = $12 AND attempt = $13",
        )
        .bind(status)
        .bind(error)
        .bind(outcome.usage.input_tokens as i64)
        .bind(outcome.usage.cached_input_tokens as i64)
        .bind(outcome.usage.output_tokens as i64)
        .bind(outcome.cost.get())
        .bind(outcome.latency_ms as i64)
        .bind(outcome.price_version.clone())
        .bind(day.clone())
        .bind(at.clone())
        .bind(tenant.clone())
        .bind(generation_id.to_owned())
        .bind(i64::from(attempt))
    };
    // The generation's row after an attempt's outcome: its version, the attempt's
    // share of the totals, and `set` (bound from `$9` on), in one statement.
    let with_totals = |set: &'static str| {
        touch_sql(&format!(
            "input_tokens = input_tokens + $5, cached_input_tokens = cached_input_tokens + $6,
             output_tokens = output_tokens + $7, cost_micros = cost_micros + $8{set}"
        ))
    };
    match event {
        generation::Event::Requested(request) => {
            sqlx::query(
                "INSERT INTO generations (tenant_id, generation_id, status, brief, channel, campaign_id, priority,
                                          requested_model, provider, model, reservation_id, period, reserved_micros,
                                          version, created_at, updated_at)
                 VALUES ($1, $2, 'pending', $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)",
            )
            .bind(&tenant)
            .bind(generation_id)
            .bind(request.brief)
            .bind(request.channel.as_str())
            .bind(request.campaign_id.map(|c| c.to_string()))
            .bind(request.priority.as_str())
            .bind(request.requested_model)
            .bind(request.model.provider)
            .bind(request.model.model)
            .bind(request.reservation_id.to_string())
            .bind(request.period.to_string())
            .bind(request.reserved.get())
            .bind(version)
            .bind(&at)
            .bind(&at)
            .execute(&mut *conn)
            .await?;
        }
        generation::Event::ModeChanged { .. } => {
            sqlx::query(&touch("mode = 'economy'"))
                .bind(version)
                .bind(&at)
                .bind(&tenant)
                .bind(generation_id)
                .execute(&mut *conn)
                .await?;
        }
        generation::Event::AttemptStarted {
            attempt,
            model,
            reason,
        } => {
            sqlx::query(
                "INSERT INTO generation_attempts (tenant_id, generation_id, attempt, provider, model, reason, status,
                                                  campaign_id, started_at)
                 SELECT tenant_id, generation_id, $1, $2, $3, $4, 'started', campaign_id, $5
                 FROM generations WHERE tenant_id = $6 AND generation_id = $7",
            )
            .bind(i64::from(attempt))
            .bind(model.provider)
            .bind(model.model)
            .bind(reason.as_str())
            .bind(&at)
            .bind(&tenant)
            .bind(generation_id)
            .execute(&mut *conn)
            .await?;
            sqlx::query(&touch("attempts = $5"))
                .bind(version)
                .bind(&at)
                .bind(&tenant)
                .bind(generation_id)
                .bind(i64::from(attempt))
                .execute(&mut *conn)
                .await?;
        }
        generation::Event::AttemptFailed {
            attempt,
            error,
            outcome,
            ..
        } => {
            finish_attempt(attempt, "failed", Some(error), &outcome)
                .execute(&mut *conn)
                .await?;
            let sql = with_totals("");
            totals(&sql, version, &at, &tenant, generation_id, &outcome)
                .execute(&mut *conn)
                .await?;
        }
        generation::Event::Generated {
            attempt,
            model,
            text,
            outcome,
        } => {
            finish_attempt(attempt, "generated", None, &outcome)
                .execute(&mut *conn)
                .await?;
            let sql = with_totals(", status = 'generated', text = $9, provider = $10, model = $11");
            totals(&sql, version, &at, &tenant, generation_id, &outcome)
                .bind(text)
                .bind(model.provider)
                .bind(model.model)
                .execute(&mut *conn)
                .await?;
        }
        generation::Event::Failed { reason, .. } => {
            sqlx::query(&touch("status = 'failed', failure_reason = $5"))
                .bind(version)
                .bind(&at)
                .bind(&tenant)
                .bind(generation_id)
                .bind(reason)
                .execute(&mut *conn)
                .await?;
        }
    }
    Ok(())
}

/// `UPDATE generations` bumping the version (`$1`) and time (`$2`) of the row of
/// tenant `$3` and generation `$4`, and setting `set` (bound from `$5` on).
fn touch_sql(set: &str) -> String {
    format!(
        "UPDATE generations SET version = $1, updated_at = $2, {set}
         WHERE tenant_id = $3 AND generation_id = $4"
    )
}

/// [`touch_sql`] with an attempt's usage and cost bound as `$5` to `$8`.
fn totals<'q>(
    sql: &'q str,
    version: i64,
    at: &str,
    tenant: &str,
    generation_id: &str,
    outcome: &generation::AttemptCost,
) -> sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments<'q>> {
    sqlx::query(sql)
        .bind(version)
        .bind(at.to_owned())
        .bind(tenant.to_owned())
        .bind(generation_id.to_owned())
        .bind(outcome.usage.input_tokens as i64)
        .bind(outcome.usage.cached_input_tokens as i64)
        .bind(outcome.usage.output_tokens as i64)
        .bind(outcome.cost.get())
}
