//! A post: a piece of content headed for one channel.
//!
//! Its life is `draft → scheduled → publishing → published | failed`, and it may be
//! cancelled while it is a draft or scheduled. A failed post may be published again.
//! Every other move is refused with a rejection that names the state it was refused in.

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
}

/// Where a post stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Status {
    /// No `Created` event yet: the post does not exist.
    #[default]
    Absent,
    Draft,
    Scheduled,
    Publishing,
    Published,
    Failed,
    Cancelled,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Absent => "absent",
            Status::Draft => "draft",
            Status::Scheduled => "scheduled",
            Status::Publishing => "publishing",
            Status::Published => "published",
            Status::Failed => "failed",
            Status::Cancelled => "cancelled",
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
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Action::Edit => "edit",
            Action::Schedule => "schedule",
            Action::Publish => "publish",
            Action::Cancel => "cancel",
            Action::RecordOutcome => "record the outcome of",
        })
    }
}

/// Everything `decide` needs to know about a post.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct State {
    pub status: Status,
    pub publish_at: Option<DateTime<Utc>>,
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
        }
    }
}
