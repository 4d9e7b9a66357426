//! Snapshots never change an answer: the same commands, run with snapshots every few
//! events and through many cold restarts, answer exactly as they do without any
//! snapshot, and leave exactly the same log — on SQLite and on PostgreSQL. A snapshot
//! that does not decode is ignored, not trusted.
//!
//! The store is wrapped so the test can see that cold loads really started from a
//! snapshot; otherwise it could pass without one ever being read.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use chrono::{DateTime, TimeDelta, TimeZone, Utc};
use command_api::{Clock, CommandError, CommandService, Envelope};
use domain::budget;
use domain::post;
use domain::{Channel, Micros, Period, PostId, ReservationId, StreamName, TenantId};
use eventlog::postgres::testing::TestDatabase;
use eventlog::sqlite::SqliteStore;
use eventlog::{EventStore, Snapshot, Version};
use uuid::Uuid;

use crate::probe::Probe;
use crate::support::ManualClock;

/// Events between snapshots: small, so a short run takes many of them.
const EVERY: u64 = 5;
/// Commands between cold restarts.
const RESTART_EVERY: usize = 7;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commands_answer_the_same_with_snapshots_through_cold_restarts_on_sqlite() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let with = SqliteStore::open(&dir.path().join("with.db"))
        .await
        .expect("a store opens");
    let without = SqliteStore::open(&dir.path().join("without.db"))
        .await
        .expect("a store opens");
    check(Arc::new(Probe::new(with)), Arc::new(without)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commands_answer_the_same_with_snapshots_through_cold_restarts_on_postgres() {
    let with_db = TestDatabase::create().await;
    let without_db = TestDatabase::create().await;
    check(
        Arc::new(Probe::new(with_db.store().await)),
        Arc::new(without_db.store().await),
    )
    .await;
    with_db.drop_database().await;
    without_db.drop_database().await;
}

/// Runs one command script against both stores, the first with snapshots and the
/// second without, restarting both services every few commands, and compares every
/// answer and both logs.
async fn check<S: EventStore>(with: Arc<Probe<S>>, without: Arc<dyn EventStore>) {
    let start: DateTime<Utc> = Utc
        .with_ymd_and_hms(2026, 11, 10, 12, 0, 0)
        .single()
        .expect("a valid time");
    let clock = ManualClock::new(start);
    let tenant = TenantId::from_uuid(Uuid::from_u128(0x7e57));
    let post_id = PostId::from_uuid(Uuid::from_u128(0x9057));
    let with_dyn: Arc<dyn EventStore> = with.clone();
    let service = |store: &Arc<dyn EventStore>, snapshots: Option<u64>| {
        CommandService::new(store.clone(), Arc::new(clock.clone())).with_snapshots(snapshots)
    };
    let mut a = service(&with_dyn, Some(EVERY));
    let mut b = service(&without, None);

    let script = script(160);
    for (n, (advance, step)) in script.iter().enumerate() {
        clock.advance(TimeDelta::seconds(*advance));
        let answer_a = run(&a, tenant, post_id, step).await;
        let answer_b = run(&b, tenant, post_id, step).await;
        assert_eq!(
            answer_a, answer_b,
            "step {n} ({step:?}) answered differently with snapshots"
        );
        if n % RESTART_EVERY == RESTART_EVERY - 1 {
            // A restart: the saves started so far land, then everything warm is gone.
            a.flush_snapshots().await;
            a = service(&with_dyn, Some(EVERY));
            b = service(&without, None);
        }
    }
    a.flush_snapshots().await;
    let used = with.snapshots_used.load(Ordering::Relaxed);
    assert!(
        used >= 10,
        "cold loads should have started from stored snapshots, but only {used} did"
    );
    // Ids come from a pool of ten, so cold ledgers met settled ids their filter holds
    // and read their list.
    let details = with.details_found.load(Ordering::Relaxed);
    assert!(
        details >= 3,
        "cold ledgers should have read their settled lists, but only {details} did"
    );

    // A snapshot that does not decode is ignored: the stream is folded from its start.
    // (The good ones are dropped first, so the bad one is the only one there is.)
    let dropped = with.drop_snapshots().await.expect("snapshots drop");
    assert!(dropped >= 2, "the budget and the post had snapshots");
    let stream = StreamName::budget(tenant, Period::containing(clock.now()));
    let head = with
        .read_stream(tenant.as_uuid(), stream.as_str(), 0)
        .await
        .expect("the stream reads")
        .len() as Version;
    let planted = with
        .save_snapshot(&Snapshot {
            tenant_id: tenant.as_uuid(),
            stream_id: stream.to_string(),
            snapshot_version: schemas::states::BUDGET_STATE.version,
            version: head,
            data: r#"{"committed_micros": 1, "open": []}"#.to_owned(),
            detail: None,
        })
        .await
        .expect("a snapshot saves");
    assert!(planted, "the undecodable snapshot is stored");
    let a = service(&with_dyn, Some(EVERY));
    let b = service(&without, None);
    for (n, (_, step)) in script.iter().take(12).enumerate() {
        let answer_a = run(&a, tenant, post_id, step).await;
        let answer_b = run(&b, tenant, post_id, step).await;
        assert_eq!(
            answer_a, answer_b,
            "after a bad snapshot, step {n} answered differently"
        );
    }

    for stream in [
        StreamName::budget(tenant, Period::containing(clock.now())),
        StreamName::post(tenant, post_id),
    ] {
        assert_eq!(
            log(with_dyn.as_ref(), tenant, &stream).await,
            log(without.as_ref(), tenant, &stream).await,
            "{stream} holds different events with snapshots"
        );
    }
}

/// A command of the script.
#[derive(Debug, Clone)]
enum Step {
    SetLimits,
    Reserve { id: u8, amount: i64, ttl_secs: i64 },
    Commit { id: u8, actual: i64 },
    Release { id: u8 },
    ExpireDue,
    CreatePost,
    EditPost(u32),
}

/// A fixed pseudo-random script (the same every run), with how many seconds pass
/// before each step. Ids come from a pool of ten, so reservations are reused and settled
/// twice; reservations are large against the hard limit and commits small, so whether
/// one fits depends on what the open ones hold.
fn script(len: usize) -> Vec<(i64, Step)> {
    let mut seed: u64 = 0x5eed_cafe;
    let mut next = |below: u64| {
        seed = seed
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        i64::try_from((seed >> 33) % below).expect("small")
    };
    let mut steps = vec![(0, Step::SetLimits), (0, Step::CreatePost)];
    while steps.len() < len {
        let id = u8::try_from(next(10)).expect("small");
        let step = match next(10) {
            0..=3 => Step::Reserve {
                id,
                amount: 1 + next(1_500_000),
                ttl_secs: 600 + next(7_200),
            },
            4 | 5 => Step::Commit {
                id,
                actual: next(60_000),
            },
            6 => Step::Release { id },
            7 => Step::ExpireDue,
            _ => Step::EditPost(u32::try_from(steps.len()).expect("small")),
        };
        steps.push((next(600), step));
    }
    steps
}

/// Runs one step and writes its answer down as text: the events' versions and
/// positions, or the refusal.
async fn run(service: &CommandService, tenant: TenantId, post_id: PostId, step: &Step) -> String {
    let envelope = Envelope::system(tenant, "snapshot-test", None);
    let micros = |v: i64| Micros::new(v).expect("not negative");
    let reservation = |id: u8| ReservationId::from_uuid(Uuid::from_u128(u128::from(id) + 1));
    let budget = |command| service.budget(&envelope, None, command);
    let result: Result<_, CommandError> = match step {
        Step::SetLimits => {
            budget(budget::Command::SetLimits {
                soft: micros(600_000),
                hard: micros(5_000_000),
                alert_thresholds_pct: vec![5, 10, 25],
            })
            .await
        }
        Step::Reserve {
            id,
            amount,
            ttl_secs,
        } => {
            budget(budget::Command::Reserve {
                reservation_id: reservation(*id),
                amount: micros(*amount),
                purpose: "snapshot test".to_owned(),
                ttl: TimeDelta::seconds(*ttl_secs),
            })
            .await
        }
        Step::Commit { id, actual } => {
            budget(budget::Command::Commit {
                reservation_id: reservation(*id),
                actual: micros(*actual),
            })
            .await
        }
        Step::Release { id } => {
            budget(budget::Command::Release {
                reservation_id: reservation(*id),
            })
            .await
        }
        Step::ExpireDue => budget(budget::Command::ExpireDue).await,
        Step::CreatePost => {
            let command = post::Command::Create {
                channels: vec![Channel::new("linkedin").expect("a valid channel")],
                body: "A post that is edited again and again.".to_owned(),
                campaign_id: None,
            };
            service.post(&envelope, post_id, None, command).await
        }
        Step::EditPost(n) => {
            let command = post::Command::Edit {
                body: format!("Edit number {n}."),
            };
            service.post(&envelope, post_id, None, command).await
        }
    };
    match result {
        Ok(done) => format!(
            "ok version {} appended {:?}",
            done.version,
            done.appended.map(|a| (a.first_position, a.last_position))
        ),
        Err(CommandError::Budget(rejection)) => format!("refused {}", rejection.code()),
        Err(CommandError::Post(rejection)) => format!("refused {}", rejection.code()),
        Err(other) => panic!("step {step:?} failed unexpectedly: {other}"),
    }
}

/// A stream's events without what differs by construction (event ids, times).
async fn log(
    store: &dyn EventStore,
    tenant: TenantId,
    stream: &StreamName,
) -> Vec<(Version, String, serde_json::Value)> {
    store
        .read_stream(tenant.as_uuid(), stream.as_str(), 0)
        .await
        .expect("the stream reads")
        .into_iter()
        .map(|e| (e.version, e.event_type, e.data))
        .collect()
}

/// A slot loaded cold whose snapshot another process replaced reads the stream again
/// when its first snapshot is due; if the other process appends meanwhile, the slot
/// reaches a version its own appends never confirm. The snapshot it then takes must
/// not wait for them to (it would wait forever, and so would every flush).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slot_that_loads_again_for_its_first_snapshot_saves_it_without_waiting_on_its_appends() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let probe = Arc::new(Probe::new(
        SqliteStore::open(&dir.path().join("events.db"))
            .await
            .expect("a store opens"),
    ));
    let month = SettledMonth::fill(probe.clone(), 0x5107, 20).await;
    let mut fresh = month.fresh_ids(300).await.into_iter();

    // A slot loaded cold from that snapshot, one event past it; then the snapshot is
    // replaced by one at the same head.
    let slot_owner = month.service(Some(2));
    let first = fresh.next().expect("a fresh id");
    month
        .budget(&slot_owner, reserve(first))
        .await
        .expect("reserved");
    let mut month = month;
    month.snapshot_again().await;

    // The next command makes a snapshot due. Reading the replaced snapshot's list finds
    // nothing, and meanwhile the other process appends twice.
    let writer = Arc::clone(&month.writer);
    let envelope = month.envelope.clone();
    *probe
        .before_detail
        .lock()
        .expect("no test panicked holding the hook") = Some(Box::pin(async move {
        for command in [reserve(999_999), commit(999_999)] {
            writer
                .budget(&envelope, None, command)
                .await
                .expect("the other process appends");
        }
    }));
    let second = fresh.next().expect("a fresh id");
    month
        .budget(&slot_owner, reserve(second))
        .await
        .expect("reserved");
    assert_eq!(
        probe.details_asked.load(Ordering::Relaxed),
        2,
        "the replaced snapshot's list, then the newest one's"
    );
    tokio::time::timeout(
        std::time::Duration::from_secs(20),
        slot_owner.flush_snapshots(),
    )
    .await
    .expect("the snapshot save ends");
    assert_eq!(
        month.snapshot().await.version,
        month.head().await,
        "the slot's snapshot covers everything it loaded"
    );
}

/// A budget month another process filled before the test: limits, then reservations
/// `1..=settled` (see [`reserve`]), each reserved and committed, and a snapshot at its
/// head.
struct SettledMonth {
    store: Arc<dyn EventStore>,
    clock: ManualClock,
    tenant: TenantId,
    envelope: Envelope,
    stream: StreamName,
    /// The other process, which takes no snapshot by itself.
    writer: Arc<CommandService>,
    /// The stream version of the snapshot taken last.
    snapshot_at: Version,
}

impl SettledMonth {
    async fn fill(store: Arc<dyn EventStore>, tenant: u128, settled: u128) -> Self {
        let start: DateTime<Utc> = Utc
            .with_ymd_and_hms(2026, 11, 10, 12, 0, 0)
            .single()
            .expect("a valid time");
        let clock = ManualClock::new(start);
        let tenant = TenantId::from_uuid(Uuid::from_u128(tenant));
        let envelope = Envelope::system(tenant, "settled-month", None);
        let writer = Arc::new(
            CommandService::new(store.clone(), Arc::new(clock.clone())).with_snapshots(None),
        );
        let limits = budget::Command::SetLimits {
            soft: money(1_000_000_000),
            hard: money(1_000_000_000),
            alert_thresholds_pct: vec![],
        };
        let settling = (1..=settled).flat_map(|n| [reserve(n), commit(n)]);
        for command in std::iter::once(limits).chain(settling) {
            writer
                .budget(&envelope, None, command)
                .await
                .expect("the other process appends");
        }
        let mut month = Self {
            store,
            clock,
            tenant,
            envelope,
            stream: StreamName::budget(tenant, Period::containing(start)),
            writer,
            snapshot_at: 0,
        };
        month.snapshot_again().await;
        month
    }

    /// A fresh command service of this process, taking a snapshot every `every` events.
    fn service(&self, every: Option<u64>) -> CommandService {
        CommandService::new(self.store.clone(), Arc::new(self.clock.clone())).with_snapshots(every)
    }

    async fn budget(
        &self,
        service: &CommandService,
        command: budget::Command,
    ) -> Result<command_api::Done, CommandError> {
        service.budget(&self.envelope, None, command).await
    }

    /// The other process takes a snapshot at the month's head, replacing the last one.
    async fn snapshot_again(&mut self) {
        self.snapshot_at = self
            .writer
            .snapshot_stream(self.tenant, &self.stream)
            .await
            .expect("a snapshot is taken")
            .expect("the month has events");
    }

    async fn snapshot(&self) -> Snapshot {
        budget_snapshot(self.store.as_ref(), self.tenant, &self.stream).await
    }

    async fn head(&self) -> Version {
        log(self.store.as_ref(), self.tenant, &self.stream)
            .await
            .len() as Version
    }

    /// A dozen ids from `from` up that the newest snapshot's filter rules out, so that
    /// no command reserving them reads the list.
    async fn fresh_ids(&self, from: u128) -> Vec<u128> {
        let filtered = schemas::states::decode_budget_state(&self.snapshot().await.data)
            .expect("the snapshot decodes");
        let fresh: Vec<u128> = (from..from + 1_000)
            .filter(|n| !budget::needs_settled_list(&filtered, &reserve(*n)))
            .take(12)
            .collect();
        assert_eq!(fresh.len(), 12, "the filter rules out most fresh ids");
        fresh
    }
}

fn money(micros: i64) -> Micros {
    Micros::new(micros).expect("not negative")
}

/// The `n`th test reservation id.
fn reservation(n: u128) -> ReservationId {
    ReservationId::from_uuid(Uuid::from_u128(0xaaaa_0000 + n))
}

/// Reserves 1,000 µ$ for an hour under the `n`th test reservation id.
fn reserve(n: u128) -> budget::Command {
    budget::Command::Reserve {
        reservation_id: reservation(n),
        amount: money(1_000),
        purpose: "settled month test".to_owned(),
        ttl: TimeDelta::hours(1),
    }
}

fn commit(n: u128) -> budget::Command {
    budget::Command::Commit {
        reservation_id: reservation(n),
        actual: money(900),
    }
}

/// The month's newest budget snapshot, which the test expects to be stored.
async fn budget_snapshot(
    store: &dyn EventStore,
    tenant: TenantId,
    stream: &StreamName,
) -> Snapshot {
    store
        .load_snapshot(
            tenant.as_uuid(),
            stream.as_str(),
            schemas::states::BUDGET_STATE.version,
        )
        .await
        .expect("loading succeeds")
        .expect("the month has a snapshot")
}

/// `tidemark snapshots rebuild` drops what is there and takes one snapshot at the head
/// of each long enough budget or post stream, which a cold load then starts from.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rebuilding_snapshots_takes_one_at_the_head_of_every_long_stream_only() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let store: Arc<dyn EventStore> = Arc::new(
        SqliteStore::open(&dir.path().join("events.db"))
            .await
            .expect("a store opens"),
    );
    let start: DateTime<Utc> = Utc
        .with_ymd_and_hms(2026, 11, 10, 12, 0, 0)
        .single()
        .expect("a valid time");
    let clock = ManualClock::new(start);
    let service = CommandService::new(store.clone(), Arc::new(clock.clone())).with_snapshots(None);
    let long = TenantId::from_uuid(Uuid::from_u128(1));
    let short = TenantId::from_uuid(Uuid::from_u128(2));
    let post_id = PostId::from_uuid(Uuid::from_u128(3));
    for (advance, step) in script(40) {
        clock.advance(TimeDelta::seconds(advance));
        run(&service, long, post_id, &step).await;
    }
    for (_, step) in script(3) {
        run(&service, short, post_id, &step).await;
    }
    let budget = StreamName::budget(long, Period::containing(clock.now()));
    let head = log(store.as_ref(), long, &budget).await.len() as Version;
    assert!(
        head >= 10,
        "the script wrote a long budget stream ({head} events)"
    );
    // A stale snapshot of the long month, which the rebuild must replace.
    store
        .save_snapshot(&Snapshot {
            tenant_id: long.as_uuid(),
            stream_id: budget.to_string(),
            snapshot_version: schemas::states::BUDGET_STATE.version,
            version: head,
            data: "{}".to_owned(),
            detail: None,
        })
        .await
        .expect("a snapshot saves");

    let rebuilt = cli::snapshots::rebuild(store.clone(), 10, |_, _| {})
        .await
        .expect("the rebuild succeeds");
    assert_eq!(rebuilt.dropped, 1, "the stale snapshot was dropped");
    let post_events = log(store.as_ref(), long, &StreamName::post(long, post_id))
        .await
        .len();
    let expected = 1 + u64::from(post_events >= 10);
    assert_eq!(
        rebuilt.taken, expected,
        "one snapshot per long stream of the long tenant, none for the short tenant's"
    );
    let snapshot = budget_snapshot(store.as_ref(), long, &budget).await;
    assert_eq!(snapshot.version, head, "taken at the stream's head");
    let folded = store
        .read_stream(long.as_uuid(), budget.as_str(), 0)
        .await
        .expect("the stream reads")
        .iter()
        .map(
            |e| match schemas::decode(&e.event_type, e.schema_version, &e.data) {
                Ok(schemas::DomainEvent::Budget(event)) => event,
                other => panic!("a budget stream holds budget events: {other:?}"),
            },
        )
        .fold(budget::State::default(), |s, e| budget::evolve(s, &e));
    let mut restored =
        schemas::states::decode_budget_state(&snapshot.data).expect("the snapshot decodes");
    let detail = store
        .load_snapshot_detail(
            long.as_uuid(),
            budget.as_str(),
            schemas::states::BUDGET_STATE.version,
            snapshot.version,
        )
        .await
        .expect("loading succeeds")
        .expect("a budget snapshot has a detail");
    schemas::states::list_budget_settled(&mut restored, &detail).expect("the detail lists");
    assert_eq!(restored, folded);
    let short_budget = StreamName::budget(short, Period::containing(clock.now()));
    assert_eq!(
        store
            .load_snapshot(
                short.as_uuid(),
                short_budget.as_str(),
                schemas::states::BUDGET_STATE.version
            )
            .await
            .expect("loading succeeds"),
        None,
        "a stream shorter than the minimum gets no snapshot"
    );
    let cold = CommandService::new(store.clone(), Arc::new(clock.clone()))
        .cold_load(long, &budget)
        .await
        .expect("a cold load succeeds");
    assert_eq!(
        (cold.snapshot_version, cold.events),
        (head, 0),
        "a cold load starts from the rebuilt snapshot"
    );
}

/// A ledger loaded cold from a snapshot reads its settled list only for a reservation
/// the snapshot's filter cannot rule out, and answers then exactly as a folded ledger
/// does; when another process has replaced that snapshot in the meantime, it loads
/// again from the newest one and reads that one's list.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cold_ledger_reads_its_settled_list_only_when_its_filter_cannot_rule_an_id_out_on_sqlite()
{
    let dir = tempfile::tempdir().expect("a temporary directory");
    let store = SqliteStore::open(&dir.path().join("events.db"))
        .await
        .expect("a store opens");
    check_settled_list(Arc::new(Probe::new(store))).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cold_ledger_reads_its_settled_list_only_when_its_filter_cannot_rule_an_id_out_on_postgres()
 {
    let db = TestDatabase::create().await;
    check_settled_list(Arc::new(Probe::new(db.store().await))).await;
    db.drop_database().await;
}

async fn check_settled_list<S: EventStore>(probe: Arc<Probe<S>>) {
    let mut month = SettledMonth::fill(probe.clone(), 0x5e771ed, 40).await;
    let asked = || probe.details_asked.load(Ordering::Relaxed);
    let found = || probe.details_found.load(Ordering::Relaxed);
    let fresh = month.fresh_ids(300).await;

    // A new reservation and its commit need no list: the filter rules the new id out,
    // and an open reservation is found in the snapshot's data.
    let cold = month.service(Some(1_000));
    month
        .budget(&cold, reserve(fresh[0]))
        .await
        .expect("reserved");
    month
        .budget(&cold, commit(fresh[0]))
        .await
        .expect("committed");
    assert_eq!(
        (asked(), found()),
        (0, 0),
        "no list read for new or open ids"
    );

    // A settled id needs the list, and gets the folded ledger's answer.
    let again = month.budget(&cold, commit(7)).await;
    assert!(
        matches!(
            again,
            Err(CommandError::Budget(budget::Rejection::AlreadySettled {
                outcome: budget::ReservationOutcome::Committed,
                ..
            }))
        ),
        "a committed reservation stays committed, got {again:?}"
    );
    assert_eq!((asked(), found()), (1, 1), "the list read once");
    let reused = month.budget(&cold, reserve(8)).await;
    assert!(
        matches!(
            reused,
            Err(CommandError::Budget(budget::Rejection::ReservationExists(
                _
            )))
        ),
        "a settled id is never reserved again, got {reused:?}"
    );
    assert_eq!((asked(), found()), (1, 1), "a listed ledger reads no more");

    // A ledger loaded from the snapshot, which the other process then replaces.
    let at = month.snapshot_at;
    let stale = month.service(Some(1_000));
    month
        .budget(&stale, reserve(fresh[1]))
        .await
        .expect("reserved");
    for command in [reserve(201), commit(201)] {
        month
            .budget(&month.writer, command)
            .await
            .expect("the other process appends");
    }
    month.snapshot_again().await;
    assert!(month.snapshot_at > at);
    let replaced = month.budget(&stale, commit(9)).await;
    assert!(
        matches!(
            replaced,
            Err(CommandError::Budget(
                budget::Rejection::AlreadySettled { .. }
            ))
        ),
        "a reservation settled before either snapshot stays settled, got {replaced:?}"
    );
    assert_eq!(
        (asked(), found()),
        (3, 2),
        "the replaced snapshot's list is gone; the newest one's is read"
    );
    month
        .budget(&stale, commit(fresh[1]))
        .await
        .expect("its own open reservation commits after the reload");

    // A ledger loaded cold keeps taking snapshots: before the first one replaces the
    // snapshot it came from, it reads that one's list, so every later one can be
    // taken from the state it holds.
    let every = 5;
    let busy = month.service(Some(every));
    let before = asked();
    for n in month.fresh_ids(2_000).await {
        month.budget(&busy, reserve(n)).await.expect("reserved");
    }
    busy.flush_snapshots().await;
    let head = month.head().await;
    let newest = month.snapshot().await;
    assert!(
        newest.version + every > head,
        "snapshots went on every {every} events: the newest covers v{} of v{head}",
        newest.version
    );
    assert_eq!(
        asked() - before,
        1,
        "the list is read once, for the first snapshot"
    );
}
