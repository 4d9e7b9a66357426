//! Which network each channel delivers to. The embedded default is `local`, which
//! accepts every post and gives it a deterministic id, so `tidemark dev` publishes end
//! to end with no outside service; channels configured in the settings get their
//! own adapter (Mastodon, signed webhook) from [`crate::networks`].

use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;
use domain::{Channel, TenantId};

use crate::networks::{
    ChannelCredentials, Delivered, Delivery, DeliveryError, NetworkAdapter, NetworkConfigError,
};

/// The embedded network: accepts every post.
#[derive(Debug, Clone, Copy, Default)]
pub struct LocalNetwork;

impl LocalNetwork {
    fn delivered(delivery: &Delivery<'_>) -> Delivered {
        Delivered {
            network_post_id: format!("local-{}", delivery.post),
            url: Some(format!("local://{}/{}", delivery.channel, delivery.post)),
        }
    }
}

#[async_trait]
impl NetworkAdapter for LocalNetwork {
    fn name(&self) -> &'static str {
        "local"
    }

    async fn deliver(&self, delivery: &Delivery<'_>) -> Result<Delivered, DeliveryError> {
        Ok(Self::delivered(delivery))
    }

    /// Every local delivery lands, so an interrupted one did.
    async fn reconcile(&self, delivery: &Delivery<'_>) -> Result<Option<Delivered>, DeliveryError> {
        Ok(Some(Self::delivered(delivery)))
    }
}

/// The adapter of every configured channel, and `local` for the rest. `Debug` lists
/// the channels, never their credentials.
pub struct Networks {
    channels: HashMap<(TenantId, String), Arc<dyn NetworkAdapter>>,
    local: Arc<dyn NetworkAdapter>,
}

impl Networks {
    /// Only the local network.
    pub fn local() -> Self {
        Self {
            channels: HashMap::new(),
            local: Arc::new(LocalNetwork),
        }
    }

    /// Builds an adapter for each configured channel, sharing `client`.
    pub fn configure<'a>(
        channels: impl IntoIterator<Item = (TenantId, Channel, &'a ChannelCredentials)>,
        client: &reqwest::Client,
    ) -> Result<Self, NetworkConfigError> {
        let mut networks = Self::local();
        for (tenant, channel, credentials) in channels {
            let adapter: Arc<dyn NetworkAdapter> = Arc::from(credentials.adapter(client)?);
            networks
                .channels
                .insert((tenant, channel.as_str().to_owned()), adapter);
        }
        Ok(networks)
    }

    /// The adapter `tenant`'s `channel` delivers through.
    pub fn for_channel(&self, tenant: TenantId, channel: &Channel) -> Arc<dyn NetworkAdapter> {
        self.channels
            .get(&(tenant, channel.as_str().to_owned()))
            .cloned()
            .unwrap_or_else(|| self.local.clone())
    }
}

impl std::fmt::Debug for Networks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut channels: Vec<String> = self
            .channels
            .iter()
            .map(|((tenant, channel), adapter)| format!("{tenant}/{channel}={}", adapter.name()))
            .collect();
        channels.sort();
        f.debug_struct("Networks")
            .field("channels", &channels)
            .finish_non_exhaustive()
    }
}
