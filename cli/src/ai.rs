//! Turns the `[ai]` settings into the command side's [`AiPolicy`] and the workflow's
//! providers, refusing at start-up what would fail later (an unknown model named as a
//! default, a provider kind that does not exist, a tenant id that is not a UUID).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use chrono::TimeDelta;
use command_api::{AiPolicy, RateLimit, TenantPolicy};
use domain::pricing::{ModelPrice, ModelRef, PriceBook};
use domain::{Micros, TenantId};
use workflows::providers::{
    AnthropicConfig, BreakerConfig, CircuitBreaker, Guarded, OpenAiConfig, Provider,
    ProviderConfig, RetryPolicy, build,
};

use crate::settings::AiSettings;

/// Parses `provider/model`.
fn model_ref(field: &str, raw: &str) -> anyhow::Result<ModelRef> {
    match raw.split_once('/') {
        Some((provider, model)) if !provider.is_empty() && !model.is_empty() => {
            Ok(ModelRef::new(provider, model))
        }
        _ => bail!("ai.{field} must look like provider/model, not {raw:?}"),
    }
}

fn micros(field: &str, raw: i64) -> anyhow::Result<Micros> {
    Micros::new(raw).map_err(|_| anyhow::anyhow!("ai.models: {field} must not be negative"))
}

/// The generation policy the command side enforces.
pub fn policy(settings: &AiSettings) -> anyhow::Result<AiPolicy> {
    let mut policy = AiPolicy::local();
    if !settings.models.is_empty() {
        let models = settings
            .models
            .iter()
            .map(|m| {
                Ok(ModelPrice {
                    model: ModelRef::new(&m.provider, &m.model),
                    input_per_mtok: micros("input_micros_per_mtok", m.input_micros_per_mtok)?,
                    cached_input_per_mtok: micros(
                        "cached_input_micros_per_mtok",
                        m.cached_input_micros_per_mtok,
                    )?,
                    output_per_mtok: micros("output_micros_per_mtok", m.output_micros_per_mtok)?,
                    max_output_tokens: m.max_output_tokens,
                })
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        policy.price_book = PriceBook {
            version: settings.price_version.clone(),
            models,
        };
    }
    policy.default_model = model_ref("default_model", &settings.default_model)?;
    policy.fallback_model = match settings.fallback_model.as_str() {
        "" => None,
        raw => Some(model_ref("fallback_model", raw)?),
    };
    policy.reservation_ttl = TimeDelta::try_seconds(settings.reservation_ttl_seconds)
        .context("ai.reservation_ttl_seconds is out of range")?;
    policy.rate_limit = RateLimit {
        requests_per_minute: settings.requests_per_minute,
        tokens_per_minute: settings.tokens_per_minute,
    };
    for (tenant, overrides) in &settings.tenants {
        let id: TenantId = tenant
            .parse()
            .with_context(|| format!("ai.tenants: {tenant:?} is not a tenant id (UUID)"))?;
        let fallback_model = overrides
            .fallback_model
            .as_deref()
            .map(|m| model_ref("tenants.fallback_model", m))
            .transpose()?;
        let rate_limit = match (overrides.requests_per_minute, overrides.tokens_per_minute) {
            (None, None) => None,
            (requests, tokens) => Some(RateLimit {
                requests_per_minute: requests.unwrap_or(settings.requests_per_minute),
                tokens_per_minute: tokens.unwrap_or(settings.tokens_per_minute),
            }),
        };
        policy.tenants.insert(
            id,
            TenantPolicy {
                fallback_model,
                rate_limit,
            },
        );
    }
    policy.validate().map_err(|e| anyhow::anyhow!("ai: {e}"))?;
    Ok(policy)
}

/// The workflow's retry policy.
pub fn retry(settings: &AiSettings) -> RetryPolicy {
    RetryPolicy {
        max_attempts: settings.max_attempts.max(1),
        base_delay: Duration::from_millis(settings.retry_base_ms),
        max_delay: Duration::from_millis(settings.retry_max_ms),
    }
}

/// Every configured provider, each behind its own circuit breaker. `local` is always
/// there.
pub fn providers(settings: &AiSettings) -> anyhow::Result<HashMap<String, Arc<dyn Provider>>> {
    let breaker = BreakerConfig {
        failure_threshold: settings.breaker_failures.max(1),
        cool_down: Duration::from_millis(settings.breaker_cool_down_ms),
    };
    let guarded = |provider: Arc<dyn Provider>| -> Arc<dyn Provider> {
        Arc::new(Guarded::new(provider, CircuitBreaker::new(breaker)))
    };
    let mut out = HashMap::new();
    out.insert(
        "local".to_owned(),
        guarded(build(ProviderConfig::Local {
            latency: Duration::from_millis(settings.local_latency_ms),
        })?),
    );
    for (name, p) in &settings.providers {
        let timeout = Duration::from_millis(p.timeout_ms);
        let config = match p.kind.as_str() {
            "openai" => {
                let mut config = OpenAiConfig::new(&p.base_url, p.api_key.clone());
                config.name = name.clone();
                config.timeout = timeout;
                config.stream = p.stream;
                ProviderConfig::OpenAi(config)
            }
            "anthropic" => {
                let mut config = AnthropicConfig::new(&p.base_url, p.api_key.clone());
                config.timeout = timeout;
                config.stream = p.stream;
                ProviderConfig::Anthropic(config)
            }
            other => bail!("ai.providers.{name}.kind must be openai or anthropic, not {other:?}"),
        };
        let provider = build(config).with_context(|| format!("ai.providers.{name}"))?;
        out.insert(name.clone(), guarded(provider));
    }
    Ok(out)
}
