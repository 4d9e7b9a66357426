//! The Kafka-facing components of the production deployment: the relay (store →
//! topic) and the projectors fed from the topic, sharing its partitions through
//! leases in the read-model database.
//!
//! Both keep their progress in the read-model database: the relay's checkpoint
//! moves only after Kafka acknowledged every event up to it, and the projector
//! commits each partition's next offset in the same transaction as the read-model
//! change, so a crash or a partition moving to another projector redelivers at most what is then skipped.

use std::sync::Arc;
use std::time::Duration;

use eventlog::EventStore;
use eventlog::kafka::{KafkaSource, PartitionLeases, Relay, RelayConfig, SourceConfig};
use projector::ReadModels;
use projector::kafka::TopicProjector;
use tokio::sync::watch;
use tokio::time::Instant;

use crate::settings::KafkaSettings;

/// Longest pause between attempts after a failure.
const MAX_BACKOFF: Duration = Duration::from_secs(10);

/// Runs the relay until shutdown, building it again after a failure to start.
pub async fn run_relay(
    brokers: String,
    kafka: KafkaSettings,
    store: Arc<dyn EventStore>,
    models: ReadModels,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut config = RelayConfig::new(brokers).with_topic(kafka.topic);
    config.partitions = kafka.partitions;
    let mut backoff = Duration::from_millis(200);
    loop {
        match Relay::new(store.clone(), Arc::new(models.clone()), config.clone()).await {
            Ok(relay) => {
                let mut stop = shutdown.clone();
                relay
                    .run(async move { while stop.changed().await.is_ok() && !*stop.borrow() {} })
                    .await;
                return;
            }
            Err(error) => {
                tracing::error!(error = ?error, "the relay could not start; retrying");
                if wait_or_stop(&mut shutdown, backoff).await {
                    return;
                }
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
        }
    }
}

/// How often a projector runs a round of the partition-lease protocol: the longest a
/// dead member's partitions wait for a survivor, and a joining member for its share.
const LEASE_ROUND: Duration = Duration::from_secs(1);

/// Runs the projector on the topic until shutdown.
///
/// With `lease_database_url` (the read-model database), the projector shares the
/// topic's partitions with the other projectors of `kafka.group` through
/// [`PartitionLeases`]; without it (read models in an embedded SQLite file, which only
/// one process can write) it reads every partition.
pub async fn run_projector(
    brokers: String,
    kafka: KafkaSettings,
    lease_database_url: Option<String>,
    models: ReadModels,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut config = SourceConfig::new(brokers, kafka.group.clone());
    config.topic = kafka.topic.clone();
    config.fetch_wait = Duration::from_millis(kafka.fetch_wait_ms);
    config.linger = Duration::from_millis(kafka.batch_linger_ms);
    let projector = TopicProjector::new(models.clone());
    let mut leases =
        lease_database_url.map(|url| PartitionLeases::new(url, &kafka.group, &kafka.topic));
    let mut backoff = Duration::from_millis(200);
    'connect: loop {
        let mut source = match KafkaSource::new(config.clone(), Arc::new(models.clone())) {
            Ok(source) => source,
            Err(error) => {
                tracing::error!(error = ?error, "the projector could not create its consumer; retrying");
                if wait_or_stop(&mut shutdown, backoff).await {
                    break 'connect;
                }
                backoff = (backoff * 2).min(MAX_BACKOFF);
                continue;
            }
        };
        let mut next_round = Instant::now();
        loop {
            if *shutdown.borrow() {
                source.close().await;
                break 'connect;
            }
            if Instant::now() >= next_round {
                next_round = Instant::now() + LEASE_ROUND;
                if let Err(error) = source.follow_leases(leases.as_mut()).await {
                    tracing::error!(error = ?error, "assigning partitions failed; starting over");
                    source.close().await;
                    if wait_or_stop(&mut shutdown, backoff).await {
                        break 'connect;
                    }
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                    continue 'connect;
                }
            }
            let wait = next_round
                .saturating_duration_since(Instant::now())
                .max(Duration::from_millis(10));
            let batch = tokio::select! {
                batch = source.next_batch(wait) => batch,
                _ = shutdown.changed() => continue,
            };
            let result = match batch {
                Ok(batch) if batch.is_empty() => continue,
                Ok(batch) => projector
                    .apply_sourced(&kafka.topic, &batch)
                    .await
                    .map(|_| source.confirm(&batch))
                    .map_err(anyhow::Error::from),
                Err(error) => Err(anyhow::Error::from(error)),
            };
            match result {
                Ok(()) => backoff = Duration::from_millis(200),
                Err(error) => {
                    // Start over from the stored offsets: what was not committed is
                    // read again, what was is skipped.
                    tracing::error!(error = ?error, "projecting from the topic failed; starting over");
                    source.close().await;
                    if wait_or_stop(&mut shutdown, backoff).await {
                        break 'connect;
                    }
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                    continue 'connect;
                }
            }
        }
    }
    if let Some(leases) = leases.as_mut() {
        leases.release_all().await;
    }
}

/// Waits `pause` unless shutdown comes first; true when shutting down.
async fn wait_or_stop(shutdown: &mut watch::Receiver<bool>, pause: Duration) -> bool {
    let stopped = tokio::select! {
        _ = tokio::time::sleep(pause) => false,
        _ = shutdown.wait_for(|s| *s) => true,
    };
    stopped || *shutdown.borrow()
}
