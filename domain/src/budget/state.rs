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

use super::filter::SettledFilter;
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

    /// Whether only the month's settled list, still in the store, can say how
    /// reservation `id` stands: it is not open, and the snapshot's filter may hold it.
    /// Costs nothing once the list is here.
    pub fn needs_settled_list(&self, id: &ReservationId) -> bool {
        !self.settled.is_listed() && !self.open.contains_key(id) && self.settled.get(id).is_err()
    }

    pub fn status(&self) -> BudgetStatus {
        status_of(self.limits.as_ref(), self.committed, self.reserved)
    }

    /// Builds a state from its stored parts (a snapshot), rebuilding what is derived:
    /// `reserved` and the expiry index. Refuses parts no fold of a valid stream can
    /// produce, which is a reservation both open and settled (as far as a filtered
    /// settled set can tell).
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
        // With only a filter of the settled ids, an open id it may hold cannot be
        // checked here; `Settled::list` checks the list against the filter instead.
        if let Some(id) = open
            .keys()
            .find(|id| matches!(settled.get(id), Ok(Some(_))))
        {
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
/// not pay per id to build it. What a snapshot brought is kept in one of two forms
/// (`frozen`, shared, so cloning the state copies none of it): the sorted list itself,
/// searched in place, or only a filter of its ids while the list stays in the store
/// (see [`SettledFilter`]). The ones settled since go into a small map, which a lookup
/// asks first.
///
/// With a filter, a lookup answers only for the ids the filter rules out: for one it
/// may hold, [`Settled::get`] answers [`Unlisted`] until the command side has read the
/// list and handed it to [`Settled::list`].
#[derive(Debug, Clone, Default)]
pub struct Settled {
    frozen: Frozen,
    recent: BTreeMap<ReservationId, ReservationOutcome>,
}

#[derive(Debug, Clone)]
enum Frozen {
    Listed(Arc<[(ReservationId, ReservationOutcome)]>),
    Filtered(Arc<SettledFilter>),
}

impl Default for Frozen {
    fn default() -> Self {
        Frozen::Listed(Arc::from([]))
    }
}

/// A lookup the settled set cannot answer yet: its snapshot's filter may hold the id,
/// and the list is still in the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the settled reservations are not listed yet")]
pub struct Unlisted;

impl Settled {
    /// Takes a list sorted by id without repeats, as [`Settled::iter`] gives it, and
    /// searches it in place; refuses one out of order.
    pub fn from_sorted(
        sorted: Vec<(ReservationId, ReservationOutcome)>,
    ) -> Result<Self, StateError> {
        check_sorted(&sorted)?;
        Ok(Self {
            frozen: Frozen::Listed(sorted.into()),
            recent: BTreeMap::new(),
        })
    }

    /// A settled set known only by a filter of its ids; the list stays in the store
    /// until [`Settled::list`] gets it.
    pub fn filtered(filter: SettledFilter) -> Self {
        Self {
            frozen: Frozen::Filtered(Arc::new(filter)),
            recent: BTreeMap::new(),
        }
    }

    /// Hands a filtered set its list: the sorted ids the filter was built from, as
    /// [`Settled::from_sorted`] takes them. Refuses a list out of order, of another
    /// length than the filter's, or with an id the filter does not hold, since that
    /// list is not the one the filter came from. A listed set keeps its own list.
    pub fn list(
        &mut self,
        sorted: Vec<(ReservationId, ReservationOutcome)>,
    ) -> Result<(), StateError> {
        let Frozen::Filtered(filter) = &self.frozen else {
            return Ok(());
        };
        check_sorted(&sorted)?;
        if sorted.len() as u64 != filter.count() {
            return Err(StateError::ListNotFiltered {
                listed: sorted.len() as u64,
                filtered: filter.count(),
            });
        }
        if let Some((id, _)) = sorted.iter().find(|(id, _)| !filter.may_contain(id)) {
            return Err(StateError::NotInFilter(*id));
        }
        self.frozen = Frozen::Listed(sorted.into());
        Ok(())
    }

    /// Whether no reservation is settled.
    pub fn is_empty(&self) -> bool {
        let frozen_empty = match &self.frozen {
            Frozen::Listed(list) => list.is_empty(),
            Frozen::Filtered(filter) => filter.count() == 0,
        };
        frozen_empty && self.recent.is_empty()
    }

    /// Whether every lookup answers: the list is here, not only its filter.
    pub fn is_listed(&self) -> bool {
        matches!(self.frozen, Frozen::Listed(_))
    }

    /// How the reservation ended, if it did; [`Unlisted`] when only the list, which
    /// is still in the store, can tell.
    pub fn get(&self, id: &ReservationId) -> Result<Option<&ReservationOutcome>, Unlisted> {
        if let Some(outcome) = self.recent.get(id) {
            return Ok(Some(outcome));
        }
        match &self.frozen {
            Frozen::Listed(list) => Ok(list
                .binary_search_by(|(stored, _)| stored.cmp(id))
                .ok()
                .map(|at| &list[at].1)),
            Frozen::Filtered(filter) if filter.may_contain(id) => Err(Unlisted),
            Frozen::Filtered(_) => Ok(None),
        }
    }

    /// Records how a reservation ended.
    pub fn insert(&mut self, id: ReservationId, outcome: ReservationOutcome) {
        self.recent.insert(id, outcome);
    }

    /// Every settled reservation, in id order; [`Unlisted`] while only a filter of
    /// the snapshot's ids is here.
    pub fn iter(
        &self,
    ) -> Result<impl Iterator<Item = (&ReservationId, &ReservationOutcome)> + '_, Unlisted> {
        let Frozen::Listed(list) = &self.frozen else {
            return Err(Unlisted);
        };
        let mut frozen = list.iter().map(|(id, o)| (id, o)).peekable();
        let mut recent = self.recent.iter().peekable();
        Ok(std::iter::from_fn(move || {
            match (frozen.peek(), recent.peek()) {
                (Some(f), Some(r)) if f.0 < r.0 => frozen.next(),
                (Some(f), Some(r)) if f.0 == r.0 => {
                    // Settled again since the snapshot: the newer outcome.
                    frozen.next();
                    recent.next()
                }
                (_, Some(_)) => recent.next(),
                (Some(_), None) => frozen.next(),
                (None, None) => None,
            }
        }))
    }
}

fn check_sorted(sorted: &[(ReservationId, ReservationOutcome)]) -> Result<(), StateError> {
    match sorted.windows(2).find(|pair| pair[0].0 >= pair[1].0) {
        Some(pair) => Err(StateError::SettledOutOfOrder(pair[1].0)),
        None => Ok(()),
    }
}

impl FromIterator<(ReservationId, ReservationOutcome)> for Settled {
    fn from_iter<I: IntoIterator<Item = (ReservationId, ReservationOutcome)>>(iter: I) -> Self {
        Self {
            frozen: Frozen::default(),
            recent: iter.into_iter().collect(),
        }
    }
}

/// Two listed sets are equal when they hold the same reservations with the same
/// outcomes, however they were built; two filtered ones when their filters and what
/// settled since are equal. A listed set never equals a filtered one.
impl PartialEq for Settled {
    fn eq(&self, other: &Self) -> bool {
        if let (Frozen::Filtered(a), Frozen::Filtered(b)) = (&self.frozen, &other.frozen) {
            return a == b && self.recent == other.recent;
        }
        match (self.iter(), other.iter()) {
            (Ok(mine), Ok(theirs)) => mine.eq(theirs),
            _ => false,
        }
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
    #[error("the settled list holds {listed} reservations, its filter {filtered}")]
    ListNotFiltered { listed: u64, filtered: u64 },
    #[error("settled reservation {0} is not in the filter the list should match")]
    NotInFilter(ReservationId),
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
