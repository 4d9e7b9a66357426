//! The inbound webhook edge: `POST /v1/webhooks/<network>`, where networks call back
//! about delivered posts.
//!
//! A callback carries no bearer token; it is trusted because its Standard Webhooks
//! signature, computed over the raw body, verifies against one of the network's
//! configured secrets (several during a rotation) within the 5-minute tolerance. Only
//! then is the body read, and the tenant it names is used — the signature is the
//! credential here, so a body cannot name a tenant its sender was not given the
//! secret for. A `webhook-id` is remembered durably as an idempotency record of that
//! tenant (in the same transaction as the events it caused), so a replayed or
//! redelivered callback is answered as before and changes nothing. Unsigned,
//! mis-signed and stale callbacks are refused with a problem body and change nothing.
//!
//! The body is `{"type": "post.delivery_confirmed" | "post.removed", "tenant_id",
//! "post_id", "channel"?, "network_post_id", "url"?}`. `channel` names the post's
//! target; without it the callback lands on the post's only target, the one already
//! holding `network_post_id`, or (a confirmation) the one delivery waiting for an
//! answer — else it is refused with `channel_required`.

use std::collections::HashMap;
use std::sync::Arc;

use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, web};
use auth::Problem;
use auth::webhooks::{Verifier, WebhookError, WebhookHeaders};
use domain::post::Command;
use domain::{Channel, PostId, TenantId};
use eventlog::{IdempotencyRecord, IdempotentResponse};
use serde::Deserialize;
use serde_json::{Value, json};
use uuid::Uuid;

use crate::error::ApiError;
use crate::http::{IDEMPOTENT_REPLAYED, read_body};
use crate::service::{CommandService, Envelope};

/// What the webhook route needs at run time: the verifier of each network.
#[derive(Clone)]
pub struct InboundWebhooks {
    pub service: Arc<CommandService>,
    pub verifiers: Arc<HashMap<String, Verifier>>,
    pub max_body_bytes: usize,
}

/// A verified callback's body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Callback {
    #[serde(rename = "type")]
    kind: CallbackType,
    tenant_id: Uuid,
    post_id: Uuid,
    #[serde(default)]
    channel: Option<String>,
    network_post_id: String,
    #[serde(default)]
    url: Option<String>,
}

#[derive(Debug, Clone, Copy, Deserialize)]
enum CallbackType {
    #[serde(rename = "post.delivery_confirmed")]
    DeliveryConfirmed,
    #[serde(rename = "post.removed")]
    Removed,
}

/// Registers `POST /v1/webhooks/{network}`.
pub fn configure_webhooks(inbound: InboundWebhooks) -> impl FnOnce(&mut web::ServiceConfig) {
    move |cfg| {
        cfg.app_data(web::Data::new(inbound));
        cfg.route("/v1/webhooks/{network}", web::post().to(handle));
    }
}

fn refuse(status: StatusCode, code: &'static str, detail: impl Into<String>) -> HttpResponse {
    Problem::new(status, code, detail.into()).to_response()
}

fn webhook_problem(error: &WebhookError) -> HttpResponse {
    let status = match error {
        WebhookError::MissingHeader(_) | WebhookError::InvalidTimestamp => StatusCode::BAD_REQUEST,
        WebhookError::StaleTimestamp | WebhookError::InvalidSignature => StatusCode::UNAUTHORIZED,
    };
    refuse(status, error.code(), error.to_string())
}

#[tracing::instrument(name = "webhook", skip_all, fields(network = %path))]
async fn handle(
    req: HttpRequest,
    path: web::Path<String>,
    payload: web::Payload,
    inbound: web::Data<InboundWebhooks>,
) -> Result<HttpResponse, ApiError> {
    let network = path.into_inner();
    let Some(verifier) = inbound.verifiers.get(&network) else {
        return Ok(refuse(
            StatusCode::NOT_FOUND,
            "unknown_webhook_network",
            "no webhook secret is configured for this network",
        ));
    };
    let body = read_body(&req, payload, inbound.max_body_bytes).await?;
    let headers = WebhookHeaders::from_lookup(|name| {
        req.headers()
            .get(name)
            .and_then(|value| value.to_str().ok())
    });
    let verified = match verifier.verify(&headers, &body, inbound.service.now()) {
        Ok(verified) => verified,
        Err(error) => {
            tracing::warn!(code = error.code(), "refused an unverified webhook");
            return Ok(webhook_problem(&error));
        }
    };
    let callback: Callback = match serde_json::from_slice(&body) {
        Ok(callback) => callback,
        Err(error) => {
            return Ok(refuse(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid_webhook_body",
                format!("the callback is not one Tidemark understands: {error}"),
            ));
        }
    };
    let channel = match callback.channel.as_deref().map(Channel::new).transpose() {
        Ok(channel) => channel,
        Err(error) => {
            return Ok(refuse(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid_webhook_body",
                format!("the callback's channel is not a channel slug: {error}"),
            ));
        }
    };
    let tenant = TenantId::from_uuid(callback.tenant_id);
    // The spaces keep this key out of reach of a client's `Idempotency-Key` (visible
    // ASCII only), so a client cannot claim a webhook id before the network sends it.
    let key = format!("webhook {network} {}", verified.id);
    let store = inbound.service.store();
    if let Some(stored) = store
        .idempotent_response(tenant.as_uuid(), &key)
        .await
        .map_err(|e| ApiError::Internal(e.into()))?
    {
        tracing::info!(tenant = %tenant, webhook_id = %verified.id, "duplicate webhook ignored");
        let status = StatusCode::from_u16(stored.status).unwrap_or(StatusCode::OK);
        return Ok(HttpResponse::build(status)
            .insert_header((IDEMPOTENT_REPLAYED, "true"))
            .json(stored.body));
    }
    let command = match callback.kind {
        CallbackType::DeliveryConfirmed => Command::ConfirmDelivery {
            channel,
            network_post_id: callback.network_post_id,
            url: callback.url,
        },
        CallbackType::Removed => Command::RecordRemoved {
            channel,
            network_post_id: callback.network_post_id,
        },
    };
    let answer = json!({ "post_id": callback.post_id.to_string(), "webhook_id": verified.id });
    let response = IdempotentResponse {
        request_hash: key.clone(),
        status: 200,
        body: answer.clone(),
    };
    let envelope = Envelope {
        tenant,
        actor: format!("webhook:{network}"),
        correlation_id: Uuid::now_v7(),
        causation_id: None,
        idempotency: Some(IdempotencyRecord {
            key: key.clone(),
            response: response.clone(),
        }),
    };
    let post = PostId::from_uuid(callback.post_id);
    match inbound.service.post(&envelope, post, None, command).await {
        Ok(done) => {
            if done.appended.is_none() {
                // Nothing changed (a repeated confirmation), so no event carried the
                // id; remember it on its own.
                remember(&inbound.service, tenant, &key, &response).await;
            }
            Ok(HttpResponse::Ok().json(answer))
        }
        Err(error) => {
            let error = ApiError::Command(error);
            let problem = error.problem();
            if problem.status < 500 {
                let refused = IdempotentResponse {
                    request_hash: key.clone(),
                    status: problem.status,
                    body: serde_json::to_value(&problem).unwrap_or(Value::Null),
                };
                remember(&inbound.service, tenant, &key, &refused).await;
            }
            Err(error)
        }
    }
}

async fn remember(
    service: &CommandService,
    tenant: TenantId,
    key: &str,
    response: &IdempotentResponse,
) {
    if let Err(error) = service
        .store()
        .remember_response(tenant.as_uuid(), key, response)
        .await
    {
        tracing::warn!(error = ?error, "could not remember a webhook id");
    }
}
