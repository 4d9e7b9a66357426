//! Delivering posts to real social networks, with every failure classified by what
//! it means for a retry.
//!
//! The question that matters after a failed delivery is not "what went wrong" but
//! "is the post out there?". [`DeliveryError`] answers it: `Auth` and `BadContent`
//! will fail again until someone fixes them; `RateLimited` and `Transient` are known
//! not to have been delivered and may be retried; `Unknown` means the request may
//! have landed (a timeout after sending, a connection cut mid-answer, an unreadable
//! success), so it must become "unconfirmed" and be settled by
//! [`NetworkAdapter::reconcile`], never blindly retried into a duplicate post.
//!
//! Every attempt of one delivery carries the same idempotency key, which lets the
//! networks that support one (Mastodon) and the receivers of our webhooks drop
//! repeats. Adapters: [`mastodon::MastodonAdapter`], [`webhook::WebhookAdapter`];
//! the HTTP plumbing they share is in [`http`]. This sits beside the older
//! [`crate::network`] trait, which the publisher still uses.

pub mod http;
pub mod mastodon;
pub mod webhook;

use std::time::Duration;

use async_trait::async_trait;
use domain::{Channel, PostId, TenantId};
use serde::Deserialize;

pub use http::{HttpSettings, build_client};
pub use mastodon::{MastodonAdapter, MastodonConfig};
pub use webhook::{WebhookAdapter, WebhookConfig};

/// One post to deliver to one channel.
#[derive(Debug, Clone, Copy)]
pub struct Delivery<'a> {
    pub tenant: TenantId,
    pub post: PostId,
    pub channel: &'a Channel,
    pub body: &'a str,
    /// Deterministic: the same on every attempt of one delivery, so the network (or
    /// the webhook receiver) can recognise a repeat.
    pub idempotency_key: &'a str,
}

/// What a network answered for a delivered post.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivered {
    pub network_post_id: String,
    pub url: Option<String>,
}

/// Why a delivery failed, classified by what a retry would do.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DeliveryError {
    /// The network refused the credentials (401/403); permanent until they are fixed.
    #[error("the network refused the credentials: {0}")]
    Auth(String),
    /// The network refuses this content (400/404/413/422…); permanent.
    #[error("the network refused the content: {0}")]
    BadContent(String),
    /// Too many requests (429); not delivered, retry after the given wait if known.
    #[error("rate limited by the network (retry after {retry_after:?})")]
    RateLimited { retry_after: Option<Duration> },
    /// Known not delivered (5xx, no connection); safe to retry.
    #[error("the network is unavailable: {0}")]
    Transient(String),
    /// The request may or may not have landed; reconcile, never retry blindly.
    #[error("the outcome of the delivery is unknown: {0}")]
    Unknown(String),
}

impl DeliveryError {
    /// Stable machine code.
    pub fn code(&self) -> &'static str {
        match self {
            DeliveryError::Auth(_) => "network_auth_failed",
            DeliveryError::BadContent(_) => "network_refused_content",
            DeliveryError::RateLimited { .. } => "network_rate_limited",
            DeliveryError::Transient(_) => "network_unavailable",
            DeliveryError::Unknown(_) => "delivery_outcome_unknown",
        }
    }

    /// Whether trying again is safe and may succeed: only when the post is known not
    /// to have been delivered and the cause may pass.
    pub fn is_retryable(&self) -> bool {
        match self {
            DeliveryError::RateLimited { .. } | DeliveryError::Transient(_) => true,
            DeliveryError::Auth(_) | DeliveryError::BadContent(_) | DeliveryError::Unknown(_) => {
                false
            }
        }
    }
}

/// A social network or other destination that posts can be delivered to.
#[async_trait]
pub trait NetworkAdapter: Send + Sync {
    /// The network's name, for logs and metrics (`mastodon`, `webhook`).
    fn name(&self) -> &'static str;

    /// Delivers one post.
    async fn deliver(&self, delivery: &Delivery<'_>) -> Result<Delivered, DeliveryError>;

    /// Asks the network whether an earlier delivery whose outcome was unknown landed.
    /// `Ok(None)`: known not delivered. `Err(Unknown)`: the network cannot tell.
    async fn reconcile(&self, delivery: &Delivery<'_>) -> Result<Option<Delivered>, DeliveryError>;
}

/// Which network a channel posts to, with its credentials. `Debug` never shows a
/// token or secret.
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "network", rename_all = "snake_case")]
pub enum ChannelCredentials {
    Mastodon(MastodonConfig),
    Webhook(WebhookConfig),
}

impl ChannelCredentials {
    /// The adapter for these credentials, sharing `client`'s connection pool.
    pub fn adapter(
        &self,
        client: &reqwest::Client,
    ) -> Result<Box<dyn NetworkAdapter>, NetworkConfigError> {
        Ok(match self {
            ChannelCredentials::Mastodon(config) => {
                Box::new(MastodonAdapter::new(config, client.clone())?)
            }
            ChannelCredentials::Webhook(config) => {
                Box::new(WebhookAdapter::new(config, client.clone())?)
            }
        })
    }
}

/// Why an adapter or its HTTP client cannot be built from its configuration. The
/// messages never repeat a URL or a secret, since URLs may carry one.
#[derive(Debug, thiserror::Error)]
pub enum NetworkConfigError {
    #[error("{field} is not a valid http(s) URL: {reason}")]
    InvalidUrl { field: &'static str, reason: String },
    #[error("{field} cannot be sent in an HTTP header")]
    InvalidHeader { field: &'static str },
    #[error("the webhook secret is unusable: {0}")]
    InvalidSecret(#[from] auth::webhooks::WebhookSecretError),
    #[error("the HTTP client could not be built: {0}")]
    Client(#[source] reqwest::Error),
}
