//! The ledger's state, folded from its events.
//!
//! A month's ledger only grows: every settled reservation stays in `settled` so that its
//! id can never be reused. So nothing that runs per command may walk or copy the whole
//! state. Lookups are by key, and the open reservations are also indexed by expiry time,
//! so finding the ones that are due costs in proportion to how many are due, not to how
//! many are open. `evolve` keeps that index in step with `open`.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::sync::Arc;

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
    pub settled: Settled,
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
        if let Some(id) = open.keys().find(|id| settled.get(id).is_some()) {
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
    pub settled: Settled,
    pub thresholds_crossed: BTreeSet<u8>,
}

/// [`Parts`], borrowed from a state, so taking a snapshot copies nothing.
#[derive(Debug, Clone, Copy)]
pub struct PartsRef<'s> {
    pub limits: Option<&'s Limits>,
    pub committed: Micros,
    pub open: &'s BTreeMap<ReservationId, OpenReservation>,
    pub settled: &'s Settled,
    pub thresholds_crossed: &'s BTreeSet<u8>,
}

/// Every reservation settled this month, and how it ended: what keeps an id from
/// being used twice.
///
/// It grows all month (tens of thousands of ids in a busy one), so a cold load must
/// not pay per id to build it. The ids a snapshot brought are kept as it stored them,
/// sorted, and searched in place (`frozen`, shared, so cloning the state copies none
/// of them); the ones settled since go into a small map. A lookup asks the map first.
#[derive(Debug, Clone, Default)]
pub struct Settled {
    frozen: Arc<[(ReservationId, ReservationOutcome)]>,
    recent: BTreeMap<ReservationId, ReservationOutcome>,
}

impl Settled {
    /// Takes a list sorted by id without repeats, as [`Settled::iter`] gives it, and
    /// searches it in place; refuses one out of order.
    pub fn from_sorted(
        sorted: Vec<(ReservationId, ReservationOutcome)>,
    ) -> Result<Self, StateError> {
        if let Some(pair) = sorted.windows(2).find(|pair| pair[0].0 >= pair[1].0) {
            return Err(StateError::SettledOutOfOrder(pair[1].0));
        }
        Ok(Self {
            frozen: sorted.into(),
            recent: BTreeMap::new(),
        })
    }

    /// How the reservation ended, if it did.
    pub fn get(&self, id: &ReservationId) -> Option<&ReservationOutcome> {
        self.recent.get(id).or_else(|| {
            self.frozen
                .binary_search_by(|(stored, _)| stored.cmp(id))
                .ok()
                .map(|at| &self.frozen[at].1)
        })
    }

    /// Records how a reservation ended.
    pub fn insert(&mut self, id: ReservationId, outcome: ReservationOutcome) {
        self.recent.insert(id, outcome);
    }

    /// How many reservations are settled.
    pub fn len(&self) -> usize {
        let overlap = self
            .recent
            .keys()
            .filter(|id| self.frozen.binary_search_by(|(s, _)| s.cmp(id)).is_ok())
            .count();
        self.frozen.len() + self.recent.len() - overlap
    }

    pub fn is_empty(&self) -> bool {
        self.frozen.is_empty() && self.recent.is_empty()
    }

    /// Every settled reservation, in id order.
    pub fn iter(&self) -> impl Iterator<Item = (&ReservationId, &ReservationOutcome)> + '_ {
        let mut frozen = self.frozen.iter().map(|(id, o)| (id, o)).peekable();
        let mut recent = self.recent.iter().peekable();
        std::iter::from_fn(move || match (frozen.peek(), recent.peek()) {
            (Some(f), Some(r)) if f.0 < r.0 => frozen.next(),
            (Some(f), Some(r)) if f.0 == r.0 => {
                // Settled again since the snapshot: the newer outcome.
                frozen.next();
                recent.next()
            }
            (_, Some(_)) => recent.next(),
            (Some(_), None) => frozen.next(),
            (None, None) => None,
        })
    }
}

impl<'s> IntoIterator for &'s Settled {
    type Item = (&'s ReservationId, &'s ReservationOutcome);
    type IntoIter = Box<dyn Iterator<Item = Self::Item> + 's>;

    fn into_iter(self) -> Self::IntoIter {
        Box::new(self.iter())
    }
}

impl FromIterator<(ReservationId, ReservationOutcome)> for Settled {
    fn from_iter<I: IntoIterator<Item = (ReservationId, ReservationOutcome)>>(iter: I) -> Self {
        Self {
            frozen: Arc::from([]),
            recent: iter.into_iter().collect(),
        }
    }
}

/// Two are equal when they hold the same reservations with the same outcomes,
/// however they were built.
impl PartialEq for Settled {
    fn eq(&self, other: &Self) -> bool {
        self.iter().eq(other.iter())
    }
}

impl Eq for Settled {}

/// Why stored parts do not make a ledger state.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StateError {
    #[error("reservation {0} is both open and settled")]
    OpenAndSettled(ReservationId),
    #[error("settled reservation {0} is out of order or repeated")]
    SettledOutOfOrder(ReservationId),
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
