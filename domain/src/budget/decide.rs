//! `decide` for the budget ledger: command in, events or a rejection out.
//!
//! Its cost must not grow with the month's history: it reads the folded state by key
//! and never copies it (see `Outcome`).

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, TimeDelta, Utc};

use super::state::available_of;
use super::{
    Command, Ctx, Event, Limits, MAX_PURPOSE_CHARS, MAX_THRESHOLDS, MAX_TTL, OpenReservation,
    Rejection, ReservationOutcome, State, Unlisted,
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
            match out.lookup(reservation_id) {
                Err(Rejection::ReservationNotFound(_)) => {}
                Err(unlisted @ Rejection::SettledUnlisted(_)) => return Err(unlisted),
                _ => return Err(Rejection::ReservationExists(reservation_id)),
            }
            out.inherit_limits(ctx)?;
            out.expire_due(ctx.now, None);
            let available = out.available();
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

/// The events decided so far and the ledger they lead to, so later rules in the same
/// command see the effect of earlier ones.
///
/// It borrows the folded state and keeps beside it only what this command changed,
/// which is a handful of entries (plus one per reservation it expires). Copying the
/// state instead would cost time in proportion to the month's history, since `settled`
/// keeps every reservation ever settled. `apply` must change this view exactly as
/// `evolve` changes a `State`.
struct Outcome<'s> {
    base: &'s State,
    limits: Option<Limits>,
    committed: Micros,
    reserved: Micros,
    /// Reservations this command opened.
    opened: BTreeMap<ReservationId, OpenReservation>,
    /// Reservations this command settled; they hide any open entry in `base`.
    closed: BTreeMap<ReservationId, ReservationOutcome>,
    /// Thresholds this command announced.
    crossed: BTreeSet<u8>,
    events: Vec<Event>,
}

impl<'s> Outcome<'s> {
    fn new(state: &'s State) -> Self {
        Self {
            base: state,
            limits: state.limits.clone(),
            committed: state.committed,
            reserved: state.reserved,
            opened: BTreeMap::new(),
            closed: BTreeMap::new(),
            crossed: BTreeSet::new(),
            events: Vec::new(),
        }
    }

    fn push(&mut self, event: Event) {
        self.apply(&event);
        self.events.push(event);
    }

    /// What `evolve` does to the state, done to this view.
    fn apply(&mut self, event: &Event) {
        match event {
            Event::LimitsSet {
                soft,
                hard,
                alert_thresholds_pct,
                inherited_from: _,
            } => {
                self.limits = Some(Limits {
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
                self.reserved = self.reserved.saturating_add(*amount);
                self.opened.insert(
                    *reservation_id,
                    OpenReservation {
                        amount: *amount,
                        purpose: purpose.clone(),
                        expires_at: *expires_at,
                    },
                );
            }
            Event::Committed {
                reservation_id,
                reserved: _,
                actual,
            } => {
                self.close(*reservation_id, ReservationOutcome::Committed);
                self.committed = self.committed.saturating_add(*actual);
            }
            Event::Overrun { .. } => {}
            Event::Released { reservation_id, .. } => {
                self.close(*reservation_id, ReservationOutcome::Released);
            }
            Event::Expired { reservation_id, .. } => {
                self.close(*reservation_id, ReservationOutcome::Expired);
            }
            Event::ThresholdCrossed { threshold_pct, .. } => {
                self.crossed.insert(*threshold_pct);
            }
        }
    }

    fn close(&mut self, id: ReservationId, outcome: ReservationOutcome) {
        if let Some(amount) = self.open(id).map(|r| r.amount) {
            self.reserved = self.reserved.saturating_sub(amount);
        }
        self.opened.remove(&id);
        self.closed.insert(id, outcome);
    }

    /// The reservation if it is open in this view.
    fn open(&self, id: ReservationId) -> Option<&OpenReservation> {
        if let Some(open) = self.opened.get(&id) {
            Some(open)
        } else if self.closed.contains_key(&id) {
            None
        } else {
            self.base.open.get(&id)
        }
    }

    /// How the reservation ended, if it did. An id can be both open and settled after
    /// a replayed log reserved it again; `lookup` asks `open` first, like the state.
    fn settled(&self, id: ReservationId) -> Result<Option<ReservationOutcome>, Rejection> {
        if let Some(outcome) = self.closed.get(&id) {
            return Ok(Some(*outcome));
        }
        self.base
            .settled
            .get(&id)
            .map(|outcome| outcome.copied())
            .map_err(|Unlisted| Rejection::SettledUnlisted(id))
    }

    fn lookup(&self, id: ReservationId) -> Result<Lookup, Rejection> {
        if let Some(open) = self.open(id) {
            Ok(Lookup::Open(open.amount))
        } else if let Some(outcome) = self.settled(id)? {
            Ok(Lookup::Settled(outcome))
        } else {
            Err(Rejection::ReservationNotFound(id))
        }
    }

    fn available(&self) -> Micros {
        available_of(self.limits.as_ref(), self.committed, self.reserved)
    }

    /// A month with no limits takes the previous month's, recorded as an event so the
    /// carry-over is visible in the log.
    fn inherit_limits(&mut self, ctx: &Ctx) -> Result<(), Rejection> {
        if self.limits.is_some() {
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

    /// Expires every open reservation due at `now` but `except`, in id order.
    ///
    /// The expiry index yields only the due reservations, so this costs in proportion
    /// to how many are due, however many are open.
    fn expire_due(&mut self, now: DateTime<Utc>, except: Option<ReservationId>) {
        let opened_due = self
            .opened
            .iter()
            .filter(|(_, r)| r.expires_at <= now)
            .map(|(id, _)| *id);
        let mut due: Vec<ReservationId> = self
            .base
            .due(now)
            .chain(opened_due)
            .filter(|id| Some(*id) != except)
            .collect();
        // Id order, as walking `open` would give: the events must not depend on how
        // the reservations are indexed.
        due.sort_unstable();
        due.dedup();
        for reservation_id in due {
            // The base's index may hold a reservation this command already settled.
            let Some(amount) = self
                .open(reservation_id)
                .filter(|r| r.expires_at <= now)
                .map(|r| r.amount)
            else {
                continue;
            };
            self.push(Event::Expired {
                reservation_id,
                amount,
                expired_at: now,
            });
        }
    }

    fn cross_thresholds(&mut self) {
        let Some(limits) = self.limits.clone() else {
            return;
        };
        let committed = self.committed;
        for threshold_pct in limits.alert_thresholds_pct {
            let reached = i128::from(committed.get()) * 100
                >= i128::from(threshold_pct) * i128::from(limits.hard.get());
            let announced = self.base.thresholds_crossed.contains(&threshold_pct)
                || self.crossed.contains(&threshold_pct);
            if reached && !announced {
                self.push(Event::ThresholdCrossed {
                    threshold_pct,
                    committed,
                    hard: limits.hard,
                });
            }
        }
    }
}
