//! The topic source: reads the relay's topic for a component that runs as its own
//! process (the projector), with the caller's database holding the offsets that count.
//!
//! The caller decides which partitions this member reads (with
//! [`super::PartitionLeases`], see there for why not Kafka's group protocol) and tells
//! the source with [`KafkaSource::assign`]; the source asks the caller's
//! [`OffsetStore`] where each partition starts and assigns them at those offsets. So
//! no message is fetched from a partition before its start is known. Offsets
//! committed to Kafka (under `group_id`) are a convenience for tools, not the truth:
//! the caller commits each partition's next offset (and its dedup mark, see
//! [`super`]) in the same database transaction as the effects of the events.
//!
//! A caller that commits a batch before it changes the assignment has committed it
//! before the partition can move; the next owner then starts exactly after it.
//! Duplicates are left only for crashes (and for the relay's own re-deliveries), and
//! the dedup mark covers both.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use rdkafka::ClientConfig;
use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use rdkafka::util::Timeout;
use tokio::time::Instant;

use super::{DEFAULT_TOPIC, DecodeError, PartitionLeases, decode_value};
use crate::RecordedEvent;

/// An error from the caller's offset storage, whatever its database.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Where the caller keeps its progress through the topic.
///
/// The caller writes offsets itself, inside the transaction that applies the events
/// (so effects and progress never disagree); the source only reads them, each time
/// partitions are assigned.
#[async_trait]
pub trait OffsetStore: Send + Sync + 'static {
    /// For each of `partitions` of `topic` that has progress, the next offset to read
    /// (the offset of the last applied message + 1). A partition without an entry is
    /// read from its beginning.
    async fn load(&self, topic: &str, partitions: &[i32]) -> Result<HashMap<i32, i64>, BoxError>;
}

/// [`SourceConfig::fetch_wait`]'s default, in milliseconds.
pub const DEFAULT_FETCH_WAIT_MS: u64 = 25;
/// [`SourceConfig::linger`]'s default, in milliseconds.
pub const DEFAULT_LINGER_MS: u64 = 10;

/// What the source needs to know; [`SourceConfig::new`] fills in the defaults.
#[derive(Debug, Clone)]
pub struct SourceConfig {
    /// `bootstrap.servers`: comma-separated `host:port` list.
    pub brokers: String,
    /// The topic to read. Default [`DEFAULT_TOPIC`].
    pub topic: String,
    /// The group the offsets are committed to Kafka under, for tools (one per kind of
    /// reader, e.g. `tidemark-projector`).
    pub group_id: String,
    /// Most events in one batch. Default 500.
    pub max_batch: usize,
    /// After the first message of a batch, how long to wait for more. Default 10 ms.
    pub linger: Duration,
    /// `fetch.wait.max.ms`: the longest a fetch waits at the broker for new records.
    /// It bounds how long an event sits in the broker before the source sees it
    /// (librdkafka's default of 500 ms was the floor of the production projection
    /// lag), and tansu 0.6 holds every fetch this long, records or not. Default 25 ms
    /// (docs/benchmarks.md: 50 ms until 2026-12-05).
    pub fetch_wait: Duration,
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
            linger: Duration::from_millis(DEFAULT_LINGER_MS),
            fetch_wait: Duration::from_millis(DEFAULT_FETCH_WAIT_MS),
            client_config: BTreeMap::new(),
        }
    }

    fn consumer_config(&self) -> ClientConfig {
        let mut config = ClientConfig::new();
        config
            .set("bootstrap.servers", &self.brokers)
            .set("group.id", &self.group_id)
            .set("client.id", "tidemark-source");
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
            .set(
                "fetch.wait.max.ms",
                self.fetch_wait.as_millis().max(1).to_string(),
            );
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
    #[error("creating the Kafka consumer failed")]
    Client(#[source] KafkaError),
    #[error("reading the topic's metadata failed")]
    Metadata(#[source] KafkaError),
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

/// Reads the partitions of the relay's topic the caller assigns. See the module docs.
pub struct KafkaSource {
    /// Shared only with a blocking metadata request in flight.
    consumer: Arc<StreamConsumer>,
    offsets: Arc<dyn OffsetStore>,
    config: SourceConfig,
    /// Partitions this member reads, with the offset each was started at.
    assigned: BTreeMap<i32, i64>,
    /// The topic's partition count once known (0 until the topic exists).
    partitions: i32,
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
    /// Creates the consumer, reading nothing until [`KafkaSource::assign`].
    pub fn new(config: SourceConfig, offsets: Arc<dyn OffsetStore>) -> Result<Self, SourceError> {
        let consumer: StreamConsumer = config
            .consumer_config()
            .create()
            .map_err(SourceError::Client)?;
        Ok(Self {
            consumer: Arc::new(consumer),
            offsets,
            config,
            assigned: BTreeMap::new(),
            partitions: 0,
        })
    }

    /// The partitions this member currently reads.
    pub fn assignment(&self) -> Vec<i32> {
        self.assigned.keys().copied().collect()
    }

    /// How many partitions the topic has (0 while it does not exist yet), asking the
    /// broker for at most `timeout`.
    pub async fn partition_count(&self, timeout: Duration) -> Result<i32, SourceError> {
        let consumer = Arc::clone(&self.consumer);
        let topic = self.config.topic.clone();
        // librdkafka blocks the calling thread for the metadata request.
        tokio::task::spawn_blocking(move || {
            let metadata = consumer
                .client()
                .fetch_metadata(Some(&topic), Timeout::After(timeout))
                .map_err(SourceError::Metadata)?;
            Ok(metadata
                .topics()
                .iter()
                .find(|t| t.name() == topic && t.error().is_none())
                .map_or(0, |t| {
                    i32::try_from(t.partitions().len()).unwrap_or(i32::MAX)
                }))
        })
        .await
        .map_err(|e| SourceError::Fatal(format!("the metadata request panicked: {e}")))?
    }

    /// One round of partition ownership: reads the partitions `leases` hold after a
    /// [`PartitionLeases::rebalance`], or every partition without leases (a single
    /// member). Call it between batches, after committing the last one.
    ///
    /// A failed lease round leaves this member reading nothing until a later round
    /// succeeds (its connection, and every lease, are gone); only a failed assignment
    /// is returned.
    pub async fn follow_leases(
        &mut self,
        leases: Option<&mut PartitionLeases>,
    ) -> Result<(), SourceError> {
        if self.partitions == 0 {
            // Until the relay created the topic there is nothing to share.
            match self.partition_count(Duration::from_secs(5)).await {
                Ok(count) => self.partitions = count,
                Err(error) => tracing::warn!(
                    error = &error as &dyn std::error::Error,
                    "reading the topic's partition count failed"
                ),
            }
        }
        let owned: Vec<i32> = match leases {
            Some(leases) => match leases.rebalance(self.partitions).await {
                Ok(owned) => owned.iter().copied().collect(),
                Err(error) => {
                    tracing::error!(
                        error = &error as &dyn std::error::Error,
                        "the partition-lease round failed; reading nothing until it succeeds"
                    );
                    Vec::new()
                }
            },
            None => (0..self.partitions).collect(),
        };
        if owned != self.assignment() {
            self.assign(&owned).await?;
        }
        Ok(())
    }

    /// Reads exactly `partitions` from now on: a partition kept goes on from its stored
    /// offset, a new one starts at its stored offset, a dropped one is read no more.
    ///
    /// Call it between batches, after committing the last one: each partition's start
    /// is read from the [`OffsetStore`], so a batch taken before and not committed
    /// would be read again (and skipped as a copy when committed meanwhile).
    pub async fn assign(&mut self, partitions: &[i32]) -> Result<(), SourceError> {
        let stored = self
            .offsets
            .load(&self.config.topic, partitions)
            .await
            .map_err(SourceError::Offsets)?;
        let mut tpl = TopicPartitionList::new();
        let mut starts = BTreeMap::new();
        for &partition in partitions {
            let start = stored.get(&partition).copied().filter(|o| *o >= 0);
            let offset = start.map_or(Offset::Beginning, Offset::Offset);
            tpl.add_partition_offset(&self.config.topic, partition, offset)
                .map_err(SourceError::Assign)?;
            starts.insert(partition, start.unwrap_or(0));
        }
        self.consumer.assign(&tpl).map_err(SourceError::Assign)?;
        tracing::info!(topic = %self.config.topic, assigned = ?starts, "partitions assigned at stored offsets");
        self.assigned = starts;
        Ok(())
    }

    /// Waits up to `max_wait` for events and returns up to `max_batch` of them, in
    /// offset order per partition; an empty batch means nothing arrived in time (or
    /// nothing is assigned). A batch closes when it is full, or `linger` after its
    /// first event arrived, whichever comes first.
    ///
    /// Apply the batch and commit its offsets before calling again or changing the
    /// assignment (see the module docs).
    pub async fn next_batch(
        &mut self,
        max_wait: Duration,
    ) -> Result<Vec<SourcedEvent>, SourceError> {
        let deadline = Instant::now() + max_wait;
        let mut batch: Vec<SourcedEvent> = Vec::new();
        if self.assigned.is_empty() {
            tokio::time::sleep_until(deadline).await;
            return Ok(batch);
        }
        // Set when the first event arrives: the batch closes `linger` after it, however
        // steadily more keep coming. (Counting the linger from the latest event kept a
        // batch open under a steady stream until it was full, so its first events
        // waited up to `max_batch` arrivals: 170 ms at 2,900 events/s.)
        let mut close_at: Option<Instant> = None;
        loop {
            if batch.len() >= self.config.max_batch {
                return Ok(batch);
            }
            if close_at.is_none() && !batch.is_empty() {
                close_at = Some(deadline.min(Instant::now() + self.config.linger));
            }
            let until = close_at.unwrap_or(deadline);
            let message = match tokio::time::timeout_at(until, self.consumer.recv()).await {
                Err(_elapsed) => return Ok(batch),
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
                // Fetched before the assignment changed; its partition's owner reads it.
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

    /// Closes the consumer. Dropping the source does the same but blocks the thread it
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
