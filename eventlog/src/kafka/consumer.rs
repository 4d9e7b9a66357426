//! The consumer-group source: reads the relay's topic for a component that runs as its
//! own process (the projector, later the workflows), with the caller's database
//! holding the offsets that count.
//!
//! Kafka decides which member of the group reads which partitions; the caller decides
//! where each partition starts. Offsets committed to Kafka are a convenience for
//! tools, not the truth: the caller commits each partition's next offset (and its
//! dedup mark, see [`super`]) in the same database transaction as the effects of the
//! events, and hands the source an [`OffsetStore`] to read them back.
//!
//! # Rebalance
//!
//! The group uses the eager protocol: a rebalance revokes every partition of every
//! member, then assigns anew. librdkafka delivers both as events that
//! [`StreamConsumer::recv`] serves inside the source's own task. On *revoke* the
//! context unassigns at once (librdkafka waits for that before it rejoins). On
//! *assign* it does **not** assign: it notes the partitions, and the source, back in
//! async code, asks the [`OffsetStore`] where each starts and only then assigns them
//! with those offsets — librdkafka keeps the member waiting for that call, still
//! heartbeating. So no message is fetched from a partition before its start is known,
//! and a batch never holds a message of a partition this member no longer owns.
//!
//! Because the member only rejoins while [`KafkaSource::next_batch`] runs, a caller
//! that commits a batch before asking for the next one has committed it before the
//! partition can move; the new owner then starts exactly after it. Duplicates are left
//! only for crashes (and for the relay's own re-deliveries), and the dedup mark covers
//! both.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use rdkafka::ClientConfig;
use rdkafka::client::ClientContext;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, StreamConsumer};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use rdkafka::types::RDKafkaRespErr;
use rdkafka::util::Timeout;
use tokio::sync::Notify;
use tokio::time::Instant;

use super::{DEFAULT_TOPIC, DecodeError, decode_value};
use crate::RecordedEvent;

/// An error from the caller's offset storage, whatever its database.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Where the caller keeps its progress through the topic.
///
/// The caller writes offsets itself, inside the transaction that applies the events
/// (so effects and progress never disagree); the source only reads them, each time it
/// is handed partitions.
#[async_trait]
pub trait OffsetStore: Send + Sync + 'static {
    /// For each of `partitions` of `topic` that has progress, the next offset to read
    /// (the offset of the last applied message + 1). A partition without an entry is
    /// read from its beginning.
    async fn load(&self, topic: &str, partitions: &[i32]) -> Result<HashMap<i32, i64>, BoxError>;
}

/// What the source needs to know; [`SourceConfig::new`] fills in the defaults.
#[derive(Debug, Clone)]
pub struct SourceConfig {
    /// `bootstrap.servers`: comma-separated `host:port` list.
    pub brokers: String,
    /// The topic to read. Default [`DEFAULT_TOPIC`].
    pub topic: String,
    /// The consumer group (one per kind of reader, e.g. `tidemark-projector`).
    pub group_id: String,
    /// Most events in one batch. Default 500.
    pub max_batch: usize,
    /// After the first message of a batch, how long to wait for more. Default 10 ms.
    pub linger: Duration,
    /// `session.timeout.ms`: how soon the group gives a silent member's partitions to
    /// the others. Default 10 s.
    pub session_timeout: Duration,
    /// Extra librdkafka settings (security, tuning), applied before the ones the
    /// source depends on (manual offsets, eager assignment), which cannot be overridden.
    pub client_config: BTreeMap<String, String>,
}

impl SourceConfig {
    /// The defaults, for the given `bootstrap.servers` and group.
    pub fn new(brokers: impl Into<String>, group_id: impl Into<String>) -> Self {
        Self {
            brokers: brokers.into(),
            topic: DEFAULT_TOPIC.to_owned(),
            group_id: group_id.into(),
            max_batch: 500,
            linger: Duration::from_millis(10),
            session_timeout: Duration::from_secs(10),
            client_config: BTreeMap::new(),
        }
    }

    fn consumer_config(&self) -> ClientConfig {
        let mut config = ClientConfig::new();
        config
            .set("bootstrap.servers", &self.brokers)
            .set("group.id", &self.group_id)
            .set("client.id", "tidemark-source")
            .set(
                "session.timeout.ms",
                self.session_timeout.as_millis().to_string(),
            )
            // Heartbeat well inside the session so a short stall is not a departure.
            .set(
                "heartbeat.interval.ms",
                (self.session_timeout.as_millis() / 4).max(100).to_string(),
            );
        for (key, value) in &self.client_config {
            config.set(key, value);
        }
        config
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            // Only for an offset that no longer exists (a topic recreated): start over
            // rather than skip; deduplication absorbs what was seen before.
            .set("auto.offset.reset", "earliest")
            .set("enable.partition.eof", "false")
            // A fetch waits at most this long for new records: it bounds how long an
            // event sits in the broker before a projector sees it (librdkafka's default
            // of 500 ms was the floor of the production projection lag).
            .set("fetch.wait.max.ms", "50")
            // Eager protocols: see "Rebalance" in the module docs.
            .set("partition.assignment.strategy", "range,roundrobin");
        config
    }
}

/// One event read from the topic, with where it was read.
#[derive(Debug, Clone, PartialEq)]
pub struct SourcedEvent {
    pub partition: i32,
    pub offset: i64,
    pub event: RecordedEvent,
}

/// Why the source could not give a batch.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("creating or subscribing the Kafka consumer failed")]
    Client(#[source] KafkaError),
    #[error("assigning partitions failed")]
    Assign(#[source] KafkaError),
    #[error("loading the stored offsets failed")]
    Offsets(#[source] BoxError),
    #[error("the consumer failed fatally: {0}")]
    Fatal(String),
    /// The message stays where it is: every later call stops at it again until a
    /// build that understands it runs.
    #[error("message at partition {partition} offset {offset} is not a readable event")]
    Decode {
        partition: i32,
        offset: i64,
        #[source]
        source: DecodeError,
    },
}

/// What the rebalance callback tells the source's async code.
#[derive(Debug, Default)]
struct Rebalancing {
    /// Partitions handed to this member, not yet assigned (waiting for offsets).
    pending: Option<Vec<i32>>,
    /// Set when partitions were taken away since the source last looked.
    revoked: bool,
}

/// The consumer context: takes part in rebalances as the module docs describe.
struct SourceContext {
    topic: String,
    rebalancing: Mutex<Rebalancing>,
    changed: Notify,
}

impl SourceContext {
    fn state(&self) -> std::sync::MutexGuard<'_, Rebalancing> {
        // The state is two plain fields, consistent after every write; a panic
        // elsewhere while holding the lock cannot leave it half-written.
        self.rebalancing
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

impl ClientContext for SourceContext {}

impl ConsumerContext for SourceContext {
    fn rebalance(
        &self,
        base_consumer: &BaseConsumer<Self>,
        err: RDKafkaRespErr,
        tpl: &mut TopicPartitionList,
    ) {
        match err {
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS => {
                let partitions: Vec<i32> = tpl
                    .elements()
                    .iter()
                    .filter(|e| e.topic() == self.topic)
                    .map(|e| e.partition())
                    .collect();
                tracing::info!(topic = %self.topic, ?partitions, "partitions handed to this member");
                // Assigned later, from async code, once their offsets are loaded.
                self.state().pending = Some(partitions);
            }
            _ => {
                if err != RDKafkaRespErr::RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS {
                    tracing::warn!(?err, "rebalance error; dropping the assignment");
                } else {
                    tracing::info!(topic = %self.topic, "partitions revoked from this member");
                }
                if let Err(error) = base_consumer.unassign() {
                    tracing::warn!(
                        error = &error as &dyn std::error::Error,
                        "unassigning partitions failed"
                    );
                }
                let mut state = self.state();
                state.pending = None;
                state.revoked = true;
            }
        }
        self.changed.notify_one();
    }
}

/// Reads the relay's topic as one member of a consumer group. See the module docs.
pub struct KafkaSource {
    consumer: StreamConsumer<SourceContext>,
    context: Arc<SourceContext>,
    offsets: Arc<dyn OffsetStore>,
    config: SourceConfig,
    /// Partitions this member reads, with the offset each was started at.
    assigned: BTreeMap<i32, i64>,
}

impl std::fmt::Debug for KafkaSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaSource")
            .field("topic", &self.config.topic)
            .field("group_id", &self.config.group_id)
            .field("assigned", &self.assigned)
            .finish_non_exhaustive()
    }
}

impl KafkaSource {
    /// Creates the consumer and subscribes to the topic. Joining the group and
    /// receiving partitions happen inside [`KafkaSource::next_batch`].
    pub fn new(config: SourceConfig, offsets: Arc<dyn OffsetStore>) -> Result<Self, SourceError> {
        let context = SourceContext {
            topic: config.topic.clone(),
            rebalancing: Mutex::new(Rebalancing::default()),
            changed: Notify::new(),
        };
        let consumer: StreamConsumer<SourceContext> = config
            .consumer_config()
            .create_with_context(context)
            .map_err(SourceError::Client)?;
        consumer
            .subscribe(&[&config.topic])
            .map_err(SourceError::Client)?;
        let context = Arc::clone(consumer.context());
        Ok(Self {
            consumer,
            context,
            offsets,
            config,
            assigned: BTreeMap::new(),
        })
    }

    /// The partitions this member currently reads.
    pub fn assignment(&self) -> Vec<i32> {
        self.assigned.keys().copied().collect()
    }

    /// Waits up to `max_wait` for events and returns up to `max_batch` of them, in
    /// offset order per partition; an empty batch means nothing arrived in time.
    ///
    /// Apply the batch and commit its offsets before calling again: a rebalance can
    /// only move partitions while this runs (see the module docs). Call it at least
    /// every `max.poll.interval.ms` (5 minutes unless set in `client_config`), or the
    /// group takes this member's partitions away.
    pub async fn next_batch(
        &mut self,
        max_wait: Duration,
    ) -> Result<Vec<SourcedEvent>, SourceError> {
        let deadline = Instant::now() + max_wait;
        let mut batch: Vec<SourcedEvent> = Vec::new();
        loop {
            self.follow_rebalance(&mut batch).await?;
            if batch.len() >= self.config.max_batch {
                return Ok(batch);
            }
            let until = match batch.first() {
                None => deadline,
                Some(_) => deadline.min(Instant::now() + self.config.linger),
            };
            let received = tokio::select! {
                received = tokio::time::timeout_at(until, self.consumer.recv()) => received,
                // The rebalance callback ran inside `recv`: go and follow it.
                () = self.context.changed.notified() => continue,
            };
            let message = match received {
                Err(_elapsed) => {
                    self.follow_rebalance(&mut batch).await?;
                    return Ok(batch);
                }
                Ok(Err(error)) => {
                    if let Some((code, reason)) = self.consumer.client().fatal_error() {
                        return Err(SourceError::Fatal(format!("{code}: {reason}")));
                    }
                    // Broker down, a connection reset: librdkafka reconnects by itself.
                    tracing::warn!(
                        error = &error as &dyn std::error::Error,
                        "kafka consumer error"
                    );
                    continue;
                }
                Ok(Ok(message)) => message,
            };

            let (partition, offset) = (message.partition(), message.offset());
            let owned = message.topic() == self.config.topic
                && self
                    .assigned
                    .get(&partition)
                    .is_some_and(|start| offset >= *start);
            if !owned {
                // Left over from before a rebalance; its partition's owner reads it.
                continue;
            }
            match decode_value(message.payload()) {
                Ok(event) => batch.push(SourcedEvent {
                    partition,
                    offset,
                    event,
                }),
                Err(source) => {
                    drop(message);
                    // Rewind so the message is met again, then give what came before it.
                    self.rewind(partition, offset)?;
                    if batch.is_empty() {
                        return Err(SourceError::Decode {
                            partition,
                            offset,
                            source,
                        });
                    }
                    tracing::warn!(
                        partition,
                        offset,
                        "stopping the batch before an unreadable message"
                    );
                    return Ok(batch);
                }
            }
        }
    }

    /// Tells Kafka the caller committed `events`, so tools show the group's progress.
    /// Asynchronous and best effort: the caller's own stored offsets are the truth.
    pub fn confirm(&self, events: &[SourcedEvent]) {
        let mut next: BTreeMap<i32, i64> = BTreeMap::new();
        for sourced in events {
            let entry = next.entry(sourced.partition).or_insert(0);
            *entry = (*entry).max(sourced.offset.saturating_add(1));
        }
        let mut tpl = TopicPartitionList::new();
        for (partition, offset) in next {
            if !self.assigned.contains_key(&partition) {
                continue;
            }
            if let Err(error) =
                tpl.add_partition_offset(&self.config.topic, partition, Offset::Offset(offset))
            {
                tracing::debug!(
                    error = &error as &dyn std::error::Error,
                    "skipping an offset commit"
                );
            }
        }
        if tpl.count() == 0 {
            return;
        }
        if let Err(error) = self.consumer.commit(&tpl, CommitMode::Async) {
            tracing::debug!(
                error = &error as &dyn std::error::Error,
                "committing offsets to Kafka failed"
            );
        }
    }

    /// Leaves the group (handing this member's partitions to the others at once) and
    /// closes the consumer. Dropping the source does the same but blocks the thread it
    /// is dropped on while librdkafka says goodbye.
    pub async fn close(self) {
        let consumer = self.consumer;
        if let Err(error) = tokio::task::spawn_blocking(move || drop(consumer)).await {
            tracing::warn!(
                error = &error as &dyn std::error::Error,
                "closing the consumer panicked"
            );
        }
    }

    /// Applies what the rebalance callback noted: forgets revoked partitions (and the
    /// messages of theirs in `batch`), and assigns handed partitions at their stored
    /// offsets.
    async fn follow_rebalance(&mut self, batch: &mut Vec<SourcedEvent>) -> Result<(), SourceError> {
        let (pending, revoked) = {
            let mut state = self.context.state();
            (state.pending.take(), std::mem::take(&mut state.revoked))
        };
        if revoked {
            self.assigned.clear();
            batch.clear();
        }
        let Some(partitions) = pending else {
            return Ok(());
        };
        let stored = match self.offsets.load(&self.config.topic, &partitions).await {
            Ok(stored) => stored,
            Err(error) => {
                // Nothing is lost by failing here: a hand-over always follows a revoke
                // (or is the first), so `batch` is empty and nothing was fetched yet.
                // Keep the hand-over for the next call, unless a newer one arrived.
                self.context.state().pending.get_or_insert(partitions);
                return Err(SourceError::Offsets(error));
            }
        };
        let mut tpl = TopicPartitionList::new();
        let mut starts = BTreeMap::new();
        for &partition in &partitions {
            let start = stored.get(&partition).copied().filter(|o| *o >= 0);
            let offset = start.map_or(Offset::Beginning, Offset::Offset);
            tpl.add_partition_offset(&self.config.topic, partition, offset)
                .map_err(SourceError::Assign)?;
            starts.insert(partition, start.unwrap_or(0));
        }
        // No revoke can have come in while the offsets loaded: the rebalance callback
        // only runs inside `recv`, in this task, which is busy here.
        self.consumer.assign(&tpl).map_err(SourceError::Assign)?;
        tracing::info!(topic = %self.config.topic, assigned = ?starts, "partitions assigned at stored offsets");
        self.assigned = starts;
        Ok(())
    }

    /// Moves a partition back to `offset`, so the message there is fetched again.
    fn rewind(&self, partition: i32, offset: i64) -> Result<(), SourceError> {
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(&self.config.topic, partition, Offset::Offset(offset))
            .map_err(SourceError::Assign)?;
        // A zero timeout makes librdkafka seek asynchronously instead of blocking this
        // thread; messages of the partition fetched before the seek are discarded.
        self.consumer
            .seek_partitions(tpl, Timeout::After(Duration::ZERO))
            .map_err(SourceError::Assign)?;
        Ok(())
    }
}
