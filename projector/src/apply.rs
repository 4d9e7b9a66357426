//! How each event changes the read models. Matches every event explicitly, so a new
//! event does not compile until this file decides what it means for the read models.
//!
//! An event changes rows of a [`Batch`]: the batch reads a row the first time an
//! event needs it and writes every changed row back at the end of the batch with a
//! few multi-row statements (see `batch.rs`). Each function here reads like the SQL it
//! replaces: an upsert, an `UPDATE … WHERE key` that changes nothing when the row is
//! missing, a `DELETE`. The batch scopes its statements to the row's tenant, so on
//! PostgreSQL row-level security holds for the projector too: it could not touch
//! another tenant's rows even through a bug here.

use domain::ids::StreamKind;
use domain::{Channel, StreamName, budget, generation, post};
use eventlog::RecordedEvent;
use schemas::DomainEvent;

use crate::batch::{
    BUDGETS, Batch, GENERATION_ATTEMPTS, GENERATIONS, Key, Lane, POST_TARGETS, POSTS, RESERVATIONS,
    Row, TIMERS, Value,
};
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

/// Applies one recorded event to the rows of `batch`, reading through `conn` (the
/// caller's transaction) what the batch does not hold yet.
pub async fn apply(
    batch: &mut Batch,
    conn: &mut Lane<'_>,
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
    let on = On {
        tenant: recorded.tenant_id.to_string(),
        at: ts(recorded.occurred_at),
        version: recorded.version as i64,
    };
    match (event, kind) {
        (DomainEvent::Budget(event), StreamKind::Budget(period)) => {
            apply_budget(batch, conn, &on, &period.to_string(), event).await
        }
        (DomainEvent::Post(event), StreamKind::Post(id)) => {
            let post = PostRef {
                on: &on,
                post_id: id.to_string(),
            };
            apply_post(batch, conn, &post, recorded.global_position, event).await
        }
        (DomainEvent::Generation(event), StreamKind::Generation(id)) => {
            apply_generation(batch, conn, &on, &id.to_string(), event).await
        }
        _ => Err(wrong_stream()),
    }
}

/// What every event brings to the rows it touches.
struct On {
    tenant: String,
    /// When the event occurred, as stored.
    at: String,
    /// The event's version in its stream.
    version: i64,
}

impl On {
    fn key(&self, rest: &[&str]) -> Key {
        let mut key = vec![Value::from(self.tenant.as_str())];
        key.extend(rest.iter().map(|v| Value::from(*v)));
        key
    }
}

async fn apply_budget(
    batch: &mut Batch,
    conn: &mut Lane<'_>,
    on: &On,
    period: &str,
    event: budget::Event,
) -> Result<(), ApplyError> {
    // Every budget event touches the month's row; make sure it exists.
    let month = on.key(&[period]);
    batch
        .upsert(conn, &BUDGETS, month.clone(), |_| {})
        .await?
        .set("version", on.version)
        .set("updated_at", on.at.as_str());
    let reservation = |id: &str| on.key(&[period, id]);
    // A settled reservation no longer needs its expiry timer.
    let timer = |id: &str| on.key(&["reservation_expiry", &format!("{period}/{id}")]);
    match event {
        budget::Event::LimitsSet {
            soft,
            hard,
            alert_thresholds_pct,
            inherited_from,
        } => {
            if let Some(row) = batch.update(conn, &BUDGETS, month).await? {
                row.set("soft_limit_micros", soft.get())
                    .set("hard_limit_micros", hard.get())
                    .set(
                        "alert_thresholds_pct",
                        serde_json::to_string(&alert_thresholds_pct)
                            .unwrap_or_else(|_| "[]".into()),
                    )
                    .set("inherited_from", inherited_from.map(|p| p.to_string()))
                    .set("limits_set", 1);
            }
        }
        budget::Event::Reserved {
            reservation_id,
            amount,
            purpose,
            expires_at,
        } => {
            let id = reservation_id.to_string();
            budget_delta(batch, conn, month, 0, amount.get()).await?;
            let mut row = Row::new(&RESERVATIONS, reservation(&id));
            row.set("amount_micros", amount.get())
                .set("purpose", purpose)
                .set("status", "open")
                .set("expires_at", ts(expires_at))
                .set("created_at", on.at.as_str());
            batch.insert(row);
            // The whole row, so that the result is the same whether or not one was
            // there: a reservation's timer only ever holds these values.
            let mut timer = Row::new(&TIMERS, timer(&id));
            timer.set("subject", period).set("due_at", ts(expires_at));
            batch.insert(timer);
        }
        budget::Event::Committed {
            reservation_id,
            reserved,
            actual,
        } => {
            let id = reservation_id.to_string();
            budget_delta(batch, conn, month, actual.get(), -reserved.get()).await?;
            settle(
                batch,
                conn,
                on,
                reservation(&id),
                "committed",
                Some(actual.get()),
            )
            .await?;
            batch.delete(&TIMERS, timer(&id));
        }
        budget::Event::Overrun { overrun, .. } => {
            if let Some(row) = batch.update(conn, &BUDGETS, month).await? {
                row.add("overrun_micros", overrun.get());
            }
        }
        budget::Event::Released {
            reservation_id,
            amount,
        } => {
            let id = reservation_id.to_string();
            budget_delta(batch, conn, month, 0, -amount.get()).await?;
            settle(batch, conn, on, reservation(&id), "released", None).await?;
            batch.delete(&TIMERS, timer(&id));
        }
        budget::Event::Expired {
            reservation_id,
            amount,
            ..
        } => {
            let id = reservation_id.to_string();
            budget_delta(batch, conn, month, 0, -amount.get()).await?;
            settle(batch, conn, on, reservation(&id), "expired", None).await?;
            batch.delete(&TIMERS, timer(&id));
        }
        budget::Event::ThresholdCrossed { threshold_pct, .. } => {
            if let Some(row) = batch.update(conn, &BUDGETS, month).await? {
                let mut crossed: Vec<u8> = row
                    .text("thresholds_crossed")
                    .and_then(|raw| serde_json::from_str(raw).ok())
                    .unwrap_or_default();
                if !crossed.contains(&threshold_pct) {
                    crossed.push(threshold_pct);
                    crossed.sort_unstable();
                }
                row.set(
                    "thresholds_crossed",
                    serde_json::to_string(&crossed).unwrap_or_else(|_| "[]".into()),
                );
            }
        }
    }
    Ok(())
}

/// Moves a month's committed and reserved totals.
async fn budget_delta(
    batch: &mut Batch,
    conn: &mut Lane<'_>,
    month: Key,
    committed: i64,
    reserved: i64,
) -> Result<(), ApplyError> {
    if let Some(row) = batch.update(conn, &BUDGETS, month).await? {
        row.add("committed_micros", committed)
            .add("reserved_micros", reserved);
    }
    Ok(())
}

/// Marks a reservation settled: committed at `actual`, released or expired.
async fn settle(
    batch: &mut Batch,
    conn: &mut Lane<'_>,
    on: &On,
    reservation: Key,
    status: &'static str,
    actual: Option<i64>,
) -> Result<(), ApplyError> {
    if let Some(row) = batch.update(conn, &RESERVATIONS, reservation).await? {
        row.set("status", status)
            .set("actual_micros", actual)
            .set("settled_at", on.at.as_str());
    }
    Ok(())
}

/// The post an event is applied to.
struct PostRef<'a> {
    on: &'a On,
    post_id: String,
}

impl PostRef<'_> {
    fn key(&self) -> Key {
        self.on.key(&[&self.post_id])
    }

    fn target_key(&self, channel: &str) -> Key {
        self.on.key(&[&self.post_id, channel])
    }

    fn timer_key(&self) -> Key {
        self.on.key(&["post_publish", &self.post_id])
    }

    /// Bumps the post's version and time, and hands its row to `set`.
    async fn touch(
        &self,
        batch: &mut Batch,
        conn: &mut Lane<'_>,
        set: impl FnOnce(&mut Row),
    ) -> Result<(), ApplyError> {
        if let Some(row) = batch.update(conn, &POSTS, self.key()).await? {
            row.set("version", self.on.version)
                .set("updated_at", self.on.at.as_str());
            set(row);
        }
        Ok(())
    }

    /// The post's targets, in their order.
    async fn targets(
        &self,
        batch: &mut Batch,
        conn: &mut Lane<'_>,
    ) -> Result<Vec<Row>, ApplyError> {
        let mut targets = batch.children(conn, &POST_TARGETS, self.key()).await?;
        targets.sort_by_key(|t| t.int("position"));
        Ok(targets)
    }

    /// The channel a delivery event names; without one (events stored before a post
    /// could have several), the post's first target's.
    async fn channel(
        &self,
        batch: &mut Batch,
        conn: &mut Lane<'_>,
        channel: Option<&Channel>,
    ) -> Result<String, ApplyError> {
        Ok(match channel {
            Some(channel) => channel.as_str().to_owned(),
            None => self
                .targets(batch, conn)
                .await?
                .first()
                .and_then(|t| t.text("channel").map(str::to_owned))
                .unwrap_or_default(),
        })
    }

    /// Changes the target of `channel` with `set`, if the post has it.
    async fn update_target(
        &self,
        batch: &mut Batch,
        conn: &mut Lane<'_>,
        channel: &str,
        set: impl FnOnce(&mut Row),
    ) -> Result<(), ApplyError> {
        if let Some(row) = batch
            .update(conn, &POST_TARGETS, self.target_key(channel))
            .await?
        {
            set(row);
        }
        Ok(())
    }

    /// A target's attempts, as stored in its `delivery_attempts` JSON list.
    async fn attempts(
        &self,
        batch: &mut Batch,
        conn: &mut Lane<'_>,
        channel: &str,
    ) -> Result<Vec<serde_json::Value>, ApplyError> {
        let row = batch
            .get(conn, &POST_TARGETS, self.target_key(channel))
            .await?;
        // The column is only ever written here, as a JSON list; anything else is
        // treated as no attempts rather than stopping the projection.
        Ok(row
            .and_then(|r| r.text("delivery_attempts"))
            .and_then(|raw| serde_json::from_str(raw).ok())
            .unwrap_or_default())
    }

    /// Ends the target's last attempt if it is still `started`: `end` fills in its
    /// outcome. Returns the list to store.
    async fn end_attempt(
        &self,
        batch: &mut Batch,
        conn: &mut Lane<'_>,
        channel: &str,
        end: impl FnOnce(&mut serde_json::Map<String, serde_json::Value>),
    ) -> Result<String, ApplyError> {
        let mut attempts = self.attempts(batch, conn, channel).await?;
        if let Some(serde_json::Value::Object(entry)) = attempts.last_mut()
            && entry.get("status").and_then(|s| s.as_str()) == Some("started")
        {
            end(entry);
            entry.insert("ended_at".into(), self.on.at.as_str().into());
        }
        Ok(serde_json::Value::Array(attempts).to_string())
    }

    /// Sets the post's status from its targets' states (`post::status_of`), and bumps
    /// its version and time.
    async fn derive_status(
        &self,
        batch: &mut Batch,
        conn: &mut Lane<'_>,
    ) -> Result<(), ApplyError> {
        let targets = self.targets(batch, conn).await?;
        // Only this file writes the states, always as `DeliveryState::as_str`.
        let status = post::status_of(
            targets
                .iter()
                .filter_map(|t| t.text("state").and_then(post::DeliveryState::parse)),
        );
        self.touch(batch, conn, |row| {
            row.set("status", status.as_str());
        })
        .await
    }

    /// Removes the post's publish timer: it was published or cancelled.
    fn clear_timer(&self, batch: &mut Batch) {
        batch.delete(&TIMERS, self.timer_key());
    }
}

async fn apply_post(
    batch: &mut Batch,
    conn: &mut Lane<'_>,
    post: &PostRef<'_>,
    position: u64,
    event: post::Event,
) -> Result<(), ApplyError> {
    let on = post.on;
    match event {
        post::Event::Created {
            channels,
            body,
            campaign_id,
        } => {
            // A post always has a first channel; a stored list cannot be empty, but an
            // empty one projects as a post without targets rather than stopping here.
            let first = channels.first().map(|c| c.as_str()).unwrap_or_default();
            let mut row = Row::new(&POSTS, post.key());
            row.set("channel", first)
                .set("body", body)
                .set("campaign_id", campaign_id.map(|c| c.to_string()))
                .set("status", "draft")
                .set("version", on.version)
                .set("created_position", position as i64)
                .set("created_at", on.at.as_str())
                .set("updated_at", on.at.as_str());
            batch.insert(row);
            for (position, channel) in channels.iter().enumerate() {
                let mut target = Row::new(&POST_TARGETS, post.target_key(channel.as_str()));
                target.set("position", position as i64);
                batch.insert(target);
            }
            // A new post has no other targets and no timer, so neither needs a read.
            batch.complete(&POST_TARGETS, post.key());
            batch.absent(&TIMERS, post.timer_key());
        }
        post::Event::Edited { body } => {
            post.touch(batch, conn, |row| {
                row.set("body", body);
            })
            .await?;
            // A scheduled post's timer publishes with the post's latest version.
            if let Some(timer) = batch.update(conn, &TIMERS, post.timer_key()).await? {
                timer.set("version", on.version);
            }
        }
        post::Event::Scheduled { publish_at } => {
            let due = ts(publish_at);
            post.touch(batch, conn, |row| {
                row.set("status", "scheduled")
                    .set("publish_at", due.as_str());
            })
            .await?;
            // The whole row, as a post's publish timer only ever holds these values.
            let mut timer = Row::new(&TIMERS, post.timer_key());
            timer
                .set("subject", post.post_id.as_str())
                .set("due_at", due)
                .set("version", on.version);
            batch.insert(timer);
        }
        post::Event::PublishRequested {
            trigger: _,
            channel,
        } => {
            // One target again (an operator's retry), or every target not delivered.
            let again = |row: &mut Row| {
                row.set("state", "pending")
                    .set("next_attempt_at", Value::Null)
                    .set("failure_reason", Value::Null);
            };
            match channel {
                Some(channel) => {
                    let channel = post.channel(batch, conn, Some(&channel)).await?;
                    post.update_target(batch, conn, &channel, again).await?;
                }
                None => {
                    for target in post.targets(batch, conn).await? {
                        let redo = matches!(
                            target.text("state"),
                            None | Some("failed_permanent") | Some("failed_retryable")
                        );
                        if redo && let Some(channel) = target.text("channel") {
                            post.update_target(batch, conn, channel, again).await?;
                        }
                    }
                }
            }
            post.clear_timer(batch);
            post.derive_status(batch, conn).await?;
        }
        post::Event::Published {
            channel,
            network_post_id,
            url,
        } => {
            let channel = post.channel(batch, conn, channel.as_ref()).await?;
            let attempts = post
                .end_attempt(batch, conn, &channel, |entry| {
                    entry.insert("status".into(), "succeeded".into());
                })
                .await?;
            post.update_target(batch, conn, &channel, |row| {
                row.set("state", "published")
                    .set("network_post_id", network_post_id)
                    .set("url", url)
                    .set("next_attempt_at", Value::Null)
                    .set("delivery_attempts", attempts);
            })
            .await?;
            post.derive_status(batch, conn).await?;
        }
        post::Event::PublishFailed { channel, reason } => {
            let channel = post.channel(batch, conn, channel.as_ref()).await?;
            post.update_target(batch, conn, &channel, |row| {
                row.set("state", "failed_permanent")
                    .set("failure_reason", reason)
                    .set("next_attempt_at", Value::Null);
            })
            .await?;
            post.derive_status(batch, conn).await?;
        }
        post::Event::Cancelled => {
            post.touch(batch, conn, |row| {
                row.set("status", "cancelled");
            })
            .await?;
            post.clear_timer(batch);
        }
        post::Event::DeliveryAttemptStarted {
            channel,
            attempt,
            network,
        } => {
            let channel = post.channel(batch, conn, channel.as_ref()).await?;
            let mut attempts = post.attempts(batch, conn, &channel).await?;
            attempts.push(serde_json::json!({
                "attempt": attempt,
                "network": network,
                "status": "started",
                "started_at": on.at,
            }));
            post.update_target(batch, conn, &channel, |row| {
                row.set("state", "publishing")
                    .set("network", network)
                    .set("attempts", i64::from(attempt))
                    .set("next_attempt_at", Value::Null)
                    .set(
                        "delivery_attempts",
                        serde_json::Value::Array(attempts).to_string(),
                    );
            })
            .await?;
            post.derive_status(batch, conn).await?;
        }
        post::Event::DeliveryAttemptFailed {
            channel,
            attempt: _,
            code,
            reason,
            retry_at,
        } => {
            let channel = post.channel(batch, conn, channel.as_ref()).await?;
            let attempts = post
                .end_attempt(batch, conn, &channel, |entry| {
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
            post.update_target(batch, conn, &channel, |row| {
                row.set("state", state)
                    .set("next_attempt_at", retry_at.map(ts))
                    .set("failure_reason", reason)
                    .set("delivery_attempts", attempts);
            })
            .await?;
            post.derive_status(batch, conn).await?;
        }
        post::Event::DeliveryUnconfirmed {
            channel,
            attempt: _,
            reason,
        } => {
            let channel = post.channel(batch, conn, channel.as_ref()).await?;
            let attempts = post
                .end_attempt(batch, conn, &channel, |entry| {
                    entry.insert("status".into(), "unconfirmed".into());
                    entry.insert("reason".into(), reason.clone().into());
                })
                .await?;
            post.update_target(batch, conn, &channel, |row| {
                row.set("state", "unconfirmed")
                    .set("failure_reason", reason)
                    .set("delivery_attempts", attempts);
            })
            .await?;
            post.derive_status(batch, conn).await?;
        }
        post::Event::Removed {
            channel,
            network_post_id: _,
        } => {
            let channel = post.channel(batch, conn, channel.as_ref()).await?;
            post.update_target(batch, conn, &channel, |row| {
                row.set("state", "removed");
            })
            .await?;
            post.derive_status(batch, conn).await?;
        }
    }
    Ok(())
}

async fn apply_generation(
    batch: &mut Batch,
    conn: &mut Lane<'_>,
    on: &On,
    generation_id: &str,
    event: generation::Event,
) -> Result<(), ApplyError> {
    let day = on.at.get(..10).unwrap_or_default().to_owned();
    let key = on.key(&[generation_id]);
    let attempt_key = |attempt: u32| {
        let mut key = key.clone();
        key.push(Value::Int(i64::from(attempt)));
        key
    };
    match event {
        generation::Event::Requested(request) => {
            let mut row = Row::new(&GENERATIONS, key);
            row.set("status", "pending")
                .set("brief", request.brief)
                .set("channel", request.channel.as_str())
                .set("campaign_id", request.campaign_id.map(|c| c.to_string()))
                .set("priority", request.priority.as_str())
                .set("requested_model", request.requested_model)
                .set("provider", request.model.provider)
                .set("model", request.model.model)
                .set("reservation_id", request.reservation_id.to_string())
                .set("period", request.period.to_string())
                .set("reserved_micros", request.reserved.get())
                .set("version", on.version)
                .set("created_at", on.at.as_str())
                .set("updated_at", on.at.as_str());
            batch.insert(row);
        }
        generation::Event::ModeChanged { .. } => {
            touch_generation(batch, conn, on, key, |row| {
                row.set("mode", "economy");
            })
            .await?;
        }
        generation::Event::AttemptStarted {
            attempt,
            model,
            reason,
        } => {
            // An attempt of a generation the read models do not have is not recorded,
            // as the `INSERT … SELECT` this replaces did not record it.
            let campaign = batch
                .get(conn, &GENERATIONS, key.clone())
                .await?
                .map(|generation| generation.text("campaign_id").map(str::to_owned));
            if let Some(campaign) = campaign {
                let mut row = Row::new(&GENERATION_ATTEMPTS, attempt_key(attempt));
                row.set("provider", model.provider)
                    .set("model", model.model)
                    .set("reason", reason.as_str())
                    .set("status", "started")
                    .set("campaign_id", campaign)
                    .set("started_at", on.at.as_str());
                batch.insert(row);
            }
            touch_generation(batch, conn, on, key, |row| {
                row.set("attempts", i64::from(attempt));
            })
            .await?;
        }
        generation::Event::AttemptFailed {
            attempt,
            error,
            outcome,
            ..
        } => {
            let row = batch.update(conn, &GENERATION_ATTEMPTS, attempt_key(attempt));
            finish_attempt(row.await?, on, &day, "failed", Some(error), &outcome);
            touch_generation(batch, conn, on, key, |row| add_totals(row, &outcome)).await?;
        }
        generation::Event::Generated {
            attempt,
            model,
            text,
            outcome,
        } => {
            let row = batch.update(conn, &GENERATION_ATTEMPTS, attempt_key(attempt));
            finish_attempt(row.await?, on, &day, "generated", None, &outcome);
            touch_generation(batch, conn, on, key, |row| {
                add_totals(row, &outcome);
                row.set("status", "generated")
                    .set("text", text)
                    .set("provider", model.provider)
                    .set("model", model.model);
            })
            .await?;
        }
        generation::Event::Failed { reason, .. } => {
            touch_generation(batch, conn, on, key, |row| {
                row.set("status", "failed").set("failure_reason", reason);
            })
            .await?;
        }
    }
    Ok(())
}

/// Bumps the generation's version and time, and hands its row to `set`.
async fn touch_generation(
    batch: &mut Batch,
    conn: &mut Lane<'_>,
    on: &On,
    key: Key,
    set: impl FnOnce(&mut Row),
) -> Result<(), ApplyError> {
    if let Some(row) = batch.update(conn, &GENERATIONS, key).await? {
        row.set("version", on.version)
            .set("updated_at", on.at.as_str());
        set(row);
    }
    Ok(())
}

/// One attempt's outcome on its row.
fn finish_attempt(
    row: Option<&mut Row>,
    on: &On,
    day: &str,
    status: &'static str,
    error: Option<String>,
    outcome: &generation::AttemptCost,
) {
    if let Some(row) = row {
        row.set("status", status)
            .set("error", error)
            .set("input_tokens", outcome.usage.input_tokens as i64)
            .set(
                "cached_input_tokens",
                outcome.usage.cached_input_tokens as i64,
            )
            .set("output_tokens", outcome.usage.output_tokens as i64)
            .set("cost_micros", outcome.cost.get())
            .set("latency_ms", outcome.latency_ms as i64)
            .set("price_version", outcome.price_version.clone())
            .set("day", day)
            .set("finished_at", on.at.as_str());
    }
}

/// An attempt's share of its generation's totals.
fn add_totals(row: &mut Row, outcome: &generation::AttemptCost) {
    row.add("input_tokens", outcome.usage.input_tokens as i64)
        .add(
            "cached_input_tokens",
            outcome.usage.cached_input_tokens as i64,
        )
        .add("output_tokens", outcome.usage.output_tokens as i64)
        .add("cost_micros", outcome.cost.get());
}
