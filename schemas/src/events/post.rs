//! Stored shapes of a post's events, one DTO per `(type, version)`.
//!
//! The post id is not in the data: it is part of the stream name every event is stored
//! under. The channel slug is checked through `Channel::new` on the way in, so a post
//! with a channel the domain would refuse cannot be rebuilt from a corrupted log.

use chrono::{DateTime, Utc};
use domain::CampaignId;
use domain::post::{Event, PublishTrigger};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::{DomainEvent, Encoded, channel, encoded};
use crate::registry::{Failure, Latest, Version};

const CREATED: &str = "post.created";
const EDITED: &str = "post.edited";
const SCHEDULED: &str = "post.scheduled";
const PUBLISH_REQUESTED: &str = "post.publish_requested";
const PUBLISHED: &str = "post.published";
const PUBLISH_FAILED: &str = "post.publish_failed";
const CANCELLED: &str = "post.cancelled";
const ATTEMPT_STARTED: &str = "post.delivery_attempt_started";
const ATTEMPT_FAILED: &str = "post.delivery_attempt_failed";
const UNCONFIRMED: &str = "post.delivery_unconfirmed";
const REMOVED: &str = "post.removed";

pub(super) fn encode(event: &Event) -> Encoded {
    match event {
        Event::Created {
            channel,
            body,
            campaign_id,
        } => encoded(PostCreatedV1 {
            channel: channel.as_str().to_owned(),
            body: body.clone(),
            campaign_id: campaign_id.map(|id| id.as_uuid()),
        }),
        Event::Edited { body } => encoded(PostEditedV1 { body: body.clone() }),
        Event::Scheduled { publish_at } => encoded(PostScheduledV1 {
            publish_at: *publish_at,
        }),
        Event::PublishRequested { trigger } => encoded(PostPublishRequestedV1 {
            trigger: match trigger {
                PublishTrigger::Manual => PublishTriggerV1::Manual,
                PublishTrigger::Schedule => PublishTriggerV1::Schedule,
            },
        }),
        Event::Published {
            network_post_id,
            url,
        } => encoded(PostPublishedV1 {
            network_post_id: network_post_id.clone(),
            url: url.clone(),
        }),
        Event::PublishFailed { reason } => encoded(PostPublishFailedV1 {
            reason: reason.clone(),
        }),
        Event::Cancelled => encoded(PostCancelledV1 {}),
        Event::DeliveryAttemptStarted { attempt, network } => {
            encoded(PostDeliveryAttemptStartedV1 {
                attempt: *attempt,
                network: network.clone(),
            })
        }
        Event::DeliveryAttemptFailed {
            attempt,
            code,
            reason,
            retry_at,
        } => encoded(PostDeliveryAttemptFailedV1 {
            attempt: *attempt,
            code: code.clone(),
            reason: reason.clone(),
            retry_at: *retry_at,
        }),
        Event::DeliveryUnconfirmed { attempt, reason } => encoded(PostDeliveryUnconfirmedV1 {
            attempt: *attempt,
            reason: reason.clone(),
        }),
        Event::Removed { network_post_id } => encoded(PostRemovedV1 {
            network_post_id: network_post_id.clone(),
        }),
    }
}

/// `post.created` v1: a draft post was written.
#[derive(Debug, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct PostCreatedV1 {
    /// Channel slug: 1 to 64 characters of `a-z`, `0-9`, `-` or `_`.
    #[schemars(pattern(r"^[a-z0-9_-]{1,64}$"))]
    pub channel: String,
    /// The post text.
    pub body: String,
    /// The campaign the post belongs to, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub campaign_id: Option<Uuid>,
}

impl Version for PostCreatedV1 {
    const EVENT_TYPE: &'static str = CREATED;
    const VERSION: u32 = 1;
}

impl Latest for PostCreatedV1 {
    fn into_domain(self) -> Result<DomainEvent, Failure> {
        Ok(DomainEvent::Post(Event::Created {
            channel: channel("channel", &self.channel)?,
            body: self.body,
            campaign_id: self.campaign_id.map(CampaignId::from_uuid),
        }))
    }
}

/// `post.edited` v1: the body of a post was replaced.
#[derive(Debug, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct PostEditedV1 {
    /// The new post text.
    pub body: String,
}

impl Version for PostEditedV1 {
    const EVENT_TYPE: &'static str = EDITED;
    const VERSION: u32 = 1;
}

impl Latest for PostEditedV1 {
    fn into_domain(self) -> Result<DomainEvent, Failure> {
        Ok(DomainEvent::Post(Event::Edited { body: self.body }))
    }
}

/// `post.scheduled` v1: the post will be published at a set time.
#[derive(Debug, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct PostScheduledV1 {
    /// When to publish (RFC 3339, UTC).
    pub publish_at: DateTime<Utc>,
}

impl Version for PostScheduledV1 {
    const EVENT_TYPE: &'static str = SCHEDULED;
    const VERSION: u32 = 1;
}

impl Latest for PostScheduledV1 {
    fn into_domain(self) -> Result<DomainEvent, Failure> {
        Ok(DomainEvent::Post(Event::Scheduled {
            publish_at: self.publish_at,
        }))
    }
}

/// Why publishing started, as stored.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub(crate) enum PublishTriggerV1 {
    /// Someone asked to publish now.
    Manual,
    /// The scheduled time fell due.
    Schedule,
}

/// `post.publish_requested` v1: publishing started.
#[derive(Debug, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct PostPublishRequestedV1 {
    /// Why publishing started.
    pub trigger: PublishTriggerV1,
}

impl Version for PostPublishRequestedV1 {
    const EVENT_TYPE: &'static str = PUBLISH_REQUESTED;
    const VERSION: u32 = 1;
}

impl Latest for PostPublishRequestedV1 {
    fn into_domain(self) -> Result<DomainEvent, Failure> {
        Ok(DomainEvent::Post(Event::PublishRequested {
            trigger: match self.trigger {
                PublishTriggerV1::Manual => PublishTrigger::Manual,
                PublishTriggerV1::Schedule => PublishTrigger::Schedule,
            },
        }))
    }
}

/// `post.published` v1: the network accepted the post.
#[derive(Debug, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct PostPublishedV1 {
    /// The network's id for the published post.
    pub network_post_id: String,
    /// Public address of the published post, when the network gives one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
}

impl Version for PostPublishedV1 {
    const EVENT_TYPE: &'static str = PUBLISHED;
    const VERSION: u32 = 1;
}

impl Latest for PostPublishedV1 {
    fn into_domain(self) -> Result<DomainEvent, Failure> {
        Ok(DomainEvent::Post(Event::Published {
            network_post_id: self.network_post_id,
            url: self.url,
        }))
    }
}

/// `post.publish_failed` v1: the network refused the post.
#[derive(Debug, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct PostPublishFailedV1 {
    /// Why, as reported by the network.
    pub reason: String,
}

impl Version for PostPublishFailedV1 {
    const EVENT_TYPE: &'static str = PUBLISH_FAILED;
    const VERSION: u32 = 1;
}

impl Latest for PostPublishFailedV1 {
    fn into_domain(self) -> Result<DomainEvent, Failure> {
        Ok(DomainEvent::Post(Event::PublishFailed {
            reason: self.reason,
        }))
    }
}

/// `post.cancelled` v1: the post will not be published. The data is an empty object.
#[derive(Debug, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct PostCancelledV1 {}

impl Version for PostCancelledV1 {
    const EVENT_TYPE: &'static str = CANCELLED;
    const VERSION: u32 = 1;
}

impl Latest for PostCancelledV1 {
    fn into_domain(self) -> Result<DomainEvent, Failure> {
        Ok(DomainEvent::Post(Event::Cancelled))
    }
}

/// `post.delivery_attempt_started` v1: a delivery attempt is about to call the
/// network. Recorded before the call, so an attempt found started but not ended after
/// a crash is known to be in doubt.
#[derive(Debug, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct PostDeliveryAttemptStartedV1 {
    /// The attempt's number, from 1 over the post's life.
    pub attempt: u32,
    /// The network called: `local`, `mastodon` or `webhook`.
    pub network: String,
}

impl Version for PostDeliveryAttemptStartedV1 {
    const EVENT_TYPE: &'static str = ATTEMPT_STARTED;
    const VERSION: u32 = 1;
}

impl Latest for PostDeliveryAttemptStartedV1 {
    fn into_domain(self) -> Result<DomainEvent, Failure> {
        Ok(DomainEvent::Post(Event::DeliveryAttemptStarted {
            attempt: self.attempt,
            network: self.network,
        }))
    }
}

/// `post.delivery_attempt_failed` v1: the network is known not to have taken the
/// post. With `retry_at` another attempt is due then; without, the post failed.
#[derive(Debug, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct PostDeliveryAttemptFailedV1 {
    /// The attempt that failed.
    pub attempt: u32,
    /// The failure's class: `network_auth_failed`, `network_refused_content`,
    /// `network_rate_limited`, `network_unavailable`, or `too_many_attempts`.
    pub code: String,
    /// What the network said, without credentials.
    pub reason: String,
    /// When the next attempt is due (RFC 3339, UTC); absent when the failure is
    /// permanent.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retry_at: Option<DateTime<Utc>>,
}

impl Version for PostDeliveryAttemptFailedV1 {
    const EVENT_TYPE: &'static str = ATTEMPT_FAILED;
    const VERSION: u32 = 1;
}

impl Latest for PostDeliveryAttemptFailedV1 {
    fn into_domain(self) -> Result<DomainEvent, Failure> {
        Ok(DomainEvent::Post(Event::DeliveryAttemptFailed {
            attempt: self.attempt,
            code: self.code,
            reason: self.reason,
            retry_at: self.retry_at,
        }))
    }
}

/// `post.delivery_unconfirmed` v1: the attempt's request may have reached the
/// network (a timeout after sending, an interrupted attempt); it is never retried
/// blindly, only reconciled or resolved.
#[derive(Debug, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct PostDeliveryUnconfirmedV1 {
    /// The attempt whose outcome is unknown.
    pub attempt: u32,
    /// Why the outcome is unknown.
    pub reason: String,
}

impl Version for PostDeliveryUnconfirmedV1 {
    const EVENT_TYPE: &'static str = UNCONFIRMED;
    const VERSION: u32 = 1;
}

impl Latest for PostDeliveryUnconfirmedV1 {
    fn into_domain(self) -> Result<DomainEvent, Failure> {
        Ok(DomainEvent::Post(Event::DeliveryUnconfirmed {
            attempt: self.attempt,
            reason: self.reason,
        }))
    }
}

/// `post.removed` v1: the network reported the published post removed.
#[derive(Debug, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct PostRemovedV1 {
    /// The network's id of the removed post.
    pub network_post_id: String,
}

impl Version for PostRemovedV1 {
    const EVENT_TYPE: &'static str = REMOVED;
    const VERSION: u32 = 1;
}

impl Latest for PostRemovedV1 {
    fn into_domain(self) -> Result<DomainEvent, Failure> {
        Ok(DomainEvent::Post(Event::Removed {
            network_post_id: self.network_post_id,
        }))
    }
}
