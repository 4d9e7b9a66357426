//! Query routes.

use std::time::{Duration, Instant};

use actix_web::{HttpRequest, HttpResponse, web};
use auth::{Authenticator, Principal, Role};
use chrono::Utc;
use domain::Period;
use projector::readmodel::decode_cursor;
use projector::{PostFilter, ReadModels, ReservationStatus, ReservationView};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::error::QueryError;

/// What the query routes need at run time.
#[derive(Clone)]
pub struct QueryApi {
    pub models: ReadModels,
    /// The event log, asked which of the tenant's events a `min_position` covers.
    pub store: std::sync::Arc<dyn eventlog::EventStore>,
    /// Longest a query waits for `min_position`.
    pub max_consistency_wait: Duration,
}

/// Registers every query route. The caller registers a `web::Data<Authenticator>`.
pub fn configure(api: QueryApi) -> impl FnOnce(&mut web::ServiceConfig) {
    move |cfg| {
        cfg.app_data(web::Data::new(api))
            .route("/v1/budget", web::get().to(budget))
            .route("/v1/budget/reservations", web::get().to(reservations))
            .route("/v1/posts", web::get().to(posts))
            .route("/v1/posts/{post_id}", web::get().to(post))
            .route(
                "/v1/generations/{generation_id}",
                web::get().to(crate::generations::generation),
            )
            .route("/v1/usage", web::get().to(crate::generations::usage));
    }
}

/// Query parameters of `GET /v1/budget`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct BudgetQuery {
    period: Option<String>,
    min_position: Option<u64>,
}

/// Query parameters of `GET /v1/budget/reservations`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ReservationsQuery {
    period: Option<String>,
    status: Option<String>,
    limit: Option<u32>,
    min_position: Option<u64>,
}

/// Query parameters of `GET /v1/posts`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PostsQuery {
    status: Option<String>,
    channel: Option<String>,
    campaign_id: Option<Uuid>,
    limit: Option<u32>,
    cursor: Option<String>,
    min_position: Option<u64>,
}

/// Query parameters of `GET /v1/posts/{id}`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PostQuery {
    min_position: Option<u64>,
}

/// Body of `GET /v1/budget/reservations`.
#[derive(Debug, Serialize, schemars::JsonSchema)]
pub struct ReservationList {
    pub items: Vec<ReservationView>,
}

const POST_STATUSES: &[&str] = &[
    "draft",
    "scheduled",
    "publishing",
    "published",
    "partially_published",
    "failed",
    "cancelled",
    "failed_retryable",
    "unconfirmed",
    "removed",
];

pub(crate) fn viewer(req: &HttpRequest) -> Result<Principal, QueryError> {
    let auth = req
        .app_data::<web::Data<Authenticator>>()
        .ok_or_else(|| QueryError::Internal(anyhow::anyhow!("no authenticator registered")))?;
    let principal = auth.authenticate(req)?;
    principal.require(Role::Viewer)?;
    Ok(principal)
}

pub(crate) fn query<T: serde::de::DeserializeOwned>(req: &HttpRequest) -> Result<T, QueryError> {
    serde_urlencoded::from_str(req.query_string()).map_err(|e| QueryError::BadQuery(e.to_string()))
}

fn period(raw: Option<&str>) -> Result<Period, QueryError> {
    match raw {
        None => Ok(Period::containing(Utc::now())),
        Some(raw) => raw
            .parse()
            .map_err(|_| QueryError::BadQuery("period must look like YYYY-MM".into())),
    }
}

/// Waits for the read models to include `min_position`, if asked: every event of the
/// caller's tenant up to that position (other tenants' events do not change what this
/// tenant can see, and through a partitioned log they may be applied in any order).
pub(crate) async fn consistent(
    api: &QueryApi,
    tenant: Uuid,
    min_position: Option<u64>,
) -> Result<(), QueryError> {
    let Some(position) = min_position else {
        return Ok(());
    };
    let started = Instant::now();
    let timeout = || QueryError::ConsistencyTimeout {
        position,
        waited_ms: started.elapsed().as_millis(),
    };
    // A position the log has not reached yet: wait (bounded) for the log first. The
    // watch holds a head some writer read after its commit (and announced), so a
    // position a command answered with is nearly always there already and costs no
    // read; only below it is the store asked.
    let mut head = api.store.watch_head();
    let mut last_head = *head.borrow_and_update();
    if last_head < position {
        last_head = api
            .store
            .head()
            .await
            .map_err(|e| QueryError::Internal(e.into()))?;
    }
    while last_head < position {
        let remaining = api.max_consistency_wait.saturating_sub(started.elapsed());
        if remaining.is_zero() {
            return Err(timeout());
        }
        // The watch wakes on this process's appends; re-asking the store now and then
        // also sees other processes'.
        let pause = remaining.min(std::time::Duration::from_millis(100));
        let _ = tokio::time::timeout(pause, head.changed()).await;
        last_head = api
            .store
            .head()
            .await
            .map_err(|e| QueryError::Internal(e.into()))?;
    }
    let Some(needed) = api
        .store
        .last_tenant_position(tenant, position)
        .await
        .map_err(|e| QueryError::Internal(e.into()))?
    else {
        return Ok(());
    };
    let remaining = api.max_consistency_wait.saturating_sub(started.elapsed());
    if api
        .models
        .wait_for_tenant_position(tenant, needed, remaining)
        .await?
    {
        Ok(())
    } else {
        Err(timeout())
    }
}

#[tracing::instrument(skip_all)]
async fn budget(req: HttpRequest, api: web::Data<QueryApi>) -> Result<HttpResponse, QueryError> {
    let principal = viewer(&req)?;
    let q: BudgetQuery = query(&req)?;
    let period = period(q.period.as_deref())?;
    consistent(&api, principal.tenant_id, q.min_position).await?;
    match api.models.budget(principal.tenant_id, period).await? {
        Some(view) => Ok(HttpResponse::Ok().json(view)),
        None => Err(QueryError::BudgetNotConfigured(period.to_string())),
    }
}

#[tracing::instrument(skip_all)]
async fn reservations(
    req: HttpRequest,
    api: web::Data<QueryApi>,
) -> Result<HttpResponse, QueryError> {
    let principal = viewer(&req)?;
    let q: ReservationsQuery = query(&req)?;
    let period = period(q.period.as_deref())?;
    let status = match q.status.as_deref() {
        None => Some(ReservationStatus::Open),
        Some("all") => None,
        Some(raw) => Some(raw.parse::<ReservationStatus>().map_err(|()| {
            QueryError::BadQuery("status must be open, committed, released, expired or all".into())
        })?),
    };
    let limit = q.limit.unwrap_or(100);
    if !(1..=1000).contains(&limit) {
        return Err(QueryError::BadQuery("limit must be 1 to 1000".into()));
    }
    consistent(&api, principal.tenant_id, q.min_position).await?;
    let items = api
        .models
        .reservations(principal.tenant_id, period, status, limit)
        .await?;
    Ok(HttpResponse::Ok().json(ReservationList { items }))
}

#[tracing::instrument(skip_all)]
async fn posts(req: HttpRequest, api: web::Data<QueryApi>) -> Result<HttpResponse, QueryError> {
    let principal = viewer(&req)?;
    let q: PostsQuery = query(&req)?;
    if let Some(status) = q.status.as_deref()
        && !POST_STATUSES.contains(&status)
    {
        return Err(QueryError::BadQuery(format!(
            "status must be one of {}",
            POST_STATUSES.join(", ")
        )));
    }
    let limit = q.limit.unwrap_or(50);
    if !(1..=200).contains(&limit) {
        return Err(QueryError::BadQuery("limit must be 1 to 200".into()));
    }
    let after = q
        .cursor
        .as_deref()
        .map(decode_cursor)
        .transpose()
        .map_err(|e| QueryError::BadQuery(e.to_string()))?;
    consistent(&api, principal.tenant_id, q.min_position).await?;
    let filter = PostFilter {
        status: q.status,
        channel: q.channel,
        campaign_id: q.campaign_id,
        after,
        limit,
    };
    Ok(HttpResponse::Ok().json(api.models.posts(principal.tenant_id, &filter).await?))
}

#[tracing::instrument(skip_all)]
async fn post(
    req: HttpRequest,
    path: web::Path<String>,
    api: web::Data<QueryApi>,
) -> Result<HttpResponse, QueryError> {
    let principal = viewer(&req)?;
    let q: PostQuery = query(&req)?;
    // An id that is not a UUID names no post: answer exactly as for an unknown one.
    let Ok(post_id) = Uuid::parse_str(&path.into_inner()) else {
        return Err(QueryError::NotFound("post"));
    };
    consistent(&api, principal.tenant_id, q.min_position).await?;
    match api.models.post(principal.tenant_id, post_id).await? {
        Some(view) => Ok(HttpResponse::Ok().json(view)),
        None => Err(QueryError::NotFound("post")),
    }
}
