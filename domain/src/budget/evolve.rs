//! `evolve` for the budget ledger: folds one event into the state. Never fails.
//!
//! Each event changes a few entries, found by key, so folding one costs O(log n) in the
//! size of the month's ledger, and folding a stream is linear in its length.

use super::{Event, Limits, OpenReservation, ReservationOutcome, State};

/// Applies one event. Unknown reservations are tolerated (an event is a fact that
/// already happened), so replaying any prefix of a valid stream never panics.
pub fn evolve(mut state: State, event: &Event) -> State {
    match event {
        Event::LimitsSet {
            soft,
            hard,
            alert_thresholds_pct,
            inherited_from: _,
        } => {
            state.limits = Some(Limits {
                soft: *soft,
                hard: *hard,
                alert_thresholds_pct: alert_thresholds_pct.clone(),
            });
        }
        Event::Reserved {
            reservation_id,
            amount,
            purpose,
            expires_at,
        } => {
            state.reserved = state.reserved.saturating_add(*amount);
            let replaced = state.open.insert(
                *reservation_id,
                OpenReservation {
                    amount: *amount,
                    purpose: purpose.clone(),
                    expires_at: *expires_at,
                },
            );
            // `decide` never reserves an open id again, but a replayed log is taken as
            // it is: the index must not keep the replaced reservation's expiry.
            if let Some(replaced) = replaced {
                state
                    .expiries
                    .remove(&(replaced.expires_at, *reservation_id));
            }
            state.expiries.insert((*expires_at, *reservation_id));
        }
        Event::Committed {
            reservation_id,
            reserved: _,
            actual,
        } => {
            state = close(state, *reservation_id, ReservationOutcome::Committed);
            state.committed = state.committed.saturating_add(*actual);
        }
        Event::Overrun { .. } => {}
        Event::Released { reservation_id, .. } => {
            state = close(state, *reservation_id, ReservationOutcome::Released);
        }
        Event::Expired { reservation_id, .. } => {
            state = close(state, *reservation_id, ReservationOutcome::Expired);
        }
        Event::ThresholdCrossed { threshold_pct, .. } => {
            state.thresholds_crossed.insert(*threshold_pct);
        }
    }
    state
}

fn close(mut state: State, id: crate::ids::ReservationId, outcome: ReservationOutcome) -> State {
    if let Some(open) = state.open.remove(&id) {
        state.reserved = state.reserved.saturating_sub(open.amount);
        state.expiries.remove(&(open.expires_at, id));
    }
    state.settled.insert(id, outcome);
    state
}
