//! The budget ledger: one stream per tenant per calendar month (UTC).
//!
//! It is a two-phase ledger. Work that will cost money first *reserves* its worst case;
//! when the cost is known it *commits* the actual amount (which may be lower or higher)
//! or *releases* the hold. A reservation that outlives its ttl *expires* and frees its
//! amount. The one invariant: a reservation is admitted only while
//! `committed + reserved + amount <= hard limit`. Because the ledger is a single
//! stream appended with an expected version, that check holds under any concurrency.
//!
//! Actual cost is a fact, not a request: a commit above its reservation is recorded,
//! the overrun is an explicit event, and no new reservation is admitted while the
//! ledger stands above its hard limit.

mod decide;
mod evolve;
mod filter;
mod state;

pub use decide::decide;
pub use evolve::evolve;
pub use filter::{FilterError, SettledFilter};
pub use state::{
    BudgetStatus, Limits, OpenReservation, Parts, PartsRef, ReservationOutcome, Settled, State,
    StateError, Unlisted, status_of,
};

use chrono::{DateTime, TimeDelta, Utc};

use crate::ids::{Micros, Period, ReservationId};

/// Longest time a reservation may be held before it expires by itself.
pub const MAX_TTL: TimeDelta = TimeDelta::days(7);
/// Longest free-text purpose of a reservation, in characters.
pub const MAX_PURPOSE_CHARS: usize = 200;
/// Most alert thresholds a ledger may carry.
pub const MAX_THRESHOLDS: usize = 10;

/// What a caller asks of the budget ledger.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// Sets the month's soft and hard limits and the alert thresholds (percent of the
    /// hard limit, reached by committed spend).
    SetLimits {
        soft: Micros,
        hard: Micros,
        alert_thresholds_pct: Vec<u8>,
    },
    /// Holds `amount` for work about to be done.
    Reserve {
        reservation_id: ReservationId,
        amount: Micros,
        purpose: String,
        ttl: TimeDelta,
    },
    /// Settles a reservation at the amount actually spent.
    Commit {
        reservation_id: ReservationId,
        actual: Micros,
    },
    /// Gives a reservation back unused.
    Release { reservation_id: ReservationId },
    /// Expires every reservation whose ttl has run out (sent by the expiry sweeper).
    ExpireDue,
}

impl Command {
    /// The reservation the command names, if any.
    pub fn reservation_id(&self) -> Option<ReservationId> {
        match self {
            Command::Reserve { reservation_id, .. }
            | Command::Commit { reservation_id, .. }
            | Command::Release { reservation_id } => Some(*reservation_id),
            Command::SetLimits { .. } | Command::ExpireDue => None,
        }
    }
}

/// Whether `decide` needs the month's settled list to answer this command: the state
/// came from a snapshot that carries only a filter of the settled ids, and the
/// reservation the command names is not open and may be among them. The command side
/// then reads the list from the store and hands it to [`Settled::list`] first;
/// otherwise `decide` answers [`Rejection::SettledUnlisted`].
pub fn needs_settled_list(state: &State, command: &Command) -> bool {
    command
        .reservation_id()
        .is_some_and(|id| state.needs_settled_list(&id))
}

/// Facts `decide` needs from outside: the time, and the previous month's limits, which
/// a new month inherits when no limits were set for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ctx {
    pub now: DateTime<Utc>,
    pub period: Period,
    pub inherited_limits: Option<(Period, Limits)>,
}

/// What happened to a budget ledger.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    LimitsSet {
        soft: Micros,
        hard: Micros,
        alert_thresholds_pct: Vec<u8>,
        /// Set when the limits were carried over from an earlier month.
        inherited_from: Option<Period>,
    },
    Reserved {
        reservation_id: ReservationId,
        amount: Micros,
        purpose: String,
        expires_at: DateTime<Utc>,
    },
    Committed {
        reservation_id: ReservationId,
        /// The amount the reservation still held when it was committed (zero when it
        /// had already expired).
        reserved: Micros,
        actual: Micros,
    },
    /// A commit cost more than its reservation held.
    Overrun {
        reservation_id: ReservationId,
        reserved: Micros,
        actual: Micros,
        overrun: Micros,
    },
    Released {
        reservation_id: ReservationId,
        amount: Micros,
    },
    Expired {
        reservation_id: ReservationId,
        amount: Micros,
        expired_at: DateTime<Utc>,
    },
    /// Committed spend reached `threshold_pct` percent of the hard limit.
    ThresholdCrossed {
        threshold_pct: u8,
        committed: Micros,
        hard: Micros,
    },
}

/// Why the ledger refused a command. Each has a stable machine code.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Rejection {
    #[error("the hard limit must be greater than zero")]
    HardLimitZero,
    #[error("the soft limit ({soft}) must not exceed the hard limit ({hard})")]
    SoftAboveHard { soft: Micros, hard: Micros },
    #[error("alert thresholds must be whole percents from 1 to 100, at most {MAX_THRESHOLDS}")]
    BadThresholds,
    #[error("no budget limits are set for this month")]
    NotConfigured,
    #[error("the amount must be greater than zero")]
    AmountZero,
    #[error("the ttl must be between one second and seven days")]
    BadTtl,
    #[error("the purpose must be 1 to {MAX_PURPOSE_CHARS} characters")]
    BadPurpose,
    #[error("reservation {0} already exists")]
    ReservationExists(ReservationId),
    #[error("reserving {requested} exceeds the budget: {available} available")]
    BudgetExceeded {
        requested: Micros,
        available: Micros,
    },
    #[error("reservation {0} was not found")]
    ReservationNotFound(ReservationId),
    #[error("reservation {id} is already {outcome}")]
    AlreadySettled {
        id: ReservationId,
        outcome: ReservationOutcome,
    },
    /// Not a business reason: `decide` was asked about a reservation that only the
    /// month's settled list, still in the store, can answer for (see
    /// [`needs_settled_list`]). The command side never lets it reach a caller.
    #[error("reservation {0} can only be looked up in the settled list, which is not loaded")]
    SettledUnlisted(ReservationId),
}

impl Rejection {
    /// Stable machine-readable code, part of the public API.
    pub fn code(&self) -> &'static str {
        match self {
            Rejection::HardLimitZero => "hard_limit_zero",
            Rejection::SoftAboveHard { .. } => "soft_limit_above_hard_limit",
            Rejection::BadThresholds => "invalid_alert_thresholds",
            Rejection::NotConfigured => "budget_not_configured",
            Rejection::AmountZero => "amount_not_positive",
            Rejection::BadTtl => "invalid_ttl",
            Rejection::BadPurpose => "invalid_purpose",
            Rejection::ReservationExists(_) => "reservation_already_exists",
            Rejection::BudgetExceeded { .. } => "budget_exceeded",
            Rejection::ReservationNotFound(_) => "reservation_not_found",
            Rejection::AlreadySettled { .. } => "reservation_already_settled",
            Rejection::SettledUnlisted(_) => "settled_list_not_loaded",
        }
    }
}
