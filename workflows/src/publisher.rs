//! Delivers posts whose publishing was requested, and records the outcome.
//!
//! The publisher tails the global log from its own checkpoint. For each
//! `post.publish_requested` it delivers the post only if that request is still the
//! post's latest event: after a crash between delivering and recording, the recorded
//! outcome (or a newer request) shows the work was done and it is not repeated.
//! Ambiguous network failures (timeouts after sending) are the publishing issue's
//! next step; the embedded `local` network never has them.

use std::sync::Arc;

use command_api::{CommandError, CommandService, Envelope};
use domain::ids::StreamKind;
use domain::post::{self, Command};
use domain::{Channel, PostId, StreamName, TenantId};
use eventlog::{EventStore, RecordedEvent};
use projector::ReadModels;
use schemas::DomainEvent;
use tokio::sync::watch;

use crate::network::Network;

/// Checkpoint name of the publisher.
pub const CHECKPOINT: &str = "publisher";

/// The publishing workflow.
pub struct Publisher {
    pub store: Arc<dyn EventStore>,
    pub service: Arc<CommandService>,
    pub models: ReadModels,
    pub network: Arc<dyn Network>,
}

impl Publisher {
    /// Handles the next batch of the log; returns how many events it read.
    pub async fn process_batch(&self) -> anyhow::Result<usize> {
        let from = self.models.checkpoint(CHECKPOINT).await?;
        let events = self.store.read_all(from, 200).await?;
        for event in &events {
            if event.event_type == "post.publish_requested" {
                self.deliver(event).await?;
                self.models
                    .save_checkpoint(CHECKPOINT, event.global_position)
                    .await?;
            }
        }
        if let Some(last) = events.last() {
            self.models
                .save_checkpoint(CHECKPOINT, last.global_position)
                .await?;
        }
        Ok(events.len())
    }

    async fn deliver(&self, requested: &RecordedEvent) -> anyhow::Result<()> {
        let (tenant, post_id) = match StreamName::parse(&requested.stream_id) {
            Ok((tenant, StreamKind::Post(post))) => (tenant, post),
            _ => anyhow::bail!(
                "publish request on a non-post stream {}",
                requested.stream_id
            ),
        };
        let history = self
            .store
            .read_stream(tenant.as_uuid(), &requested.stream_id, 0)
            .await?;
        if history.last().map(|e| e.version) != Some(requested.version) {
            // Something happened after this request: its outcome is already recorded.
            return Ok(());
        }
        let Some((channel, body)) = content(&history)? else {
            anyhow::bail!("post {post_id} has no creation event");
        };
        let command = match self.network.publish(tenant, post_id, &channel, &body).await {
            Ok(delivered) => Command::RecordPublished {
                network_post_id: delivered.network_post_id,
                url: delivered.url,
            },
            Err(refused) => Command::RecordFailed {
                reason: refused.reason,
            },
        };
        self.record(tenant, post_id, requested, command).await
    }

    async fn record(
        &self,
        tenant: TenantId,
        post_id: PostId,
        requested: &RecordedEvent,
        command: Command,
    ) -> anyhow::Result<()> {
        let envelope = Envelope::system(tenant, "publisher", Some(requested.event_id));
        match self
            .service
            .post(&envelope, post_id, Some(requested.version), command)
            .await
        {
            Ok(_) => Ok(()),
            // The post moved on while we delivered: the newer event decides.
            Err(CommandError::VersionConflict { .. } | CommandError::Post(_)) => Ok(()),
            Err(other) => Err(other.into()),
        }
    }

    /// Runs until shutdown, waking when the log grows.
    pub async fn run(self, mut shutdown: watch::Receiver<bool>) {
        let mut head = self.store.watch_head();
        loop {
            if *shutdown.borrow() {
                return;
            }
            match self.process_batch().await {
                Ok(0) => {
                    let done = self.models.checkpoint(CHECKPOINT).await.unwrap_or(0);
                    tokio::select! {
                        _ = head.wait_for(|h| *h > done) => {}
                        _ = shutdown.changed() => {}
                    }
                }
                Ok(_) => {}
                Err(error) => {
                    tracing::error!(error = ?error, "publisher batch failed; retrying");
                    tokio::select! {
                        _ = tokio::time::sleep(std::time::Duration::from_secs(1)) => {}
                        _ = shutdown.changed() => {}
                    }
                }
            }
        }
    }
}

/// The channel and latest body of a post, folded from its stream.
fn content(history: &[RecordedEvent]) -> anyhow::Result<Option<(Channel, String)>> {
    let mut content: Option<(Channel, String)> = None;
    for recorded in history {
        match schemas::decode(
            &recorded.event_type,
            recorded.schema_version,
            &recorded.data,
        )? {
            DomainEvent::Post(post::Event::Created { channel, body, .. }) => {
                content = Some((channel, body))
            }
            DomainEvent::Post(post::Event::Edited { body }) => {
                if let Some((_, current)) = content.as_mut() {
                    *current = body;
                }
            }
            _ => {}
        }
    }
    Ok(content)
}
