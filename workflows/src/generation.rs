//! The generation workflow: calls the AI provider for each requested generation,
//! records every attempt as events, and settles the budget reservation.
//!
//! It tails the global log from its own checkpoint and drives each
//! `generation.requested` to an end, several at a time. Everything it knows about a
//! generation comes from that generation's stream, so a restarted workflow resumes
//! from the log:
//!
//! - An attempt is *started* (an event appended with the stream's expected version)
//!   before the provider is called, so two workers cannot both call for one attempt.
//! - An attempt found started but never recorded was cut off by a crash. Whether the
//!   provider billed it is unknown; it is recorded as `interrupted` and the next
//!   attempt starts. (A crash after the provider answered and before the outcome was
//!   recorded is the one case where a provider call is lost from the log.)
//! - A finished generation is settled on the budget: committed at the sum of its
//!   attempts' costs, or released when nothing billed. A settlement already made is
//!   refused by the ledger as `reservation_already_settled`, which is what makes
//!   settling again after a crash harmless: nothing is ever charged twice.
//! - Before each attempt the reservation must still be open; one that expired (the
//!   workflow was down past its ttl) fails the generation without a call, so work is
//!   never done on money that is no longer held.
//!
//! Retries: a retryable failure (429, 5xx, timeout, unreachable, interrupted) is tried
//! again on the same model after an exponential back-off with full jitter that honours
//! `Retry-After`, up to the retry policy's attempt limit; then, or after a
//! non-retryable failure or an open circuit breaker, the generation falls back once to
//! the tenant's fallback model (retried the same way), and then fails. Each attempt is
//! priced at the model that actually ran it.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use command_api::{CommandError, CommandService, Envelope, ReservationState};
use domain::generation::{self, AttemptCost, AttemptReason, Command, Request, State, Status};
use domain::ids::StreamKind;
use domain::pricing::{ModelRef, Usage};
use domain::{GenerationId, Micros, StreamName, TenantId, budget};
use eventlog::{EventStore, RecordedEvent};
use futures::StreamExt;
use projector::ReadModels;
use tokio::sync::watch;

use crate::providers::{CompletionRequest, Provider, ProviderError, RetryPolicy};

/// Checkpoint name of the generation workflow.
pub const CHECKPOINT: &str = "generator";

/// The generation workflow.
pub struct Generator {
    pub store: Arc<dyn EventStore>,
    pub service: Arc<CommandService>,
    pub models: ReadModels,
    /// Providers by name (the `provider` half of `provider/model`), each behind its
    /// circuit breaker.
    pub providers: HashMap<String, Arc<dyn Provider>>,
    pub retry: RetryPolicy,
    /// Generations driven at the same time.
    pub concurrency: usize,
}

/// What to do next with a pending generation.
enum Next {
    Attempt {
        model: ModelRef,
        reason: AttemptReason,
    },
    Fail(String),
}

impl Generator {
    /// Handles the next batch of the log; returns how many events it read.
    pub async fn process_batch(&self) -> anyhow::Result<usize> {
        let from = self.models.checkpoint(CHECKPOINT).await?;
        let events = self.store.read_all(from, 200).await?;
        let requested = events
            .iter()
            .filter(|e| e.event_type == "generation.requested")
            .map(requested_generation)
            .collect::<anyhow::Result<Vec<_>>>()?;
        let results: Vec<anyhow::Result<()>> = futures::stream::iter(requested)
            .map(|(tenant, id, cause)| self.drive_event(tenant, id, cause))
            .buffer_unordered(self.concurrency.max(1))
            .collect()
            .await;
        // The checkpoint moves past a batch only when every generation in it ended;
        // after a failure the batch is driven again, and finished ones are no-ops.
        for result in results {
            result?;
        }
        if let Some(last) = events.last() {
            self.models
                .save_checkpoint(CHECKPOINT, last.global_position)
                .await?;
        }
        Ok(events.len())
    }

    async fn drive_event(
        &self,
        tenant: TenantId,
        id: GenerationId,
        cause: uuid::Uuid,
    ) -> anyhow::Result<()> {
        let envelope = Envelope::system(tenant, "generator", Some(cause));
        match self.drive(&envelope, id).await {
            Ok(()) => Ok(()),
            // A rule refusal means the stream moved on in a way this worker did not
            // expect (another worker, an operator); the next pass reads it afresh.
            Err(DriveError::Command(CommandError::Generation(rejection))) => {
                tracing::warn!(%tenant, generation = %id, %rejection, "generation refused a workflow step");
                Ok(())
            }
            Err(DriveError::Command(other)) => Err(other.into()),
            Err(DriveError::Other(other)) => Err(other),
        }
    }

    /// Drives one generation until it is finished and settled.
    async fn drive(&self, envelope: &Envelope, id: GenerationId) -> Result<(), DriveError> {
        let tenant = envelope.tenant;
        let mut wait: Option<Duration> = None;
        loop {
            let (state, version) = self.service.generation_state(tenant, id).await?;
            let Some(request) = state.request.clone() else {
                return Err(DriveError::Other(anyhow::anyhow!(
                    "generation {id} of tenant {tenant} has no request"
                )));
            };
            if state.status != Status::Pending {
                return self.settle(envelope, &state, &request).await;
            }
            if let Some((attempt, _)) = state.in_flight {
                self.record(
                    envelope,
                    id,
                    version,
                    Command::RecordAttemptFailed {
                        attempt,
                        error: "interrupted".into(),
                        message: "the workflow stopped before this attempt's outcome was recorded"
                            .into(),
                        retryable: true,
                        outcome: free(&request.price_version),
                    },
                )
                .await?;
                continue;
            }
            let next = match self.next_step(&state, &request) {
                Next::Fail(reason) => Command::Fail { reason },
                Next::Attempt { model, reason } => {
                    match self
                        .service
                        .reservation_state(tenant, request.period, request.reservation_id)
                        .await?
                    {
                        ReservationState::Open => Command::StartAttempt {
                            attempt: state.attempts + 1,
                            model,
                            reason,
                        },
                        ReservationState::Settled(outcome) => Command::Fail {
                            reason: format!("reservation_{outcome}"),
                        },
                        ReservationState::Unknown => Command::Fail {
                            reason: "reservation_missing".into(),
                        },
                    }
                }
            };
            let Command::StartAttempt { attempt, model, .. } = &next else {
                self.record(envelope, id, version, next).await?;
                continue;
            };
            let (attempt, model) = (*attempt, model.clone());
            if let Some(delay) = wait.take() {
                tokio::time::sleep(delay).await;
            }
            if !self.record(envelope, id, version, next).await? {
                continue;
            }
            let outcome = self.call(id, attempt, &model, &request).await;
            let command = match outcome {
                Ok((text, cost)) => Command::RecordGenerated {
                    attempt,
                    text,
                    outcome: cost,
                },
                Err((error, cost)) => {
                    let in_a_row = match &state.current_model {
                        Some((current, n)) if *current == model => n + 1,
                        _ => 1,
                    };
                    wait = Some(self.retry.backoff(
                        in_a_row,
                        error.retry_after(),
                        &mut rand::rng(),
                    ));
                    Command::RecordAttemptFailed {
                        attempt,
                        error: error.code().into(),
                        message: error.to_string(),
                        retryable: error.is_retryable(),
                        outcome: cost,
                    }
                }
            };
            self.record(envelope, id, version + 1, command).await?;
        }
    }

    /// The retry / fallback / give-up rule, from the generation's own state.
    fn next_step(&self, state: &State, request: &Request) -> Next {
        let Some((current, in_a_row)) = &state.current_model else {
            return Next::Attempt {
                model: request.model.clone(),
                reason: AttemptReason::Primary,
            };
        };
        let (error, retryable) = state
            .last_error
            .clone()
            .unwrap_or_else(|| ("unknown".into(), false));
        if retryable && *in_a_row < self.retry.max_attempts.max(1) {
            return Next::Attempt {
                model: current.clone(),
                reason: AttemptReason::Retry,
            };
        }
        match &request.fallback_model {
            Some(fallback) if !state.fell_back && fallback != current => Next::Attempt {
                model: fallback.clone(),
                reason: AttemptReason::Fallback,
            },
            _ => Next::Fail(error),
        }
    }

    /// Calls the provider for one attempt and prices the answer at the model that ran.
    async fn call(
        &self,
        id: GenerationId,
        attempt: u32,
        model: &ModelRef,
        request: &Request,
    ) -> Result<(String, AttemptCost), (ProviderError, AttemptCost)> {
        let policy = self.service.ai_policy();
        let price_version = policy.price_book.version.clone();
        let price = policy.price_book.get(model).cloned();
        let started = Instant::now();
        let Some(provider) = self.providers.get(&model.provider) else {
            return Err((
                ProviderError::Rejected {
                    status: 0,
                    message: format!("no provider named {} is configured", model.provider),
                },
                free(&price_version),
            ));
        };
        let max_output_tokens = price.as_ref().map_or(request.max_output_tokens, |p| {
            p.clamp_output(request.max_output_tokens)
        });
        let (system, prompt) = generation::prompt(&request.brief, &request.channel);
        let call = CompletionRequest {
            model: model.model.clone(),
            system,
            prompt,
            max_output_tokens,
            idempotency_key: format!("{id}-{attempt}"),
        };
        let priced = |usage: Usage, latency: Duration| AttemptCost {
            usage,
            // A model the price book no longer lists is charged the reservation's
            // worst case rather than nothing.
            cost: price.as_ref().map_or(request.reserved, |p| p.cost(&usage)),
            latency_ms: u64::try_from(latency.as_millis()).unwrap_or(u64::MAX),
            price_version: price_version.clone(),
        };
        match provider.complete(&call).await {
            Ok(completion) => {
                let cost = priced(completion.usage, completion.latency);
                Ok((completion.text, cost))
            }
            // A 2xx answer whose usage cannot be read was billed by the provider all
            // the same: charge the attempt's worst case instead of losing its cost.
            Err(error @ ProviderError::Malformed(_)) => {
                let worst = Usage {
                    input_tokens: request.estimated_input_tokens,
                    cached_input_tokens: 0,
                    output_tokens: u64::from(max_output_tokens),
                };
                Err((error, priced(worst, started.elapsed())))
            }
            Err(error) => {
                let mut cost = free(&price_version);
                cost.latency_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(0);
                Err((error, cost))
            }
        }
    }

    /// Appends a workflow step at `version`; answers false when the stream moved on
    /// meanwhile (the caller reads it again and decides afresh).
    async fn record(
        &self,
        envelope: &Envelope,
        id: GenerationId,
        version: u64,
        command: Command,
    ) -> Result<bool, DriveError> {
        match self
            .service
            .generation(envelope, id, Some(version), command)
            .await
        {
            Ok(_) => Ok(true),
            Err(CommandError::VersionConflict { .. }) => Ok(false),
            Err(other) => Err(other.into()),
        }
    }

    /// Settles a finished generation's reservation at what its attempts cost.
    async fn settle(
        &self,
        envelope: &Envelope,
        state: &State,
        request: &Request,
    ) -> Result<(), DriveError> {
        let reservation_id = request.reservation_id;
        let command = if state.status == Status::Generated || state.cost > Micros::ZERO {
            budget::Command::Commit {
                reservation_id,
                actual: state.cost,
            }
        } else {
            budget::Command::Release { reservation_id }
        };
        match self
            .service
            .budget(envelope, Some(request.period), command)
            .await
        {
            Ok(_) | Err(CommandError::Budget(budget::Rejection::AlreadySettled { .. })) => Ok(()),
            Err(CommandError::Budget(budget::Rejection::ReservationNotFound(_))) => {
                tracing::error!(
                    tenant = %envelope.tenant,
                    reservation = %reservation_id,
                    "a finished generation's reservation is missing from its budget month"
                );
                Ok(())
            }
            Err(other) => Err(other.into()),
        }
    }

    /// Runs until shutdown, waking when the log grows.
    pub async fn run(self, mut shutdown: watch::Receiver<bool>) {
        let mut head = self.store.watch_head();
        loop {
            if *shutdown.borrow() {
                return;
            }
            match self.process_batch().await {
                Ok(0) => {
                    let done = self.models.checkpoint(CHECKPOINT).await.unwrap_or(0);
                    tokio::select! {
                        _ = head.wait_for(|h| *h > done) => {}
                        _ = shutdown.changed() => {}
                    }
                }
                Ok(_) => {}
                Err(error) => {
                    tracing::error!(error = ?error, "generation batch failed; retrying");
                    tokio::select! {
                        _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                        _ = shutdown.changed() => {}
                    }
                }
            }
        }
    }
}

/// The tenant, generation and event id of a `generation.requested` event.
fn requested_generation(
    event: &RecordedEvent,
) -> anyhow::Result<(TenantId, GenerationId, uuid::Uuid)> {
    match StreamName::parse(&event.stream_id) {
        Ok((tenant, StreamKind::Generation(id))) => Ok((tenant, id, event.event_id)),
        _ => anyhow::bail!(
            "generation request on a non-generation stream {}",
            event.stream_id
        ),
    }
}

/// An attempt that billed nothing.
fn free(price_version: &str) -> AttemptCost {
    AttemptCost {
        usage: Usage::default(),
        cost: Micros::ZERO,
        latency_ms: 0,
        price_version: price_version.to_owned(),
    }
}

enum DriveError {
    Command(CommandError),
    Other(anyhow::Error),
}

impl From<CommandError> for DriveError {
    fn from(error: CommandError) -> Self {
        DriveError::Command(error)
    }
}
