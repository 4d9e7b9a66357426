//! The command loop: load, decide, append, and retry on a lost race.
//!
//! Every command for one stream goes through one [`StreamCache`] slot, guarded by an
//! async mutex: commands for the same stream in this process queue behind each other
//! instead of racing to the store and retrying ("one writer per hot stream"). The slot
//! keeps the stream's folded state and version in memory ("warm state"), so a command
//! reads only the events appended since the last one. The expected version on every
//! append still guards against writers in other processes; when one of them wins, the
//! loop catches up and decides again.
//!
//! A command holds the slot only to decide and to queue its append, not until the
//! append commits: it queues it as the next of the slot's chain
//! ([`eventlog::AppendChain`]), moves the slot on as if it had landed, lets go and
//! waits for the outcome. So the next command on a hot stream is decided at once and
//! shares the group commit. The store runs a chained append only if every earlier one
//! of its chain succeeded; whatever reads or answers from the slot otherwise (a
//! refusal, a no-op, a view of the state, a snapshot) first waits until the chain is
//! confirmed, and a failed append makes the slot reload cold (ADR 0007).
//!
//! A slot that starts cold (first use in this process, or after eviction) loads the
//! stream's newest snapshot and reads only the events after it. Snapshots are taken
//! off the command path: once a slot's state is [`SNAPSHOT_EVERY`] or more events past
//! the last snapshot it knows of, the state is cloned and a background task encodes
//! and stores it. Best effort: a failed save is logged and the next one comes
//! [`SNAPSHOT_EVERY`] events later. A snapshot is a cache of a fold, so it never
//! changes an answer; one that does not decode (data this build refuses) is ignored
//! and the stream folded from its first event, and one of another format version is
//! never even read.

use std::collections::HashMap;
use std::sync::{Arc, Mutex as StdMutex};
use std::time::Instant;

use chrono::{DateTime, TimeDelta, Utc};
use domain::budget::{self, Limits};
use domain::generation::{self, Economy, Priority, Request};
use domain::ids::StreamKind;
use domain::post;
use domain::pricing::estimate_tokens;
use domain::{
    CampaignId, Channel, GenerationId, Micros, Period, PostId, ReservationId, StreamName, TenantId,
};
use eventlog::{
    AppendChain, AppendRequest, Appended, EventStore, ExpectedVersion, IdempotencyRecord, Metadata,
    NewEvent, RecordedEvent, Snapshot, StoreError, Version,
};
use tokio::sync::Mutex;
use tokio::task::JoinHandle;
use uuid::Uuid;

use crate::aggregate::{Aggregate, Budget, Generation, Post};
use crate::clock::Clock;
use crate::generation::{AiPolicy, RateLimiter};

/// How often a command is decided again after another process won the race.
const MAX_ATTEMPTS: usize = 32;
/// How many months back a new month looks for limits to inherit.
const INHERIT_LOOKBACK_MONTHS: usize = 12;
/// Streams kept warm before unused slots are dropped.
const CACHE_CAPACITY: usize = 10_000;
/// How many events past its last snapshot a stream gets a new one, by default.
pub const SNAPSHOT_EVERY: u64 = 1_000;

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
    #[error(transparent)]
    Generation(#[from] generation::Rejection),
    #[error("model {0} is not in the price book")]
    UnknownModel(String),
    #[error("the tenant's AI rate limit is used up; retry in {} s", retry_after.num_seconds().max(1))]
    RateLimited { retry_after: TimeDelta },
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
    /// Whether the slot was loaded from the store since it was made: until then it is
    /// cold, and its first load starts from the newest snapshot.
    loaded: bool,
    /// The stream version of the newest snapshot this slot knows is stored or being
    /// stored (0: none).
    snapshot_at: Version,
    /// The stream version of the snapshot whose detail `state` still lacks, when it
    /// came from a snapshot whose format keeps part of the state in its detail (0:
    /// nothing lacking). See [`CommandService::complete`].
    detail_from: Version,
    /// The appends this slot queued that may not have committed yet; `None` when every
    /// append it made is confirmed. While it is `Some`, `state` and `version` are what
    /// the stream will hold once they commit: the next command is decided on that and
    /// queued behind them (see `execute`).
    chain: Option<Arc<AppendChain>>,
}

impl<S: Default> Slot<S> {
    /// Whether the slot holds a state that waits on an append that failed: it never
    /// existed, and nothing may be decided on it.
    fn broken(&self) -> bool {
        self.chain.as_ref().is_some_and(|c| c.is_broken())
    }

    /// Waits until every append this slot queued has an outcome. If one failed, the
    /// state it was decided on never existed: the slot goes cold and reloads.
    async fn settle(&mut self) {
        let Some(chain) = self.chain.take() else {
            return;
        };
        if chain.settled(self.version).await.is_err() {
            self.forget();
        }
    }

    /// Drops what the slot holds; the next load starts cold.
    fn forget(&mut self) {
        self.state = S::default();
        self.version = 0;
        self.snapshot_at = 0;
        self.detail_from = 0;
        self.loaded = false;
        self.chain = None;
    }
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
    generations: StreamCache<Generation>,
    ai: AiPolicy,
    limiter: RateLimiter,
    /// Events between snapshots; `None` takes none and reads none.
    snapshot_every: Option<u64>,
    /// Snapshot saves still running, so [`CommandService::flush_snapshots`] can wait.
    saving: StdMutex<Vec<JoinHandle<()>>>,
}

/// What a cold load did, for the benchmark's figures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ColdLoad {
    /// The stream version of the snapshot it started from (0: none used).
    pub snapshot_version: Version,
    /// Events read and folded after the snapshot.
    pub events: u64,
}

/// A `generate-content` request after its body was parsed.
#[derive(Debug, Clone)]
pub struct GenerateRequest {
    pub generation_id: GenerationId,
    pub brief: String,
    pub channel: Channel,
    pub campaign_id: Option<CampaignId>,
    pub max_output_tokens: u32,
    pub priority: Priority,
    pub model: Option<String>,
}

/// Where a budget reservation stands, as the command side sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReservationState {
    Open,
    Settled(budget::ReservationOutcome),
    Unknown,
}

impl CommandService {
    /// A service with the embedded AI policy ([`AiPolicy::local`]).
    pub fn new(store: Arc<dyn EventStore>, clock: Arc<dyn Clock>) -> Self {
        Self {
            store,
            clock,
            budgets: StreamCache::new(),
            posts: StreamCache::new(),
            generations: StreamCache::new(),
            ai: AiPolicy::local(),
            limiter: RateLimiter::default(),
            snapshot_every: Some(SNAPSHOT_EVERY),
            saving: StdMutex::new(Vec::new()),
        }
    }

    /// Takes a snapshot of a stream every `every` events (at least one), or with `None`
    /// neither takes nor reads any: every cold load folds the whole stream.
    pub fn with_snapshots(mut self, every: Option<u64>) -> Self {
        self.snapshot_every = every.map(|n| n.max(1));
        self
    }

    /// Waits for every snapshot save started so far. Saves run in the background and
    /// finish on their own; this is for shutdown, tests and the benchmark.
    pub async fn flush_snapshots(&self) {
        loop {
            let pending: Vec<JoinHandle<()>> = {
                let mut saving = self.saving.lock().unwrap_or_else(|p| p.into_inner());
                std::mem::take(&mut *saving)
            };
            if pending.is_empty() {
                return;
            }
            for task in pending {
                if let Err(error) = task.await {
                    tracing::warn!(%error, "a snapshot save ended abnormally");
                }
            }
        }
    }

    /// Folds a stream from its first event, ignoring warm state and stored snapshots,
    /// and stores a snapshot at its head, waiting for the save: what `tidemark
    /// snapshots rebuild` does per stream. Answers the version the snapshot covers, or
    /// `None` for an empty stream or one whose aggregate keeps no snapshots.
    pub async fn snapshot_stream(
        &self,
        tenant: TenantId,
        stream: &StreamName,
    ) -> Result<Option<Version>, CommandError> {
        match stream_kind(stream)? {
            StreamKind::Budget(_) => self.snapshot_now::<Budget>(tenant, stream).await,
            StreamKind::Post(_) => self.snapshot_now::<Post>(tenant, stream).await,
            StreamKind::Generation(_) => self.snapshot_now::<Generation>(tenant, stream).await,
        }
    }

    async fn snapshot_now<A: Aggregate>(
        &self,
        tenant: TenantId,
        stream: &StreamName,
    ) -> Result<Option<Version>, CommandError> {
        let Some(codec) = A::codec() else {
            return Ok(None);
        };
        let mut slot = Slot::<A::State> {
            loaded: true,
            ..Slot::default()
        };
        let events = self
            .store
            .read_stream(tenant.as_uuid(), stream.as_str(), 0)
            .await
            .map_err(CommandError::Store)?;
        fold::<A>(stream, &mut slot, events)?;
        if slot.version == 0 {
            return Ok(None);
        }
        let stored = (codec.encode)(&slot.state).ok_or_else(|| CommandError::Corrupt {
            stream: stream.to_string(),
            reason: "a state folded from the first event cannot be encoded".to_owned(),
        })?;
        let snapshot = Snapshot {
            tenant_id: tenant.as_uuid(),
            stream_id: stream.to_string(),
            snapshot_version: codec.format.version,
            version: slot.version,
            data: stored.data,
            detail: stored.detail,
        };
        self.store
            .save_snapshot(&snapshot)
            .await
            .map_err(CommandError::Store)?;
        Ok(Some(slot.version))
    }

    /// Loads a stream as a command on a cold slot would (snapshot, then the events
    /// after it) and says what it read; the state is dropped. For the benchmark.
    pub async fn cold_load(
        &self,
        tenant: TenantId,
        stream: &StreamName,
    ) -> Result<ColdLoad, CommandError> {
        match stream_kind(stream)? {
            StreamKind::Budget(_) => {
                self.load_cold::<Budget>(tenant, stream, &mut Slot::default(), true)
                    .await
            }
            StreamKind::Post(_) => {
                self.load_cold::<Post>(tenant, stream, &mut Slot::default(), true)
                    .await
            }
            StreamKind::Generation(_) => {
                self.load_cold::<Generation>(tenant, stream, &mut Slot::default(), true)
                    .await
            }
        }
    }

    /// Replaces the AI policy (price book, models, rate limits).
    pub fn with_ai_policy(mut self, policy: AiPolicy) -> Self {
        self.ai = policy;
        self
    }

    pub fn ai_policy(&self) -> &AiPolicy {
        &self.ai
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

    /// Accepts a `generate-content` request: picks the model, reserves the worst-case
    /// cost on this month's budget, and records the request for the generation
    /// workflow. Nothing is recorded (and no provider will be called) when the
    /// reservation is refused.
    ///
    /// The reservation id is the generation id, so a retried request can never hold
    /// money twice; a crash between the reservation and the request leaves a
    /// reservation that expires after the policy's ttl.
    #[tracing::instrument(skip_all, fields(tenant = %envelope.tenant, generation = %request.generation_id))]
    pub async fn generate(
        &self,
        envelope: &Envelope,
        request: GenerateRequest,
    ) -> Result<Done, CommandError> {
        let tenant = envelope.tenant;
        let now = self.clock.now();
        let policy = &self.ai;
        let asked = match &request.model {
            Some(name) => policy.price_book.lookup(name),
            None => policy.price_book.get(&policy.default_model),
        };
        let asked = asked.cloned().ok_or_else(|| {
            CommandError::UnknownModel(
                request
                    .model
                    .clone()
                    .unwrap_or_else(|| policy.default_model.to_string()),
            )
        })?;
        let fallback = policy
            .fallback_for(tenant)
            .and_then(|m| policy.price_book.get(m))
            .cloned();
        let period = Period::containing(now);
        let (status, used, soft) = self
            .budget_view(tenant, period, |state| {
                (
                    state.status(),
                    state.committed.saturating_add(state.reserved),
                    state.limits.as_ref().map(|l| l.soft),
                )
            })
            .await?;
        let mut chosen = asked.clone();
        let mut economy = None;
        if request.priority == Priority::NonCore
            && status == budget::BudgetStatus::SoftExceeded
            && let (Some(cheaper), Some(soft)) = (&fallback, soft)
            && cheaper.model != asked.model
        {
            economy = Some(Economy {
                requested: asked.model.clone(),
                budget_used: used,
                soft_limit: soft,
            });
            chosen = cheaper.clone();
        }
        let (system, user) = generation::prompt(&request.brief, &request.channel);
        let estimated_input_tokens = estimate_tokens(&system) + estimate_tokens(&user);
        let max_output_tokens = chosen.clamp_output(request.max_output_tokens);
        // A model priced at zero still holds one micro-USD, so every generation has a
        // reservation to settle.
        let reserved = chosen
            .worst_case(estimated_input_tokens, max_output_tokens)
            .max(Micros::new(1).unwrap_or_default());
        let reservation_id = ReservationId::from_uuid(request.generation_id.as_uuid());
        let command = generation::Command::Request {
            request: Request {
                brief: request.brief,
                channel: request.channel,
                campaign_id: request.campaign_id,
                priority: request.priority,
                requested_model: request.model,
                model: chosen.model.clone(),
                fallback_model: fallback.map(|f| f.model).filter(|m| *m != chosen.model),
                max_output_tokens,
                estimated_input_tokens,
                reservation_id,
                period,
                reserved,
                price_version: policy.price_book.version.clone(),
            },
            economy,
        };
        // The domain's own checks run before anything is reserved or rate-limited.
        generation::decide(&generation::State::default(), command.clone())?;
        let tokens = estimated_input_tokens + u64::from(max_output_tokens);
        self.limiter
            .acquire(tenant, policy.rate_limit_for(tenant), tokens, now)
            .map_err(|retry_after| CommandError::RateLimited { retry_after })?;
        let stream = StreamName::generation(tenant, request.generation_id);
        let reserve = budget::Command::Reserve {
            reservation_id,
            amount: reserved,
            purpose: format!("generate-content {}", request.generation_id),
            ttl: policy.reservation_ttl,
        };
        let reserving = Envelope {
            idempotency: None,
            ..envelope.clone()
        };
        match self.budget(&reserving, Some(period), reserve).await {
            Ok(_) => {}
            Err(CommandError::Budget(budget::Rejection::ReservationExists(id))) => {
                // Either this generation exists (the request below is refused as a
                // duplicate) or an earlier try reserved and stopped before recording
                // the request. Any other holder of the id is a conflict.
                let ours = format!("generate-content {}", request.generation_id);
                let held_by_us = self
                    .budget_view(tenant, period, |state| {
                        state.open.get(&id).is_some_and(|r| r.purpose == ours)
                    })
                    .await?;
                if !held_by_us {
                    let (state, _) = self.generation_state(tenant, request.generation_id).await?;
                    if state.status == generation::Status::Absent {
                        return Err(budget::Rejection::ReservationExists(id).into());
                    }
                }
            }
            Err(other) => return Err(other),
        }
        self.execute(&self.generations, envelope, &stream, None, command, &())
            .await
    }

    /// Runs a command of the generation workflow on a generation.
    #[tracing::instrument(skip_all, fields(tenant = %envelope.tenant, generation = %id))]
    pub async fn generation(
        &self,
        envelope: &Envelope,
        id: GenerationId,
        expected_version: Option<Version>,
        command: generation::Command,
    ) -> Result<Done, CommandError> {
        let stream = StreamName::generation(envelope.tenant, id);
        self.execute(
            &self.generations,
            envelope,
            &stream,
            expected_version,
            command,
            &(),
        )
        .await
    }

    /// A generation's current state and version.
    pub async fn generation_state(
        &self,
        tenant: TenantId,
        id: GenerationId,
    ) -> Result<(generation::State, Version), CommandError> {
        let stream = StreamName::generation(tenant, id);
        let slot = self.generations.slot(stream.as_str());
        let mut slot = slot.lock().await;
        self.catch_up::<Generation>(tenant, &stream, &mut slot)
            .await?;
        Ok((slot.state.clone(), slot.version))
    }

    /// A post's current state and version, caught up with the store.
    pub async fn post_state(
        &self,
        tenant: TenantId,
        id: PostId,
    ) -> Result<post::State, CommandError> {
        let stream = StreamName::post(tenant, id);
        let slot = self.posts.slot(stream.as_str());
        let mut slot = slot.lock().await;
        self.catch_up::<Post>(tenant, &stream, &mut slot).await?;
        Ok(slot.state.clone())
    }

    /// Looks at a budget month's current state without copying it.
    async fn budget_view<R>(
        &self,
        tenant: TenantId,
        period: Period,
        look: impl FnOnce(&budget::State) -> R,
    ) -> Result<R, CommandError> {
        let stream = StreamName::budget(tenant, period);
        let slot = self.budgets.slot(stream.as_str());
        let mut slot = slot.lock().await;
        self.catch_up::<Budget>(tenant, &stream, &mut slot).await?;
        Ok(look(&slot.state))
    }

    /// Where a reservation of `period` stands.
    pub async fn reservation_state(
        &self,
        tenant: TenantId,
        period: Period,
        id: ReservationId,
    ) -> Result<ReservationState, CommandError> {
        let stream = StreamName::budget(tenant, period);
        let slot = self.budgets.slot(stream.as_str());
        let mut slot = slot.lock().await;
        self.catch_up::<Budget>(tenant, &stream, &mut slot).await?;
        if slot.state.needs_settled_list(&id) {
            self.complete::<Budget>(tenant, &stream, &mut slot).await?;
        }
        let state = &slot.state;
        Ok(if state.open.contains_key(&id) {
            ReservationState::Open
        } else {
            match state.settled.get(&id) {
                Ok(Some(outcome)) => ReservationState::Settled(*outcome),
                Ok(None) => ReservationState::Unknown,
                Err(budget::Unlisted) => {
                    return Err(budget::Rejection::SettledUnlisted(id).into());
                }
            }
        })
    }

    async fn inherited_limits(
        &self,
        tenant: TenantId,
        period: Period,
    ) -> Result<Option<(Period, Limits)>, CommandError> {
        let mut month = period;
        for _ in 0..INHERIT_LOOKBACK_MONTHS {
            month = month.previous();
            if let Some(limits) = self
                .budget_view(tenant, month, |state| state.limits.clone())
                .await?
            {
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
        // What the slot holds may still wait on appends in flight; nothing is read
        // from it, or answered on it, before they have landed.
        slot.settle().await;
        if slot.loaded {
            let events = self
                .store
                .read_stream(tenant.as_uuid(), stream.as_str(), slot.version)
                .await
                .map_err(CommandError::Store)?;
            fold::<A>(stream, slot, events)?;
        } else {
            self.load_cold::<A>(tenant, stream, slot, true).await?;
        }
        self.maybe_snapshot::<A>(tenant, stream, slot, None).await;
        Ok(())
    }

    /// Hands a slot's state the detail of the snapshot it was decoded from, which a
    /// cold load leaves in the store (see [`Codec`](crate::aggregate::Codec)): for the
    /// budget, the month's settled list, needed only when the filter cannot rule out the
    /// reservation a command names.
    ///
    /// That snapshot may be gone by now: a newer one replaced it (this process saves one
    /// every [`SNAPSHOT_EVERY`] events) or snapshots were dropped. The slot then waits for
    /// its appends in flight and loads again from the newest snapshot, and, should that
    /// one be replaced too before its detail is read, from the stream's first event.
    async fn complete<A: Aggregate>(
        &self,
        tenant: TenantId,
        stream: &StreamName,
        slot: &mut Slot<A::State>,
    ) -> Result<(), CommandError> {
        let Some(codec) = A::codec() else {
            return Ok(());
        };
        let mut from_snapshot = true;
        for _ in 0..2 {
            if !(codec.incomplete)(&slot.state) {
                slot.detail_from = 0;
                return Ok(());
            }
            let started = Instant::now();
            let detail = self
                .store
                .load_snapshot_detail(
                    tenant.as_uuid(),
                    stream.as_str(),
                    codec.format.version,
                    slot.detail_from,
                )
                .await
                .map_err(CommandError::Store)?;
            match detail.map(|detail| (codec.complete)(&mut slot.state, &detail)) {
                Some(Ok(())) => {
                    tracing::debug!(
                        stream = %stream,
                        snapshot = slot.detail_from,
                        elapsed_ms = started.elapsed().as_secs_f64() * 1e3,
                        "snapshot detail loaded"
                    );
                    slot.detail_from = 0;
                    return Ok(());
                }
                Some(Err(error)) => {
                    tracing::warn!(
                        stream = %stream,
                        snapshot = slot.detail_from,
                        error = &error as &dyn std::error::Error,
                        "ignoring a snapshot detail that does not decode; folding the stream from its start"
                    );
                    from_snapshot = false;
                }
                None => tracing::debug!(
                    stream = %stream,
                    snapshot = slot.detail_from,
                    "the snapshot's detail is gone; loading again"
                ),
            }
            // Reloading replaces the state, so the appends decided on it land first.
            slot.settle().await;
            self.load_cold::<A>(tenant, stream, slot, from_snapshot)
                .await?;
            from_snapshot = false;
        }
        Ok(())
    }

    /// The first load of a slot: the newest snapshot in the format this build knows,
    /// then the events after it. A snapshot that does not decode is ignored, and the
    /// stream is read again from its first event.
    ///
    /// With `from_snapshot` false it reads the whole stream and uses no snapshot.
    async fn load_cold<A: Aggregate>(
        &self,
        tenant: TenantId,
        stream: &StreamName,
        slot: &mut Slot<A::State>,
        from_snapshot: bool,
    ) -> Result<ColdLoad, CommandError> {
        let started = Instant::now();
        let codec = A::codec().filter(|_| self.snapshot_every.is_some() && from_snapshot);
        let read = match &codec {
            Some(codec) => self
                .store
                .read_stream_from_snapshot(tenant.as_uuid(), stream.as_str(), codec.format.version)
                .await
                .map_err(CommandError::Store)?,
            None => (None, Vec::new()),
        };
        let restored = match (read, &codec) {
            ((Some(snapshot), events), Some(codec)) => match (codec.decode)(&snapshot.data) {
                Ok(state) => Some((snapshot.version, state, events)),
                Err(error) => {
                    tracing::warn!(
                        stream = %stream,
                        version = snapshot.version,
                        error = &error as &dyn std::error::Error,
                        "ignoring a snapshot that does not decode; folding the stream from its start"
                    );
                    None
                }
            },
            // No snapshot stored: the events read are the whole stream.
            ((None, events), Some(_)) => Some((0, A::State::default(), events)),
            (_, None) => None,
        };
        let (snapshot_version, state, events) = match restored {
            Some(restored) => restored,
            None => {
                let events = self
                    .store
                    .read_stream(tenant.as_uuid(), stream.as_str(), 0)
                    .await
                    .map_err(CommandError::Store)?;
                (0, A::State::default(), events)
            }
        };
        let incomplete = codec.as_ref().is_some_and(|c| (c.incomplete)(&state));
        slot.state = state;
        slot.version = snapshot_version;
        slot.snapshot_at = slot.snapshot_at.max(snapshot_version);
        slot.detail_from = if incomplete { snapshot_version } else { 0 };
        let load = ColdLoad {
            snapshot_version,
            events: events.len() as u64,
        };
        fold::<A>(stream, slot, events)?;
        slot.loaded = true;
        tracing::debug!(
            stream = %stream,
            snapshot = snapshot_version,
            events = load.events,
            elapsed_ms = started.elapsed().as_secs_f64() * 1e3,
            "cold load"
        );
        Ok(load)
    }

    /// Starts a snapshot save in the background when the slot is far enough past the
    /// last one. Costs the command path one clone of the state per snapshot; the
    /// encoding and the write happen elsewhere.
    ///
    /// With `pending`, the slot's state waits on that chain's appends (it was taken
    /// right after queuing one): the save waits until they commit, and is skipped if
    /// one fails, since the state then never existed.
    ///
    /// A state that still lacks its snapshot's detail is completed first, on the slot
    /// itself, since a new snapshot must hold the whole state and the snapshot it came
    /// from is about to be replaced: one read per slot loaded cold, 1,000 events after
    /// the load. If that fails, no snapshot is taken this time.
    async fn maybe_snapshot<A: Aggregate>(
        &self,
        tenant: TenantId,
        stream: &StreamName,
        slot: &mut Slot<A::State>,
        pending: Option<&Arc<AppendChain>>,
    ) {
        let (Some(every), Some(codec)) = (self.snapshot_every, A::codec()) else {
            return;
        };
        if slot.version < slot.snapshot_at.saturating_add(every) {
            return;
        }
        if (codec.incomplete)(&slot.state) {
            if let Err(error) = self.complete::<A>(tenant, stream, slot).await {
                tracing::warn!(
                    stream = %stream,
                    error = &error as &dyn std::error::Error,
                    "completing a state for its snapshot failed; the next one is due {every} events later"
                );
                slot.snapshot_at = slot.version;
                return;
            }
            // Completing may have loaded the slot again, from a newer snapshot.
            if slot.version < slot.snapshot_at.saturating_add(every) {
                return;
            }
        }
        // Loading again waited for the slot's appends in flight and let go of their
        // chain: the state is then all committed, and the chain may never confirm the
        // version the reload reached (other processes' events), so nothing waits on it.
        let pending = pending.filter(|_| slot.chain.is_some());
        slot.snapshot_at = slot.version;
        let state = slot.state.clone();
        let store = Arc::clone(&self.store);
        let tenant_id = tenant.as_uuid();
        let stream_id = stream.to_string();
        let version = slot.version;
        let pending = pending.map(Arc::clone);
        let task = tokio::spawn(async move {
            if let Some(chain) = pending
                && chain.settled(version).await.is_err()
            {
                tracing::debug!(stream = %stream_id, version, "not saving a snapshot of an append that failed");
                return;
            }
            let encoded = tokio::task::spawn_blocking(move || (codec.encode)(&state)).await;
            let stored = match encoded {
                Ok(Some(stored)) => stored,
                Ok(None) => {
                    // `maybe_snapshot` completed the state before cloning it.
                    tracing::warn!(stream = %stream_id, "not saving a snapshot of an incomplete state");
                    return;
                }
                Err(error) => {
                    tracing::warn!(stream = %stream_id, %error, "encoding a snapshot failed");
                    return;
                }
            };
            let snapshot = Snapshot {
                tenant_id,
                stream_id,
                snapshot_version: codec.format.version,
                version,
                data: stored.data,
                detail: stored.detail,
            };
            match store.save_snapshot(&snapshot).await {
                Ok(stored) => tracing::debug!(
                    stream = %snapshot.stream_id,
                    version,
                    bytes = snapshot.data.len(),
                    stored,
                    "snapshot"
                ),
                Err(error) => tracing::warn!(
                    stream = %snapshot.stream_id,
                    version,
                    error = &error as &dyn std::error::Error,
                    "saving a snapshot failed; the next one is due {every} events later"
                ),
            }
        });
        let mut saving = self.saving.lock().unwrap_or_else(|p| p.into_inner());
        saving.retain(|t| !t.is_finished());
        saving.push(task);
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
        let handle = cache.slot(stream.as_str());
        let mut slot = handle.lock().await;
        // Decide on what the slot already holds, without reading the stream first: the
        // append's expected version proves the state was current (a stream this
        // process never loaded holds version 0, so a new stream is appended to without
        // any read). Only an outcome that is not proven by an append — a rejection, a
        // version mismatch, nothing to do — is decided again on a caught-up slot
        // before it is answered, and a lost race catches up and decides again.
        let mut caught_up = false;
        let mut attempt = 0;
        loop {
            if slot.broken() {
                // An append in flight failed: the state past it never existed. Catching
                // up drops it and reloads, before anything is decided on it.
                self.catch_up::<A>(envelope.tenant, stream, &mut slot)
                    .await?;
                caught_up = true;
            }
            if let Some(expected) = expected_version
                && expected != slot.version
            {
                if !caught_up {
                    self.catch_up::<A>(envelope.tenant, stream, &mut slot)
                        .await?;
                    caught_up = true;
                    continue;
                }
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
            if A::needs_detail(&slot.state, &command) {
                self.complete::<A>(envelope.tenant, stream, &mut slot)
                    .await?;
            }
            let decided = A::decide(&slot.state, command.clone(), ctx);
            let unproven = !matches!(&decided, Ok(events) if !events.is_empty());
            if unproven && !caught_up {
                self.catch_up::<A>(envelope.tenant, stream, &mut slot)
                    .await?;
                caught_up = true;
                continue;
            }
            let events = decided?;
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
            let expected = slot.version;
            let request = AppendRequest {
                tenant_id: envelope.tenant.as_uuid(),
                stream_id: stream.to_string(),
                expected: ExpectedVersion::Exact(expected),
                metadata: Metadata {
                    correlation_id: envelope.correlation_id,
                    causation_id: envelope.causation_id,
                    actor: envelope.actor.clone(),
                },
                events: new_events,
                idempotency: envelope.idempotency.clone(),
            };
            // Queued behind this slot's appends still in flight, if any: the store runs
            // it only if they all succeed, which is what it was decided on.
            let chain = Arc::clone(slot.chain.get_or_insert_with(|| AppendChain::new(expected)));
            let pending = self
                .store
                .append_chained(request, Arc::clone(&chain))
                .await
                .map_err(CommandError::Store)?;
            // The slot moves on as if the append had landed, so the next command can be
            // decided and queued before it commits (see `Slot::chain`).
            for event in &events {
                slot.state = A::evolve(std::mem::take(&mut slot.state), event);
            }
            slot.version = expected + events.len() as u64;
            // The append at the slot's version will prove the slot holds the whole
            // stream, even one it never read (a new stream).
            slot.loaded = true;
            self.maybe_snapshot::<A>(envelope.tenant, stream, &mut slot, Some(&chain))
                .await;
            drop(slot);

            let error = match pending.await {
                Ok(appended) => {
                    return Ok(Done {
                        appended: Some(appended),
                        version: appended.version,
                    });
                }
                Err(error) => error,
            };
            // The failure broke the chain, so whoever takes the slot next (this loop
            // below, or the next command) drops what it holds and reloads.
            slot = handle.lock().await;
            match error {
                StoreError::VersionConflict { .. } | StoreError::EarlierAppendFailed { .. } => {
                    // Another process appended first (or this slot was never loaded, or
                    // an append this one was decided after failed): catch up and decide
                    // again.
                    attempt += 1;
                    if attempt >= MAX_ATTEMPTS {
                        return Err(CommandError::Contention);
                    }
                    tracing::debug!(stream = %stream, attempt, "lost an append race, retrying");
                    self.catch_up::<A>(envelope.tenant, stream, &mut slot)
                        .await?;
                    caught_up = true;
                }
                StoreError::IdempotencyKeyTaken(_) => {
                    return Err(CommandError::IdempotencyKeyTaken);
                }
                other => return Err(CommandError::Store(other)),
            }
        }
    }
}

/// What a stream holds, from its name.
fn stream_kind(stream: &StreamName) -> Result<StreamKind, CommandError> {
    StreamName::parse(stream.as_str())
        .map(|(_, kind)| kind)
        .map_err(|e| CommandError::Corrupt {
            stream: stream.to_string(),
            reason: e.to_string(),
        })
}

/// Folds stored events onto a slot, in version order.
fn fold<A: Aggregate>(
    stream: &StreamName,
    slot: &mut Slot<A::State>,
    events: Vec<RecordedEvent>,
) -> Result<(), CommandError> {
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

/// Turns `ttl_seconds` into a duration, refusing what does not fit.
pub fn ttl_from_seconds(seconds: i64) -> Option<TimeDelta> {
    TimeDelta::try_seconds(seconds)
}

/// New reservation id: the client's, or a fresh UUID v7.
pub fn reservation_id_or_new(id: Option<Uuid>) -> ReservationId {
    ReservationId::from_uuid(id.unwrap_or_else(Uuid::now_v7))
}
