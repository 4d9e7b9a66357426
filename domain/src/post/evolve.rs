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
        Event::PublishRequested { .. } => state.status = Status::Publishing,
        Event::Published { .. } => state.status = Status::Published,
        Event::PublishFailed { .. } => state.status = Status::Failed,
        Event::Cancelled => state.status = Status::Cancelled,
    }
    state
}
