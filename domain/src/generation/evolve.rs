//! `evolve` for a generation: folds one event into the state. Never fails.

use super::{AttemptReason, Event, State, Status};

/// Applies one event.
pub fn evolve(mut state: State, event: &Event) -> State {
    match event {
        Event::ModeChanged { .. } => {}
        Event::Requested(request) => {
            state.status = Status::Pending;
            state.request = Some(request.clone());
        }
        Event::AttemptStarted {
            attempt,
            model,
            reason,
        } => {
            state.attempts = state.attempts.max(*attempt);
            state.in_flight = Some((*attempt, model.clone()));
            let in_a_row = match &state.current_model {
                Some((current, n)) if current == model => n + 1,
                _ => 1,
            };
            state.current_model = Some((model.clone(), in_a_row));
            state.fell_back |= *reason == AttemptReason::Fallback;
        }
        Event::AttemptFailed {
            outcome,
            error,
            retryable,
            ..
        } => {
            state.in_flight = None;
            state.cost = state.cost.saturating_add(outcome.cost);
            state.last_error = Some((error.clone(), *retryable));
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
