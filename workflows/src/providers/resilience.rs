//! How callers of a provider wait and when they stop trying: a retry policy with
//! exponential back-off and full jitter, and a circuit breaker per provider.
//!
//! Neither sleeps nor loops. The generation workflow records every attempt as an
//! event, so it runs the retry loop itself: it asks [`RetryPolicy::should_retry`] and
//! [`RetryPolicy::backoff`] after a failure and [`CircuitBreaker::allow`] before the
//! next call. Both take the time and the random source as arguments, so tests need no
//! clock. [`Guarded`] puts a breaker in front of a provider for callers that only want
//! the refusal.

use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use rand::Rng;

use super::{Completion, CompletionRequest, Provider, ProviderError};

/// The longest a `Retry-After` is honoured. A provider asking for more (an hour for a
/// daily quota) gets a retry after a minute, which fails fast again and lets the
/// breaker and the attempt limit end the chain, rather than a generation that hangs
/// for an hour.
pub const RETRY_AFTER_CAP: Duration = Duration::from_secs(60);

/// When to retry a failed call, and after how long.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts in all, the first included.
    pub max_attempts: u32,
    /// The ceiling of the first back-off; it doubles with each failure.
    pub base_delay: Duration,
    /// The ceiling never grows past this (a `Retry-After` may still ask for more).
    pub max_delay: Duration,
}

impl Default for RetryPolicy {
    /// Four attempts, back-off ceilings of 0.5 s, 1 s, 2 s, at most 30 s.
    fn default() -> Self {
        Self {
            max_attempts: 4,
            base_delay: Duration::from_millis(500),
            max_delay: Duration::from_secs(30),
        }
    }
}

impl RetryPolicy {
    /// Whether to try again after `attempt` (1-based) failed with `error`.
    pub fn should_retry(&self, attempt: u32, error: &ProviderError) -> bool {
        error.is_retryable() && attempt < self.max_attempts
    }

    /// How long to wait after attempt number `attempt` (1-based) failed.
    ///
    /// Full jitter: a uniform draw from zero to `base_delay × 2^(attempt-1)`, that
    /// ceiling capped at `max_delay`, so clients that failed together do not retry
    /// together. When the provider sent a `Retry-After`, the wait is never shorter
    /// than it (capped at [`RETRY_AFTER_CAP`]), even past `max_delay`.
    pub fn backoff<R: Rng + ?Sized>(
        &self,
        attempt: u32,
        retry_after: Option<Duration>,
        rng: &mut R,
    ) -> Duration {
        let doublings = attempt.saturating_sub(1).min(31);
        let ceiling = self
            .base_delay
            .saturating_mul(1_u32 << doublings)
            .min(self.max_delay);
        let ceiling_nanos = u64::try_from(ceiling.as_nanos()).unwrap_or(u64::MAX);
        let jittered = Duration::from_nanos(rng.random_range(0..=ceiling_nanos));
        let floor = retry_after.map_or(Duration::ZERO, |wait| wait.min(RETRY_AFTER_CAP));
        jittered.max(floor)
    }
}

/// A breaker's settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BreakerConfig {
    /// Consecutive retryable failures that open the breaker.
    pub failure_threshold: u32,
    /// How long an open breaker refuses calls before it lets one probe through.
    pub cool_down: Duration,
}

impl Default for BreakerConfig {
    /// Open after 5 failures in a row, probe again after 30 s.
    fn default() -> Self {
        Self {
            failure_threshold: 5,
            cool_down: Duration::from_secs(30),
        }
    }
}

/// What a breaker does with the next call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BreakerState {
    /// Calls go through.
    Closed,
    /// Calls are refused until the cool-down ends.
    Open,
    /// The cool-down ended: one probe may go through (or has, and is awaited).
    HalfOpen,
}

#[derive(Debug, Clone, Copy)]
enum Inner {
    Closed {
        failures: u32,
    },
    Open {
        until: Instant,
    },
    /// `probe` is when the probe was let through, if one was.
    HalfOpen {
        probe: Option<Instant>,
    },
}

/// A circuit breaker for one provider: after `failure_threshold` retryable failures
/// in a row it refuses calls for `cool_down`, then lets one probe through; the
/// probe's success closes it, its failure opens it again.
///
/// A probe that never reports (its caller was cancelled) would hold the breaker
/// half-open for ever, so after another `cool_down` a new probe is let through.
#[derive(Debug)]
pub struct CircuitBreaker {
    config: BreakerConfig,
    state: Mutex<Inner>,
}

impl Default for CircuitBreaker {
    fn default() -> Self {
        Self::new(BreakerConfig::default())
    }
}

impl CircuitBreaker {
    pub fn new(config: BreakerConfig) -> Self {
        Self {
            config,
            state: Mutex::new(Inner::Closed { failures: 0 }),
        }
    }

    pub fn config(&self) -> BreakerConfig {
        self.config
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // The state is a plain value updated in one assignment, so a panic elsewhere
        // while the lock was held cannot have left it half-written.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The state as of `now`, without changing it.
    pub fn state(&self, now: Instant) -> BreakerState {
        match *self.lock() {
            Inner::Closed { .. } => BreakerState::Closed,
            Inner::Open { until } if now < until => BreakerState::Open,
            Inner::Open { .. } | Inner::HalfOpen { .. } => BreakerState::HalfOpen,
        }
    }

    /// Whether a call may go out at `now`. Answering `true` in the half-open state
    /// lets that call through as the probe; its outcome must be [`record`]ed.
    ///
    /// [`record`]: CircuitBreaker::record
    pub fn allow(&self, now: Instant) -> bool {
        let mut state = self.lock();
        match *state {
            Inner::Closed { .. } => true,
            Inner::Open { until } if now < until => false,
            Inner::Open { .. } => {
                *state = Inner::HalfOpen { probe: Some(now) };
                true
            }
            Inner::HalfOpen { probe: None } => {
                *state = Inner::HalfOpen { probe: Some(now) };
                true
            }
            Inner::HalfOpen { probe: Some(sent) } => {
                let abandoned = now.saturating_duration_since(sent) >= self.config.cool_down;
                if abandoned {
                    *state = Inner::HalfOpen { probe: Some(now) };
                }
                abandoned
            }
        }
    }

    /// Records how a call that was allowed ended: `success` is false only for a
    /// retryable failure (the provider is down or overloaded). A rejection or an
    /// unreadable answer shows the provider is up, so it counts as a success.
    pub fn record(&self, now: Instant, success: bool) {
        let mut state = self.lock();
        let open = Inner::Open {
            until: now + self.config.cool_down,
        };
        *state = match (*state, success) {
            (_, true) => Inner::Closed { failures: 0 },
            (Inner::Closed { failures }, false) => {
                let failures = failures.saturating_add(1);
                if failures >= self.config.failure_threshold {
                    open
                } else {
                    Inner::Closed { failures }
                }
            }
            (Inner::HalfOpen { .. }, false) => open,
            // A call let through before the breaker opened, failing late, does not
            // push the reopening further out.
            (Inner::Open { until }, false) => Inner::Open { until },
        };
    }
}

/// A provider behind a circuit breaker: a call the breaker refuses answers
/// [`ProviderError::CircuitOpen`] without being sent, and every sent call's outcome
/// is recorded.
#[derive(Debug)]
pub struct Guarded<P> {
    inner: P,
    breaker: CircuitBreaker,
}

impl<P> Guarded<P> {
    pub fn new(inner: P, breaker: CircuitBreaker) -> Self {
        Self { inner, breaker }
    }

    pub fn inner(&self) -> &P {
        &self.inner
    }

    pub fn breaker(&self) -> &CircuitBreaker {
        &self.breaker
    }
}

#[async_trait]
impl<P: Provider> Provider for Guarded<P> {
    fn name(&self) -> &str {
        self.inner.name()
    }

    async fn complete(&self, request: &CompletionRequest) -> Result<Completion, ProviderError> {
        if !self.breaker.allow(Instant::now()) {
            return Err(ProviderError::CircuitOpen {
                provider: self.inner.name().to_owned(),
            });
        }
        let outcome = self.inner.complete(request).await;
        let success = outcome
            .as_ref()
            .map_or_else(|e| !e.is_retryable(), |_| true);
        self.breaker.record(Instant::now(), success);
        outcome
    }
}
