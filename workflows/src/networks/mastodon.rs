//! Mastodon (and other servers speaking its statuses API): a post becomes a status.
//!
//! `POST {base_url}/api/v1/statuses` with `Authorization: Bearer <token>`, the JSON
//! body `{"status": <body>}` and `Idempotency-Key: <key>`; the answer is the status,
//! whose `id` and `url` are kept. 401/403 mean the token is wrong, 422 that the
//! server refuses the text (its JSON `error` says why), 429 that we are rate limited
//! (`Retry-After`, else the ISO time in `X-RateLimit-Reset`), 5xx that it is down.
//!
//! Mastodon remembers an `Idempotency-Key` for one hour per account: a repeated
//! request with the same key answers the status already created instead of posting
//! again. [`MastodonAdapter::reconcile`] relies on that and simply repeats the POST
//! with the same key: it answers the status whether the first attempt landed or not
//! (if it had not, it lands now), so it never answers `Ok(None)`. After that hour
//! the key is forgotten and a repeat posts a second status, so reconcile must run
//! within the hour of the first attempt; later, the outcome can only be checked by
//! a person.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use reqwest::Url;
use reqwest::header::{AUTHORIZATION, HeaderMap, HeaderValue};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

use super::{Delivered, Delivery, DeliveryError, NetworkAdapter, NetworkConfigError, http};

/// Header naming the absolute time a Mastodon rate limit resets.
const RATE_LIMIT_RESET: &str = "x-ratelimit-reset";

/// The account a channel posts as. `Debug` shows the server, never the token.
#[derive(Debug, Clone, Deserialize)]
pub struct MastodonConfig {
    /// The server, e.g. `https://mastodon.social`.
    pub base_url: String,
    /// An access token with the `write:statuses` scope.
    pub access_token: SecretString,
}

/// Posts statuses as one Mastodon account.
pub struct MastodonAdapter {
    client: reqwest::Client,
    statuses_url: Url,
    /// `Bearer <token>`, marked sensitive so it is left out of reqwest's own `Debug`.
    authorization: HeaderValue,
}

impl MastodonAdapter {
    /// Checks the server URL and the token and builds the adapter around `client`.
    pub fn new(
        config: &MastodonConfig,
        client: reqwest::Client,
    ) -> Result<Self, NetworkConfigError> {
        let invalid_url = |reason: String| NetworkConfigError::InvalidUrl {
            field: "mastodon base_url",
            reason,
        };
        let mut base =
            Url::parse(&config.base_url).map_err(|error| invalid_url(error.to_string()))?;
        if !matches!(base.scheme(), "http" | "https") {
            return Err(invalid_url("the scheme is neither http nor https".into()));
        }
        // `join` replaces the last path segment unless the base ends in a slash, and a
        // server may live under a path.
        if !base.path().ends_with('/') {
            base.set_path(&format!("{}/", base.path()));
        }
        let statuses_url = base
            .join("api/v1/statuses")
            .map_err(|error| invalid_url(error.to_string()))?;
        let mut authorization =
            HeaderValue::from_str(&format!("Bearer {}", config.access_token.expose_secret()))
                .map_err(|_| NetworkConfigError::InvalidHeader {
                    field: "mastodon access_token",
                })?;
        authorization.set_sensitive(true);
        Ok(Self {
            client,
            statuses_url,
            authorization,
        })
    }

    /// Creates the status, or gets the one already created with this key.
    async fn post_status(&self, delivery: &Delivery<'_>) -> Result<Delivered, DeliveryError> {
        let key = HeaderValue::from_str(delivery.idempotency_key).map_err(|_| {
            DeliveryError::BadContent("the idempotency key is not a valid header value".into())
        })?;
        let request = self
            .client
            .post(self.statuses_url.clone())
            .header(AUTHORIZATION, self.authorization.clone())
            .header("Idempotency-Key", key)
            .json(&serde_json::json!({ "status": delivery.body }));
        let response = http::send(request).await?;
        if !response.status().is_success() {
            let now = Utc::now();
            let reset = rate_limit_reset(response.headers(), now);
            let mut error = http::refusal(response, now).await;
            if let DeliveryError::RateLimited { retry_after } = &mut error {
                *retry_after = retry_after.or(reset);
            }
            return Err(error);
        }
        let answer = http::read_body(response).await?;
        // The status was created, but without its id we cannot say which one.
        let status: Status = serde_json::from_slice(&answer).map_err(|error| {
            DeliveryError::Unknown(format!("the created status could not be read: {error}"))
        })?;
        Ok(Delivered {
            network_post_id: status.id,
            url: status.url,
        })
    }
}

impl std::fmt::Debug for MastodonAdapter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MastodonAdapter")
            .field("statuses_url", &self.statuses_url.as_str())
            .finish_non_exhaustive()
    }
}

/// The parts of Mastodon's `Status` entity that are kept.
#[derive(Deserialize)]
struct Status {
    id: String,
    url: Option<String>,
}

#[async_trait]
impl NetworkAdapter for MastodonAdapter {
    fn name(&self) -> &'static str {
        "mastodon"
    }

    #[tracing::instrument(
        name = "mastodon.deliver",
        skip_all,
        fields(tenant = %delivery.tenant, post = %delivery.post, channel = %delivery.channel)
    )]
    async fn deliver(&self, delivery: &Delivery<'_>) -> Result<Delivered, DeliveryError> {
        self.post_status(delivery).await
    }

    /// Repeats the POST with the same `Idempotency-Key`; see the module docs for why
    /// this cannot post twice within the hour.
    #[tracing::instrument(
        name = "mastodon.reconcile",
        skip_all,
        fields(tenant = %delivery.tenant, post = %delivery.post, channel = %delivery.channel)
    )]
    async fn reconcile(&self, delivery: &Delivery<'_>) -> Result<Option<Delivered>, DeliveryError> {
        self.post_status(delivery).await.map(Some)
    }
}

/// The wait until `X-RateLimit-Reset` (an ISO 8601 time), if the header is there.
fn rate_limit_reset(headers: &HeaderMap, now: DateTime<Utc>) -> Option<std::time::Duration> {
    let value = headers.get(RATE_LIMIT_RESET)?.to_str().ok()?;
    let at = DateTime::parse_from_rfc3339(value.trim()).ok()?;
    Some(http::until(at.to_utc(), now))
}
