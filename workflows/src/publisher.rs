//! Delivers posts whose publishing was requested, one recorded attempt at a time, to
//! each of a post's targets (channels) on its own.
//!
//! Each round asks the read models for open deliveries, one per target: waiting for a
//! first attempt, or failed transiently with the next attempt due. For each, the
//! publisher first records `post.delivery_attempt_started` on that target — the
//! attempt's lease: the post itself refuses a target whose attempt is already in
//! flight, that is not due, or that moved on (published, settled by an operator), so
//! a stale read model or a second round changes nothing — and only then calls the
//! channel's network. The outcome is recorded on the same target: published, failed
//! (retryable with the time of the next attempt, from exponential back-off with full
//! jitter and never before the network's `Retry-After`; or permanent), or
//! unconfirmed when the request may have landed. The command side decides each on
//! the post's latest state, so deliveries to two targets of one post run side by side
//! and neither's outcome is lost to the other's; one target failing for good does
//! not stop another.
//!
//! An unconfirmed delivery is never attempted again. The publisher asks the network
//! once (`reconcile`); if the network cannot tell, an operator settles it with
//! `resolve-unconfirmed` (or a verified webhook confirms it). An attempt the read
//! models show in flight that is not running in this process was cut off by a stop
//! or a crash of the process that ran it: it is recorded unconfirmed and reconciled
//! the same way — so a restart never posts twice. This is why one publisher process
//! runs at a time.

use std::collections::HashSet;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use command_api::{CommandError, CommandService, Envelope};
use domain::post::{Command, DeliveryState, Resolution};
use domain::{Channel, PostId, TenantId};
use projector::{OpenDelivery, ReadModels};
use tokio::sync::{Semaphore, watch};
use uuid::Uuid;

use crate::network::Networks;
use crate::networks::{Delivered, Delivery, DeliveryError, NetworkAdapter};
use crate::providers::RetryPolicy;

/// The longest a network's `Retry-After` is honoured; a longer one (a daily quota)
/// waits this long and tries again.
pub const RETRY_AFTER_CAP: Duration = Duration::from_secs(3600);

/// The actor name on the publisher's commands.
const ACTOR: &str = "publisher";

/// The publishing workflow.
pub struct Publisher {
    pub service: Arc<CommandService>,
    pub models: ReadModels,
    pub networks: Arc<Networks>,
    /// Attempts per delivery and their back-off.
    pub retry: RetryPolicy,
    /// How often open deliveries are looked for.
    pub every: Duration,
    /// Most deliveries in flight at once.
    pub concurrency: usize,
}

/// Targets (post, channel) with an attempt running in this process, so a round does
/// not start a second task for a target whose read model has not caught up with the
/// first.
type Running = Arc<Mutex<HashSet<(Uuid, String)>>>;

impl Publisher {
    /// Starts an attempt for every open delivery that is due; returns how many
    /// started. Each attempt runs in its own task, at most `concurrency` at once.
    pub async fn round(
        &self,
        running: &Running,
        permits: &Arc<Semaphore>,
    ) -> anyhow::Result<usize> {
        let due = self.models.open_deliveries(self.service.now(), 500).await?;
        let mut started = 0;
        for delivery in due {
            // A target whose attempt runs in this process is not touched; every other
            // attempt in flight was cut off when the process that ran it stopped.
            let key = (delivery.post, delivery.channel.clone());
            if !lock(running).insert(key.clone()) {
                continue;
            }
            let permit = permits.clone().acquire_owned().await?;
            let worker = self.worker();
            let running = running.clone();
            started += 1;
            tokio::spawn(async move {
                let done = if delivery.state == DeliveryState::Publishing.as_str() {
                    worker.interrupted(&delivery).await
                } else {
                    worker.attempt(&delivery).await
                };
                if let Err(error) = done {
                    tracing::error!(tenant = %delivery.tenant, post = %delivery.post, channel = %delivery.channel, error = ?error, "delivery attempt failed to run");
                }
                lock(&running).remove(&key);
                drop(permit);
            });
        }
        Ok(started)
    }

    fn worker(&self) -> Worker {
        Worker {
            service: self.service.clone(),
            models: self.models.clone(),
            networks: self.networks.clone(),
            retry: self.retry,
        }
    }

    /// Delivers every `every` until shutdown; attempts still running at shutdown are
    /// waited for.
    pub async fn run(self, mut shutdown: watch::Receiver<bool>) {
        let running: Running = Arc::default();
        let concurrency = self.concurrency.max(1);
        let permits = Arc::new(Semaphore::new(concurrency));
        let mut interval = crate::interval(self.every);
        while crate::tick(&mut interval, &mut shutdown).await {
            if let Err(error) = self.round(&running, &permits).await {
                tracing::error!(error = ?error, "publisher round failed");
            }
        }
        // Let the attempts in flight record their outcome, so a clean stop leaves
        // nothing unconfirmed.
        let all = u32::try_from(concurrency).unwrap_or(u32::MAX);
        let _ = permits.acquire_many(all).await;
    }
}

fn lock(running: &Running) -> std::sync::MutexGuard<'_, HashSet<(Uuid, String)>> {
    running.lock().unwrap_or_else(PoisonError::into_inner)
}

/// What one delivery task needs.
struct Worker {
    service: Arc<CommandService>,
    models: ReadModels,
    networks: Arc<Networks>,
    retry: RetryPolicy,
}

/// One target of a post, ready to deliver.
struct Target {
    tenant: TenantId,
    post: PostId,
    channel: Channel,
    body: String,
    adapter: Arc<dyn NetworkAdapter>,
    /// Every attempt to this target carries it, so the network (or the webhook
    /// receiver) recognises a repeat.
    idempotency_key: String,
}

impl Target {
    fn delivery(&self) -> Delivery<'_> {
        Delivery {
            tenant: self.tenant,
            post: self.post,
            channel: &self.channel,
            body: &self.body,
            idempotency_key: &self.idempotency_key,
        }
    }
}

impl Worker {
    /// The open delivery's target: its channel, the post's body, and the adapter its
    /// channel delivers through.
    async fn target(&self, open: &OpenDelivery) -> anyhow::Result<Option<Target>> {
        let tenant = TenantId::from_uuid(open.tenant);
        let post = PostId::from_uuid(open.post);
        let Some(view) = self.models.post(open.tenant, open.post).await? else {
            return Ok(None);
        };
        let channel = Channel::new(&open.channel)?;
        let adapter = self.networks.for_channel(tenant, &channel);
        Ok(Some(Target {
            tenant,
            post,
            idempotency_key: idempotency_key(post, &channel, view.targets.len()),
            channel,
            body: view.body,
            adapter,
        }))
    }

    #[tracing::instrument(name = "publisher.attempt", skip_all, fields(tenant = %open.tenant, post = %open.post, channel = %open.channel))]
    async fn attempt(&self, open: &OpenDelivery) -> anyhow::Result<()> {
        let Some(target) = self.target(open).await? else {
            return Ok(());
        };
        let start = Command::StartAttempt {
            channel: target.channel.clone(),
            network: target.adapter.name().to_owned(),
        };
        if !record(&self.service, &target, start).await? {
            return Ok(());
        }
        let attempt = self
            .service
            .post_state(target.tenant, target.post)
            .await?
            .target(&target.channel)
            .map_or(1, |t| t.attempts);
        let outcome = target.adapter.deliver(&target.delivery()).await;
        let command = match outcome {
            Ok(delivered) => published(&target.channel, delivered),
            Err(DeliveryError::Unknown(reason)) => {
                let unconfirmed = Command::RecordUnconfirmed {
                    channel: target.channel.clone(),
                    reason: DeliveryError::Unknown(reason).to_string(),
                };
                if record(&self.service, &target, unconfirmed).await? {
                    self.reconcile(&target).await?;
                }
                return Ok(());
            }
            Err(error) => self.failed(&target.channel, attempt, &error),
        };
        record(&self.service, &target, command).await?;
        Ok(())
    }

    /// Records an attempt cut off by a stopped process as unconfirmed, and reconciles
    /// it. The read model may lag: if the attempt did end, the target is no longer in
    /// flight and the command is refused, changing nothing.
    #[tracing::instrument(name = "publisher.interrupted", skip_all, fields(tenant = %open.tenant, post = %open.post, channel = %open.channel))]
    async fn interrupted(&self, open: &OpenDelivery) -> anyhow::Result<()> {
        let Some(target) = self.target(open).await? else {
            return Ok(());
        };
        let command = Command::RecordUnconfirmed {
            channel: target.channel.clone(),
            reason: "the publisher stopped during the attempt; it may have reached the network"
                .into(),
        };
        if record(&self.service, &target, command).await? {
            self.reconcile(&target).await?;
        }
        Ok(())
    }

    /// The failure to record: retryable with the next attempt's time, or permanent.
    fn failed(&self, channel: &Channel, attempt: u32, error: &DeliveryError) -> Command {
        let failed = |reason: String, retry_at| Command::RecordAttemptFailed {
            channel: channel.clone(),
            code: error.code().into(),
            reason,
            retry_at,
        };
        if !error.is_retryable() {
            return failed(error.to_string(), None);
        }
        if attempt >= self.retry.max_attempts {
            return failed(format!("{error} (gave up after {attempt} attempts)"), None);
        }
        let retry_after = match error {
            DeliveryError::RateLimited { retry_after } => *retry_after,
            _ => None,
        };
        let wait = next_wait(&self.retry, attempt, retry_after, &mut rand::rng());
        failed(error.to_string(), Some(at_after(self.service.now(), wait)))
    }

    /// Asks the network once whether an unconfirmed delivery landed, and records the
    /// answer; leaves it unconfirmed (for an operator) when the network cannot tell.
    #[tracing::instrument(name = "publisher.reconcile", skip_all, fields(tenant = %target.tenant, post = %target.post, channel = %target.channel))]
    async fn reconcile(&self, target: &Target) -> anyhow::Result<()> {
        let outcome = match target.adapter.reconcile(&target.delivery()).await {
            Ok(Some(delivered)) => Resolution::Published {
                network_post_id: delivered.network_post_id,
                url: delivered.url,
            },
            Ok(None) => Resolution::Failed {
                reason: "the network has no such post: it was not delivered".into(),
            },
            Err(error) => {
                tracing::warn!(network = target.adapter.name(), error = %error, "unconfirmed delivery left for an operator");
                return Ok(());
            }
        };
        let command = Command::ResolveUnconfirmed {
            channel: Some(target.channel.clone()),
            outcome,
        };
        record(&self.service, target, command).await?;
        Ok(())
    }
}

fn published(channel: &Channel, delivered: Delivered) -> Command {
    Command::RecordPublished {
        channel: channel.clone(),
        network_post_id: delivered.network_post_id,
        url: delivered.url,
    }
}

/// The key every attempt of one target's delivery carries, so the network (or the
/// webhook receiver) recognises a repeat. A post of one channel keeps the key its
/// deliveries always had (an unconfirmed one is reconciled with the key it was sent
/// with); a post of several channels has one key per channel.
fn idempotency_key(post: PostId, channel: &Channel, targets: usize) -> String {
    if targets > 1 {
        format!("tidemark-post-{post}-{channel}")
    } else {
        format!("tidemark-post-{post}")
    }
}

/// How long to wait before the next attempt: the back-off with full jitter, but
/// never less than the network's `Retry-After` (capped at [`RETRY_AFTER_CAP`]).
pub fn next_wait<R: rand::Rng + ?Sized>(
    policy: &RetryPolicy,
    attempt: u32,
    retry_after: Option<Duration>,
    rng: &mut R,
) -> Duration {
    let backoff = policy.backoff(attempt, None, rng);
    backoff.max(retry_after.map_or(Duration::ZERO, |wait| wait.min(RETRY_AFTER_CAP)))
}

fn at_after(now: DateTime<Utc>, wait: Duration) -> DateTime<Utc> {
    now + TimeDelta::from_std(wait).unwrap_or(TimeDelta::MAX)
}

/// Runs one command on a target as the publisher; `true` when it was carried out,
/// `false` when the post refused it because the target moved on meanwhile (another
/// attempt, an operator, a webhook) and the newer state decides.
async fn record(
    service: &CommandService,
    target: &Target,
    command: Command,
) -> anyhow::Result<bool> {
    let envelope = Envelope::system(target.tenant, ACTOR, None);
    match service.post(&envelope, target.post, None, command).await {
        Ok(_) => Ok(true),
        Err(CommandError::Post(rejection)) => {
            tracing::debug!(%rejection, "the target moved on; nothing recorded");
            Ok(false)
        }
        Err(other) => Err(other.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn a_retry_after_longer_than_the_back_off_is_honoured() {
        let policy = RetryPolicy::default();
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let wait = next_wait(&policy, 1, Some(Duration::from_secs(120)), &mut rng);
        assert_eq!(wait, Duration::from_secs(120));
    }

    #[test]
    fn a_retry_after_is_capped_at_an_hour() {
        let policy = RetryPolicy::default();
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let wait = next_wait(&policy, 1, Some(Duration::from_secs(86_400)), &mut rng);
        assert_eq!(wait, RETRY_AFTER_CAP);
    }

    #[test]
    fn without_retry_after_the_wait_stays_under_the_back_off_ceiling() {
        let policy = RetryPolicy::default();
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        for attempt in 1..=6 {
            let wait = next_wait(&policy, attempt, None, &mut rng);
            assert!(wait <= policy.max_delay, "attempt {attempt}: {wait:?}");
        }
    }
}
