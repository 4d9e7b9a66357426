//! A post: a piece of content headed for one channel.
//!
//! Its life is `draft → scheduled → publishing → published | failed`, and it may be
//! cancelled while it is a draft or scheduled. A failed post may be published again.
//! Every other move is refused with a rejection that names the state it was refused in.
//!
//! A post has one channel, so one delivery target. Publishing it is a series of
//! attempts: each is started (`post.delivery_attempt_started`, which doubles as the
//! lease on the network call) before the network is called, and ends published,
//! failed (retryable with the time of the next attempt, or permanent) or
//! unconfirmed (the request may have landed). An unconfirmed delivery is never
//! attempted again: it is settled by reconciling with the network, by a verified
//! webhook, or by an operator. A published post may later be reported removed.

mod decide;
mod evolve;

pub use decide::decide;
pub use evolve::evolve;

use std::fmt;

use chrono::{DateTime, Utc};

use crate::ids::{CampaignId, Channel};

/// Longest post body, in characters.
pub const MAX_BODY_CHARS: usize = 10_000;

/// What a caller asks of a post.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    Create {
        channel: Channel,
        body: String,
        campaign_id: Option<CampaignId>,
    },
    Edit {
        body: String,
    },
    Schedule {
        publish_at: DateTime<Utc>,
    },
    /// Starts publishing now, by hand or because the schedule fell due.
    Publish {
        trigger: PublishTrigger,
    },
    Cancel,
    /// The network accepted the post (sent by the publishing workflow).
    RecordPublished {
        network_post_id: String,
        url: Option<String>,
    },
    /// The network refused the post (sent by the publishing workflow).
    RecordFailed {
        reason: String,
    },
    /// A delivery attempt is about to call `network` (sent by the publishing workflow).
    StartAttempt {
        network: String,
    },
    /// The attempt in flight failed; `retry_at` is set when the failure is known
    /// transient and another attempt is due then, else the failure is permanent.
    RecordAttemptFailed {
        code: String,
        reason: String,
        retry_at: Option<DateTime<Utc>>,
    },
    /// The attempt in flight may or may not have reached the network.
    RecordUnconfirmed {
        reason: String,
    },
    /// An operator asks for another delivery of a failed post now.
    RetryDelivery,
    /// An operator (or a reconciliation) settles an unconfirmed delivery.
    ResolveUnconfirmed {
        outcome: Resolution,
    },
    /// The network confirmed the delivery (a verified webhook).
    ConfirmDelivery {
        network_post_id: String,
        url: Option<String>,
    },
    /// The network reports the published post removed (a verified webhook).
    RecordRemoved {
        network_post_id: String,
    },
}

/// How an unconfirmed delivery ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resolution {
    Published {
        network_post_id: String,
        url: Option<String>,
    },
    Failed {
        reason: String,
    },
}

/// Why publishing started.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PublishTrigger {
    Manual,
    Schedule,
}

/// Facts from outside.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ctx {
    pub now: DateTime<Utc>,
}

/// What happened to a post.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    Created {
        channel: Channel,
        body: String,
        campaign_id: Option<CampaignId>,
    },
    Edited {
        body: String,
    },
    Scheduled {
        publish_at: DateTime<Utc>,
    },
    PublishRequested {
        trigger: PublishTrigger,
    },
    Published {
        network_post_id: String,
        url: Option<String>,
    },
    PublishFailed {
        reason: String,
    },
    Cancelled,
    /// Attempt number `attempt` (from 1 over the post's life) is calling `network`.
    DeliveryAttemptStarted {
        attempt: u32,
        network: String,
    },
    /// The attempt failed; retried at `retry_at` when set, else failed for good.
    DeliveryAttemptFailed {
        attempt: u32,
        code: String,
        reason: String,
        retry_at: Option<DateTime<Utc>>,
    },
    /// The attempt's outcome is unknown: the request may have landed.
    DeliveryUnconfirmed {
        attempt: u32,
        reason: String,
    },
    /// The network removed the published post.
    Removed {
        network_post_id: String,
    },
}

/// Where a post stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Status {
    /// No `Created` event yet: the post does not exist.
    #[default]
    Absent,
    Draft,
    Scheduled,
    /// Waiting for (or running) a delivery attempt.
    Publishing,
    /// The last attempt failed transiently; another is due at `retry_at`.
    RetryScheduled,
    /// The last attempt may have landed; waits to be reconciled or resolved.
    Unconfirmed,
    Published,
    /// Failed for good (a permanent error, too many attempts, or an operator).
    Failed,
    Cancelled,
    /// Published, then removed by the network.
    Removed,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Absent => "absent",
            Status::Draft => "draft",
            Status::Scheduled => "scheduled",
            Status::Publishing => "publishing",
            Status::RetryScheduled => "failed_retryable",
            Status::Unconfirmed => "unconfirmed",
            Status::Published => "published",
            Status::Failed => "failed",
            Status::Cancelled => "cancelled",
            Status::Removed => "removed",
        }
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The move a rejected command attempted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Edit,
    Schedule,
    Publish,
    Cancel,
    RecordOutcome,
    StartAttempt,
    Retry,
    Resolve,
    Confirm,
    Remove,
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Action::Edit => "edit",
            Action::Schedule => "schedule",
            Action::Publish => "publish",
            Action::Cancel => "cancel",
            Action::RecordOutcome => "record the outcome of",
            Action::StartAttempt => "start a delivery attempt of",
            Action::Retry => "retry the delivery of",
            Action::Resolve => "resolve the delivery of",
            Action::Confirm => "confirm the delivery of",
            Action::Remove => "record the removal of",
        })
    }
}

/// Everything `decide` needs to know about a post.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct State {
    pub status: Status,
    pub publish_at: Option<DateTime<Utc>>,
    /// Delivery attempts started over the post's life.
    pub attempts: u32,
    /// An attempt was started and its outcome is not recorded yet.
    pub in_flight: bool,
    /// When the next attempt is due, while `RetryScheduled`.
    pub retry_at: Option<DateTime<Utc>>,
}

/// Why a post command was refused. Each has a stable machine code.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Rejection {
    #[error("the post already exists")]
    AlreadyExists,
    #[error("the post was not found")]
    NotFound,
    #[error("the body must be 1 to {MAX_BODY_CHARS} characters and not only white space")]
    BadBody,
    #[error("publish_at must be in the future")]
    PublishTimeInPast,
    #[error("the failure reason must not be empty")]
    EmptyReason,
    #[error("the network post id must not be empty")]
    EmptyNetworkId,
    #[error("cannot {action} a post that is {from}")]
    InvalidTransition { from: Status, action: Action },
    #[error("a delivery attempt of this post is already in flight")]
    AttemptInFlight,
    #[error("the next delivery attempt of this post is not due yet")]
    AttemptNotDue,
}

impl Rejection {
    /// Stable machine-readable code, part of the public API.
    pub fn code(&self) -> &'static str {
        match self {
            Rejection::AlreadyExists => "post_already_exists",
            Rejection::NotFound => "post_not_found",
            Rejection::BadBody => "invalid_post_body",
            Rejection::PublishTimeInPast => "publish_time_in_past",
            Rejection::EmptyReason => "invalid_failure_reason",
            Rejection::EmptyNetworkId => "invalid_network_post_id",
            Rejection::InvalidTransition { .. } => "invalid_post_transition",
            Rejection::AttemptInFlight => "delivery_attempt_in_flight",
            Rejection::AttemptNotDue => "delivery_attempt_not_due",
        }
    }
}
