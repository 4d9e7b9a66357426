//! The Kafka-facing components of the production deployment: the relay (store →
//! topic) and the projector fed from the topic by a consumer group.
//!
//! Both keep their progress in the read-model database: the relay's checkpoint
//! moves only after Kafka acknowledged every event up to it, and the projector
//! commits each partition's next offset in the same transaction as the read-model
//! change, so a crash or a rebalance redelivers at most what is then skipped.

use std::sync::Arc;
use std::time::Duration;

use eventlog::EventStore;
use eventlog::kafka::{KafkaSource, Relay, RelayConfig, SourceConfig};
use projector::ReadModels;
use projector::kafka::TopicProjector;
use tokio::sync::watch;

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

/// Runs the projector on the topic until shutdown.
pub async fn run_projector(
    brokers: String,
    kafka: KafkaSettings,
    models: ReadModels,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut config = SourceConfig::new(brokers, kafka.group);
    config.topic = kafka.topic.clone();
    // The rebalance timeout: how long a rebalance waits for members that do not
    // rejoin. A member killed without leaving the group holds the others back until
    // it passes, so keep it short; a batch is applied well within it.
    config
        .client_config
        .insert("max.poll.interval.ms".to_owned(), "20000".to_owned());
    if let Some(instance) = &kafka.instance_id {
        config
            .client_config
            .insert("group.instance.id".to_owned(), instance.clone());
    }
    let projector = TopicProjector::new(models.clone());
    let mut backoff = Duration::from_millis(200);
    'connect: loop {
        let mut source = match KafkaSource::new(config.clone(), Arc::new(models.clone())) {
            Ok(source) => source,
            Err(error) => {
                tracing::error!(error = ?error, "the projector could not join its group; retrying");
                if wait_or_stop(&mut shutdown, backoff).await {
                    return;
                }
                backoff = (backoff * 2).min(MAX_BACKOFF);
                continue;
            }
        };
        loop {
            if *shutdown.borrow() {
                source.close().await;
                return;
            }
            let batch = tokio::select! {
                batch = source.next_batch(Duration::from_millis(500)) => batch,
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
                    tracing::error!(error = ?error, "projecting from the topic failed; rejoining");
                    source.close().await;
                    if wait_or_stop(&mut shutdown, backoff).await {
                        return;
                    }
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                    continue 'connect;
                }
            }
        }
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
