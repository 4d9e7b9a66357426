//! Where posts are delivered. The embedded default ships one network, `local`, which
//! accepts every post and gives it a deterministic id, so `tidemark dev` publishes end
//! to end with no outside service.

use async_trait::async_trait;
use domain::{Channel, PostId, TenantId};

/// What a network answered for a delivered post.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivered {
    pub network_post_id: String,
    pub url: Option<String>,
}

/// Why a network refused a post.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{reason}")]
pub struct Refused {
    pub reason: String,
}

/// A social network or other destination.
#[async_trait]
pub trait Network: Send + Sync + 'static {
    async fn publish(
        &self,
        tenant: TenantId,
        post: PostId,
        channel: &Channel,
        body: &str,
    ) -> Result<Delivered, Refused>;
}

/// The embedded network: accepts every post.
#[derive(Debug, Clone, Copy, Default)]
pub struct LocalNetwork;

#[async_trait]
impl Network for LocalNetwork {
    async fn publish(
        &self,
        _tenant: TenantId,
        post: PostId,
        channel: &Channel,
        _body: &str,
    ) -> Result<Delivered, Refused> {
        Ok(Delivered {
            network_post_id: format!("local-{post}"),
            url: Some(format!("local://{channel}/{post}")),
        })
    }
}
