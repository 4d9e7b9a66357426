//! A post: a piece of content headed for one or more channels.
//!
//! Its life is `draft → scheduled → publishing → published | failed`, and it may be
//! cancelled while it is a draft or scheduled. A failed post may be published again.
//! Every other move is refused with a rejection that names the state it was refused in.
//!
//! A post has 1 to [`MAX_TARGETS`] channels, each a delivery *target* with its own
//! [`DeliveryState`] and attempts. Publishing a post starts a delivery to every target;
//! each delivery is a series of attempts: each is started
//! (`post.delivery_attempt_started`, which doubles as the lease on the network call)
//! before the network is called, and ends published, failed (retryable with the time
//! of the next attempt, or permanent) or unconfirmed (the request may have landed). An
//! unconfirmed delivery is never attempted again: it is settled by reconciling with
//! the network, by a verified webhook, or by an operator. A published target may later
//! be reported removed. Once publishing started, the post's [`Status`] is derived from
//! its targets' states by [`status_of`] — one rule, which the read models use too.
//!
//! Posts created before they could have several channels have one target, and their
//! delivery events name no channel: `channel: None` on a delivery event means the
//! post's first (for those posts, its only) channel. `decide` always names it.

mod decide;
mod evolve;

pub use decide::decide;
pub use evolve::evolve;

use std::fmt;

use chrono::{DateTime, Utc};

use crate::ids::{CampaignId, Channel};

/// Longest post body, in characters.
pub const MAX_BODY_CHARS: usize = 10_000;

/// Most channels (delivery targets) one post may have.
pub const MAX_TARGETS: usize = 10;

/// What a caller asks of a post.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// A draft for 1 to [`MAX_TARGETS`] distinct channels, in the order given.
    Create {
        channels: Vec<Channel>,
        body: String,
        campaign_id: Option<CampaignId>,
    },
    Edit {
        body: String,
    },
    Schedule {
        publish_at: DateTime<Utc>,
    },
    /// Starts publishing to every target now, by hand or because the schedule fell due.
    Publish {
        trigger: PublishTrigger,
    },
    Cancel,
    /// The network of `channel` accepted the post (sent by the publishing workflow).
    RecordPublished {
        channel: Channel,
        network_post_id: String,
        url: Option<String>,
    },
    /// The network of `channel` refused the post (sent by the publishing workflow).
    RecordFailed {
        channel: Channel,
        reason: String,
    },
    /// A delivery attempt to `channel` is about to call `network` (sent by the
    /// publishing workflow).
    StartAttempt {
        channel: Channel,
        network: String,
    },
    /// The attempt in flight to `channel` failed; `retry_at` is set when the failure is
    /// known transient and another attempt is due then, else the failure is permanent.
    RecordAttemptFailed {
        channel: Channel,
        code: String,
        reason: String,
        retry_at: Option<DateTime<Utc>>,
    },
    /// The attempt in flight to `channel` may or may not have reached the network.
    RecordUnconfirmed {
        channel: Channel,
        reason: String,
    },
    /// An operator asks for another delivery of a failed target now. `channel` may be
    /// left out only when the post has one target.
    RetryDelivery {
        channel: Option<Channel>,
    },
    /// An operator (or a reconciliation) settles an unconfirmed delivery. `channel` may
    /// be left out only when the post has one target.
    ResolveUnconfirmed {
        channel: Option<Channel>,
        outcome: Resolution,
    },
    /// The network confirmed a delivery (a verified webhook). Without `channel`, the
    /// target is the post's only one, the one already holding `network_post_id`, or
    /// the one delivery waiting for an answer.
    ConfirmDelivery {
        channel: Option<Channel>,
        network_post_id: String,
        url: Option<String>,
    },
    /// The network reports a published target removed (a verified webhook). Without
    /// `channel`, the target is the post's only one or the one holding
    /// `network_post_id`.
    RecordRemoved {
        channel: Option<Channel>,
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
///
/// On the delivery events, `channel` names the target; `None` means the post's first
/// channel (events recorded before a post could have several carry none).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    Created {
        channels: Vec<Channel>,
        body: String,
        campaign_id: Option<CampaignId>,
    },
    Edited {
        body: String,
    },
    Scheduled {
        publish_at: DateTime<Utc>,
    },
    /// Delivery to `channel` starts (again); `None`: to every target not delivered.
    PublishRequested {
        trigger: PublishTrigger,
        channel: Option<Channel>,
    },
    Published {
        channel: Option<Channel>,
        network_post_id: String,
        url: Option<String>,
    },
    PublishFailed {
        channel: Option<Channel>,
        reason: String,
    },
    Cancelled,
    /// Attempt number `attempt` (from 1 over the target's life) is calling `network`.
    DeliveryAttemptStarted {
        channel: Option<Channel>,
        attempt: u32,
        network: String,
    },
    /// The attempt failed; retried at `retry_at` when set, else failed for good.
    DeliveryAttemptFailed {
        channel: Option<Channel>,
        attempt: u32,
        code: String,
        reason: String,
        retry_at: Option<DateTime<Utc>>,
    },
    /// The attempt's outcome is unknown: the request may have landed.
    DeliveryUnconfirmed {
        channel: Option<Channel>,
        attempt: u32,
        reason: String,
    },
    /// The network removed the published target.
    Removed {
        channel: Option<Channel>,
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
    /// A target waits for (or runs) a delivery attempt.
    Publishing,
    /// No attempt runs or waits to start, and a target waits for its next attempt
    /// after a transient failure.
    RetryScheduled,
    /// Nothing runs or waits, and a target's last attempt may have landed; it waits
    /// to be reconciled or resolved.
    Unconfirmed,
    /// Every target published.
    Published,
    /// Every delivery is over: some targets published, the others failed for good or
    /// were removed.
    PartiallyPublished,
    /// Every target failed for good (a permanent error, too many attempts, or an
    /// operator).
    Failed,
    Cancelled,
    /// Published, then removed by the network on every target that had it.
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
            Status::PartiallyPublished => "partially_published",
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

/// Where the delivery to one target stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeliveryState {
    /// Publishing was requested; no attempt runs yet.
    Pending,
    /// An attempt was started and its outcome is not recorded yet.
    Publishing,
    /// The last attempt failed in a way known not to have posted; the next is due at
    /// the target's `retry_at`.
    FailedRetryable,
    /// The last attempt may have landed; never attempted again blindly.
    Unconfirmed,
    Published,
    /// Failed for good: refused by the network, out of attempts, or by an operator.
    FailedPermanent,
    /// Published, then removed by the network.
    Removed,
}

impl DeliveryState {
    /// Every state, in the order the docs list them.
    pub const ALL: [DeliveryState; 7] = [
        DeliveryState::Pending,
        DeliveryState::Publishing,
        DeliveryState::FailedRetryable,
        DeliveryState::Unconfirmed,
        DeliveryState::Published,
        DeliveryState::FailedPermanent,
        DeliveryState::Removed,
    ];

    /// The state's stable name, as stored in the read models and shown by the API.
    pub fn as_str(self) -> &'static str {
        match self {
            DeliveryState::Pending => "pending",
            DeliveryState::Publishing => "publishing",
            DeliveryState::FailedRetryable => "failed_retryable",
            DeliveryState::Unconfirmed => "unconfirmed",
            DeliveryState::Published => "published",
            DeliveryState::FailedPermanent => "failed_permanent",
            DeliveryState::Removed => "removed",
        }
    }

    /// The state of a stable name.
    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|state| state.as_str() == name)
    }
}

impl fmt::Display for DeliveryState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The status of a post whose publishing started, from its targets' delivery states:
///
/// 1. any target `pending` or `publishing` → [`Status::Publishing`];
/// 2. else any `failed_retryable` → [`Status::RetryScheduled`];
/// 3. else any `unconfirmed` → [`Status::Unconfirmed`];
/// 4. else (every delivery over) all `published` → [`Status::Published`]; some
///    `published` → [`Status::PartiallyPublished`]; none published but some `removed`
///    → [`Status::Removed`]; all `failed_permanent` → [`Status::Failed`].
///
/// For a post with one target this is the target's own state, as it always was.
pub fn status_of(states: impl IntoIterator<Item = DeliveryState>) -> Status {
    use DeliveryState as D;
    let (mut active, mut retrying, mut unconfirmed) = (false, false, false);
    let (mut published, mut removed, mut total) = (0, 0, 0);
    for state in states {
        total += 1;
        match state {
            D::Pending | D::Publishing => active = true,
            D::FailedRetryable => retrying = true,
            D::Unconfirmed => unconfirmed = true,
            D::Published => published += 1,
            D::Removed => removed += 1,
            D::FailedPermanent => {}
        }
    }
    if active || total == 0 {
        Status::Publishing
    } else if retrying {
        Status::RetryScheduled
    } else if unconfirmed {
        Status::Unconfirmed
    } else if published == total {
        Status::Published
    } else if published > 0 {
        Status::PartiallyPublished
    } else if removed > 0 {
        Status::Removed
    } else {
        Status::Failed
    }
}

/// One channel of a post and the delivery to it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub channel: Channel,
    /// `None` until publishing is requested.
    pub delivery: Option<DeliveryState>,
    /// Delivery attempts started over the target's life.
    pub attempts: u32,
    /// When the next attempt is due, while `FailedRetryable`.
    pub retry_at: Option<DateTime<Utc>>,
    /// The network's id of the post, once published.
    pub network_post_id: Option<String>,
}

impl Target {
    fn new(channel: Channel) -> Self {
        Self {
            channel,
            delivery: None,
            attempts: 0,
            retry_at: None,
            network_post_id: None,
        }
    }
}

/// Everything `decide` needs to know about a post.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct State {
    pub status: Status,
    pub publish_at: Option<DateTime<Utc>>,
    /// The post's channels in the order they were given; the first one is what
    /// `channel: None` on a delivery event means.
    pub targets: Vec<Target>,
}

impl State {
    /// The target on `channel`, if the post has one.
    pub fn target(&self, channel: &Channel) -> Option<&Target> {
        self.targets.iter().find(|t| &t.channel == channel)
    }
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
    #[error("a post needs 1 to {MAX_TARGETS} distinct channels")]
    BadChannels,
    #[error("the post has no target on channel {0}")]
    UnknownChannel(Channel),
    #[error("the post has several targets: name the channel")]
    ChannelRequired,
    #[error("publish_at must be in the future")]
    PublishTimeInPast,
    #[error("the failure reason must not be empty")]
    EmptyReason,
    #[error("the network post id must not be empty")]
    EmptyNetworkId,
    #[error("cannot {action} a post that is {from}")]
    InvalidTransition { from: Status, action: Action },
    #[error("cannot {action} a post on channel {channel}, whose delivery is {from}")]
    InvalidDeliveryTransition {
        channel: Channel,
        from: DeliveryState,
        action: Action,
    },
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
            Rejection::BadChannels => "invalid_post_channels",
            Rejection::UnknownChannel(_) => "unknown_post_channel",
            Rejection::ChannelRequired => "channel_required",
            Rejection::PublishTimeInPast => "publish_time_in_past",
            Rejection::EmptyReason => "invalid_failure_reason",
            Rejection::EmptyNetworkId => "invalid_network_post_id",
            Rejection::InvalidTransition { .. } | Rejection::InvalidDeliveryTransition { .. } => {
                "invalid_post_transition"
            }
            Rejection::AttemptInFlight => "delivery_attempt_in_flight",
            Rejection::AttemptNotDue => "delivery_attempt_not_due",
        }
    }
}
