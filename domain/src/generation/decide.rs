//! `decide` for a generation: command in, events or a rejection out.

use super::{Command, Event, MAX_BRIEF_CHARS, MAX_MESSAGE_CHARS, Rejection, State, Status};

/// Decides what a command does to a generation.
pub fn decide(state: &State, command: Command) -> Result<Vec<Event>, Rejection> {
    match command {
        Command::Request { request, economy } => {
            if state.status != Status::Absent {
                return Err(Rejection::AlreadyExists);
            }
            let chars = request.brief.chars().count();
            if request.brief.trim().is_empty() || chars > MAX_BRIEF_CHARS {
                return Err(Rejection::BadBrief);
            }
            if request.max_output_tokens == 0 {
                return Err(Rejection::BadMaxOutputTokens);
            }
            let mode_changed = economy.map(|economy| Event::ModeChanged {
                requested: economy.requested,
                model: request.model.clone(),
                budget_used: economy.budget_used,
                soft_limit: economy.soft_limit,
            });
            Ok(std::iter::once(Event::Requested(request))
                .chain(mode_changed)
                .collect())
        }
        Command::StartAttempt {
            attempt,
            model,
            reason,
        } => {
            pending(state)?;
            if let Some((in_flight, _)) = &state.in_flight {
                return Err(Rejection::AttemptInFlight(*in_flight));
            }
            let expected = state.attempts + 1;
            if attempt != expected {
                return Err(Rejection::AttemptOutOfOrder { attempt, expected });
            }
            Ok(vec![Event::AttemptStarted {
                attempt,
                model,
                reason,
            }])
        }
        Command::RecordGenerated {
            attempt,
            text,
            outcome,
        } => {
            pending(state)?;
            let model = in_flight(state, attempt)?;
            Ok(vec![Event::Generated {
                attempt,
                model,
                text,
                outcome,
            }])
        }
        Command::RecordAttemptFailed {
            attempt,
            error,
            message,
            retryable,
            outcome,
        } => {
            pending(state)?;
            let model = in_flight(state, attempt)?;
            Ok(vec![Event::AttemptFailed {
                attempt,
                model,
                error,
                message: message.chars().take(MAX_MESSAGE_CHARS).collect(),
                retryable,
                outcome,
            }])
        }
        Command::Fail { reason } => {
            pending(state)?;
            if let Some((in_flight, _)) = &state.in_flight {
                return Err(Rejection::AttemptInFlight(*in_flight));
            }
            if reason.trim().is_empty() {
                return Err(Rejection::EmptyReason);
            }
            Ok(vec![Event::Failed {
                reason: reason.chars().take(MAX_MESSAGE_CHARS).collect(),
                attempts: state.attempts,
                cost: state.cost,
            }])
        }
    }
}

fn pending(state: &State) -> Result<(), Rejection> {
    match state.status {
        Status::Pending => Ok(()),
        Status::Absent => Err(Rejection::NotFound),
        finished => Err(Rejection::Finished(finished)),
    }
}

fn in_flight(state: &State, attempt: u32) -> Result<crate::pricing::ModelRef, Rejection> {
    match &state.in_flight {
        Some((current, model)) if *current == attempt => Ok(model.clone()),
        _ => Err(Rejection::AttemptNotInFlight(attempt)),
    }
}
