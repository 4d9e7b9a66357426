//! Fires what falls due at a time: scheduled posts and expiring budget reservations.
//!
//! A timer is a row of the `timers` read model, which the projector keeps from
//! events: `post.scheduled` sets a post's `post_publish` timer (at `publish_at`, with
//! the post's version), an edit moves its version along, and publishing or cancelling
//! removes it; `budget.reserved` sets a `reservation_expiry` timer at the hold's
//! expiry, and its commit, release or expiry removes it. This component only reads
//! them. Each round it scans every timer due at `now` — however long ago, so the first
//! round after a start is the missed-timer sweep of a restart or an outage — and fires
//! each by sending its command: `publish` with the post's expected version, or
//! `ExpireDue` on the reservation's month.
//!
//! A timer fires at most once per tenant because the command refuses a second firing:
//! the post's version has moved (or it is no longer scheduled), and the ledger has
//! nothing left to expire. The timer is cleared by the event its command produced, not
//! here, so a crash between the command and the clearing only fires it again, and that
//! firing is refused. Due timers are fired in due order within a tenant, tenants
//! concurrently (at most `concurrency` at once); a tenant whose commands fail is logged
//! and left for the next round without holding up the others.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use command_api::{CommandError, CommandService, Envelope};
use domain::post::{Command, PublishTrigger};
use domain::{Period, PostId, TenantId, budget};
use futures::StreamExt;
use projector::{DueTimer, ReadModels, TimerCursor, TimerKind};
use tokio::sync::watch;
use uuid::Uuid;

/// The actor name on the commands timers send.
pub const ACTOR: &str = "timers";

/// Due timers read per query of a round.
const PAGE: u32 = 500;

/// The timer component.
pub struct Timers {
    pub service: Arc<CommandService>,
    pub models: ReadModels,
    /// How often due timers are looked for.
    pub every: Duration,
    /// Tenants whose timers fire at the same time, at most.
    pub concurrency: usize,
}

/// What one round did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Round {
    /// Due timers seen.
    pub due: usize,
    /// Commands carried out.
    pub fired: usize,
    /// Commands refused as a second firing (or on a read model that was behind).
    pub refused: usize,
    /// Commands that failed; their timers fire again next round.
    pub failed: usize,
}

/// How firing one timer ended.
enum Fired {
    Done,
    Refused,
    Failed,
}

/// Timers this process fired and whose clearing event the read models do not show
/// yet; they are not fired again meanwhile. Lost on a restart, which only means a
/// firing the command then refuses.
type Pending = HashSet<DueTimer>;

impl Timers {
    /// Fires every timer due at the command side's `now`, however old.
    pub async fn round(&self, pending: &mut Pending) -> anyhow::Result<Round> {
        let now = self.service.now();
        let mut round = Round::default();
        let mut seen = HashSet::new();
        let mut cursor = TimerCursor::default();
        loop {
            let page = self.models.due_timers(now, &cursor, PAGE).await?;
            let Some(last) = page.last() else { break };
            cursor = TimerCursor::after(last);
            let full = page.len() == PAGE as usize;
            round.due += page.len();
            seen.extend(page.iter().cloned());
            let fresh: Vec<DueTimer> = page.into_iter().filter(|t| !pending.contains(t)).collect();
            for (timer, fired) in self.fire_by_tenant(fresh).await {
                match fired {
                    Fired::Done => round.fired += 1,
                    Fired::Refused => round.refused += 1,
                    Fired::Failed => round.failed += 1,
                }
                if !matches!(fired, Fired::Failed) {
                    pending.insert(timer);
                }
            }
            if !full {
                break;
            }
        }
        // A timer gone from the schedule was cleared (or moved): forget it.
        pending.retain(|timer| seen.contains(timer));
        Ok(round)
    }

    /// Fires `timers` (in due order) tenant by tenant: each tenant's in order, up to
    /// `concurrency` tenants at once.
    async fn fire_by_tenant(&self, timers: Vec<DueTimer>) -> Vec<(DueTimer, Fired)> {
        let mut tenants: Vec<(Uuid, Vec<DueTimer>)> = Vec::new();
        for timer in timers {
            match tenants
                .iter_mut()
                .find(|(tenant, _)| *tenant == timer.tenant)
            {
                Some((_, queue)) => queue.push(timer),
                None => tenants.push((timer.tenant, vec![timer])),
            }
        }
        futures::stream::iter(tenants)
            .map(|(_, queue)| self.fire_in_order(queue))
            .buffer_unordered(self.concurrency.max(1))
            .flat_map(futures::stream::iter)
            .collect()
            .await
    }

    /// Fires one tenant's timers one after the other. A month's reservations expire in
    /// one command, so later timers of a month already expired in this round are
    /// counted as refused without another command.
    async fn fire_in_order(&self, queue: Vec<DueTimer>) -> Vec<(DueTimer, Fired)> {
        let mut expired_months = HashSet::new();
        let mut outcomes = Vec::with_capacity(queue.len());
        for timer in queue {
            let fired = match timer.kind {
                TimerKind::ReservationExpiry if !expired_months.insert(timer.subject.clone()) => {
                    Fired::Refused
                }
                _ => self.fire(&timer).await,
            };
            outcomes.push((timer, fired));
        }
        outcomes
    }

    #[tracing::instrument(name = "timers.fire", skip_all, fields(tenant = %timer.tenant, kind = timer.kind.as_str(), subject = %timer.subject, due_at = %timer.due_at))]
    async fn fire(&self, timer: &DueTimer) -> Fired {
        let tenant = TenantId::from_uuid(timer.tenant);
        let envelope = Envelope::system(tenant, ACTOR, None);
        let outcome = match timer.kind {
            TimerKind::PostPublish => {
                let Ok(post) = Uuid::parse_str(&timer.subject) else {
                    tracing::error!("a post timer names no post id");
                    return Fired::Failed;
                };
                let command = Command::Publish {
                    trigger: PublishTrigger::Schedule,
                };
                self.service
                    .post(&envelope, PostId::from_uuid(post), timer.version, command)
                    .await
            }
            TimerKind::ReservationExpiry => {
                let Ok(period) = timer.subject.parse::<Period>() else {
                    tracing::error!("an expiry timer names no month");
                    return Fired::Failed;
                };
                self.service
                    .budget(&envelope, Some(period), budget::Command::ExpireDue)
                    .await
            }
        };
        match outcome {
            Ok(_) => Fired::Done,
            Err(CommandError::VersionConflict { .. } | CommandError::Post(_)) => {
                tracing::debug!("the timer's subject moved on; the firing was refused");
                Fired::Refused
            }
            Err(error) => {
                tracing::warn!(error = ?error, "a due timer could not fire; it fires again next round");
                Fired::Failed
            }
        }
    }

    /// The missed-timer sweep at start, then a round every `every` until shutdown.
    pub async fn run(self, mut shutdown: watch::Receiver<bool>) {
        let mut pending = Pending::new();
        let started: DateTime<Utc> = self.service.now();
        match self.round(&mut pending).await {
            Ok(round) => {
                tracing::info!(due = round.due, fired = round.fired, refused = round.refused, failed = round.failed, now = %started, "missed-timer sweep done");
            }
            Err(error) => tracing::error!(error = ?error, "missed-timer sweep failed"),
        }
        let mut interval = crate::interval(self.every);
        // The interval's first tick is immediate, and the sweep just ran.
        interval.tick().await;
        while crate::tick(&mut interval, &mut shutdown).await {
            if let Err(error) = self.round(&mut pending).await {
                tracing::error!(error = ?error, "timer round failed");
            }
        }
    }
}
