//! How each event changes the read models. Matches every event explicitly, so a new
//! event does not compile until this file decides what it means for the read models.

use domain::ids::StreamKind;
use domain::{StreamName, budget, post};
use eventlog::RecordedEvent;
use schemas::DomainEvent;
use sqlx::{Row, SqliteConnection};

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
pub async fn apply(
    conn: &mut SqliteConnection,
    recorded: &RecordedEvent,
) -> Result<(), ApplyError> {
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
        _ => Err(wrong_stream()),
    }
}

async fn apply_budget(
    conn: &mut SqliteConnection,
    recorded: &RecordedEvent,
    period: &str,
    event: budget::Event,
) -> Result<(), ApplyError> {
    let tenant = recorded.tenant_id.to_string();
    let at = ts(recorded.occurred_at);
    // Every budget event touches the month's row; make sure it exists.
    sqlx::query(
        "INSERT INTO budgets (tenant_id, period, version, updated_at) VALUES (?, ?, ?, ?)
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
            "UPDATE budgets SET committed_micros = committed_micros + ?, reserved_micros = reserved_micros + ?
             WHERE tenant_id = ? AND period = ?",
        )
        .bind(committed)
        .bind(reserved)
        .bind(tenant.clone())
        .bind(period.to_owned())
    };
    let settle = |id: String, status: &'static str, actual: Option<i64>| {
        sqlx::query(
            "UPDATE reservations SET status = ?, actual_micros = ?, settled_at = ?
             WHERE tenant_id = ? AND period = ? AND reservation_id = ?",
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
                "UPDATE budgets SET soft_limit_micros = ?, hard_limit_micros = ?, alert_thresholds_pct = ?,
                        inherited_from = ?, limits_set = 1
                 WHERE tenant_id = ? AND period = ?",
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
                 VALUES (?, ?, ?, ?, ?, 'open', ?, ?)",
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
        }
        budget::Event::Overrun { overrun, .. } => {
            sqlx::query("UPDATE budgets SET overrun_micros = overrun_micros + ? WHERE tenant_id = ? AND period = ?")
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
        }
        budget::Event::ThresholdCrossed { threshold_pct, .. } => {
            let row = sqlx::query(
                "SELECT thresholds_crossed FROM budgets WHERE tenant_id = ? AND period = ?",
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
                "UPDATE budgets SET thresholds_crossed = ? WHERE tenant_id = ? AND period = ?",
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
    conn: &mut SqliteConnection,
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
    // One statement shape for every change after creation: set the status (and maybe
    // one more column), bump the version.
    let update = |set: &'static str| {
        format!(
            "UPDATE posts SET {set}, version = ?, updated_at = ? WHERE tenant_id = ? AND post_id = ?"
        )
    };
    match event {
        post::Event::Created {
            channel,
            body,
            campaign_id,
        } => {
            sqlx::query(
                "INSERT INTO posts (tenant_id, post_id, channel, body, campaign_id, status, version,
                                    created_position, created_at, updated_at)
                 VALUES (?, ?, ?, ?, ?, 'draft', ?, ?, ?, ?)",
            )
            .bind(&tenant)
            .bind(&post_id)
            .bind(channel.as_str())
            .bind(body)
            .bind(campaign_id.map(|c| c.to_string()))
            .bind(version)
            .bind(recorded.global_position as i64)
            .bind(&at)
            .bind(&at)
            .execute(&mut *conn)
            .await?;
            return Ok(());
        }
        post::Event::Edited { body } => {
            sqlx::query(&update("body = ?"))
                .bind(body)
                .bind(version)
                .bind(&at)
                .bind(&tenant)
                .bind(&post_id)
                .execute(&mut *conn)
                .await?;
        }
        post::Event::Scheduled { publish_at } => {
            sqlx::query(&update("status = 'scheduled', publish_at = ?"))
                .bind(ts(publish_at))
                .bind(version)
                .bind(&at)
                .bind(&tenant)
                .bind(&post_id)
                .execute(&mut *conn)
                .await?;
        }
        post::Event::PublishRequested { trigger: _ } => {
            sqlx::query(&update("status = 'publishing', failure_reason = NULL"))
                .bind(version)
                .bind(&at)
                .bind(&tenant)
                .bind(&post_id)
                .execute(&mut *conn)
                .await?;
        }
        post::Event::Published {
            network_post_id,
            url,
        } => {
            sqlx::query(&update(
                "status = 'published', network_post_id = ?, url = ?",
            ))
            .bind(network_post_id)
            .bind(url)
            .bind(version)
            .bind(&at)
            .bind(&tenant)
            .bind(&post_id)
            .execute(&mut *conn)
            .await?;
        }
        post::Event::PublishFailed { reason } => {
            sqlx::query(&update("status = 'failed', failure_reason = ?"))
                .bind(reason)
                .bind(version)
                .bind(&at)
                .bind(&tenant)
                .bind(&post_id)
                .execute(&mut *conn)
                .await?;
        }
        post::Event::Cancelled => {
            sqlx::query(&update("status = 'cancelled'"))
                .bind(version)
                .bind(&at)
                .bind(&tenant)
                .bind(&post_id)
                .execute(&mut *conn)
                .await?;
        }
    }
    Ok(())
}
