//! `decide` for posts.
//!
//! The commands of the post as a whole (create, edit, schedule, publish, cancel) look
//! at the post's status. The delivery commands look at one target's delivery state;
//! before publishing was requested a target has none, and such a command is refused
//! with the post's status.

use std::collections::HashSet;

use super::{
    Action, Command, Ctx, DeliveryState, Event, MAX_BODY_CHARS, MAX_TARGETS, PublishTrigger,
    Rejection, Resolution, State, Status, Target,
};
use crate::ids::Channel;

/// Decides what a command does to a post.
pub fn decide(state: &State, command: Command, ctx: &Ctx) -> Result<Vec<Event>, Rejection> {
    use DeliveryState as D;
    use Status::*;
    let status = state.status;
    if status == Absent && !matches!(command, Command::Create { .. }) {
        return Err(Rejection::NotFound);
    }
    let refuse = |action| {
        Err(Rejection::InvalidTransition {
            from: status,
            action,
        })
    };
    // A delivery command on a target in the wrong state: with the post's status while
    // publishing was never requested, else with the target's state.
    let refuse_target = |target: &Target, action| match target.delivery {
        None => refuse(action),
        Some(from) => Err(Rejection::InvalidDeliveryTransition {
            channel: target.channel.clone(),
            from,
            action,
        }),
    };
    match command {
        Command::Create {
            channels,
            body,
            campaign_id,
        } => {
            if status != Absent {
                return Err(Rejection::AlreadyExists);
            }
            check_channels(&channels)?;
            check_body(&body)?;
            Ok(vec![Event::Created {
                channels,
                body,
                campaign_id,
            }])
        }
        Command::Edit { body } => match status {
            Draft | Scheduled => {
                check_body(&body)?;
                Ok(vec![Event::Edited { body }])
            }
            _ => refuse(Action::Edit),
        },
        Command::Schedule { publish_at } => match status {
            Draft | Scheduled => {
                if publish_at <= ctx.now {
                    return Err(Rejection::PublishTimeInPast);
                }
                Ok(vec![Event::Scheduled { publish_at }])
            }
            _ => refuse(Action::Schedule),
        },
        Command::Publish { trigger } => match status {
            Draft | Scheduled | Failed => Ok(vec![Event::PublishRequested {
                trigger,
                channel: None,
            }]),
            _ => refuse(Action::Publish),
        },
        Command::Cancel => match status {
            Draft | Scheduled => Ok(vec![Event::Cancelled]),
            _ => refuse(Action::Cancel),
        },
        Command::RecordPublished {
            channel,
            network_post_id,
            url,
        } => {
            let target = named(state, &channel)?;
            match target.delivery {
                Some(D::Pending | D::Publishing) => published(channel, network_post_id, url),
                _ => refuse_target(target, Action::RecordOutcome),
            }
        }
        Command::RecordFailed { channel, reason } => {
            let target = named(state, &channel)?;
            match target.delivery {
                Some(D::Pending | D::Publishing) if reason.trim().is_empty() => {
                    Err(Rejection::EmptyReason)
                }
                Some(D::Pending | D::Publishing) => Ok(vec![Event::PublishFailed {
                    channel: Some(channel),
                    reason,
                }]),
                _ => refuse_target(target, Action::RecordOutcome),
            }
        }
        Command::StartAttempt { channel, network } => {
            let target = named(state, &channel)?;
            let started = || {
                Ok(vec![Event::DeliveryAttemptStarted {
                    channel: Some(channel.clone()),
                    attempt: target.attempts + 1,
                    network,
                }])
            };
            match target.delivery {
                Some(D::Publishing) => Err(Rejection::AttemptInFlight),
                Some(D::Pending) => started(),
                Some(D::FailedRetryable) if target.retry_at.is_some_and(|at| at > ctx.now) => {
                    Err(Rejection::AttemptNotDue)
                }
                Some(D::FailedRetryable) => started(),
                _ => refuse_target(target, Action::StartAttempt),
            }
        }
        Command::RecordAttemptFailed {
            channel,
            code,
            reason,
            retry_at,
        } => {
            let target = named(state, &channel)?;
            match target.delivery {
                Some(D::Publishing) if reason.trim().is_empty() => Err(Rejection::EmptyReason),
                Some(D::Publishing) => Ok(vec![Event::DeliveryAttemptFailed {
                    attempt: target.attempts,
                    channel: Some(channel),
                    code,
                    reason,
                    retry_at,
                }]),
                _ => refuse_target(target, Action::RecordOutcome),
            }
        }
        Command::RecordUnconfirmed { channel, reason } => {
            let target = named(state, &channel)?;
            match target.delivery {
                Some(D::Publishing) if reason.trim().is_empty() => Err(Rejection::EmptyReason),
                Some(D::Publishing) => Ok(vec![Event::DeliveryUnconfirmed {
                    attempt: target.attempts,
                    channel: Some(channel),
                    reason,
                }]),
                _ => refuse_target(target, Action::RecordOutcome),
            }
        }
        Command::RetryDelivery { channel } => {
            let target = chosen(state, channel.as_ref())?;
            match target.delivery {
                Some(D::FailedPermanent | D::FailedRetryable) => {
                    Ok(vec![Event::PublishRequested {
                        trigger: PublishTrigger::Manual,
                        channel: Some(target.channel.clone()),
                    }])
                }
                _ => refuse_target(target, Action::Retry),
            }
        }
        Command::ResolveUnconfirmed { channel, outcome } => {
            let target = chosen(state, channel.as_ref())?;
            match (target.delivery, outcome) {
                (
                    Some(D::Unconfirmed),
                    Resolution::Published {
                        network_post_id,
                        url,
                    },
                ) => published(target.channel.clone(), network_post_id, url),
                (Some(D::Unconfirmed), Resolution::Failed { reason })
                    if reason.trim().is_empty() =>
                {
                    Err(Rejection::EmptyReason)
                }
                (Some(D::Unconfirmed), Resolution::Failed { reason }) => {
                    Ok(vec![Event::PublishFailed {
                        channel: Some(target.channel.clone()),
                        reason,
                    }])
                }
                _ => refuse_target(target, Action::Resolve),
            }
        }
        Command::ConfirmDelivery {
            channel,
            network_post_id,
            url,
        } => {
            let target = match &channel {
                Some(channel) => named(state, channel)?,
                None => confirmed_target(state, &network_post_id)?,
            };
            match target.delivery {
                // A confirmation repeated, or of a delivery the workflow already
                // recorded.
                Some(D::Published | D::Removed) => Ok(vec![]),
                // A failure known transient may still hide a post a gateway created:
                // the network's word settles it, and no retry goes out.
                Some(D::Pending | D::Publishing | D::Unconfirmed | D::FailedRetryable) => {
                    published(target.channel.clone(), network_post_id, url)
                }
                _ => refuse_target(target, Action::Confirm),
            }
        }
        Command::RecordRemoved {
            channel,
            network_post_id,
        } => {
            let target = match &channel {
                Some(channel) => named(state, channel)?,
                None => removed_target(state, &network_post_id)?,
            };
            match target.delivery {
                Some(D::Removed) => Ok(vec![]),
                Some(D::Published) if network_post_id.trim().is_empty() => {
                    Err(Rejection::EmptyNetworkId)
                }
                Some(D::Published) => Ok(vec![Event::Removed {
                    channel: Some(target.channel.clone()),
                    network_post_id,
                }]),
                _ => refuse_target(target, Action::Remove),
            }
        }
    }
}

/// The target on `channel`.
fn named<'a>(state: &'a State, channel: &Channel) -> Result<&'a Target, Rejection> {
    state
        .target(channel)
        .ok_or_else(|| Rejection::UnknownChannel(channel.clone()))
}

/// The target an operator names, which may be left out when there is only one.
fn chosen<'a>(state: &'a State, channel: Option<&Channel>) -> Result<&'a Target, Rejection> {
    match (channel, state.targets.as_slice()) {
        (Some(channel), _) => named(state, channel),
        (None, [only]) => Ok(only),
        (None, _) => Err(Rejection::ChannelRequired),
    }
}

/// The target an unnamed confirmation is about: the only one; the one that already
/// holds the network's id (a repeat); or the one delivery waiting for an answer.
fn confirmed_target<'a>(state: &'a State, network_post_id: &str) -> Result<&'a Target, Rejection> {
    use DeliveryState as D;
    if let [only] = state.targets.as_slice() {
        return Ok(only);
    }
    if let Some(target) = holding(state, network_post_id) {
        return Ok(target);
    }
    let mut waiting = state.targets.iter().filter(|t| {
        matches!(
            t.delivery,
            Some(D::Pending | D::Publishing | D::Unconfirmed | D::FailedRetryable)
        )
    });
    match (waiting.next(), waiting.next()) {
        (Some(target), None) => Ok(target),
        _ => Err(Rejection::ChannelRequired),
    }
}

/// The target an unnamed removal is about: the only one, or the one holding the
/// network's id.
fn removed_target<'a>(state: &'a State, network_post_id: &str) -> Result<&'a Target, Rejection> {
    if let [only] = state.targets.as_slice() {
        return Ok(only);
    }
    holding(state, network_post_id).ok_or(Rejection::ChannelRequired)
}

/// The one target whose delivery the network recorded as `network_post_id`.
fn holding<'a>(state: &'a State, network_post_id: &str) -> Option<&'a Target> {
    let mut holding = state
        .targets
        .iter()
        .filter(|t| t.network_post_id.as_deref() == Some(network_post_id));
    match (holding.next(), holding.next()) {
        (Some(target), None) => Some(target),
        _ => None,
    }
}

fn published(
    channel: Channel,
    network_post_id: String,
    url: Option<String>,
) -> Result<Vec<Event>, Rejection> {
    if network_post_id.trim().is_empty() {
        return Err(Rejection::EmptyNetworkId);
    }
    Ok(vec![Event::Published {
        channel: Some(channel),
        network_post_id,
        url,
    }])
}

fn check_channels(channels: &[Channel]) -> Result<(), Rejection> {
    let distinct: HashSet<&Channel> = channels.iter().collect();
    if channels.is_empty() || channels.len() > MAX_TARGETS || distinct.len() != channels.len() {
        Err(Rejection::BadChannels)
    } else {
        Ok(())
    }
}

fn check_body(body: &str) -> Result<(), Rejection> {
    let chars = body.chars().count();
    if body.trim().is_empty() || chars > MAX_BODY_CHARS {
        Err(Rejection::BadBody)
    } else {
        Ok(())
    }
}
