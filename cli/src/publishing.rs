//! Post delivery wiring: the network adapter of each configured channel, the retry
//! policy of deliveries and the verifiers of inbound webhooks, built from the
//! `[publishing]` settings and checked at start-up, so a bad channel key, URL or
//! secret stops the process with a message that names the setting, never its value.

use std::collections::HashMap;
use std::time::Duration;

use anyhow::Context;
use auth::webhooks::{Verifier, WebhookSecret};
use domain::{Channel, TenantId};
use secrecy::ExposeSecret;
use uuid::Uuid;
use workflows::network::Networks;
use workflows::networks::{HttpSettings, build_client};
use workflows::providers::RetryPolicy;

use crate::settings::PublishingSettings;

/// The adapter of every configured channel; other channels publish to `local`.
pub fn networks(settings: &PublishingSettings) -> anyhow::Result<Networks> {
    let client = build_client(&HttpSettings {
        connect_timeout: Duration::from_millis(settings.connect_timeout_ms),
        request_timeout: Duration::from_millis(settings.request_timeout_ms),
    })?;
    let mut channels = Vec::new();
    for (key, credentials) in &settings.channels {
        let (tenant, channel) = key.split_once('/').with_context(|| {
            format!("publishing.channels.\"{key}\" must be \"<tenant uuid>/<channel>\"")
        })?;
        let tenant = Uuid::parse_str(tenant)
            .with_context(|| format!("publishing.channels.\"{key}\": the tenant is not a UUID"))?;
        let channel = Channel::new(channel)
            .with_context(|| format!("publishing.channels.\"{key}\": invalid channel"))?;
        channels.push((TenantId::from_uuid(tenant), channel, credentials));
    }
    Networks::configure(channels, &client).context("invalid publishing.channels entry")
}

/// Attempts and back-off of deliveries.
pub fn retry(settings: &PublishingSettings) -> RetryPolicy {
    RetryPolicy {
        max_attempts: settings.max_attempts.max(1),
        base_delay: Duration::from_millis(settings.retry_base_ms),
        max_delay: Duration::from_millis(settings.retry_max_ms.max(settings.retry_base_ms)),
    }
}

/// The verifier of each network's inbound webhooks (5-minute tolerance).
pub fn verifiers(settings: &PublishingSettings) -> anyhow::Result<HashMap<String, Verifier>> {
    let mut verifiers = HashMap::new();
    for (network, secrets) in &settings.webhook_secrets {
        let secrets = secrets
            .iter()
            .map(|secret| WebhookSecret::parse(secret.expose_secret()))
            .collect::<Result<Vec<_>, _>>()
            .with_context(|| format!("publishing.webhook_secrets.{network}"))?;
        let verifier = Verifier::new(secrets)
            .with_context(|| format!("publishing.webhook_secrets.{network}"))?;
        verifiers.insert(network.clone(), verifier);
    }
    Ok(verifiers)
}
