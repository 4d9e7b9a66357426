//! The relay: copies the store's global log to the Kafka topic, at least once, in order.
//!
//! One step ([`Relay::relay_batch`]) reads the events after the checkpoint, produces
//! them in position order, awaits *every* delivery report, and only then saves the
//! last position as the new checkpoint. [`Relay::run`] repeats the step, waits on the
//! store's head watch when caught up, retries failures with back-off, and logs its lag
//! (store head − checkpoint) periodically as a structured `relay lag` line.
//!
//! # Why a partition never sees a position before a lower one of its own
//!
//! Consumers deduplicate with a per-partition high-water mark (see [`super`]), which
//! is only sound if, within a partition, the first copy of each position comes after
//! the first copy of every lower position of that partition. The producer is set up
//! so that one producer session writes, per partition, a gapless prefix of what it was
//! given, in order: idempotence (`enable.idempotence`, `acks=all`), one request in
//! flight per connection (so retries cannot overtake, even on a broker that does not
//! check producer sequence numbers), and `enable.gapless.guarantee` (a failure that
//! would leave a gap is fatal instead). After any failed batch the relay starts again
//! from its checkpoint — at or below the lowest position not acknowledged — and builds
//! a new producer if the old one reported a fatal error. So every run re-covers the
//! tail the last one may have left, in order, and duplicates are only ever copies of
//! positions a consumer already saw in that partition.
//!
//! Run one relay per checkpoint name. A second one is wasteful but not unsafe: each is
//! gapless and ordered on its own, so a consumer still sees each position first after
//! every lower one of its partition.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord, Producer};
use rdkafka::util::Timeout;
use tokio::sync::{Mutex, watch};
use tokio::time::Instant;

use super::checkpoint::RelayCheckpoint;
use super::{DEFAULT_TOPIC, encode_value, message_headers, message_key};
use crate::{EventStore, Position, StoreError};

/// What the relay needs to know; [`RelayConfig::new`] fills in the defaults.
#[derive(Debug, Clone)]
pub struct RelayConfig {
    /// `bootstrap.servers`: comma-separated `host:port` list.
    pub brokers: String,
    /// The topic to produce to. Default [`DEFAULT_TOPIC`].
    pub topic: String,
    /// Partitions of the topic when the relay creates it. Never change this for an
    /// existing topic: the key → partition mapping would change, and a tenant's
    /// later events could overtake its earlier ones in another partition. Default 6.
    pub partitions: i32,
    /// Replication factor when the relay creates the topic. Default 1 (what a
    /// single local broker allows); production sets 3.
    pub replication: i32,
    /// The checkpoint's name in the [`RelayCheckpoint`] store. Default
    /// `kafka:<topic>`.
    pub checkpoint_name: String,
    /// Most events produced in one step (and one checkpoint save). Default 500.
    pub batch_size: usize,
    /// When caught up, how long to wait on the head watch before asking the store
    /// again (another process's appends do not wake the watch). Default 1 s.
    pub idle_recheck: Duration,
    /// How often [`Relay::run`] logs its lag. Default 30 s.
    pub lag_log_interval: Duration,
    /// `message.timeout.ms`: how long librdkafka keeps retrying one message before the
    /// batch fails and the relay starts again from its checkpoint. Default 30 s.
    pub delivery_timeout: Duration,
    /// Longest pause between retries after failures (the pause doubles from 100 ms).
    /// Default 10 s.
    pub max_backoff: Duration,
    /// Extra librdkafka settings (security, tuning), applied last. The settings
    /// that ordering depends on (see the module docs) are applied after these and
    /// cannot be overridden.
    pub client_config: BTreeMap<String, String>,
}

impl RelayConfig {
    /// The defaults, for the given `bootstrap.servers`.
    pub fn new(brokers: impl Into<String>) -> Self {
        Self {
            brokers: brokers.into(),
            topic: DEFAULT_TOPIC.to_owned(),
            partitions: 6,
            replication: 1,
            checkpoint_name: format!("kafka:{DEFAULT_TOPIC}"),
            batch_size: 500,
            idle_recheck: Duration::from_secs(1),
            lag_log_interval: Duration::from_secs(30),
            delivery_timeout: Duration::from_secs(30),
            max_backoff: Duration::from_secs(10),
            client_config: BTreeMap::new(),
        }
    }

    /// Sets the topic and names the checkpoint after it.
    pub fn with_topic(mut self, topic: impl Into<String>) -> Self {
        self.topic = topic.into();
        self.checkpoint_name = format!("kafka:{}", self.topic);
        self
    }

    fn producer_config(&self) -> ClientConfig {
        let mut config = ClientConfig::new();
        config
            .set("bootstrap.servers", &self.brokers)
            .set("client.id", "tidemark-relay")
            // The Java clients' partitioner, so every tool maps a tenant to the same
            // partition as the relay does.
            .set("partitioner", "murmur2_random")
            .set("linger.ms", "5")
            .set(
                "message.timeout.ms",
                self.delivery_timeout.as_millis().to_string(),
            );
        for (key, value) in &self.client_config {
            config.set(key, value);
        }
        // Set last so no extra setting can weaken them: see the module docs.
        config
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set("max.in.flight.requests.per.connection", "1")
            .set("enable.gapless.guarantee", "true");
        config
    }
}

/// Why a relay step failed. The step saved nothing; the next one starts again from the
/// checkpoint.
#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    #[error("reading the event store failed")]
    Store(#[from] StoreError),
    #[error("creating the Kafka client failed")]
    Client(#[source] KafkaError),
    #[error("creating topic {topic} failed: {code}")]
    CreateTopic {
        topic: String,
        code: RDKafkaErrorCode,
    },
    #[error("Kafka admin request failed")]
    Admin(#[source] KafkaError),
    #[error("encoding event at position {position} failed")]
    Encode {
        position: Position,
        #[source]
        source: serde_json::Error,
    },
    #[error("producing event at position {position} failed")]
    Produce {
        position: Position,
        #[source]
        source: KafkaError,
    },
    #[error("the producer dropped the delivery report of position {position}")]
    DeliveryLost { position: Position },
}

/// What one step did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RelayOutcome {
    /// Produced this many events, all acknowledged, and saved the checkpoint.
    Relayed(usize),
    /// Nothing after the checkpoint: the topic has the whole log.
    CaughtUp,
}

/// Copies the store's global log to a Kafka topic. See the module docs.
pub struct Relay {
    store: Arc<dyn EventStore>,
    checkpoint: Arc<dyn RelayCheckpoint>,
    config: RelayConfig,
    /// Held for the whole of a step, so steps never overlap; replaced after a fatal
    /// producer error.
    producer: Mutex<FutureProducer>,
    progress: watch::Sender<Position>,
}

impl std::fmt::Debug for Relay {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Relay")
            .field("topic", &self.config.topic)
            .field("checkpoint_name", &self.config.checkpoint_name)
            .field("checkpoint", &*self.progress.borrow())
            .finish_non_exhaustive()
    }
}

impl Relay {
    /// Loads the checkpoint, creates the topic if it is missing, and builds the
    /// producer. Nothing is produced until [`Relay::run`] or [`Relay::relay_batch`].
    #[tracing::instrument(skip_all, fields(topic = %config.topic, checkpoint = %config.checkpoint_name))]
    pub async fn new(
        store: Arc<dyn EventStore>,
        checkpoint: Arc<dyn RelayCheckpoint>,
        config: RelayConfig,
    ) -> Result<Self, RelayError> {
        let start = checkpoint.load(&config.checkpoint_name).await?;
        ensure_topic(&config).await?;
        let producer = config
            .producer_config()
            .create()
            .map_err(RelayError::Client)?;
        tracing::info!(checkpoint = start, "relay ready");
        Ok(Self {
            store,
            checkpoint,
            config,
            producer: Mutex::new(producer),
            progress: watch::channel(start).0,
        })
    }

    /// The checkpoint: every event at or below it is acknowledged by Kafka.
    pub fn checkpoint(&self) -> Position {
        *self.progress.borrow()
    }

    /// A receiver of the checkpoint, updated after each save.
    pub fn watch_checkpoint(&self) -> watch::Receiver<Position> {
        self.progress.subscribe()
    }

    /// How many events the store holds beyond the checkpoint.
    pub async fn lag(&self) -> Result<u64, RelayError> {
        let head = self.store.head().await?;
        Ok(head.saturating_sub(self.checkpoint()))
    }

    /// Produces the next batch after the checkpoint, waits until Kafka acknowledged
    /// all of it, then saves the checkpoint. On error nothing is saved.
    #[tracing::instrument(skip(self), fields(topic = %self.config.topic, after))]
    pub async fn relay_batch(&self) -> Result<RelayOutcome, RelayError> {
        let mut producer = self.producer.lock().await;
        let after = self.checkpoint();
        tracing::Span::current().record("after", after);
        let started = Instant::now();
        let events = self.store.read_all(after, self.config.batch_size).await?;
        let Some(last) = events.last().map(|e| e.global_position) else {
            return Ok(RelayOutcome::CaughtUp);
        };
        let read = started.elapsed();

        let produced = produce_all(&producer, &self.config.topic, &events).await;
        let acknowledged = started.elapsed();
        if let Err(error) = produced {
            if let Some((code, reason)) = producer.client().fatal_error() {
                tracing::warn!(%code, %reason, "producer failed fatally; building a new one");
                *producer = self
                    .config
                    .producer_config()
                    .create()
                    .map_err(RelayError::Client)?;
            }
            return Err(error);
        }

        self.checkpoint
            .save(&self.config.checkpoint_name, last)
            .await?;
        self.progress.send_replace(last);
        tracing::debug!(
            events = events.len(),
            checkpoint = last,
            read_ms = read.as_millis(),
            produce_ms = (acknowledged - read).as_millis(),
            save_ms = (started.elapsed() - acknowledged).as_millis(),
            "relayed"
        );
        Ok(RelayOutcome::Relayed(events.len()))
    }

    /// Relays until `shutdown` completes. Failures are logged and retried from the
    /// checkpoint with back-off; a step cut short by shutdown saves nothing, so its
    /// events are produced again by the next relay (duplicates, never a loss).
    pub async fn run(&self, shutdown: impl Future<Output = ()>) {
        tokio::pin!(shutdown);
        let mut head = self.store.watch_head();
        let mut next_log = Instant::now();
        let mut failures: u32 = 0;
        loop {
            if Instant::now() >= next_log {
                self.log_lag().await;
                next_log = Instant::now() + self.config.lag_log_interval;
            }
            let step = tokio::select! {
                biased;
                () = &mut shutdown => break,
                step = self.relay_batch() => step,
            };
            let pause = match step {
                Ok(RelayOutcome::Relayed(_)) => {
                    failures = 0;
                    continue;
                }
                Ok(RelayOutcome::CaughtUp) => {
                    failures = 0;
                    let until_log = next_log.saturating_duration_since(Instant::now());
                    let wait = self.config.idle_recheck.min(until_log);
                    let next = self.checkpoint().saturating_add(1);
                    tokio::select! {
                        biased;
                        () = &mut shutdown => break,
                        _ = crate::wait_for_head(&mut head, next, wait) => {}
                    }
                    continue;
                }
                Err(error) => {
                    failures = failures.saturating_add(1);
                    let pause = backoff(failures, self.config.max_backoff);
                    tracing::warn!(
                        error = &error as &dyn std::error::Error,
                        failures,
                        retry_in_ms = u64::try_from(pause.as_millis()).unwrap_or(u64::MAX),
                        checkpoint = self.checkpoint(),
                        "relay step failed; retrying from the checkpoint"
                    );
                    pause
                }
            };
            tokio::select! {
                biased;
                () = &mut shutdown => break,
                () = tokio::time::sleep(pause) => {}
            }
        }
        tracing::info!(checkpoint = self.checkpoint(), "relay stopped");
    }

    async fn log_lag(&self) {
        match self.store.head().await {
            Ok(head) => {
                let checkpoint = self.checkpoint();
                tracing::info!(
                    topic = %self.config.topic,
                    relay = %self.config.checkpoint_name,
                    head,
                    checkpoint,
                    lag = head.saturating_sub(checkpoint),
                    "relay lag"
                );
            }
            Err(error) => {
                tracing::warn!(
                    error = &error as &dyn std::error::Error,
                    "reading the store head for the lag line failed"
                );
            }
        }
    }
}

/// 100 ms, doubling per consecutive failure, at most `max`.
fn backoff(failures: u32, max: Duration) -> Duration {
    let exponent = failures.saturating_sub(1).min(16);
    Duration::from_millis(100u64 << exponent).min(max)
}

/// Enqueues every event in order, then awaits every delivery report. Fails with the
/// first error, but only after all reports are in, so no message of this batch is
/// still in flight when the caller decides what to do next.
async fn produce_all(
    producer: &FutureProducer,
    topic: &str,
    events: &[crate::RecordedEvent],
) -> Result<(), RelayError> {
    let mut pending: VecDeque<(Position, DeliveryFuture)> = VecDeque::with_capacity(events.len());
    let mut first_error = None;

    for event in events {
        let position = event.global_position;
        let payload = encode_value(event).map_err(|source| RelayError::Encode { position, source });
        let payload = match payload {
            Ok(payload) => payload,
            Err(error) => {
                first_error = Some(error);
                break;
            }
        };
        let key = message_key(event);
        let mut record = FutureRecord::to(topic)
            .key(&key)
            .payload(&payload)
            .headers(message_headers(event));
        let enqueued = loop {
            match producer.send_result(record) {
                Ok(delivery) => break Ok(delivery),
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                    // The local queue is full: wait for the oldest report to free room,
                    // then enqueue the same record again, keeping position order.
                    record = back;
                    match pending.pop_front() {
                        Some((done, delivery)) => {
                            if let Err(error) = settle(done, delivery).await {
                                break Err(error);
                            }
                        }
                        None => {
                            break Err(RelayError::Produce {
                                position,
                                source: KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull),
                            });
                        }
                    }
                }
                Err((source, _)) => break Err(RelayError::Produce { position, source }),
            }
        };
        match enqueued {
            Ok(delivery) => pending.push_back((position, delivery)),
            Err(error) => {
                first_error = Some(error);
                break;
            }
        }
    }

    for (position, delivery) in pending {
        if let Err(error) = settle(position, delivery).await {
            first_error.get_or_insert(error);
        }
    }
    match first_error {
        None => Ok(()),
        Some(error) => Err(error),
    }
}

/// Awaits one delivery report.
async fn settle(position: Position, delivery: DeliveryFuture) -> Result<(), RelayError> {
    match delivery.await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err((source, _message))) => Err(RelayError::Produce { position, source }),
        Err(_canceled) => Err(RelayError::DeliveryLost { position }),
    }
}

/// Creates the topic unless it exists; warns if it exists with another partition
/// count (which the relay must not change, see [`RelayConfig::partitions`]).
async fn ensure_topic(config: &RelayConfig) -> Result<(), RelayError> {
    let mut client_config = ClientConfig::new();
    client_config.set("bootstrap.servers", &config.brokers);
    for (key, value) in &config.client_config {
        client_config.set(key, value);
    }
    let admin: AdminClient<DefaultClientContext> =
        client_config.create().map_err(RelayError::Client)?;
    let topic = NewTopic::new(
        &config.topic,
        config.partitions,
        TopicReplication::Fixed(config.replication),
    );
    let options =
        AdminOptions::new().operation_timeout(Some(Timeout::After(Duration::from_secs(30))));
    let results = admin
        .create_topics([&topic], &options)
        .await
        .map_err(RelayError::Admin)?;
    let mut exists = false;
    for result in results {
        match result {
            Ok(name) => {
                tracing::info!(topic = %name, partitions = config.partitions, "created topic")
            }
            Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => exists = true,
            Err((topic, code)) => return Err(RelayError::CreateTopic { topic, code }),
        }
    }
    if exists {
        check_partitions(admin, config).await;
    }
    Ok(())
}

async fn check_partitions(admin: AdminClient<DefaultClientContext>, config: &RelayConfig) {
    let topic = config.topic.clone();
    // librdkafka's metadata call blocks; keep it off the async workers.
    let found = tokio::task::spawn_blocking(move || {
        admin
            .inner()
            .fetch_metadata(Some(&topic), Duration::from_secs(10))
            .map(|metadata| {
                metadata
                    .topics()
                    .iter()
                    .find(|t| t.name() == topic)
                    .map(|t| t.partitions().len())
            })
    })
    .await;
    match found {
        Ok(Ok(Some(partitions))) if i32::try_from(partitions).ok() != Some(config.partitions) => {
            tracing::warn!(
                topic = %config.topic,
                existing = partitions,
                configured = config.partitions,
                "topic exists with a different partition count; keeping the existing one"
            );
        }
        Ok(Ok(_)) => {}
        Ok(Err(error)) => {
            tracing::warn!(
                error = &error as &dyn std::error::Error,
                "could not read the topic's metadata"
            );
        }
        Err(error) => {
            tracing::warn!(
                error = &error as &dyn std::error::Error,
                "could not read the topic's metadata"
            );
        }
    }
}
