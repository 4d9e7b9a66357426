//! What `generate-content` needs beyond the domain: the price book and model choices
//! (the AI policy), and per-tenant rate limits.
//!
//! The policy is configuration, read once at start: the price book, the default model,
//! and the cheaper model non-core work falls back to above the soft limit (one for all
//! tenants, overridable per tenant). The rate limiter is a pair of token buckets per
//! tenant (requests and tokens per minute) kept in this process's memory; with several
//! command-api processes each enforces the limit on its own share of the traffic.

use std::collections::HashMap;
use std::sync::Mutex;

use chrono::{DateTime, TimeDelta, Utc};
use domain::TenantId;
use domain::pricing::{ModelPrice, ModelRef, PriceBook};

/// Requests and tokens a tenant may use per minute.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimit {
    pub requests_per_minute: u32,
    pub tokens_per_minute: u64,
}

impl Default for RateLimit {
    fn default() -> Self {
        Self {
            requests_per_minute: 1_200,
            tokens_per_minute: 4_000_000,
        }
    }
}

/// One tenant's overrides of the policy.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TenantPolicy {
    pub fallback_model: Option<ModelRef>,
    pub rate_limit: Option<RateLimit>,
}

/// The AI policy: prices, model choices and limits.
#[derive(Debug, Clone)]
pub struct AiPolicy {
    pub price_book: PriceBook,
    /// The model used when a request names none.
    pub default_model: ModelRef,
    /// The cheaper model non-core work falls back to above the soft limit, and any
    /// generation falls back to when its own model fails.
    pub fallback_model: Option<ModelRef>,
    /// How long a generation's reservation is held before it expires by itself.
    pub reservation_ttl: TimeDelta,
    pub rate_limit: RateLimit,
    pub tenants: HashMap<TenantId, TenantPolicy>,
}

impl AiPolicy {
    /// The embedded default: one local model, priced so that costs are visible.
    pub fn local() -> Self {
        let small = ModelRef::new("local", "local-small");
        let large = ModelRef::new("local", "local-large");
        let price = |model: &ModelRef, input: i64, output: i64| ModelPrice {
            model: model.clone(),
            input_per_mtok: domain::Micros::new(input).unwrap_or_default(),
            cached_input_per_mtok: domain::Micros::new(input / 10).unwrap_or_default(),
            output_per_mtok: domain::Micros::new(output).unwrap_or_default(),
            max_output_tokens: 4_096,
        };
        Self {
            price_book: PriceBook {
                version: "local-1".to_owned(),
                models: vec![
                    price(&large, 2_500_000, 10_000_000),
                    price(&small, 150_000, 600_000),
                ],
            },
            default_model: large,
            fallback_model: Some(small),
            reservation_ttl: TimeDelta::minutes(15),
            rate_limit: RateLimit::default(),
            tenants: HashMap::new(),
        }
    }

    /// The fallback model for a tenant: its own, else the policy's.
    pub fn fallback_for(&self, tenant: TenantId) -> Option<&ModelRef> {
        self.tenants
            .get(&tenant)
            .and_then(|t| t.fallback_model.as_ref())
            .or(self.fallback_model.as_ref())
    }

    pub fn rate_limit_for(&self, tenant: TenantId) -> RateLimit {
        self.tenants
            .get(&tenant)
            .and_then(|t| t.rate_limit)
            .unwrap_or(self.rate_limit)
    }

    /// Checks that every model the policy names is in the price book.
    pub fn validate(&self) -> Result<(), String> {
        let named = std::iter::once(&self.default_model)
            .chain(self.fallback_model.iter())
            .chain(
                self.tenants
                    .values()
                    .filter_map(|t| t.fallback_model.as_ref()),
            );
        for model in named {
            if self.price_book.get(model).is_none() {
                return Err(format!("model {model} is not in the price book"));
            }
        }
        if self.reservation_ttl < TimeDelta::seconds(1)
            || self.reservation_ttl > domain::budget::MAX_TTL
        {
            return Err("the reservation ttl must be between one second and seven days".into());
        }
        Ok(())
    }
}

/// Per-tenant token buckets for requests and tokens.
#[derive(Debug, Default)]
pub struct RateLimiter {
    buckets: Mutex<HashMap<TenantId, Buckets>>,
}

#[derive(Debug, Clone, Copy)]
struct Buckets {
    requests: f64,
    tokens: f64,
    at: DateTime<Utc>,
}

impl RateLimiter {
    /// Takes one request and `tokens` tokens from the tenant's buckets, or answers how
    /// long to wait until both would have enough. A refused request takes nothing.
    pub fn acquire(
        &self,
        tenant: TenantId,
        limit: RateLimit,
        tokens: u64,
        now: DateTime<Utc>,
    ) -> Result<(), TimeDelta> {
        let requests_cap = f64::from(limit.requests_per_minute.max(1));
        let tokens_cap = limit.tokens_per_minute.max(1) as f64;
        let mut buckets = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        let bucket = buckets.entry(tenant).or_insert(Buckets {
            requests: requests_cap,
            tokens: tokens_cap,
            at: now,
        });
        let elapsed = (now - bucket.at).num_milliseconds().max(0) as f64 / 60_000.0;
        bucket.requests = (bucket.requests + elapsed * requests_cap).min(requests_cap);
        bucket.tokens = (bucket.tokens + elapsed * tokens_cap).min(tokens_cap);
        bucket.at = now;
        // A request larger than a whole minute's allowance is measured against a full
        // bucket, so it waits for one instead of never passing.
        let wanted = (tokens as f64).min(tokens_cap);
        if bucket.requests >= 1.0 && bucket.tokens >= wanted {
            bucket.requests -= 1.0;
            bucket.tokens -= wanted;
            return Ok(());
        }
        let wait_requests = (1.0 - bucket.requests).max(0.0) / requests_cap;
        let wait_tokens = (wanted - bucket.tokens).max(0.0) / tokens_cap;
        let minutes = wait_requests.max(wait_tokens);
        Err(TimeDelta::milliseconds((minutes * 60_000.0).ceil() as i64))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use uuid::Uuid;

    fn at(seconds: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000 + seconds, 0).expect("valid time")
    }

    #[test]
    fn a_tenant_gets_its_allowance_then_waits_for_the_refill() {
        let limiter = RateLimiter::default();
        let tenant = TenantId::from_uuid(Uuid::from_u128(1));
        let limit = RateLimit {
            requests_per_minute: 2,
            tokens_per_minute: 1_000,
        };
        assert!(limiter.acquire(tenant, limit, 10, at(0)).is_ok());
        assert!(limiter.acquire(tenant, limit, 10, at(0)).is_ok());
        let wait = limiter
            .acquire(tenant, limit, 10, at(0))
            .expect_err("third request in the minute");
        assert_eq!(wait, TimeDelta::seconds(30));
        assert!(limiter.acquire(tenant, limit, 10, at(30)).is_ok());
        let other = TenantId::from_uuid(Uuid::from_u128(2));
        assert!(
            limiter.acquire(other, limit, 10, at(30)).is_ok(),
            "buckets are per tenant"
        );
    }

    #[test]
    fn tokens_are_limited_separately_and_a_refusal_takes_nothing() {
        let limiter = RateLimiter::default();
        let tenant = TenantId::from_uuid(Uuid::from_u128(1));
        let limit = RateLimit {
            requests_per_minute: 100,
            tokens_per_minute: 600,
        };
        assert!(limiter.acquire(tenant, limit, 500, at(0)).is_ok());
        let wait = limiter
            .acquire(tenant, limit, 400, at(0))
            .expect_err("over the token allowance");
        assert_eq!(wait, TimeDelta::seconds(30));
        assert!(limiter.acquire(tenant, limit, 100, at(0)).is_ok());
    }
}
