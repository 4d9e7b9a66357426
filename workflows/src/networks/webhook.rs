//! A generic outgoing webhook: posts are POSTed as JSON to a URL the tenant chose,
//! signed with Standard Webhooks headers so the receiver can check they came from us.
//!
//! The body is `{"type": "post.published", "tenant_id", "post_id", "channel",
//! "body"}`. `webhook-id` is the delivery's idempotency key, the same on every
//! attempt, so a receiver that remembers ids drops repeats; `webhook-timestamp` and
//! the signature are those of each attempt. Any 2xx means delivered; the post's id
//! on the other side is the answer's JSON `id` if there is one, else the key.
//!
//! A receiver cannot be asked afterwards whether an attempt arrived, so
//! [`WebhookAdapter::reconcile`] always answers `Unknown`. Webhook URLs often embed
//! a secret of their own, so `Debug` shows only their scheme and host.

use std::fmt;

use async_trait::async_trait;
use auth::webhooks::{HEADER_ID, HEADER_SIGNATURE, HEADER_TIMESTAMP, WebhookSecret, sign};
use chrono::Utc;
use reqwest::Url;
use reqwest::header::{CONTENT_TYPE, HeaderValue};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};

use super::{Delivered, Delivery, DeliveryError, NetworkAdapter, NetworkConfigError, http};

/// Where a channel's webhooks go and the secret they are signed with.
#[derive(Clone, Deserialize)]
pub struct WebhookConfig {
    /// The receiver's URL, http or https.
    pub url: String,
    /// `whsec_<base64>` (or raw bytes; see [`auth::webhooks`]).
    pub secret: SecretString,
}

impl fmt::Debug for WebhookConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WebhookConfig")
            .field("url", &redacted(&self.url))
            .field("secret", &"[redacted]")
            .finish()
    }
}

/// Delivers posts to one webhook receiver.
pub struct WebhookAdapter {
    client: reqwest::Client,
    url: Url,
    secret: WebhookSecret,
}

impl WebhookAdapter {
    /// Checks the URL and the secret and builds the adapter around `client`.
    pub fn new(
        config: &WebhookConfig,
        client: reqwest::Client,
    ) -> Result<Self, NetworkConfigError> {
        let url = Url::parse(&config.url).map_err(|error| NetworkConfigError::InvalidUrl {
            field: "webhook url",
            reason: error.to_string(),
        })?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(NetworkConfigError::InvalidUrl {
                field: "webhook url",
                reason: "the scheme is neither http nor https".into(),
            });
        }
        let secret = WebhookSecret::parse(config.secret.expose_secret())?;
        Ok(Self {
            client,
            url,
            secret,
        })
    }
}

impl fmt::Debug for WebhookAdapter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WebhookAdapter")
            .field("url", &redacted(self.url.as_str()))
            .finish_non_exhaustive()
    }
}

/// The JSON body of a `post.published` webhook.
#[derive(Serialize)]
struct Payload<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    tenant_id: String,
    post_id: String,
    channel: &'a str,
    body: &'a str,
}

#[async_trait]
impl NetworkAdapter for WebhookAdapter {
    fn name(&self) -> &'static str {
        "webhook"
    }

    #[tracing::instrument(
        name = "webhook.deliver",
        skip_all,
        fields(tenant = %delivery.tenant, post = %delivery.post, channel = %delivery.channel)
    )]
    async fn deliver(&self, delivery: &Delivery<'_>) -> Result<Delivered, DeliveryError> {
        let body = serde_json::to_vec(&Payload {
            kind: "post.published",
            tenant_id: delivery.tenant.to_string(),
            post_id: delivery.post.to_string(),
            channel: delivery.channel.as_str(),
            body: delivery.body,
        })
        .map_err(|error| DeliveryError::BadContent(format!("cannot encode the post: {error}")))?;
        let id = HeaderValue::from_str(delivery.idempotency_key).map_err(|_| {
            DeliveryError::BadContent("the idempotency key is not a valid header value".into())
        })?;
        let timestamp = Utc::now().timestamp();
        let signature = sign(&self.secret, delivery.idempotency_key, timestamp, &body);

        let request = self
            .client
            .post(self.url.clone())
            .header(CONTENT_TYPE, "application/json")
            .header(HEADER_ID, id)
            .header(HEADER_TIMESTAMP, timestamp)
            .header(HEADER_SIGNATURE, signature)
            .body(body);
        let response = http::send(request).await?;
        if !response.status().is_success() {
            return Err(http::refusal(response, Utc::now()).await);
        }
        // The 2xx status alone says the receiver took the post; its body is optional,
        // so a body that cannot be read or parsed only costs the receiver's id.
        let answer = http::read_body(response).await.unwrap_or_default();
        Ok(Delivered {
            network_post_id: receiver_id(&answer)
                .unwrap_or_else(|| delivery.idempotency_key.to_owned()),
            url: None,
        })
    }

    async fn reconcile(
        &self,
        _delivery: &Delivery<'_>,
    ) -> Result<Option<Delivered>, DeliveryError> {
        Err(DeliveryError::Unknown(
            "webhook receivers cannot be asked".into(),
        ))
    }
}

/// The `id` field of a JSON answer, a string or a number.
fn receiver_id(answer: &[u8]) -> Option<String> {
    let value: serde_json::Value = serde_json::from_slice(answer).ok()?;
    match value.get("id")? {
        serde_json::Value::String(id) if !id.is_empty() => Some(id.clone()),
        serde_json::Value::Number(id) => Some(id.to_string()),
        _ => None,
    }
}

/// A URL reduced to its scheme, host and port, since the path or query of a webhook
/// URL is often a credential.
fn redacted(raw: &str) -> String {
    match Url::parse(raw) {
        Ok(url) => {
            let port = url
                .port()
                .map(|port| format!(":{port}"))
                .unwrap_or_default();
            format!(
                "{}://{}{port}/[redacted]",
                url.scheme(),
                url.host_str().unwrap_or_default()
            )
        }
        Err(_) => "[invalid url]".into(),
    }
}
