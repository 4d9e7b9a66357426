//! `evolve` for posts. Never fails.

use super::{Event, State, Status};

/// Applies one event to a post's state.
pub fn evolve(mut state: State, event: &Event) -> State {
    match event {
        Event::Created { .. } => state.status = Status::Draft,
        Event::Edited { .. } => {}
        Event::Scheduled { publish_at } => {
            state.status = Status::Scheduled;
            state.publish_at = Some(*publish_at);
        }
        Event::PublishRequested { .. } => {
            state.status = Status::Publishing;
            state.in_flight = false;
            state.retry_at = None;
        }
        Event::Published { .. } => {
            state.status = Status::Published;
            state.in_flight = false;
            state.retry_at = None;
        }
        Event::PublishFailed { .. } => {
            state.status = Status::Failed;
            state.in_flight = false;
            state.retry_at = None;
        }
        Event::Cancelled => state.status = Status::Cancelled,
        Event::DeliveryAttemptStarted { attempt, .. } => {
            state.status = Status::Publishing;
            state.attempts = *attempt;
            state.in_flight = true;
            state.retry_at = None;
        }
        Event::DeliveryAttemptFailed { retry_at, .. } => {
            state.in_flight = false;
            state.retry_at = *retry_at;
            state.status = match retry_at {
                Some(_) => Status::RetryScheduled,
                None => Status::Failed,
            };
        }
        Event::DeliveryUnconfirmed { .. } => {
            state.status = Status::Unconfirmed;
            state.in_flight = false;
        }
        Event::Removed { .. } => state.status = Status::Removed,
    }
    state
}
