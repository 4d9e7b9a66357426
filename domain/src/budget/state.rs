//! The ledger's state, folded from its events.
//!
//! A month's ledger only grows: every settled reservation stays in `settled` so that its
//! id can never be reused. So nothing that runs per command may walk or copy the whole
//! state. Lookups are by key, and the open reservations are also indexed by expiry time,
//! so finding the ones that are due costs in proportion to how many are due, not to how
//! many are open. `evolve` keeps that index in step with `open`.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use chrono::{DateTime, Utc};

use crate::ids::{Micros, ReservationId};

/// The month's limits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    pub soft: Micros,
    pub hard: Micros,
    pub alert_thresholds_pct: Vec<u8>,
}

/// A reservation that still holds money.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpenReservation {
    pub amount: Micros,
    pub purpose: String,
    pub expires_at: DateTime<Utc>,
}

/// How a reservation ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReservationOutcome {
    Committed,
    Released,
    Expired,
}

impl fmt::Display for ReservationOutcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ReservationOutcome::Committed => "committed",
            ReservationOutcome::Released => "released",
            ReservationOutcome::Expired => "expired",
        })
    }
}

/// Where the ledger stands against its limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BudgetStatus {
    Ok,
    SoftExceeded,
    HardReached,
}

impl BudgetStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            BudgetStatus::Ok => "ok",
            BudgetStatus::SoftExceeded => "soft_exceeded",
            BudgetStatus::HardReached => "hard_reached",
        }
    }
}

/// Everything `decide` needs to know about one month's ledger.
///
/// Read the fields freely; change them only through [`evolve`](super::evolve), which
/// keeps `reserved` and the expiry index in step with `open`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct State {
    pub limits: Option<Limits>,
    pub committed: Micros,
    /// Sum of the open reservations' amounts, kept in step with `open`.
    pub reserved: Micros,
    pub open: BTreeMap<ReservationId, OpenReservation>,
    pub settled: BTreeMap<ReservationId, ReservationOutcome>,
    pub thresholds_crossed: BTreeSet<u8>,
    /// `open` by expiry time: one `(expires_at, id)` entry per open reservation.
    pub(super) expiries: BTreeSet<(DateTime<Utc>, ReservationId)>,
}

impl State {
    /// Money neither spent nor held, floored at zero (the ledger can stand above its
    /// hard limit after an overrun).
    pub fn available(&self) -> Micros {
        available_of(self.limits.as_ref(), self.committed, self.reserved)
    }

    /// The open reservations due at `now` (expiring at or before it), earliest first,
    /// without looking at the others.
    pub(super) fn due(&self, now: DateTime<Utc>) -> impl Iterator<Item = ReservationId> + '_ {
        self.expiries
            .iter()
            .take_while(move |(expires_at, _)| *expires_at <= now)
            .map(|(_, id)| *id)
    }

    pub fn status(&self) -> BudgetStatus {
        status_of(self.limits.as_ref(), self.committed, self.reserved)
    }

    /// Builds a state from its stored parts (a snapshot), rebuilding what is derived:
    /// `reserved` and the expiry index. Refuses parts no fold of a valid stream can
    /// produce, which is a reservation both open and settled.
    ///
    /// `State::from_parts(s.parts())` equals `s` for every state `evolve` built from a
    /// stream `decide` accepted (the `schemas` property test checks it through the
    /// stored form).
    pub fn from_parts(parts: Parts) -> Result<State, StateError> {
        let Parts {
            limits,
            committed,
            open,
            settled,
            thresholds_crossed,
        } = parts;
        if let Some(id) = open.keys().find(|id| settled.contains_key(id)) {
            return Err(StateError::OpenAndSettled(*id));
        }
        // Summed the way `evolve` sums them, saturating, so the rebuilt total is the
        // folded one to the micro.
        let reserved = open
            .values()
            .fold(Micros::ZERO, |sum, r| sum.saturating_add(r.amount));
        let expiries = open.iter().map(|(id, r)| (r.expires_at, *id)).collect();
        Ok(State {
            limits,
            committed,
            reserved,
            open,
            settled,
            thresholds_crossed,
            expiries,
        })
    }

    /// The parts a snapshot stores: everything but what [`State::from_parts`] derives.
    pub fn parts(&self) -> PartsRef<'_> {
        PartsRef {
            limits: self.limits.as_ref(),
            committed: self.committed,
            open: &self.open,
            settled: &self.settled,
            thresholds_crossed: &self.thresholds_crossed,
        }
    }
}

/// A ledger's state without its derived fields, as a snapshot stores it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Parts {
    pub limits: Option<Limits>,
    pub committed: Micros,
    pub open: BTreeMap<ReservationId, OpenReservation>,
    pub settled: BTreeMap<ReservationId, ReservationOutcome>,
    pub thresholds_crossed: BTreeSet<u8>,
}

/// [`Parts`], borrowed from a state, so taking a snapshot copies nothing.
#[derive(Debug, Clone, Copy)]
pub struct PartsRef<'s> {
    pub limits: Option<&'s Limits>,
    pub committed: Micros,
    pub open: &'s BTreeMap<ReservationId, OpenReservation>,
    pub settled: &'s BTreeMap<ReservationId, ReservationOutcome>,
    pub thresholds_crossed: &'s BTreeSet<u8>,
}

/// Why stored parts do not make a ledger state.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StateError {
    #[error("reservation {0} is both open and settled")]
    OpenAndSettled(ReservationId),
}

/// The money available for given limits and totals, shared by the folded state and
/// `decide`'s view of it.
pub(super) fn available_of(limits: Option<&Limits>, committed: Micros, reserved: Micros) -> Micros {
    match limits {
        Some(l) => l.hard.saturating_sub(committed.saturating_add(reserved)),
        None => Micros::ZERO,
    }
}

/// The status for given limits and totals, shared with the read models so the API and
/// the ledger can never disagree on what "soft exceeded" means.
pub fn status_of(limits: Option<&Limits>, committed: Micros, reserved: Micros) -> BudgetStatus {
    let Some(limits) = limits else {
        return BudgetStatus::HardReached;
    };
    let used = committed.saturating_add(reserved);
    if used >= limits.hard {
        BudgetStatus::HardReached
    } else if used > limits.soft {
        BudgetStatus::SoftExceeded
    } else {
        BudgetStatus::Ok
    }
}
