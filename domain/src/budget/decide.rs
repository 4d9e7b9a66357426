//! `decide` for the budget ledger: command in, events or a rejection out.

use chrono::{DateTime, TimeDelta, Utc};

use super::{
    Command, Ctx, Event, Limits, MAX_PURPOSE_CHARS, MAX_THRESHOLDS, MAX_TTL, Rejection,
    ReservationOutcome, State, evolve,
};
use crate::ids::{Micros, ReservationId};

/// Decides what a command does to the ledger.
///
/// Every command first expires the reservations whose ttl has run out, so that an
/// active ledger never counts stale holds against its limit even when no sweeper ran.
pub fn decide(state: &State, command: Command, ctx: &Ctx) -> Result<Vec<Event>, Rejection> {
    let mut out = Outcome::new(state);
    match command {
        Command::SetLimits {
            soft,
            hard,
            alert_thresholds_pct,
        } => {
            let limits = checked_limits(soft, hard, alert_thresholds_pct)?;
            out.expire_due(ctx.now, None);
            out.push(Event::LimitsSet {
                soft: limits.soft,
                hard: limits.hard,
                alert_thresholds_pct: limits.alert_thresholds_pct,
                inherited_from: None,
            });
            out.cross_thresholds();
        }
        Command::Reserve {
            reservation_id,
            amount,
            purpose,
            ttl,
        } => {
            if amount == Micros::ZERO {
                return Err(Rejection::AmountZero);
            }
            if ttl < TimeDelta::seconds(1) || ttl > MAX_TTL {
                return Err(Rejection::BadTtl);
            }
            let chars = purpose.trim().chars().count();
            if chars == 0 || chars > MAX_PURPOSE_CHARS {
                return Err(Rejection::BadPurpose);
            }
            if out.state.open.contains_key(&reservation_id)
                || out.state.settled.contains_key(&reservation_id)
            {
                return Err(Rejection::ReservationExists(reservation_id));
            }
            out.inherit_limits(ctx)?;
            out.expire_due(ctx.now, None);
            let available = out.state.available();
            if amount > available {
                return Err(Rejection::BudgetExceeded {
                    requested: amount,
                    available,
                });
            }
            out.push(Event::Reserved {
                reservation_id,
                amount,
                purpose,
                expires_at: ctx.now + ttl,
            });
        }
        Command::Commit {
            reservation_id,
            actual,
        } => {
            // A reservation past its ttl can still be committed: the provider has
            // billed, and the cost is a fact the ledger must record.
            let reserved = match out.lookup(reservation_id)? {
                Lookup::Open(amount) => amount,
                Lookup::Settled(ReservationOutcome::Expired) => Micros::ZERO,
                Lookup::Settled(outcome) => {
                    return Err(Rejection::AlreadySettled {
                        id: reservation_id,
                        outcome,
                    });
                }
            };
            out.expire_due(ctx.now, Some(reservation_id));
            out.push(Event::Committed {
                reservation_id,
                reserved,
                actual,
            });
            if actual > reserved {
                out.push(Event::Overrun {
                    reservation_id,
                    reserved,
                    actual,
                    overrun: actual.saturating_sub(reserved),
                });
            }
            out.cross_thresholds();
        }
        Command::Release { reservation_id } => {
            let amount = match out.lookup(reservation_id)? {
                Lookup::Open(amount) => amount,
                Lookup::Settled(outcome) => {
                    return Err(Rejection::AlreadySettled {
                        id: reservation_id,
                        outcome,
                    });
                }
            };
            out.expire_due(ctx.now, Some(reservation_id));
            out.push(Event::Released {
                reservation_id,
                amount,
            });
        }
        Command::ExpireDue => out.expire_due(ctx.now, None),
    }
    Ok(out.events)
}

fn checked_limits(
    soft: Micros,
    hard: Micros,
    mut thresholds: Vec<u8>,
) -> Result<Limits, Rejection> {
    if hard == Micros::ZERO {
        return Err(Rejection::HardLimitZero);
    }
    if soft > hard {
        return Err(Rejection::SoftAboveHard { soft, hard });
    }
    thresholds.sort_unstable();
    thresholds.dedup();
    if thresholds.len() > MAX_THRESHOLDS || thresholds.iter().any(|t| !(1..=100).contains(t)) {
        return Err(Rejection::BadThresholds);
    }
    Ok(Limits {
        soft,
        hard,
        alert_thresholds_pct: thresholds,
    })
}

enum Lookup {
    Open(Micros),
    Settled(ReservationOutcome),
}

/// The events decided so far and the state they lead to, so later rules in the same
/// command see the effect of earlier ones.
struct Outcome {
    state: State,
    events: Vec<Event>,
}

impl Outcome {
    fn new(state: &State) -> Self {
        Self {
            state: state.clone(),
            events: Vec::new(),
        }
    }

    fn push(&mut self, event: Event) {
        self.state = evolve(std::mem::take(&mut self.state), &event);
        self.events.push(event);
    }

    fn lookup(&self, id: ReservationId) -> Result<Lookup, Rejection> {
        if let Some(open) = self.state.open.get(&id) {
            Ok(Lookup::Open(open.amount))
        } else if let Some(outcome) = self.state.settled.get(&id) {
            Ok(Lookup::Settled(*outcome))
        } else {
            Err(Rejection::ReservationNotFound(id))
        }
    }

    /// A month with no limits takes the previous month's, recorded as an event so the
    /// carry-over is visible in the log.
    fn inherit_limits(&mut self, ctx: &Ctx) -> Result<(), Rejection> {
        if self.state.limits.is_some() {
            return Ok(());
        }
        let Some((from, limits)) = &ctx.inherited_limits else {
            return Err(Rejection::NotConfigured);
        };
        self.push(Event::LimitsSet {
            soft: limits.soft,
            hard: limits.hard,
            alert_thresholds_pct: limits.alert_thresholds_pct.clone(),
            inherited_from: Some(*from),
        });
        Ok(())
    }

    fn expire_due(&mut self, now: DateTime<Utc>, except: Option<ReservationId>) {
        let due: Vec<(ReservationId, Micros)> = self
            .state
            .open
            .iter()
            .filter(|(id, r)| r.expires_at <= now && Some(**id) != except)
            .map(|(id, r)| (*id, r.amount))
            .collect();
        for (reservation_id, amount) in due {
            self.push(Event::Expired {
                reservation_id,
                amount,
                expired_at: now,
            });
        }
    }

    fn cross_thresholds(&mut self) {
        let Some(limits) = self.state.limits.clone() else {
            return;
        };
        let committed = self.state.committed;
        for threshold_pct in limits.alert_thresholds_pct {
            let reached = i128::from(committed.get()) * 100
                >= i128::from(threshold_pct) * i128::from(limits.hard.get());
            if reached && !self.state.thresholds_crossed.contains(&threshold_pct) {
                self.push(Event::ThresholdCrossed {
                    threshold_pct,
                    committed,
                    hard: limits.hard,
                });
            }
        }
    }
}
