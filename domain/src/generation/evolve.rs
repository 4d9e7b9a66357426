//! `evolve` for a generation: folds one event into the state. Never fails.

use super::{Event, State, Status};

/// Applies one event.
pub fn evolve(mut state: State, event: &Event) -> State {
    match event {
        Event::ModeChanged { .. } => {}
        Event::Requested(request) => {
            state.status = Status::Pending;
            state.request = Some(request.clone());
        }
        Event::AttemptStarted { attempt, model, .. } => {
            state.attempts = state.attempts.max(*attempt);
            state.in_flight = Some((*attempt, model.clone()));
        }
        Event::AttemptFailed { outcome, .. } => {
            state.in_flight = None;
            state.cost = state.cost.saturating_add(outcome.cost);
        }
        Event::Generated { outcome, .. } => {
            state.in_flight = None;
            state.cost = state.cost.saturating_add(outcome.cost);
            state.status = Status::Generated;
        }
        Event::Failed { .. } => {
            state.in_flight = None;
            state.status = Status::Failed;
        }
    }
    state
}
