//! Stored shapes of a post's events, one DTO per `(type, version)`.
//!
//! The post id is not in the data: it is part of the stream name every event is stored
//! under. Channel slugs are checked through `Channel::new` on the way in, so a post
//! with a channel the domain would refuse cannot be rebuilt from a corrupted log.
//!
//! Version 2 of `post.created` lists the post's channels; v1 had one `channel` and
//! upcasts to a list of one. Version 2 of every delivery event (and of
//! `post.publish_requested`) names the target's `channel`; v1, written when a post had
//! one channel, has none and upcasts to v2 without one, which the domain reads as the
//! post's first (then only) channel. An upcaster sees one event, not its stream, so it
//! cannot fill the channel in: that is why `channel` stays optional in v2, though
//! every v2 event Tidemark writes carries it.

use chrono::{DateTime, Utc};
use domain::post::{Event, PublishTrigger};
use domain::{CampaignId, Channel};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::{DomainEvent, Encoded, channel, encoded};
use crate::registry::{Failure, Latest, Upcast, Version};

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
    let slug = |channel: &Option<Channel>| channel.as_ref().map(|c| c.as_str().to_owned());
    match event {
        Event::Created {
            channels,
            body,
            campaign_id,
        } => encoded(PostCreatedV2 {
            channels: channels.iter().map(|c| c.as_str().to_owned()).collect(),
            body: body.clone(),
            campaign_id: campaign_id.map(|id| id.as_uuid()),
        }),
        Event::Edited { body } => encoded(PostEditedV1 { body: body.clone() }),
        Event::Scheduled { publish_at } => encoded(PostScheduledV1 {
            publish_at: *publish_at,
        }),
        Event::PublishRequested { trigger, channel } => encoded(PostPublishRequestedV2 {
            trigger: match trigger {
                PublishTrigger::Manual => PublishTriggerV1::Manual,
                PublishTrigger::Schedule => PublishTriggerV1::Schedule,
            },
            channel: slug(channel),
        }),
        Event::Published {
            channel,
            network_post_id,
            url,
        } => encoded(PostPublishedV2 {
            channel: slug(channel),
            network_post_id: network_post_id.clone(),
            url: url.clone(),
        }),
        Event::PublishFailed { channel, reason } => encoded(PostPublishFailedV2 {
            channel: slug(channel),
            reason: reason.clone(),
        }),
        Event::Cancelled => encoded(PostCancelledV1 {}),
        Event::DeliveryAttemptStarted {
            channel,
            attempt,
            network,
        } => encoded(PostDeliveryAttemptStartedV2 {
            channel: slug(channel),
            attempt: *attempt,
            network: network.clone(),
        }),
        Event::DeliveryAttemptFailed {
            channel,
            attempt,
            code,
            reason,
            retry_at,
        } => encoded(PostDeliveryAttemptFailedV2 {
            channel: slug(channel),
            attempt: *attempt,
            code: code.clone(),
            reason: reason.clone(),
            retry_at: *retry_at,
        }),
        Event::DeliveryUnconfirmed {
            channel,
            attempt,
            reason,
        } => encoded(PostDeliveryUnconfirmedV2 {
            channel: slug(channel),
            attempt: *attempt,
            reason: reason.clone(),
        }),
        Event::Removed {
            channel,
            network_post_id,
        } => encoded(PostRemovedV2 {
            channel: slug(channel),
            network_post_id: network_post_id.clone(),
        }),
    }
}

/// The target a stored delivery event names, checked through `Channel::new`; absent
/// (events upcast from v1) means the post's first channel.
fn target(raw: Option<String>) -> Result<Option<Channel>, Failure> {
    raw.map(|raw| channel("channel", &raw)).transpose()
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

impl Upcast for PostCreatedV1 {
    type Next = PostCreatedV2;
    fn upcast(self) -> PostCreatedV2 {
        PostCreatedV2 {
            channels: vec![self.channel],
            body: self.body,
            campaign_id: self.campaign_id,
        }
    }
}

/// `post.created` v2: a draft post was written for one or more channels.
#[derive(Debug, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct PostCreatedV2 {
    /// The channels to publish to, each a slug of 1 to 64 characters of `a-z`, `0-9`,
    /// `-` or `_`; the first is the post's main channel.
    #[schemars(inner(pattern(r"^[a-z0-9_-]{1,64}$")))]
    pub channels: Vec<String>,
    /// The post text.
    pub body: String,
    /// The campaign the post belongs to, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub campaign_id: Option<Uuid>,
}

impl Version for PostCreatedV2 {
    const EVENT_TYPE: &'static str = CREATED;
    const VERSION: u32 = 2;
}

impl Latest for PostCreatedV2 {
    fn into_domain(self) -> Result<DomainEvent, Failure> {
        Ok(DomainEvent::Post(Event::Created {
            channels: self
                .channels
                .iter()
                .map(|raw| channel("channels", raw))
                .collect::<Result<_, _>>()?,
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

impl Upcast for PostPublishRequestedV1 {
    type Next = PostPublishRequestedV2;
    fn upcast(self) -> PostPublishRequestedV2 {
        PostPublishRequestedV2 {
            trigger: self.trigger,
            channel: None,
        }
    }
}

/// `post.publish_requested` v2: delivery started, to every target not delivered yet or
/// (after an operator's retry) to one.
#[derive(Debug, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct PostPublishRequestedV2 {
    /// Why publishing started.
    pub trigger: PublishTriggerV1,
    /// The one target delivered again; absent: every target not delivered yet.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(pattern(r"^[a-z0-9_-]{1,64}$"))]
    pub channel: Option<String>,
}

impl Version for PostPublishRequestedV2 {
    const EVENT_TYPE: &'static str = PUBLISH_REQUESTED;
    const VERSION: u32 = 2;
}

impl Latest for PostPublishRequestedV2 {
    fn into_domain(self) -> Result<DomainEvent, Failure> {
        Ok(DomainEvent::Post(Event::PublishRequested {
            trigger: match self.trigger {
                PublishTriggerV1::Manual => PublishTrigger::Manual,
                PublishTriggerV1::Schedule => PublishTrigger::Schedule,
            },
            channel: target(self.channel)?,
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

impl Upcast for PostPublishedV1 {
    type Next = PostPublishedV2;
    fn upcast(self) -> PostPublishedV2 {
        PostPublishedV2 {
            channel: None,
            network_post_id: self.network_post_id,
            url: self.url,
        }
    }
}

/// `post.published` v2: the network of one target accepted the post.
#[derive(Debug, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct PostPublishedV2 {
    /// The target's channel slug. Absent only in events upcast from v1, which were
    /// about the post's one channel.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(pattern(r"^[a-z0-9_-]{1,64}$"))]
    pub channel: Option<String>,
    /// The network's id for the published post.
    pub network_post_id: String,
    /// Public address of the published post, when the network gives one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
}

impl Version for PostPublishedV2 {
    const EVENT_TYPE: &'static str = PUBLISHED;
    const VERSION: u32 = 2;
}

impl Latest for PostPublishedV2 {
    fn into_domain(self) -> Result<DomainEvent, Failure> {
        Ok(DomainEvent::Post(Event::Published {
            channel: target(self.channel)?,
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

impl Upcast for PostPublishFailedV1 {
    type Next = PostPublishFailedV2;
    fn upcast(self) -> PostPublishFailedV2 {
        PostPublishFailedV2 {
            channel: None,
            reason: self.reason,
        }
    }
}

/// `post.publish_failed` v2: the delivery to one target failed for good.
#[derive(Debug, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct PostPublishFailedV2 {
    /// The target's channel slug. Absent only in events upcast from v1, which were
    /// about the post's one channel.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(pattern(r"^[a-z0-9_-]{1,64}$"))]
    pub channel: Option<String>,
    /// Why, as reported by the network or an operator.
    pub reason: String,
}

impl Version for PostPublishFailedV2 {
    const EVENT_TYPE: &'static str = PUBLISH_FAILED;
    const VERSION: u32 = 2;
}

impl Latest for PostPublishFailedV2 {
    fn into_domain(self) -> Result<DomainEvent, Failure> {
        Ok(DomainEvent::Post(Event::PublishFailed {
            channel: target(self.channel)?,
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

impl Upcast for PostDeliveryAttemptStartedV1 {
    type Next = PostDeliveryAttemptStartedV2;
    fn upcast(self) -> PostDeliveryAttemptStartedV2 {
        PostDeliveryAttemptStartedV2 {
            channel: None,
            attempt: self.attempt,
            network: self.network,
        }
    }
}

/// `post.delivery_attempt_started` v2: a delivery attempt to one target is about to
/// call the network. Recorded before the call, so an attempt found started but not
/// ended after a crash is known to be in doubt.
#[derive(Debug, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct PostDeliveryAttemptStartedV2 {
    /// The target's channel slug. Absent only in events upcast from v1, which were
    /// about the post's one channel.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(pattern(r"^[a-z0-9_-]{1,64}$"))]
    pub channel: Option<String>,
    /// The attempt's number, from 1 over the target's life.
    pub attempt: u32,
    /// The network called: `local`, `mastodon` or `webhook`.
    pub network: String,
}

impl Version for PostDeliveryAttemptStartedV2 {
    const EVENT_TYPE: &'static str = ATTEMPT_STARTED;
    const VERSION: u32 = 2;
}

impl Latest for PostDeliveryAttemptStartedV2 {
    fn into_domain(self) -> Result<DomainEvent, Failure> {
        Ok(DomainEvent::Post(Event::DeliveryAttemptStarted {
            channel: target(self.channel)?,
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

impl Upcast for PostDeliveryAttemptFailedV1 {
    type Next = PostDeliveryAttemptFailedV2;
    fn upcast(self) -> PostDeliveryAttemptFailedV2 {
        PostDeliveryAttemptFailedV2 {
            channel: None,
            attempt: self.attempt,
            code: self.code,
            reason: self.reason,
            retry_at: self.retry_at,
        }
    }
}

/// `post.delivery_attempt_failed` v2: the network of one target is known not to have
/// taken the post. With `retry_at` another attempt is due then; without, the delivery
/// failed for good.
#[derive(Debug, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct PostDeliveryAttemptFailedV2 {
    /// The target's channel slug. Absent only in events upcast from v1, which were
    /// about the post's one channel.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(pattern(r"^[a-z0-9_-]{1,64}$"))]
    pub channel: Option<String>,
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

impl Version for PostDeliveryAttemptFailedV2 {
    const EVENT_TYPE: &'static str = ATTEMPT_FAILED;
    const VERSION: u32 = 2;
}

impl Latest for PostDeliveryAttemptFailedV2 {
    fn into_domain(self) -> Result<DomainEvent, Failure> {
        Ok(DomainEvent::Post(Event::DeliveryAttemptFailed {
            channel: target(self.channel)?,
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

impl Upcast for PostDeliveryUnconfirmedV1 {
    type Next = PostDeliveryUnconfirmedV2;
    fn upcast(self) -> PostDeliveryUnconfirmedV2 {
        PostDeliveryUnconfirmedV2 {
            channel: None,
            attempt: self.attempt,
            reason: self.reason,
        }
    }
}

/// `post.delivery_unconfirmed` v2: the attempt's request to one target's network may
/// have reached it (a timeout after sending, an interrupted attempt); it is never
/// retried blindly, only reconciled or resolved.
#[derive(Debug, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct PostDeliveryUnconfirmedV2 {
    /// The target's channel slug. Absent only in events upcast from v1, which were
    /// about the post's one channel.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(pattern(r"^[a-z0-9_-]{1,64}$"))]
    pub channel: Option<String>,
    /// The attempt whose outcome is unknown.
    pub attempt: u32,
    /// Why the outcome is unknown.
    pub reason: String,
}

impl Version for PostDeliveryUnconfirmedV2 {
    const EVENT_TYPE: &'static str = UNCONFIRMED;
    const VERSION: u32 = 2;
}

impl Latest for PostDeliveryUnconfirmedV2 {
    fn into_domain(self) -> Result<DomainEvent, Failure> {
        Ok(DomainEvent::Post(Event::DeliveryUnconfirmed {
            channel: target(self.channel)?,
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

impl Upcast for PostRemovedV1 {
    type Next = PostRemovedV2;
    fn upcast(self) -> PostRemovedV2 {
        PostRemovedV2 {
            channel: None,
            network_post_id: self.network_post_id,
        }
    }
}

/// `post.removed` v2: the network reported one target's published post removed.
#[derive(Debug, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct PostRemovedV2 {
    /// The target's channel slug. Absent only in events upcast from v1, which were
    /// about the post's one channel.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(pattern(r"^[a-z0-9_-]{1,64}$"))]
    pub channel: Option<String>,
    /// The network's id of the removed post.
    pub network_post_id: String,
}

impl Version for PostRemovedV2 {
    const EVENT_TYPE: &'static str = REMOVED;
    const VERSION: u32 = 2;
}

impl Latest for PostRemovedV2 {
    fn into_domain(self) -> Result<DomainEvent, Failure> {
        Ok(DomainEvent::Post(Event::Removed {
            channel: target(self.channel)?,
            network_post_id: self.network_post_id,
        }))
    }
}
