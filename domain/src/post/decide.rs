//! `decide` for posts.

use super::{Action, Command, Ctx, Event, MAX_BODY_CHARS, Rejection, Resolution, State, Status};

/// Decides what a command does to a post.
pub fn decide(state: &State, command: Command, ctx: &Ctx) -> Result<Vec<Event>, Rejection> {
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
    match command {
        Command::Create {
            channel,
            body,
            campaign_id,
        } => {
            if status != Absent {
                return Err(Rejection::AlreadyExists);
            }
            check_body(&body)?;
            Ok(vec![Event::Created {
                channel,
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
            Draft | Scheduled | Failed => Ok(vec![Event::PublishRequested { trigger }]),
            _ => refuse(Action::Publish),
        },
        Command::Cancel => match status {
            Draft | Scheduled => Ok(vec![Event::Cancelled]),
            _ => refuse(Action::Cancel),
        },
        Command::RecordPublished {
            network_post_id,
            url,
        } => match status {
            Publishing if network_post_id.trim().is_empty() => Err(Rejection::EmptyNetworkId),
            Publishing => Ok(vec![Event::Published {
                network_post_id,
                url,
            }]),
            _ => refuse(Action::RecordOutcome),
        },
        Command::RecordFailed { reason } => match status {
            Publishing if reason.trim().is_empty() => Err(Rejection::EmptyReason),
            Publishing => Ok(vec![Event::PublishFailed { reason }]),
            _ => refuse(Action::RecordOutcome),
        },
        Command::StartAttempt { network } => match status {
            Publishing if state.in_flight => Err(Rejection::AttemptInFlight),
            Publishing => Ok(vec![Event::DeliveryAttemptStarted {
                attempt: state.attempts + 1,
                network,
            }]),
            RetryScheduled if state.retry_at.is_some_and(|at| at > ctx.now) => {
                Err(Rejection::AttemptNotDue)
            }
            RetryScheduled => Ok(vec![Event::DeliveryAttemptStarted {
                attempt: state.attempts + 1,
                network,
            }]),
            _ => refuse(Action::StartAttempt),
        },
        Command::RecordAttemptFailed {
            code,
            reason,
            retry_at,
        } => match status {
            Publishing if state.in_flight && reason.trim().is_empty() => {
                Err(Rejection::EmptyReason)
            }
            Publishing if state.in_flight => Ok(vec![Event::DeliveryAttemptFailed {
                attempt: state.attempts,
                code,
                reason,
                retry_at,
            }]),
            _ => refuse(Action::RecordOutcome),
        },
        Command::RecordUnconfirmed { reason } => match status {
            Publishing if state.in_flight && reason.trim().is_empty() => {
                Err(Rejection::EmptyReason)
            }
            Publishing if state.in_flight => Ok(vec![Event::DeliveryUnconfirmed {
                attempt: state.attempts,
                reason,
            }]),
            _ => refuse(Action::RecordOutcome),
        },
        Command::RetryDelivery => match status {
            Failed | RetryScheduled => Ok(vec![Event::PublishRequested {
                trigger: super::PublishTrigger::Manual,
            }]),
            _ => refuse(Action::Retry),
        },
        Command::ResolveUnconfirmed { outcome } => match (status, outcome) {
            (
                Unconfirmed,
                Resolution::Published {
                    network_post_id,
                    url,
                },
            ) => published(network_post_id, url),
            (Unconfirmed, Resolution::Failed { reason }) if reason.trim().is_empty() => {
                Err(Rejection::EmptyReason)
            }
            (Unconfirmed, Resolution::Failed { reason }) => {
                Ok(vec![Event::PublishFailed { reason }])
            }
            _ => refuse(Action::Resolve),
        },
        Command::ConfirmDelivery {
            network_post_id,
            url,
        } => match status {
            // A confirmation repeated, or of a delivery the workflow already recorded.
            Published | Removed => Ok(vec![]),
            // A failure known transient may still hide a post a gateway created: the
            // network's word settles it, and no retry goes out.
            Publishing | Unconfirmed | RetryScheduled => published(network_post_id, url),
            _ => refuse(Action::Confirm),
        },
        Command::RecordRemoved { network_post_id } => match status {
            Removed => Ok(vec![]),
            Published if network_post_id.trim().is_empty() => Err(Rejection::EmptyNetworkId),
            Published => Ok(vec![Event::Removed { network_post_id }]),
            _ => refuse(Action::Remove),
        },
    }
}

fn published(network_post_id: String, url: Option<String>) -> Result<Vec<Event>, Rejection> {
    if network_post_id.trim().is_empty() {
        return Err(Rejection::EmptyNetworkId);
    }
    Ok(vec![Event::Published {
        network_post_id,
        url,
    }])
}

fn check_body(body: &str) -> Result<(), Rejection> {
    let chars = body.chars().count();
    if body.trim().is_empty() || chars > MAX_BODY_CHARS {
        Err(Rejection::BadBody)
    } else {
        Ok(())
    }
}
