//! Starts publishing scheduled posts when their time comes.
//!
//! Each round asks the read models for scheduled posts that are due and sends
//! `publish` with the version the read model saw: if the post changed in between
//! (rescheduled, cancelled) the version no longer matches and the post is left for
//! the next round to judge on fresh data. A missed round (a restart, an outage) is
//! caught up by the next one, since "due" means `publish_at <= now`.

use std::sync::Arc;
use std::time::Duration;

use command_api::{CommandError, CommandService, Envelope};
use domain::post::{Command, PublishTrigger};
use domain::{PostId, TenantId};
use projector::ReadModels;
use tokio::sync::watch;

/// The post scheduler.
pub struct Scheduler {
    pub service: Arc<CommandService>,
    pub models: ReadModels,
    pub every: Duration,
}

impl Scheduler {
    /// Starts every due post; returns how many started publishing.
    pub async fn fire_due(&self) -> anyhow::Result<usize> {
        let due = self.models.due_posts(self.service.now(), 500).await?;
        let mut started = 0;
        for (tenant, post, version) in due {
            let tenant = TenantId::from_uuid(tenant);
            let envelope = Envelope::system(tenant, "scheduler", None);
            let command = Command::Publish {
                trigger: PublishTrigger::Schedule,
            };
            match self
                .service
                .post(&envelope, PostId::from_uuid(post), Some(version), command)
                .await
            {
                Ok(_) => started += 1,
                Err(CommandError::VersionConflict { .. } | CommandError::Post(_)) => {
                    tracing::debug!(tenant = %tenant, post = %post, "due post changed meanwhile; skipped");
                }
                Err(error) => {
                    tracing::warn!(tenant = %tenant, post = %post, error = ?error, "could not start a due post")
                }
            }
        }
        Ok(started)
    }

    /// Fires due posts every `every` until shutdown.
    pub async fn run(self, mut shutdown: watch::Receiver<bool>) {
        let mut interval = crate::interval(self.every);
        while crate::tick(&mut interval, &mut shutdown).await {
            if let Err(error) = self.fire_due().await {
                tracing::error!(error = ?error, "scheduler round failed");
            }
        }
    }
}
