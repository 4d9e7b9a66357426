//! The relay and the topic source against a real Kafka-API broker, with members sharing
//! the partitions through leases in a real PostgreSQL database.
//!
//! Each test starts its own tansu broker with `scripts/kafka` on a free loopback port
//! and a temporary data dir, and stops it when the test ends (also on panic). The
//! broker keeps its log in SQLite in that data dir, or, with
//! `TIDEMARK_TEST_KAFKA_STORAGE=postgres` (the test script's second pass), in a
//! PostgreSQL database of its own on `TIDEMARK_TEST_DATABASE_URL`'s server. Events
//! go into a real `SqliteStore`; the relay copies them to a topic; a consumer applies
//! them into a [`Ledger`] that plays the caller's database: its offsets, its per-
//! partition dedup mark and its effects change under one lock, as they would in one
//! transaction. Every wait has a deadline; nothing sleeps.
//!
//! The broker binary comes from `scripts/kafka install`; these tests refuse to run
//! without it rather than install it themselves.

use std::collections::{BTreeMap, HashMap};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use chrono::Utc;
use eventlog::kafka::{
    BoxError, KafkaSource, OffsetStore, PartitionLeases, Relay, RelayCheckpoint, RelayConfig,
    SourceConfig, SourcedEvent, SqliteRelayCheckpoint, decode_value,
};
use eventlog::postgres::testing::{ScratchDatabase, TestDatabase, broker_database_from_env};
use eventlog::sqlite::SqliteStore;
use eventlog::{
    AppendRequest, EventStore, ExpectedVersion, Metadata, NewEvent, Position, RecordedEvent,
    StoreError,
};
use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::{Headers, Message};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use serde_json::json;
use tempfile::TempDir;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use uuid::Uuid;

/// The longest any one wait in these tests may take.
const WAIT: Duration = Duration::from_secs(30);
const PARTITIONS: i32 = 6;

// ---------------------------------------------------------------------------------
// The broker
// ---------------------------------------------------------------------------------

/// A tansu broker of this test, stopped on drop (then its database, if any, dropped).
struct Broker {
    port: u16,
    data_dir: PathBuf,
    storage: Storage,
    _dir: TempDir,
}

/// Where a test's broker keeps its log.
#[derive(Debug)]
enum Storage {
    /// `tansu.db` in the data dir (`scripts/kafka start`'s default).
    Sqlite,
    /// A database of its own on the test server, which `scripts/kafka start
    /// --postgres` creates.
    Postgres(ScratchDatabase),
}

impl Storage {
    /// The storage `TIDEMARK_TEST_KAFKA_STORAGE` names: `sqlite` (the default) or
    /// `postgres`.
    fn from_env() -> Self {
        broker_database_from_env().map_or(Self::Sqlite, Self::Postgres)
    }

    fn postgres() -> Self {
        Self::Postgres(ScratchDatabase::new())
    }

    fn flags(&self) -> Vec<String> {
        match self {
            Self::Sqlite => Vec::new(),
            Self::Postgres(database) => vec!["--postgres".to_owned(), database.url()],
        }
    }
}

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/kafka")
}

fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind a free loopback port");
    listener.local_addr().expect("local addr").port()
}

impl Broker {
    /// A broker on the storage `TIDEMARK_TEST_KAFKA_STORAGE` names.
    fn start() -> Self {
        Self::start_on(Storage::from_env())
    }

    fn start_on(storage: Storage) -> Self {
        // Logs show only for a failing test (nextest and the test harness capture them).
        let _ = tracing_subscriber::fmt()
            .with_env_filter(
                tracing_subscriber::EnvFilter::try_from_default_env()
                    .unwrap_or_else(|_| "eventlog=info".into()),
            )
            .with_test_writer()
            .with_ansi(false)
            .try_init();
        let dir = tempfile::tempdir().expect("temp dir");
        let broker = Self {
            port: free_port(),
            data_dir: dir.path().join("kafka"),
            storage,
            _dir: dir,
        };
        broker.up();
        broker
    }

    fn brokers(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    fn run(&self, command: &str) -> String {
        let mut invocation = Command::new("bash");
        invocation
            .arg(script())
            .arg(command)
            .arg("--port")
            .arg(self.port.to_string())
            .arg("--data-dir")
            .arg(&self.data_dir);
        if command == "start" {
            invocation.args(self.storage.flags());
        }
        let output = invocation.output().expect("run scripts/kafka");
        let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
        assert!(
            output.status.success(),
            "scripts/kafka {command} failed: {stdout}{}",
            String::from_utf8_lossy(&output.stderr)
        );
        stdout
    }

    /// Starts the broker (on storage that keeps topics across a restart).
    fn up(&self) {
        let stdout = self.run("start");
        assert!(
            stdout.contains(&format!("KAFKA_BROKERS={}", self.brokers())),
            "unexpected start output: {stdout}"
        );
    }

    fn down(&self) {
        self.run("stop");
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        // Best effort: a panicking test still stops its broker.
        let _ = Command::new("bash")
            .arg(script())
            .arg("stop")
            .arg("--data-dir")
            .arg(&self.data_dir)
            .output();
        // The storage, and with it a broker's database, is dropped after this.
    }
}

// ---------------------------------------------------------------------------------
// The store and its events
// ---------------------------------------------------------------------------------

struct Store {
    store: SqliteStore,
    path: PathBuf,
    _dir: TempDir,
}

async fn store() -> Store {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("events.db");
    let store = SqliteStore::open(&path).await.expect("open store");
    Store {
        store,
        path,
        _dir: dir,
    }
}

fn tenants(n: usize) -> Vec<Uuid> {
    (0..n).map(|_| Uuid::now_v7()).collect()
}

/// Appends `per_tenant` events for every tenant, round robin, each tenant in one stream.
async fn append(store: &SqliteStore, tenants: &[Uuid], per_tenant: usize) {
    for _ in 0..per_tenant {
        for tenant in tenants {
            let request = AppendRequest {
                tenant_id: *tenant,
                stream_id: format!("tenant/{tenant}/post/{tenant}"),
                expected: ExpectedVersion::Any,
                metadata: Metadata {
                    correlation_id: Uuid::now_v7(),
                    causation_id: Some(Uuid::now_v7()),
                    actor: "test".to_owned(),
                },
                events: vec![NewEvent {
                    event_id: Uuid::now_v7(),
                    event_type: "post.drafted".to_owned(),
                    schema_version: 1,
                    occurred_at: Utc::now(),
                    data: json!({ "title": "hello", "tenant": tenant }),
                }],
                idempotency: None,
            };
            store.append(request).await.expect("append");
        }
    }
}

async fn all_events(store: &SqliteStore) -> Vec<RecordedEvent> {
    store.read_all(0, 100_000).await.expect("read_all")
}

fn topic() -> String {
    format!("tidemark.events.test-{}", Uuid::now_v7())
}

fn relay_config(broker: &Broker, topic: &str) -> RelayConfig {
    let mut config = RelayConfig::new(broker.brokers()).with_topic(topic);
    config.partitions = PARTITIONS;
    config.batch_size = 25;
    config.idle_recheck = Duration::from_millis(200);
    config.max_backoff = Duration::from_millis(500);
    config.delivery_timeout = Duration::from_secs(10);
    config
}

async fn relay(
    store: &Store,
    checkpoint: Arc<dyn RelayCheckpoint>,
    config: RelayConfig,
) -> Arc<Relay> {
    let events: Arc<dyn EventStore> = Arc::new(store.store.clone());
    Arc::new(
        Relay::new(events, checkpoint, config)
            .await
            .expect("relay starts"),
    )
}

/// Runs the relay in a task until the returned sender is dropped or sent to.
fn spawn_relay(relay: &Arc<Relay>) -> (watch::Sender<bool>, JoinHandle<()>) {
    let (stop, mut stopped) = watch::channel(false);
    let relay = Arc::clone(relay);
    let task = tokio::spawn(async move {
        relay
            .run(async move {
                let _ = stopped.wait_for(|s| *s).await;
            })
            .await;
    });
    (stop, task)
}

async fn wait_for_checkpoint(relay: &Relay, position: Position) {
    let mut checkpoint = relay.watch_checkpoint();
    tokio::time::timeout(WAIT, checkpoint.wait_for(|c| *c >= position))
        .await
        .unwrap_or_else(|_| {
            panic!(
                "relay checkpoint stuck at {} below {position}",
                relay.checkpoint()
            )
        })
        .expect("relay alive");
}

// ---------------------------------------------------------------------------------
// The caller's database, played by a ledger under one lock
// ---------------------------------------------------------------------------------

/// One applied event: which member applied it, from which partition.
#[derive(Debug, Clone)]
struct Applied {
    member: String,
    partition: i32,
    event: RecordedEvent,
}

#[derive(Debug, Default)]
struct LedgerState {
    /// Per partition: the next offset to read.
    next_offset: BTreeMap<i32, i64>,
    /// Per partition: the highest global position applied (the dedup mark).
    high_water: BTreeMap<i32, Position>,
    /// The effects: every applied event with its member and partition, in order.
    applied: Vec<Applied>,
    /// Copies skipped by the dedup mark.
    duplicates: usize,
}

/// Offsets, dedup marks and effects of all consumers of one group, changed together.
#[derive(Debug)]
struct Ledger {
    state: Mutex<LedgerState>,
    /// (applied, duplicates skipped), published after every batch.
    progress: watch::Sender<(usize, usize)>,
}

impl Ledger {
    fn new() -> Arc<Self> {
        Arc::new(Self {
            state: Mutex::new(LedgerState::default()),
            progress: watch::channel((0, 0)).0,
        })
    }

    /// Applies a batch as one transaction: skip what the dedup mark covers, apply the
    /// rest, advance offsets and marks.
    fn apply(&self, consumer: &str, batch: &[SourcedEvent]) {
        let mut state = self.state.lock().expect("ledger lock");
        for sourced in batch {
            let mark = state
                .high_water
                .get(&sourced.partition)
                .copied()
                .unwrap_or(0);
            if sourced.event.global_position <= mark {
                state.duplicates += 1;
            } else {
                state
                    .high_water
                    .insert(sourced.partition, sourced.event.global_position);
                state.applied.push(Applied {
                    member: consumer.to_owned(),
                    partition: sourced.partition,
                    event: sourced.event.clone(),
                });
            }
            let next = state.next_offset.entry(sourced.partition).or_insert(0);
            *next = (*next).max(sourced.offset + 1);
        }
        let progress = (state.applied.len(), state.duplicates);
        drop(state);
        self.progress.send_replace(progress);
    }

    async fn wait_for_applied(&self, count: usize) {
        self.wait_for("events applied", |applied, _| applied >= count)
            .await;
    }

    async fn wait_for(&self, what: &str, done: impl Fn(usize, usize) -> bool) {
        self.wait_until(what, |state| done(state.applied.len(), state.duplicates))
            .await;
    }

    /// Waits, re-checking after every applied batch, until `done` holds.
    async fn wait_until(&self, what: &str, done: impl Fn(&LedgerState) -> bool) {
        let mut progress = self.progress.subscribe();
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            if done(&self.state.lock().expect("ledger lock")) {
                return;
            }
            let changed = tokio::time::timeout_at(deadline, progress.changed()).await;
            let (applied, duplicates) = *self.progress.borrow();
            assert!(
                changed.is_ok(),
                "{what}: not in time ({applied} applied, {duplicates} duplicates skipped)"
            );
        }
    }

    fn applied(&self) -> Vec<Applied> {
        self.state.lock().expect("ledger lock").applied.clone()
    }

    fn duplicates(&self) -> usize {
        self.state.lock().expect("ledger lock").duplicates
    }
}

#[async_trait]
impl OffsetStore for Ledger {
    async fn load(&self, _topic: &str, partitions: &[i32]) -> Result<HashMap<i32, i64>, BoxError> {
        let state = self.state.lock().expect("ledger lock");
        Ok(partitions
            .iter()
            .filter_map(|p| state.next_offset.get(p).map(|o| (*p, *o)))
            .collect())
    }
}

/// A consumer task: one group member applying batches into the ledger.
struct Member {
    stop: watch::Sender<bool>,
    assignment: watch::Receiver<Vec<i32>>,
    task: JoinHandle<()>,
}

fn source_config(broker: &Broker, topic: &str, group: &str) -> SourceConfig {
    let mut config = SourceConfig::new(broker.brokers(), group);
    config.topic = topic.to_owned();
    config.max_batch = 50;
    config
}

/// A member reading every partition (`leases` is `None`) or those its leases in the
/// database at `leases` give it, with a lease round every 200 ms between batches, as
/// the projector does.
fn spawn_member(
    name: &str,
    config: SourceConfig,
    leases: Option<&str>,
    ledger: &Arc<Ledger>,
) -> Member {
    let (stop, mut stopped) = watch::channel(false);
    let (assigned, assignment) = watch::channel(Vec::new());
    let ledger = Arc::clone(ledger);
    let name = name.to_owned();
    let mut leases = leases.map(|url| PartitionLeases::new(url, &config.group_id, &config.topic));
    let task = tokio::spawn(async move {
        let offsets: Arc<dyn OffsetStore> = Arc::clone(&ledger) as Arc<dyn OffsetStore>;
        let mut source = KafkaSource::new(config, offsets).expect("source starts");
        loop {
            source
                .follow_leases(leases.as_mut())
                .await
                .expect("partitions assigned");
            assigned.send_replace(source.assignment());
            let batch = tokio::select! {
                _ = stopped.wait_for(|s| *s) => break,
                batch = source.next_batch(Duration::from_millis(200)) => batch,
            };
            let batch = batch.expect("next batch");
            ledger.apply(&name, &batch);
            source.confirm(&batch);
        }
        if let Some(leases) = leases.as_mut() {
            leases.release_all().await;
        }
        source.close().await;
    });
    Member {
        stop,
        assignment,
        task,
    }
}

impl Member {
    async fn wait_for_assignment(&mut self, what: &str, check: impl Fn(&[i32]) -> bool) {
        let reached = tokio::time::timeout(WAIT, self.assignment.wait_for(|a| check(a)))
            .await
            .is_ok();
        assert!(
            reached,
            "{what}: assignment is {:?}",
            *self.assignment.borrow()
        );
    }

    /// Ends the member as a crash would: its task (with the lease connection) is
    /// dropped mid-whatever, without giving anything back.
    async fn crash(self) {
        self.task.abort();
        let ended = tokio::time::timeout(WAIT, self.task)
            .await
            .expect("task ends");
        assert!(
            ended.is_err_and(|e| e.is_cancelled()),
            "the member was still running"
        );
    }

    async fn stop(self) {
        self.stop.send_replace(true);
        tokio::time::timeout(WAIT, self.task)
            .await
            .expect("member stops in time")
            .expect("member task ends cleanly");
    }
}

/// Every stored event was applied exactly once, each tenant's in version order.
fn assert_applied_exactly_once_in_order(applied: &[Applied], stored: &[RecordedEvent]) {
    let mut positions: Vec<Position> = applied.iter().map(|a| a.event.global_position).collect();
    positions.sort_unstable();
    let expected: Vec<Position> = stored.iter().map(|e| e.global_position).collect();
    assert_eq!(
        positions, expected,
        "applied positions differ from the store's"
    );

    let by_position: HashMap<Position, &RecordedEvent> =
        stored.iter().map(|e| (e.global_position, e)).collect();
    let mut last_version: HashMap<Uuid, u64> = HashMap::new();
    for Applied { event, .. } in applied {
        assert_eq!(
            Some(&event),
            by_position.get(&event.global_position),
            "event differs from the store's"
        );
        let last = last_version.entry(event.tenant_id).or_insert(0);
        assert_eq!(
            event.version,
            *last + 1,
            "tenant {} applied out of order",
            event.tenant_id
        );
        *last = event.version;
    }
}

/// Reads every message of the topic from the beginning with a plain consumer, until
/// `count` messages were read.
async fn read_raw(
    broker: &Broker,
    topic: &str,
    count: usize,
) -> Vec<(i32, i64, Vec<u8>, HashMap<String, String>, Vec<u8>)> {
    let consumer: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", broker.brokers())
        .set("group.id", format!("raw-{}", Uuid::now_v7()))
        .set("enable.auto.commit", "false")
        .create()
        .expect("raw consumer");
    let mut tpl = TopicPartitionList::new();
    for partition in 0..PARTITIONS {
        tpl.add_partition_offset(topic, partition, Offset::Beginning)
            .expect("partition");
    }
    consumer.assign(&tpl).expect("assign");
    let mut messages = Vec::new();
    let read = tokio::time::timeout(WAIT, async {
        while messages.len() < count {
            let message = consumer.recv().await.expect("raw receive");
            let headers = message
                .headers()
                .map(|headers| {
                    headers
                        .iter()
                        .map(|h| {
                            let value = String::from_utf8(h.value.unwrap_or_default().to_vec())
                                .expect("utf-8 header");
                            (h.key.to_owned(), value)
                        })
                        .collect()
                })
                .unwrap_or_default();
            messages.push((
                message.partition(),
                message.offset(),
                message.key().unwrap_or_default().to_vec(),
                headers,
                message.payload().unwrap_or_default().to_vec(),
            ));
        }
    })
    .await;
    assert!(
        read.is_ok(),
        "read only {} of {count} raw messages",
        messages.len()
    );
    tokio::task::spawn_blocking(move || drop(consumer))
        .await
        .expect("raw consumer closes");
    messages
}

// ---------------------------------------------------------------------------------
// The tests
// ---------------------------------------------------------------------------------

/// A batch closes `linger` after its first event, even while more keep arriving. The
/// linger used to restart at every event, so under a steady stream a batch stayed open
/// until it was full, and its first events waited for all the others (the projection
/// lag through Kafka, docs/benchmarks.md).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_closes_its_linger_after_its_first_event_under_a_steady_stream() {
    let broker = Broker::start();
    let store = store().await;
    let topic = topic();
    let checkpoint: Arc<dyn RelayCheckpoint> = Arc::new(
        SqliteRelayCheckpoint::open(&store.path)
            .await
            .expect("checkpoints"),
    );
    let relay = relay(&store, checkpoint, relay_config(&broker, &topic)).await;
    let (stop_relay, relay_task) = spawn_relay(&relay);

    // One event every 10 ms for 3 s, each relayed as it comes: a steady stream. The
    // consumer receives it in bursts (a fetch waits up to 50 ms), far closer together
    // than the linger.
    const STREAM: usize = 300;
    let writer = {
        let store = store.store.clone();
        tokio::spawn(async move {
            let tenant = tenants(1);
            for _ in 0..STREAM {
                append(&store, &tenant, 1).await;
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
    };

    let mut config = source_config(&broker, &topic, "linger");
    config.max_batch = 10_000;
    config.linger = Duration::from_millis(400);
    let ledger = Ledger::new();
    let offsets: Arc<dyn OffsetStore> = Arc::clone(&ledger) as Arc<dyn OffsetStore>;
    let mut source = KafkaSource::new(config, offsets).expect("source starts");
    source
        .follow_leases(None)
        .await
        .expect("partitions assigned");
    let batch = source.next_batch(WAIT).await.expect("a batch");

    // With the linger restarting at every event, the batch would have held the whole
    // stream (it ends 3 s after it began, then nothing comes for longer than the
    // linger).
    assert!(!batch.is_empty(), "nothing arrived within {WAIT:?}");
    assert!(
        batch.len() < STREAM,
        "the batch stayed open for the whole stream: {} events",
        batch.len()
    );

    writer.await.expect("writer ends");
    source.close().await;
    stop_relay.send_replace(true);
    relay_task.await.expect("relay stops");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relayed_events_reach_a_consumer_once_each_in_tenant_order_with_key_and_headers() {
    let broker = Broker::start();
    let store = store().await;
    let topic = topic();
    let tenants = tenants(5);
    append(&store.store, &tenants, 20).await;
    let stored = all_events(&store.store).await;

    let checkpoint = Arc::new(
        SqliteRelayCheckpoint::open(&store.path)
            .await
            .expect("checkpoint"),
    );
    let relay = relay(&store, checkpoint.clone(), relay_config(&broker, &topic)).await;
    let (stop_relay, relay_task) = spawn_relay(&relay);
    wait_for_checkpoint(&relay, stored.len() as Position).await;
    assert_eq!(relay.lag().await.expect("lag"), 0);
    assert_eq!(
        checkpoint
            .load(&format!("kafka:{topic}"))
            .await
            .expect("load"),
        stored.len() as Position,
        "the checkpoint is saved in the store's file"
    );

    let ledger = Ledger::new();
    let member = spawn_member(
        "only",
        source_config(&broker, &topic, "round-trip"),
        None,
        &ledger,
    );
    ledger.wait_for_applied(stored.len()).await;
    member.stop().await;
    assert_applied_exactly_once_in_order(&ledger.applied(), &stored);

    // The raw messages: key is the tenant, headers name the event, one partition per tenant.
    let raw = read_raw(&broker, &topic, stored.len()).await;
    let by_position: HashMap<Position, &RecordedEvent> =
        stored.iter().map(|e| (e.global_position, e)).collect();
    let mut partition_of: HashMap<Uuid, i32> = HashMap::new();
    for (partition, _offset, key, headers, value) in &raw {
        let event = decode_value(Some(value)).expect("value decodes");
        let stored_event = by_position[&event.global_position];
        assert_eq!(&event, stored_event);
        assert_eq!(key.as_slice(), event.tenant_id.to_string().as_bytes());
        let expected: HashMap<String, String> = [
            ("event_type", event.event_type.clone()),
            ("position", event.global_position.to_string()),
            ("envelope_version", "2".to_owned()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect();
        assert_eq!(headers, &expected);
        let first = *partition_of.entry(event.tenant_id).or_insert(*partition);
        assert_eq!(
            first, *partition,
            "tenant {} spread over partitions",
            event.tenant_id
        );
    }

    stop_relay.send_replace(true);
    tokio::time::timeout(WAIT, relay_task)
        .await
        .expect("relay stops")
        .expect("relay task");
}

/// A checkpoint store whose saves hang after the first `allowed`, like a relay that
/// crashed after Kafka acknowledged a batch but before it saved the checkpoint.
struct FreezingCheckpoint {
    inner: SqliteRelayCheckpoint,
    allowed: Mutex<usize>,
}

#[async_trait]
impl RelayCheckpoint for FreezingCheckpoint {
    async fn load(&self, name: &str) -> Result<Position, StoreError> {
        self.inner.load(name).await
    }

    async fn save(&self, name: &str, position: Position) -> Result<(), StoreError> {
        let go = {
            let mut allowed = self.allowed.lock().expect("lock");
            let go = *allowed > 0;
            *allowed = allowed.saturating_sub(1);
            go
        };
        if !go {
            std::future::pending::<()>().await;
        }
        self.inner.save(name, position).await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_restarted_from_its_checkpoint_loses_nothing_and_repeats_only_what_followed_it() {
    let broker = Broker::start();
    let store = store().await;
    let topic = topic();
    let tenants = tenants(4);
    append(&store.store, &tenants, 25).await;
    let config = relay_config(&broker, &topic);

    // First relay: three batches checkpointed, the fourth produced but never saved.
    let freezing = Arc::new(FreezingCheckpoint {
        inner: SqliteRelayCheckpoint::open(&store.path)
            .await
            .expect("checkpoint"),
        allowed: Mutex::new(3),
    });
    let first = relay(&store, freezing, config.clone()).await;
    let (_stop_first, first_task) = spawn_relay(&first);
    wait_for_checkpoint(&first, 75).await;
    // Let the fourth batch be acknowledged by Kafka (its save hangs) before the "crash".
    let raw = read_raw(&broker, &topic, 100).await;
    assert_eq!(raw.len(), 100);
    first_task.abort();
    let _ = first_task.await;
    drop(first);

    let checkpoint = Arc::new(
        SqliteRelayCheckpoint::open(&store.path)
            .await
            .expect("checkpoint"),
    );
    let saved = checkpoint
        .load(&config.checkpoint_name)
        .await
        .expect("load");
    assert_eq!(saved, 75, "three batches of 25 were checkpointed");

    // More events while no relay runs, then a new relay from the same checkpoint.
    append(&store.store, &tenants, 10).await;
    let stored = all_events(&store.store).await;
    let second = relay(&store, checkpoint, config).await;
    assert_eq!(second.checkpoint(), 75);
    assert_eq!(second.lag().await.expect("lag"), stored.len() as u64 - 75);
    let (stop_second, second_task) = spawn_relay(&second);
    wait_for_checkpoint(&second, stored.len() as Position).await;

    // The topic holds every position; the only repeats are of positions after 75.
    let produced = stored.len() + 25;
    let raw = read_raw(&broker, &topic, produced).await;
    let mut copies: BTreeMap<Position, usize> = BTreeMap::new();
    for (_, _, _, _, value) in &raw {
        let event = decode_value(Some(value)).expect("decodes");
        *copies.entry(event.global_position).or_insert(0) += 1;
    }
    let positions: Vec<Position> = copies.keys().copied().collect();
    let expected: Vec<Position> = stored.iter().map(|e| e.global_position).collect();
    assert_eq!(positions, expected, "a position is missing from the topic");
    let repeated: Vec<Position> = copies
        .iter()
        .filter(|(_, n)| **n > 1)
        .map(|(p, _)| *p)
        .collect();
    assert_eq!(
        repeated,
        (76..=100).collect::<Vec<_>>(),
        "only the unsaved batch repeats"
    );

    // A consumer deduplicating by its per-partition mark applies each event once.
    let ledger = Ledger::new();
    let member = spawn_member(
        "only",
        source_config(&broker, &topic, "restart"),
        None,
        &ledger,
    );
    ledger.wait_for_applied(stored.len()).await;
    // The copies come after the originals in their partitions: wait for them too.
    ledger
        .wait_for("copies skipped", |_, duplicates| duplicates >= 25)
        .await;
    member.stop().await;
    assert_applied_exactly_once_in_order(&ledger.applied(), &stored);
    assert_eq!(ledger.duplicates(), 25);

    stop_second.send_replace(true);
    tokio::time::timeout(WAIT, second_task)
        .await
        .expect("relay stops")
        .expect("relay task");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_members_share_the_partitions_and_one_takes_over_when_the_other_crashes() {
    let broker = Broker::start();
    let database = TestDatabase::create().await;
    let leases = database.owner_url();
    let store = store().await;
    let topic = topic();
    // Enough tenants that every partition almost surely has some.
    let tenants = tenants(24);
    append(&store.store, &tenants, 3).await;

    let checkpoint = Arc::new(
        SqliteRelayCheckpoint::open(&store.path)
            .await
            .expect("checkpoint"),
    );
    let relay = relay(&store, checkpoint, relay_config(&broker, &topic)).await;
    let (stop_relay, relay_task) = spawn_relay(&relay);

    let ledger = Ledger::new();
    let group = "two-members";
    let shares = |p: &[i32]| p.len() == PARTITIONS as usize / 2;
    let mut a = spawn_member(
        "a",
        source_config(&broker, &topic, group),
        Some(&leases),
        &ledger,
    );
    let mut b = spawn_member(
        "b",
        source_config(&broker, &topic, group),
        Some(&leases),
        &ledger,
    );
    a.wait_for_assignment("a shares the partitions", shares)
        .await;
    b.wait_for_assignment("b shares the partitions", shares)
        .await;
    ledger.wait_for_applied(tenants.len() * 3).await;

    // More events while both read; once a applied some of them, it dies mid-run.
    append(&store.store, &tenants, 3).await;
    ledger
        .wait_until("a applies events", |state| {
            state.applied.iter().any(|applied| applied.member == "a")
        })
        .await;
    let a_partitions = a.assignment.borrow().clone();
    a.crash().await;
    let applied_when_a_left = ledger.applied().len();
    b.wait_for_assignment("b takes every partition", |p| {
        p.len() == PARTITIONS as usize
    })
    .await;
    append(&store.store, &tenants, 3).await;

    let stored = all_events(&store.store).await;
    ledger.wait_for_applied(stored.len()).await;
    b.stop().await;
    let applied = ledger.applied();
    assert_applied_exactly_once_in_order(&applied, &stored);

    let used = |member: &str, range: std::ops::Range<usize>| -> std::collections::BTreeSet<i32> {
        applied[range]
            .iter()
            .filter(|a| a.member == member)
            .map(|a| a.partition)
            .collect()
    };
    let a_before = used("a", 0..applied_when_a_left);
    let b_after = used("b", applied_when_a_left..applied.len());
    assert!(!a_before.is_empty(), "a applied nothing before it left");
    let partitions_with_events: std::collections::BTreeSet<i32> =
        applied.iter().map(|a| a.partition).collect();
    for partition in a_partitions
        .iter()
        .filter(|p| partitions_with_events.contains(p))
    {
        assert!(
            b_after.contains(partition),
            "b applied nothing from a's partition {partition} after a left"
        );
    }

    stop_relay.send_replace(true);
    tokio::time::timeout(WAIT, relay_task)
        .await
        .expect("relay stops")
        .expect("relay task");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relay_and_member_ride_out_a_broker_restart_without_losing_an_event() {
    let broker = Broker::start();
    let store = store().await;
    let topic = topic();
    let tenants = tenants(6);
    append(&store.store, &tenants, 5).await;

    let checkpoint = Arc::new(
        SqliteRelayCheckpoint::open(&store.path)
            .await
            .expect("checkpoint"),
    );
    let relay = relay(&store, checkpoint, relay_config(&broker, &topic)).await;
    let (stop_relay, relay_task) = spawn_relay(&relay);
    let ledger = Ledger::new();
    let member = spawn_member(
        "only",
        source_config(&broker, &topic, "restart-broker"),
        None,
        &ledger,
    );
    ledger.wait_for_applied(30).await;

    tokio::task::block_in_place(|| broker.down());
    append(&store.store, &tenants, 5).await;
    tokio::task::block_in_place(|| broker.up());
    append(&store.store, &tenants, 5).await;

    let stored = all_events(&store.store).await;
    wait_for_checkpoint(&relay, stored.len() as Position).await;
    ledger.wait_for_applied(stored.len()).await;
    member.stop().await;
    assert_applied_exactly_once_in_order(&ledger.applied(), &stored);

    stop_relay.send_replace(true);
    tokio::time::timeout(WAIT, relay_task)
        .await
        .expect("relay stops")
        .expect("relay task");
}

/// `scripts/kafka start` adds the indexes tansu 0.6's SQLite storage lacks, so a fetch
/// looks each record's headers up by key instead of scanning every header stored;
/// they survive a restart of the broker.
#[tokio::test]
async fn the_brokers_storage_looks_headers_up_by_record_across_a_restart() {
    let broker = Broker::start_on(Storage::Sqlite);
    for restart in [false, true] {
        if restart {
            broker.down();
            broker.up();
        }
        let options = sqlx::sqlite::SqliteConnectOptions::new()
            .filename(broker.data_dir.join("tansu.db"))
            .read_only(true);
        let pool = sqlx::SqlitePool::connect_with(options)
            .await
            .expect("open the broker's storage");
        let indexes: Vec<String> = sqlx::query_scalar(
            "SELECT name FROM sqlite_master WHERE type = 'index' AND name LIKE 'tidemark_%' ORDER BY name",
        )
        .fetch_all(&pool)
        .await
        .expect("list indexes");
        assert_eq!(
            indexes,
            [
                "tidemark_header_by_record",
                "tidemark_producer_detail_by_topition",
                "tidemark_watermark_by_topition"
            ]
        );
        let plan: Vec<(i64, i64, i64, String)> = sqlx::query_as(
            "EXPLAIN QUERY PLAN SELECT k, v FROM header WHERE topition = 1 AND offset_id = 5",
        )
        .fetch_all(&pool)
        .await
        .expect("plan");
        assert!(
            plan.iter()
                .any(|(_, _, _, step)| step.contains("USING INDEX tidemark_header_by_record")),
            "after restart {restart}: {plan:?}"
        );
        pool.close().await;
    }
}

/// On PostgreSQL storage (`scripts/kafka start --postgres`), deleting a topic deletes
/// that topic alone: every other topic and its records stay, also across a restart of
/// the broker. tansu 0.6's last delete statement names every topic of the cluster;
/// `scripts/tansu-postgres.sql` lets it take only a topic whose partitions are gone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_a_topic_on_postgresql_storage_deletes_that_topic_alone() {
    let broker = Broker::start_on(Storage::postgres());
    let store = store().await;
    let tenants = tenants(3);
    append(&store.store, &tenants, 10).await;
    let stored = all_events(&store.store).await;

    let (kept, doomed) = (topic(), topic());
    for topic in [&kept, &doomed] {
        let checkpoint = Arc::new(
            SqliteRelayCheckpoint::open(&store.path)
                .await
                .expect("checkpoint"),
        );
        let relay = relay(&store, checkpoint, relay_config(&broker, topic)).await;
        let (stop_relay, relay_task) = spawn_relay(&relay);
        wait_for_checkpoint(&relay, stored.len() as Position).await;
        stop_relay.send_replace(true);
        relay_task.await.expect("relay stops");
    }

    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", broker.brokers())
        .create()
        .expect("admin client");
    let options = AdminOptions::new().operation_timeout(Some(WAIT));
    let deleted = admin
        .delete_topics(&[&doomed], &options)
        .await
        .expect("the delete request is answered");
    assert!(
        matches!(deleted.as_slice(), [Ok(name)] if name == &doomed),
        "delete answered {deleted:?}"
    );

    broker.down();
    broker.up();
    let metadata = admin
        .inner()
        .fetch_metadata(None, WAIT)
        .expect("the broker's topics");
    let mut topics: Vec<&str> = metadata
        .topics()
        .iter()
        .map(|t| t.name())
        .filter(|name| !name.starts_with("__"))
        .collect();
    topics.sort_unstable();
    assert_eq!(topics, [kept.as_str()], "the topics after the delete");
    let messages = read_raw(&broker, &kept, stored.len()).await;
    let mut positions: Vec<Position> = messages
        .iter()
        .map(|(_, _, _, _, value)| {
            decode_value(Some(value))
                .expect("an envelope")
                .global_position
        })
        .collect();
    positions.sort_unstable();
    let expected: Vec<Position> = stored.iter().map(|e| e.global_position).collect();
    assert_eq!(positions, expected, "the kept topic lost records");
}
