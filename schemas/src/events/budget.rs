//! Stored shapes of the budget ledger's events, one DTO per `(type, version)`.
//!
//! Money is an integer number of micro-USD in fields named `*_micros`, so no reader ever
//! meets a float. Each DTO converts to the domain event through the domain's checked
//! constructors, so a negative amount or a malformed period in the log is reported as
//! an invalid value instead of slipping into a projection.

use chrono::{DateTime, Utc};
use domain::ReservationId;
use domain::budget::Event;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::{DomainEvent, Encoded, encoded, micros, period};
use crate::registry::{Failure, Latest, Version};

const LIMITS_SET: &str = "budget.limits_set";
const RESERVED: &str = "budget.reserved";
const COMMITTED: &str = "budget.committed";
const OVERRUN: &str = "budget.overrun";
const RELEASED: &str = "budget.released";
const EXPIRED: &str = "budget.expired";
const THRESHOLD_CROSSED: &str = "budget.threshold_crossed";

pub(super) fn encode(event: &Event) -> Encoded {
    match event {
        Event::LimitsSet {
            soft,
            hard,
            alert_thresholds_pct,
            inherited_from,
        } => encoded(BudgetLimitsSetV1 {
            soft_limit_micros: soft.get(),
            hard_limit_micros: hard.get(),
            alert_thresholds_pct: alert_thresholds_pct.clone(),
            inherited_from: inherited_from.map(|p| p.to_string()),
        }),
        Event::Reserved {
            reservation_id,
            amount,
            purpose,
            expires_at,
        } => encoded(BudgetReservedV1 {
            reservation_id: reservation_id.as_uuid(),
            amount_micros: amount.get(),
            purpose: purpose.clone(),
            expires_at: *expires_at,
        }),
        Event::Committed {
            reservation_id,
            reserved,
            actual,
        } => encoded(BudgetCommittedV1 {
            reservation_id: reservation_id.as_uuid(),
            reserved_micros: reserved.get(),
            actual_micros: actual.get(),
        }),
        Event::Overrun {
            reservation_id,
            reserved,
            actual,
            overrun,
        } => encoded(BudgetOverrunV1 {
            reservation_id: reservation_id.as_uuid(),
            reserved_micros: reserved.get(),
            actual_micros: actual.get(),
            overrun_micros: overrun.get(),
        }),
        Event::Released {
            reservation_id,
            amount,
        } => encoded(BudgetReleasedV1 {
            reservation_id: reservation_id.as_uuid(),
            amount_micros: amount.get(),
        }),
        Event::Expired {
            reservation_id,
            amount,
            expired_at,
        } => encoded(BudgetExpiredV1 {
            reservation_id: reservation_id.as_uuid(),
            amount_micros: amount.get(),
            expired_at: *expired_at,
        }),
        Event::ThresholdCrossed {
            threshold_pct,
            committed,
            hard,
        } => encoded(BudgetThresholdCrossedV1 {
            threshold_pct: *threshold_pct,
            committed_micros: committed.get(),
            hard_limit_micros: hard.get(),
        }),
    }
}

/// `budget.limits_set` v1: the month's spending limits were set.
#[derive(Debug, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct BudgetLimitsSetV1 {
    /// Soft limit in micro-USD (1 USD = 1,000,000). Above it, non-core work is degraded.
    #[schemars(range(min = 0))]
    pub soft_limit_micros: i64,
    /// Hard limit in micro-USD. Committed plus reserved spend never exceeds it.
    #[schemars(range(min = 0))]
    pub hard_limit_micros: i64,
    /// Percentages of the hard limit at which committed spend raises an alert.
    pub alert_thresholds_pct: Vec<u8>,
    /// The month (`YYYY-MM`) these limits were carried over from; absent when they were
    /// set for this month directly.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schemars(pattern(r"^[0-9]{4}-(0[1-9]|1[0-2])$"))]
    pub inherited_from: Option<String>,
}

impl Version for BudgetLimitsSetV1 {
    const EVENT_TYPE: &'static str = LIMITS_SET;
    const VERSION: u32 = 1;
}

impl Latest for BudgetLimitsSetV1 {
    fn into_domain(self) -> Result<DomainEvent, Failure> {
        Ok(DomainEvent::Budget(Event::LimitsSet {
            soft: micros("soft_limit_micros", self.soft_limit_micros)?,
            hard: micros("hard_limit_micros", self.hard_limit_micros)?,
            alert_thresholds_pct: self.alert_thresholds_pct,
            inherited_from: self
                .inherited_from
                .as_deref()
                .map(|raw| period("inherited_from", raw))
                .transpose()?,
        }))
    }
}

/// `budget.reserved` v1: an amount was held for work about to be done.
#[derive(Debug, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct BudgetReservedV1 {
    /// The reservation.
    pub reservation_id: Uuid,
    /// The amount held, in micro-USD.
    #[schemars(range(min = 0))]
    pub amount_micros: i64,
    /// What the money is for.
    pub purpose: String,
    /// When the hold expires by itself (RFC 3339, UTC).
    pub expires_at: DateTime<Utc>,
}

impl Version for BudgetReservedV1 {
    const EVENT_TYPE: &'static str = RESERVED;
    const VERSION: u32 = 1;
}

impl Latest for BudgetReservedV1 {
    fn into_domain(self) -> Result<DomainEvent, Failure> {
        Ok(DomainEvent::Budget(Event::Reserved {
            reservation_id: ReservationId::from_uuid(self.reservation_id),
            amount: micros("amount_micros", self.amount_micros)?,
            purpose: self.purpose,
            expires_at: self.expires_at,
        }))
    }
}

/// `budget.committed` v1: a reservation was settled at the amount actually spent.
#[derive(Debug, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct BudgetCommittedV1 {
    /// The reservation.
    pub reservation_id: Uuid,
    /// What the reservation still held when it was committed, in micro-USD (zero when it
    /// had already expired).
    #[schemars(range(min = 0))]
    pub reserved_micros: i64,
    /// What the work actually cost, in micro-USD.
    #[schemars(range(min = 0))]
    pub actual_micros: i64,
}

impl Version for BudgetCommittedV1 {
    const EVENT_TYPE: &'static str = COMMITTED;
    const VERSION: u32 = 1;
}

impl Latest for BudgetCommittedV1 {
    fn into_domain(self) -> Result<DomainEvent, Failure> {
        Ok(DomainEvent::Budget(Event::Committed {
            reservation_id: ReservationId::from_uuid(self.reservation_id),
            reserved: micros("reserved_micros", self.reserved_micros)?,
            actual: micros("actual_micros", self.actual_micros)?,
        }))
    }
}

/// `budget.overrun` v1: a commit cost more than its reservation held.
#[derive(Debug, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct BudgetOverrunV1 {
    /// The reservation.
    pub reservation_id: Uuid,
    /// What the reservation held, in micro-USD.
    #[schemars(range(min = 0))]
    pub reserved_micros: i64,
    /// What the work actually cost, in micro-USD.
    #[schemars(range(min = 0))]
    pub actual_micros: i64,
    /// `actual_micros - reserved_micros`.
    #[schemars(range(min = 0))]
    pub overrun_micros: i64,
}

impl Version for BudgetOverrunV1 {
    const EVENT_TYPE: &'static str = OVERRUN;
    const VERSION: u32 = 1;
}

impl Latest for BudgetOverrunV1 {
    fn into_domain(self) -> Result<DomainEvent, Failure> {
        Ok(DomainEvent::Budget(Event::Overrun {
            reservation_id: ReservationId::from_uuid(self.reservation_id),
            reserved: micros("reserved_micros", self.reserved_micros)?,
            actual: micros("actual_micros", self.actual_micros)?,
            overrun: micros("overrun_micros", self.overrun_micros)?,
        }))
    }
}

/// `budget.released` v1: a reservation was given back unused.
#[derive(Debug, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct BudgetReleasedV1 {
    /// The reservation.
    pub reservation_id: Uuid,
    /// The amount freed, in micro-USD.
    #[schemars(range(min = 0))]
    pub amount_micros: i64,
}

impl Version for BudgetReleasedV1 {
    const EVENT_TYPE: &'static str = RELEASED;
    const VERSION: u32 = 1;
}

impl Latest for BudgetReleasedV1 {
    fn into_domain(self) -> Result<DomainEvent, Failure> {
        Ok(DomainEvent::Budget(Event::Released {
            reservation_id: ReservationId::from_uuid(self.reservation_id),
            amount: micros("amount_micros", self.amount_micros)?,
        }))
    }
}

/// `budget.expired` v1: a reservation outlived its ttl and its amount was freed.
#[derive(Debug, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct BudgetExpiredV1 {
    /// The reservation.
    pub reservation_id: Uuid,
    /// The amount freed, in micro-USD.
    #[schemars(range(min = 0))]
    pub amount_micros: i64,
    /// When the reservation expired (RFC 3339, UTC).
    pub expired_at: DateTime<Utc>,
}

impl Version for BudgetExpiredV1 {
    const EVENT_TYPE: &'static str = EXPIRED;
    const VERSION: u32 = 1;
}

impl Latest for BudgetExpiredV1 {
    fn into_domain(self) -> Result<DomainEvent, Failure> {
        Ok(DomainEvent::Budget(Event::Expired {
            reservation_id: ReservationId::from_uuid(self.reservation_id),
            amount: micros("amount_micros", self.amount_micros)?,
            expired_at: self.expired_at,
        }))
    }
}

/// `budget.threshold_crossed` v1: committed spend reached an alert threshold.
#[derive(Debug, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct BudgetThresholdCrossedV1 {
    /// The threshold reached, in percent of the hard limit.
    pub threshold_pct: u8,
    /// Committed spend when it was reached, in micro-USD.
    #[schemars(range(min = 0))]
    pub committed_micros: i64,
    /// The hard limit at that time, in micro-USD.
    #[schemars(range(min = 0))]
    pub hard_limit_micros: i64,
}

impl Version for BudgetThresholdCrossedV1 {
    const EVENT_TYPE: &'static str = THRESHOLD_CROSSED;
    const VERSION: u32 = 1;
}

impl Latest for BudgetThresholdCrossedV1 {
    fn into_domain(self) -> Result<DomainEvent, Failure> {
        Ok(DomainEvent::Budget(Event::ThresholdCrossed {
            threshold_pct: self.threshold_pct,
            committed: micros("committed_micros", self.committed_micros)?,
            hard: micros("hard_limit_micros", self.hard_limit_micros)?,
        }))
    }
}
