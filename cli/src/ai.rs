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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::settings::Settings;

    fn load(toml: &str) -> anyhow::Result<Settings> {
        let dir = tempfile::tempdir().expect("temp dir");
        let file = dir.path().join("tidemark.toml");
        std::fs::write(&file, toml).expect("write settings");
        Settings::load(Some(&file))
    }

    const FILE: &str = r#"
[ai]
default_model = "openai/gpt-4o-mini"
fallback_model = "local/local-small"
price_version = "2026-11-01"
requests_per_minute = 60

[[ai.models]]
provider = "openai"
model = "gpt-4o-mini"
input_micros_per_mtok = 150000
cached_input_micros_per_mtok = 75000
output_micros_per_mtok = 600000
max_output_tokens = 16384

[[ai.models]]
provider = "local"
model = "local-small"
input_micros_per_mtok = 150000
cached_input_micros_per_mtok = 15000
output_micros_per_mtok = 600000
max_output_tokens = 4096

[ai.providers.openai]
kind = "openai"
base_url = "http://127.0.0.1:1/v1"
api_key = "sk-do-not-print-me"

[ai.tenants."0193a1f2-7c4e-7b1a-9c2d-5e6f7a8b9c0d"]
requests_per_minute = 5
"#;

    #[test]
    fn the_documented_ai_section_loads_into_a_policy_and_providers() {
        let settings = load(FILE).expect("settings load");
        let policy = policy(&settings.ai).expect("valid policy");
        assert_eq!(policy.price_book.version, "2026-11-01");
        assert_eq!(
            policy
                .price_book
                .lookup("gpt-4o-mini")
                .map(|p| p.max_output_tokens),
            Some(16_384)
        );
        assert_eq!(policy.rate_limit.requests_per_minute, 60);
        let tenant: TenantId = "0193a1f2-7c4e-7b1a-9c2d-5e6f7a8b9c0d".parse().expect("id");
        assert_eq!(policy.rate_limit_for(tenant).requests_per_minute, 5);
        let providers = providers(&settings.ai).expect("providers");
        assert!(providers.contains_key("openai") && providers.contains_key("local"));
        assert!(!format!("{:?}", settings.ai).contains("do-not-print-me"));
    }

    #[test]
    fn a_default_model_the_price_book_lacks_is_refused_at_start_up() {
        let file = FILE.replace(
            "default_model = \"openai/gpt-4o-mini\"",
            "default_model = \"openai/gpt-imaginary\"",
        );
        let settings = load(&file).expect("settings load");
        let error = policy(&settings.ai).expect_err("unknown default");
        assert!(error.to_string().contains("gpt-imaginary"), "{error}");
    }

    #[test]
    fn an_unknown_provider_kind_is_refused() {
        let file = FILE.replace("kind = \"openai\"", "kind = \"cohere\"");
        let settings = load(&file).expect("settings load");
        let Err(error) = providers(&settings.ai) else {
            panic!("an unknown provider kind was accepted");
        };
        let error = error.to_string();
        assert!(error.contains("cohere"), "{error}");
    }

    #[test]
    fn without_an_ai_section_the_local_policy_applies() {
        let settings = Settings::load(None).expect("defaults");
        let policy = policy(&settings.ai).expect("valid");
        assert_eq!(policy.default_model, ModelRef::new("local", "local-large"));
        assert!(policy.price_book.get(&policy.default_model).is_some());
    }
}
