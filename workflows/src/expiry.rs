//! Expires budget reservations whose ttl has run out.
//!
//! The ledger already ignores stale holds when it decides (every command expires what
//! is due first), so this sweeper exists for the read models: without it, a month
//! with no further commands would show an expired hold as reserved forever.

use std::sync::Arc;
use std::time::Duration;

use command_api::{CommandService, Envelope};
use domain::{TenantId, budget};
use projector::ReadModels;
use tokio::sync::watch;

/// The reservation-expiry sweeper.
pub struct ReservationExpiry {
    pub service: Arc<CommandService>,
    pub models: ReadModels,
    pub every: Duration,
}

impl ReservationExpiry {
    /// Expires every due reservation the read models know of; returns how many months
    /// were swept.
    pub async fn sweep(&self) -> anyhow::Result<usize> {
        let due = self
            .models
            .months_with_due_reservations(self.service.now(), 500)
            .await?;
        for (tenant, period) in &due {
            let tenant = TenantId::from_uuid(*tenant);
            let envelope = Envelope::system(tenant, "reservation-expiry", None);
            if let Err(error) = self
                .service
                .budget(&envelope, Some(*period), budget::Command::ExpireDue)
                .await
            {
                tracing::warn!(tenant = %tenant, period = %period, error = ?error, "could not expire reservations");
            }
        }
        Ok(due.len())
    }

    /// Sweeps every `every` until shutdown.
    pub async fn run(self, mut shutdown: watch::Receiver<bool>) {
        let mut interval = crate::interval(self.every);
        while crate::tick(&mut interval, &mut shutdown).await {
            if let Err(error) = self.sweep().await {
                tracing::error!(error = ?error, "reservation expiry sweep failed");
            }
        }
    }
}
