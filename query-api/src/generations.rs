//! `GET /v1/generations/{id}` and `GET /v1/usage`: what AI generation produced and
//! what it cost.

use actix_web::{HttpRequest, HttpResponse, web};
use chrono::{Datelike, NaiveDate, Utc};
use projector::{UsageGroup, UsageRow};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::error::QueryError;
use crate::http::{QueryApi, consistent, query, viewer};

/// The longest span `GET /v1/usage` sums over, in days.
const MAX_USAGE_DAYS: i64 = 366;

/// Query parameters of `GET /v1/generations/{id}`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct GenerationQuery {
    min_position: Option<u64>,
}

/// Query parameters of `GET /v1/usage`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct UsageQuery {
    from: Option<String>,
    to: Option<String>,
    group_by: Option<String>,
    min_position: Option<u64>,
}

/// Body of `GET /v1/usage`.
#[derive(Debug, Serialize, schemars::JsonSchema)]
pub struct UsageReport {
    /// First day included (`YYYY-MM-DD`, UTC).
    pub from: String,
    /// Last day included.
    pub to: String,
    /// `day`, `model`, `provider` or `campaign`.
    pub group_by: UsageGroup,
    /// One row per group, in key order.
    pub items: Vec<UsageRow>,
    /// The sum of every row.
    pub total: UsageRow,
}

#[tracing::instrument(skip_all)]
pub(crate) async fn generation(
    req: HttpRequest,
    path: web::Path<String>,
    api: web::Data<QueryApi>,
) -> Result<HttpResponse, QueryError> {
    let principal = viewer(&req)?;
    let q: GenerationQuery = query(&req)?;
    // An id that is not a UUID names no generation: answer as for an unknown one.
    let Ok(id) = Uuid::parse_str(&path.into_inner()) else {
        return Err(QueryError::NotFound("generation"));
    };
    consistent(&api, principal.tenant_id, q.min_position).await?;
    match api.models.generation(principal.tenant_id, id).await? {
        Some(view) => Ok(HttpResponse::Ok().json(view)),
        None => Err(QueryError::NotFound("generation")),
    }
}

fn day(field: &str, raw: Option<&str>, default: NaiveDate) -> Result<NaiveDate, QueryError> {
    match raw {
        None => Ok(default),
        Some(raw) => NaiveDate::parse_from_str(raw, "%Y-%m-%d")
            .map_err(|_| QueryError::BadQuery(format!("{field} must be a date, YYYY-MM-DD"))),
    }
}

#[tracing::instrument(skip_all)]
pub(crate) async fn usage(
    req: HttpRequest,
    api: web::Data<QueryApi>,
) -> Result<HttpResponse, QueryError> {
    let principal = viewer(&req)?;
    let q: UsageQuery = query(&req)?;
    let today = Utc::now().date_naive();
    let month_start = today.with_day(1).unwrap_or(today);
    let from = day("from", q.from.as_deref(), month_start)?;
    let to = day("to", q.to.as_deref(), today)?;
    if to < from {
        return Err(QueryError::BadQuery("to must not be before from".into()));
    }
    if (to - from).num_days() >= MAX_USAGE_DAYS {
        return Err(QueryError::BadQuery(format!(
            "from and to may be at most {MAX_USAGE_DAYS} days apart"
        )));
    }
    let group_by = match q.group_by.as_deref() {
        None => UsageGroup::Day,
        Some(raw) => UsageGroup::parse(raw).ok_or_else(|| {
            QueryError::BadQuery("group_by must be day, model, provider or campaign".into())
        })?,
    };
    consistent(&api, principal.tenant_id, q.min_position).await?;
    let items = api
        .models
        .usage(principal.tenant_id, from, to, group_by)
        .await?;
    let total = items.iter().fold(
        UsageRow {
            key: "total".into(),
            calls: 0,
            input_tokens: 0,
            cached_input_tokens: 0,
            output_tokens: 0,
            cost_micros: 0,
        },
        |mut sum, row| {
            sum.calls += row.calls;
            sum.input_tokens += row.input_tokens;
            sum.cached_input_tokens += row.cached_input_tokens;
            sum.output_tokens += row.output_tokens;
            sum.cost_micros += row.cost_micros;
            sum
        },
    );
    Ok(HttpResponse::Ok().json(UsageReport {
        from: from.to_string(),
        to: to.to_string(),
        group_by,
        items,
        total,
    }))
}
