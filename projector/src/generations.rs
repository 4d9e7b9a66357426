//! Queries over the generation read models: one generation, and usage totals.
//!
//! `generations` holds each generation's latest state with the totals of all its
//! attempts; `generation_attempts` holds one row per provider attempt, priced at the
//! model that ran it. Usage is summed from the attempts, so a failed attempt that
//! billed counts where it billed (its day, model and provider), exactly as the budget
//! ledger was charged.

use chrono::{DateTime, NaiveDate, Utc};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use sqlx::Row;
use sqlx::any::AnyRow;
use uuid::Uuid;

use crate::ReadModels;
use crate::readmodel::{parse_ts, parse_uuid};

/// One content generation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct GenerationView {
    pub generation_id: Uuid,
    /// `pending`, `generated` or `failed`.
    pub status: String,
    /// The generated text, once generated.
    pub text: Option<String>,
    /// The provider of the model that produced the text (before that: the one the
    /// first attempt runs on).
    pub provider: String,
    /// The model that produced the text (before that: the one the first attempt runs
    /// on).
    pub model: String,
    /// The model the client asked for, as it named it.
    pub requested_model: Option<String>,
    /// `normal`, or `economy` when the budget's soft limit moved the request to the
    /// tenant's cheaper model.
    pub mode: String,
    pub priority: String,
    pub channel: String,
    pub campaign_id: Option<Uuid>,
    /// Input tokens of every attempt together, cached ones included.
    pub input_tokens: i64,
    /// The part of `input_tokens` served from a provider's prompt cache.
    pub cached_input_tokens: i64,
    pub output_tokens: i64,
    /// What every attempt together cost, in micro-USD.
    pub cost_micros: i64,
    /// The worst-case cost reserved before the first attempt, in micro-USD.
    pub reserved_micros: i64,
    /// How many provider attempts were made.
    pub attempts: i64,
    pub failure_reason: Option<String>,
    pub reservation_id: Uuid,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// What usage is grouped by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum UsageGroup {
    Day,
    Model,
    Provider,
    Campaign,
}

impl UsageGroup {
    pub fn parse(raw: &str) -> Option<Self> {
        match raw {
            "day" => Some(Self::Day),
            "model" => Some(Self::Model),
            "provider" => Some(Self::Provider),
            "campaign" => Some(Self::Campaign),
            _ => None,
        }
    }

    /// The grouping expression; a fixed text per variant, never user input.
    fn column(self) -> &'static str {
        match self {
            Self::Day => "day",
            Self::Model => "provider || '/' || model",
            Self::Provider => "provider",
            Self::Campaign => "COALESCE(campaign_id, '')",
        }
    }
}

/// Usage totals of one group.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct UsageRow {
    /// The day (`YYYY-MM-DD`), model (`provider/model`), provider, or campaign id
    /// (empty for spend outside any campaign).
    pub key: String,
    /// Provider attempts that finished (generated or failed).
    pub calls: i64,
    pub input_tokens: i64,
    pub cached_input_tokens: i64,
    pub output_tokens: i64,
    pub cost_micros: i64,
}

impl ReadModels {
    /// One generation of a tenant.
    pub async fn generation(
        &self,
        tenant: Uuid,
        generation_id: Uuid,
    ) -> Result<Option<GenerationView>, sqlx::Error> {
        let mut tx = self.read_as(tenant).await?;
        let row = sqlx::query(
            "SELECT generation_id, status, text, provider, model, requested_model, mode, priority, channel,
                    campaign_id, input_tokens, cached_input_tokens, output_tokens, cost_micros, reserved_micros,
                    attempts, failure_reason, reservation_id, created_at, updated_at
             FROM generations WHERE tenant_id = $1 AND generation_id = $2",
        )
        .bind(tenant.to_string())
        .bind(generation_id.to_string())
        .fetch_optional(&mut *tx)
        .await?;
        tx.commit().await?;
        row.as_ref().map(generation_view).transpose()
    }

    /// A tenant's usage from `from` to `to` (both days included, UTC), grouped.
    pub async fn usage(
        &self,
        tenant: Uuid,
        from: NaiveDate,
        to: NaiveDate,
        group: UsageGroup,
    ) -> Result<Vec<UsageRow>, sqlx::Error> {
        let key = group.column();
        let mut tx = self.read_as(tenant).await?;
        // PostgreSQL sums BIGINT into NUMERIC; the casts bring every total back to the
        // BIGINT both backends decode alike.
        let rows = sqlx::query(&format!(
            "SELECT {key} AS group_key, COUNT(*) AS calls,
                    CAST(COALESCE(SUM(input_tokens), 0) AS BIGINT) AS input_tokens,
                    CAST(COALESCE(SUM(cached_input_tokens), 0) AS BIGINT) AS cached_input_tokens,
                    CAST(COALESCE(SUM(output_tokens), 0) AS BIGINT) AS output_tokens,
                    CAST(COALESCE(SUM(cost_micros), 0) AS BIGINT) AS cost_micros
             FROM generation_attempts
             WHERE tenant_id = $1 AND day >= $2 AND day <= $3 AND status <> 'started'
             GROUP BY {key} ORDER BY {key}"
        ))
        .bind(tenant.to_string())
        .bind(from.to_string())
        .bind(to.to_string())
        .fetch_all(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(rows.iter().map(usage_row).collect())
    }
}

fn generation_view(row: &AnyRow) -> Result<GenerationView, sqlx::Error> {
    Ok(GenerationView {
        generation_id: parse_uuid(row.get("generation_id"))?,
        status: row.get("status"),
        text: row.get("text"),
        provider: row.get("provider"),
        model: row.get("model"),
        requested_model: row.get("requested_model"),
        mode: row.get("mode"),
        priority: row.get("priority"),
        channel: row.get("channel"),
        campaign_id: row
            .get::<Option<String>, _>("campaign_id")
            .as_deref()
            .map(parse_uuid)
            .transpose()?,
        input_tokens: row.get("input_tokens"),
        cached_input_tokens: row.get("cached_input_tokens"),
        output_tokens: row.get("output_tokens"),
        cost_micros: row.get("cost_micros"),
        reserved_micros: row.get("reserved_micros"),
        attempts: row.get("attempts"),
        failure_reason: row.get("failure_reason"),
        reservation_id: parse_uuid(row.get("reservation_id"))?,
        created_at: parse_ts(row.get("created_at"))?,
        updated_at: parse_ts(row.get("updated_at"))?,
    })
}

fn usage_row(row: &AnyRow) -> UsageRow {
    UsageRow {
        key: row.get("group_key"),
        calls: row.get("calls"),
        input_tokens: row.get("input_tokens"),
        cached_input_tokens: row.get("cached_input_tokens"),
        output_tokens: row.get("output_tokens"),
        cost_micros: row.get("cost_micros"),
    }
}
