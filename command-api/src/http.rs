//! The HTTP edge of the command side: `POST /v1/commands/<name>`.
//!
//! Each request is authenticated, checked for its role, read with a size limit, parsed
//! strictly (unknown fields are refused), planned into a domain command and run by the
//! [`CommandService`]. An `Idempotency-Key` makes a retry answer what the first
//! attempt answered: the key is stored in the same transaction as the events.

use std::sync::Arc;

use actix_web::http::StatusCode;
use actix_web::http::header::{CONTENT_LENGTH, CONTENT_TYPE};
use actix_web::{HttpRequest, HttpResponse, web};
use auth::{Authenticator, Principal};
use eventlog::{IdempotencyRecord, IdempotentResponse};
use futures::StreamExt;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::commands::{Action, COMMANDS, CommandRoute};
use crate::error::ApiError;
use crate::service::{CommandService, Envelope};

/// Header that carries the idempotency key.
pub const IDEMPOTENCY_KEY: &str = "idempotency-key";
/// Header set on an answer replayed from an earlier request with the same key.
pub const IDEMPOTENT_REPLAYED: &str = "idempotent-replayed";

/// What the command routes need at run time.
#[derive(Clone)]
pub struct CommandApi {
    pub service: Arc<CommandService>,
    /// Largest accepted request body, in bytes.
    pub max_body_bytes: usize,
}

/// Registers every command route. The caller registers a `web::Data<Authenticator>`.
pub fn configure(api: CommandApi) -> impl FnOnce(&mut web::ServiceConfig) {
    move |cfg| {
        cfg.app_data(web::Data::new(api));
        for route in COMMANDS {
            cfg.route(
                &format!("/v1/commands/{}", route.name),
                web::post().to(
                    move |req: HttpRequest, payload: web::Payload, api: web::Data<CommandApi>| {
                        handle(route, req, payload, api)
                    },
                ),
            );
        }
    }
}

#[tracing::instrument(name = "command", skip_all, fields(command = route.name))]
async fn handle(
    route: &'static CommandRoute,
    req: HttpRequest,
    payload: web::Payload,
    api: web::Data<CommandApi>,
) -> Result<HttpResponse, ApiError> {
    let principal = authenticate(&req)?;
    principal.require(route.role)?;
    let key = idempotency_key(&req)?;
    let content_type = req
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if !content_type
        .split(';')
        .next()
        .is_some_and(|m| m.trim().eq_ignore_ascii_case("application/json"))
    {
        return Err(ApiError::UnsupportedMediaType);
    }
    let body = read_body(&req, payload, api.max_body_bytes).await?;
    let value: Value =
        serde_json::from_slice(&body).map_err(|e| ApiError::MalformedJson(e.to_string()))?;
    // serde would read a struct from an array of its fields in order; a command body
    // must name its fields.
    if !value.is_object() {
        return Err(ApiError::InvalidBody(
            "the body must be a JSON object".into(),
        ));
    }
    let request_hash = request_hash(route.name, &value);
    let tenant = domain::TenantId::from_uuid(principal.tenant_id);
    let store = api.service.store();

    if let Some(key) = &key
        && let Some(stored) = store
            .idempotent_response(principal.tenant_id, key)
            .await
            .map_err(|e| ApiError::Internal(e.into()))?
    {
        return replay(stored, &request_hash);
    }

    let planned = (route.plan)(value, api.service.now())?;
    let status = route.status;
    let envelope = Envelope {
        tenant,
        actor: principal.subject.clone(),
        correlation_id: Uuid::now_v7(),
        causation_id: None,
        idempotency: key.as_ref().map(|key| IdempotencyRecord {
            key: key.clone(),
            response: IdempotentResponse {
                request_hash: request_hash.clone(),
                status,
                body: Value::Object(planned.response.clone()),
            },
        }),
    };
    tracing::info!(
        tenant = %tenant,
        command = route.name,
        correlation_id = %envelope.correlation_id,
        "handling command"
    );
    let outcome = match planned.action {
        Action::Budget { period, command } => api.service.budget(&envelope, period, command).await,
        Action::Post {
            post_id,
            expected_version,
            command,
        } => {
            api.service
                .post(&envelope, post_id, expected_version, command)
                .await
        }
        Action::Generate(request) => api.service.generate(&envelope, request).await,
    };
    match outcome {
        Ok(done) => {
            let position = match done.appended {
                Some(appended) => appended.last_position,
                None => store
                    .head()
                    .await
                    .map_err(|e| ApiError::Internal(e.into()))?,
            };
            let mut body = planned.response;
            body.insert("position".to_owned(), json!(position));
            let status = StatusCode::from_u16(status).unwrap_or(StatusCode::OK);
            Ok(HttpResponse::build(status).json(body))
        }
        Err(crate::service::CommandError::IdempotencyKeyTaken) => {
            // A concurrent request with the same key stored its answer first.
            let key = key.unwrap_or_default();
            match store
                .idempotent_response(principal.tenant_id, &key)
                .await
                .map_err(|e| ApiError::Internal(e.into()))?
            {
                Some(stored) => replay(stored, &request_hash),
                None => Err(ApiError::Command(
                    crate::service::CommandError::IdempotencyKeyTaken,
                )),
            }
        }
        Err(error) => {
            let error = ApiError::Command(error);
            let problem = error.problem();
            // A business rejection is an answer too: a retry with the same key gets it
            // again. Server faults are not remembered, so a retry can succeed.
            // A rejection is remembered under its key so a retry gets the same answer;
            // a rate limit is not, since the retry it asks for must be able to pass.
            if let Some(key) = &key
                && problem.status < 500
                && problem.status != 429
            {
                let response = IdempotentResponse {
                    request_hash,
                    status: problem.status,
                    body: serde_json::to_value(&problem).unwrap_or(Value::Null),
                };
                if let Err(e) = store
                    .remember_response(principal.tenant_id, key, &response)
                    .await
                {
                    tracing::warn!(error = ?e, "could not remember a rejection under its idempotency key");
                }
            }
            Err(error)
        }
    }
}

fn authenticate(req: &HttpRequest) -> Result<Principal, ApiError> {
    let auth = req
        .app_data::<web::Data<Authenticator>>()
        .ok_or_else(|| ApiError::Internal(anyhow::anyhow!("no authenticator registered")))?;
    Ok(auth.authenticate(req)?)
}

fn idempotency_key(req: &HttpRequest) -> Result<Option<String>, ApiError> {
    let Some(raw) = req.headers().get(IDEMPOTENCY_KEY) else {
        return Ok(None);
    };
    let key = raw.to_str().map_err(|_| ApiError::InvalidIdempotencyKey)?;
    if key.is_empty() || key.len() > 255 || !key.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(ApiError::InvalidIdempotencyKey);
    }
    Ok(Some(key.to_owned()))
}

/// Reads the body, refusing it as soon as it passes `limit` bytes.
pub(crate) async fn read_body(
    req: &HttpRequest,
    mut payload: web::Payload,
    limit: usize,
) -> Result<Vec<u8>, ApiError> {
    let declared = req
        .headers()
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|len| len > limit) {
        return Err(ApiError::PayloadTooLarge { limit });
    }
    let mut body = Vec::with_capacity(declared.unwrap_or(0));
    while let Some(chunk) = payload.next().await {
        let chunk = chunk.map_err(|_| ApiError::BodyUnreadable)?;
        if body.len() + chunk.len() > limit {
            return Err(ApiError::PayloadTooLarge { limit });
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// SHA-256 of the command name and the canonical body (serde_json sorts object keys),
/// so the same request with its keys in another order is still the same request.
fn request_hash(command: &str, body: &Value) -> String {
    let mut hasher = Sha256::new();
    hasher.update(command.as_bytes());
    hasher.update(b"\n");
    hasher.update(body.to_string().as_bytes());
    hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn replay(stored: IdempotentResponse, request_hash: &str) -> Result<HttpResponse, ApiError> {
    if stored.request_hash != request_hash {
        return Err(ApiError::IdempotencyKeyReused);
    }
    let status = StatusCode::from_u16(stored.status).unwrap_or(StatusCode::OK);
    let mut response = HttpResponse::build(status);
    response.insert_header((IDEMPOTENT_REPLAYED, "true"));
    if status.is_success() {
        Ok(response.json(stored.body))
    } else {
        response.insert_header((CONTENT_TYPE, auth::problem::CONTENT_TYPE));
        Ok(response.json(stored.body))
    }
}
