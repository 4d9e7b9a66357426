//! The command loop: load, decide, append, and retry on a lost race.
//!
//! Every command for one stream goes through one [`StreamCache`] slot, guarded by an
//! async mutex: commands for the same stream in this process queue behind each other
//! instead of racing to the store and retrying ("one writer per hot stream"). The slot
//! keeps the stream's folded state and version in memory ("warm state"), so a command
//! reads only the events appended since the last one. The expected version on every
//! append still guards against writers in other processes; when one of them wins, the
//! loop catches up and decides again.

use std::collections::HashMap;
use std::sync::{Arc, Mutex as StdMutex};

use chrono::{DateTime, TimeDelta, Utc};
use domain::budget::{self, Limits};
use domain::post;
use domain::{Period, PostId, ReservationId, StreamName, TenantId};
use eventlog::{
    AppendRequest, Appended, EventStore, ExpectedVersion, IdempotencyRecord, Metadata, NewEvent,
    StoreError, Version,
};
use tokio::sync::Mutex;
use uuid::Uuid;

use crate::aggregate::{Aggregate, Budget, Post};
use crate::clock::Clock;

/// How often a command is decided again after another process won the race.
const MAX_ATTEMPTS: usize = 32;
/// How many months back a new month looks for limits to inherit.
const INHERIT_LOOKBACK_MONTHS: usize = 12;
/// Streams kept warm before unused slots are dropped.
const CACHE_CAPACITY: usize = 10_000;

/// Who issued a command, and the idempotency record to store with its events.
#[derive(Debug, Clone)]
pub struct Envelope {
    pub tenant: TenantId,
    pub actor: String,
    pub correlation_id: Uuid,
    pub causation_id: Option<Uuid>,
    pub idempotency: Option<IdempotencyRecord>,
}

impl Envelope {
    /// An envelope for a command a component issues on its own behalf.
    pub fn system(tenant: TenantId, actor: &str, causation_id: Option<Uuid>) -> Self {
        Self {
            tenant,
            actor: actor.to_owned(),
            correlation_id: Uuid::now_v7(),
            causation_id,
            idempotency: None,
        }
    }
}

/// A command that was carried out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Done {
    /// Where the events landed; `None` when the command decided nothing needed to change.
    pub appended: Option<Appended>,
    /// The stream's version afterwards.
    pub version: Version,
}

/// Why a command was not carried out.
#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    #[error(transparent)]
    Budget(#[from] budget::Rejection),
    #[error(transparent)]
    Post(#[from] post::Rejection),
    #[error("the stream is at version {actual}, not the expected {expected}")]
    VersionConflict { expected: Version, actual: Version },
    #[error("the idempotency key was used by a concurrent request")]
    IdempotencyKeyTaken,
    #[error("the stream stayed contended after {MAX_ATTEMPTS} attempts")]
    Contention,
    #[error("stream {stream} holds an event this aggregate cannot read: {reason}")]
    Corrupt { stream: String, reason: String },
    #[error("event store failure")]
    Store(#[source] StoreError),
}

/// One stream's slot: its folded state, behind the lock that serializes its commands.
type SharedSlot<S> = Arc<Mutex<Slot<S>>>;

/// Streams' folded states, one async-mutex slot per stream.
struct StreamCache<A: Aggregate> {
    slots: StdMutex<HashMap<String, SharedSlot<A::State>>>,
}

#[derive(Default)]
struct Slot<S> {
    version: Version,
    state: S,
}

impl<A: Aggregate> StreamCache<A> {
    fn new() -> Self {
        Self {
            slots: StdMutex::new(HashMap::new()),
        }
    }

    fn slot(&self, stream: &str) -> SharedSlot<A::State> {
        // A poisoned lock only means another thread panicked while holding this map;
        // the map itself is always left consistent, so keep using it.
        let mut slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
        if slots.len() >= CACHE_CAPACITY {
            // Drop every slot nobody is using; they reload from the store on demand.
            slots.retain(|_, slot| Arc::strong_count(slot) > 1);
        }
        slots.entry(stream.to_owned()).or_default().clone()
    }
}

/// Carries out commands against the event store.
pub struct CommandService {
    store: Arc<dyn EventStore>,
    clock: Arc<dyn Clock>,
    budgets: StreamCache<Budget>,
    posts: StreamCache<Post>,
}

impl CommandService {
    pub fn new(store: Arc<dyn EventStore>, clock: Arc<dyn Clock>) -> Self {
        Self {
            store,
            clock,
            budgets: StreamCache::new(),
            posts: StreamCache::new(),
        }
    }

    pub fn now(&self) -> DateTime<Utc> {
        self.clock.now()
    }

    pub fn store(&self) -> &Arc<dyn EventStore> {
        &self.store
    }

    /// Runs a budget command on `period` (default: the current month).
    ///
    /// Commit and release look for the reservation in the current month and then in
    /// the previous one, since a reservation (ttl ≤ 7 days) can straddle a month end.
    /// A month without limits inherits the most recent earlier month's.
    #[tracing::instrument(skip_all, fields(tenant = %envelope.tenant, command = ?std::mem::discriminant(&command)))]
    pub async fn budget(
        &self,
        envelope: &Envelope,
        period: Option<Period>,
        command: budget::Command,
    ) -> Result<Done, CommandError> {
        let now = self.clock.now();
        let period = period.unwrap_or_else(|| Period::containing(now));
        let ctx = budget::Ctx {
            now,
            period,
            inherited_limits: None,
        };
        let stream = StreamName::budget(envelope.tenant, period);
        let first = self
            .execute(
                &self.budgets,
                envelope,
                &stream,
                None,
                command.clone(),
                &ctx,
            )
            .await;
        match (&first, &command) {
            (
                Err(CommandError::Budget(budget::Rejection::NotConfigured)),
                budget::Command::Reserve { .. },
            ) => {
                let Some(inherited) = self.inherited_limits(envelope.tenant, period).await? else {
                    return first;
                };
                let ctx = budget::Ctx {
                    inherited_limits: Some(inherited),
                    ..ctx
                };
                self.execute(&self.budgets, envelope, &stream, None, command, &ctx)
                    .await
            }
            (
                Err(CommandError::Budget(budget::Rejection::ReservationNotFound(_))),
                budget::Command::Commit { .. } | budget::Command::Release { .. },
            ) => {
                let previous = period.previous();
                let ctx = budget::Ctx {
                    period: previous,
                    ..ctx
                };
                let stream = StreamName::budget(envelope.tenant, previous);
                self.execute(&self.budgets, envelope, &stream, None, command, &ctx)
                    .await
            }
            _ => first,
        }
    }

    /// Runs a post command. `expected_version` is the version the client last saw, if
    /// it asked for optimistic concurrency.
    #[tracing::instrument(skip_all, fields(tenant = %envelope.tenant, post = %post_id))]
    pub async fn post(
        &self,
        envelope: &Envelope,
        post_id: PostId,
        expected_version: Option<Version>,
        command: post::Command,
    ) -> Result<Done, CommandError> {
        let ctx = post::Ctx {
            now: self.clock.now(),
        };
        let stream = StreamName::post(envelope.tenant, post_id);
        self.execute(
            &self.posts,
            envelope,
            &stream,
            expected_version,
            command,
            &ctx,
        )
        .await
    }

    /// The state of a budget month as the command side sees it (for the limits a new
    /// month inherits).
    async fn budget_state(
        &self,
        tenant: TenantId,
        period: Period,
    ) -> Result<budget::State, CommandError> {
        let stream = StreamName::budget(tenant, period);
        let slot = self.budgets.slot(stream.as_str());
        let mut slot = slot.lock().await;
        self.catch_up::<Budget>(tenant, &stream, &mut slot).await?;
        Ok(slot.state.clone())
    }

    async fn inherited_limits(
        &self,
        tenant: TenantId,
        period: Period,
    ) -> Result<Option<(Period, Limits)>, CommandError> {
        let mut month = period;
        for _ in 0..INHERIT_LOOKBACK_MONTHS {
            month = month.previous();
            if let Some(limits) = self.budget_state(tenant, month).await?.limits {
                return Ok(Some((month, limits)));
            }
        }
        Ok(None)
    }

    async fn catch_up<A: Aggregate>(
        &self,
        tenant: TenantId,
        stream: &StreamName,
        slot: &mut Slot<A::State>,
    ) -> Result<(), CommandError> {
        let events = self
            .store
            .read_stream(tenant.as_uuid(), stream.as_str(), slot.version)
            .await
            .map_err(CommandError::Store)?;
        for recorded in events {
            let corrupt = |reason: String| CommandError::Corrupt {
                stream: stream.to_string(),
                reason,
            };
            let decoded = schemas::decode(
                &recorded.event_type,
                recorded.schema_version,
                &recorded.data,
            )
            .map_err(|e| corrupt(e.to_string()))?;
            let event = A::unwrap(decoded).ok_or_else(|| {
                corrupt(format!(
                    "{} is not a {} event",
                    recorded.event_type,
                    A::NAME
                ))
            })?;
            slot.state = A::evolve(std::mem::take(&mut slot.state), &event);
            slot.version = recorded.version;
        }
        Ok(())
    }

    async fn execute<A: Aggregate>(
        &self,
        cache: &StreamCache<A>,
        envelope: &Envelope,
        stream: &StreamName,
        expected_version: Option<Version>,
        command: A::Command,
        ctx: &A::Ctx,
    ) -> Result<Done, CommandError>
    where
        CommandError: From<A::Rejection>,
    {
        let slot = cache.slot(stream.as_str());
        let mut slot = slot.lock().await;
        for attempt in 1..=MAX_ATTEMPTS {
            self.catch_up::<A>(envelope.tenant, stream, &mut slot)
                .await?;
            if let Some(expected) = expected_version
                && expected != slot.version
            {
                // A stream that does not exist has no version to conflict with: the
                // caller gets what the command itself answers (for a post, "not found").
                if slot.version == 0 {
                    A::decide(&slot.state, command.clone(), ctx)?;
                }
                return Err(CommandError::VersionConflict {
                    expected,
                    actual: slot.version,
                });
            }
            let events = A::decide(&slot.state, command.clone(), ctx)?;
            if events.is_empty() {
                return Ok(Done {
                    appended: None,
                    version: slot.version,
                });
            }
            let occurred_at = self.clock.now();
            let new_events = events
                .iter()
                .map(|event| {
                    let encoded = schemas::encode(&A::wrap(event.clone()));
                    NewEvent {
                        event_id: Uuid::now_v7(),
                        event_type: encoded.event_type.to_owned(),
                        schema_version: encoded.schema_version,
                        occurred_at,
                        data: encoded.data,
                    }
                })
                .collect();
            let request = AppendRequest {
                tenant_id: envelope.tenant.as_uuid(),
                stream_id: stream.to_string(),
                expected: ExpectedVersion::Exact(slot.version),
                metadata: Metadata {
                    correlation_id: envelope.correlation_id,
                    causation_id: envelope.causation_id,
                    actor: envelope.actor.clone(),
                },
                events: new_events,
                idempotency: envelope.idempotency.clone(),
            };
            match self.store.append(request).await {
                Ok(appended) => {
                    for event in &events {
                        slot.state = A::evolve(std::mem::take(&mut slot.state), event);
                    }
                    slot.version = appended.version;
                    return Ok(Done {
                        appended: Some(appended),
                        version: appended.version,
                    });
                }
                Err(StoreError::VersionConflict { .. }) => {
                    // Another process appended first: catch up and decide again.
                    tracing::debug!(stream = %stream, attempt, "lost an append race, retrying");
                }
                Err(StoreError::IdempotencyKeyTaken(_)) => {
                    return Err(CommandError::IdempotencyKeyTaken);
                }
                Err(other) => return Err(CommandError::Store(other)),
            }
        }
        Err(CommandError::Contention)
    }
}

/// Turns `ttl_seconds` into a duration, refusing what does not fit.
pub fn ttl_from_seconds(seconds: i64) -> Option<TimeDelta> {
    TimeDelta::try_seconds(seconds)
}

/// New reservation id: the client's, or a fresh UUID v7.
pub fn reservation_id_or_new(id: Option<Uuid>) -> ReservationId {
    ReservationId::from_uuid(id.unwrap_or_else(Uuid::now_v7))
}
