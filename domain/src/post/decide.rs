//! `decide` for posts.

use super::{Action, Command, Ctx, Event, MAX_BODY_CHARS, Rejection, State, Status};

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
