//! Value objects shared by the aggregates.
//!
//! Each is a newtype with a private field and a checked constructor, so an invalid
//! amount, period or stream name cannot exist past the edge that parsed it.

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Datelike, NaiveDate, TimeZone, Utc};
use uuid::Uuid;

/// Why a value could not be built from its raw form.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ValueError {
    #[error("amount must not be negative")]
    NegativeAmount,
    #[error("period must look like YYYY-MM")]
    BadPeriod,
    #[error("channel must be 1 to 64 characters of a-z, 0-9, '-' or '_'")]
    BadChannel,
    #[error("stream name is not a Tidemark stream: {0}")]
    BadStreamName(String),
}

macro_rules! uuid_id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(Uuid);

        impl $name {
            pub const fn from_uuid(id: Uuid) -> Self {
                Self(id)
            }
            pub const fn as_uuid(&self) -> Uuid {
                self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.fmt(f)
            }
        }

        impl FromStr for $name {
            type Err = uuid::Error;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Uuid::parse_str(s).map(Self)
            }
        }
    };
}

uuid_id!(
    /// The tenant every event, stream and row belongs to.
    TenantId
);
uuid_id!(
    /// A budget reservation, chosen by the client or by the server (UUID v7).
    ReservationId
);
uuid_id!(
    /// A post aggregate.
    PostId
);
uuid_id!(
    /// A marketing campaign that posts and AI spend are grouped by.
    CampaignId
);
uuid_id!(
    /// A content generation request.
    GenerationId
);

/// Money as a non-negative whole number of micro-USD (1 USD = 1,000,000).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct Micros(i64);

impl Micros {
    pub const ZERO: Micros = Micros(0);

    pub fn new(value: i64) -> Result<Self, ValueError> {
        if value < 0 {
            Err(ValueError::NegativeAmount)
        } else {
            Ok(Self(value))
        }
    }

    pub const fn get(self) -> i64 {
        self.0
    }

    /// Sum that saturates instead of overflowing: a ledger near `i64::MAX` micro-USD
    /// (9 trillion USD) is not a case worth a panic.
    pub fn saturating_add(self, other: Micros) -> Micros {
        Micros(self.0.saturating_add(other.0))
    }

    /// Difference floored at zero.
    pub fn saturating_sub(self, other: Micros) -> Micros {
        Micros(self.0.saturating_sub(other.0).max(0))
    }
}

impl fmt::Display for Micros {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} micro-USD", self.0)
    }
}

/// A calendar month in UTC, the unit a budget ledger covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Period {
    year: i32,
    month: u32,
}

impl Period {
    pub fn new(year: i32, month: u32) -> Result<Self, ValueError> {
        if (1..=12).contains(&month) && (1970..=9999).contains(&year) {
            Ok(Self { year, month })
        } else {
            Err(ValueError::BadPeriod)
        }
    }

    /// The month that contains `at`.
    pub fn containing(at: DateTime<Utc>) -> Self {
        Self {
            year: at.year(),
            month: at.month(),
        }
    }

    pub fn year(self) -> i32 {
        self.year
    }

    pub fn month(self) -> u32 {
        self.month
    }

    /// The month before this one.
    pub fn previous(self) -> Self {
        if self.month == 1 {
            Self {
                year: self.year - 1,
                month: 12,
            }
        } else {
            Self {
                year: self.year,
                month: self.month - 1,
            }
        }
    }

    /// First instant of the month.
    pub fn start(self) -> DateTime<Utc> {
        let date = NaiveDate::from_ymd_opt(self.year, self.month, 1).unwrap_or(NaiveDate::MIN);
        Utc.from_utc_datetime(&date.and_time(chrono::NaiveTime::MIN))
    }
}

impl fmt::Display for Period {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:04}-{:02}", self.year, self.month)
    }
}

impl FromStr for Period {
    type Err = ValueError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (y, m) = s.split_once('-').ok_or(ValueError::BadPeriod)?;
        // Integer parsing alone would take a sign ("2026-+1"), so the digits are
        // checked first: one month has exactly one spelling.
        let digits =
            |part: &str, len: usize| part.len() == len && part.bytes().all(|b| b.is_ascii_digit());
        if !digits(y, 4) || !digits(m, 2) {
            return Err(ValueError::BadPeriod);
        }
        let year = y.parse().map_err(|_| ValueError::BadPeriod)?;
        let month = m.parse().map_err(|_| ValueError::BadPeriod)?;
        Self::new(year, month)
    }
}

/// A publishing channel slug, for example `linkedin` or `newsletter-eu`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Channel(String);

impl Channel {
    pub fn new(raw: &str) -> Result<Self, ValueError> {
        let ok = !raw.is_empty()
            && raw.len() <= 64
            && raw
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_');
        if ok {
            Ok(Self(raw.to_owned()))
        } else {
            Err(ValueError::BadChannel)
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Channel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The name of an event stream. Every name starts with the tenant, so a stream can
/// never be mistaken for another tenant's: `tenant/<uuid>/budget/2026-11`,
/// `tenant/<uuid>/post/<uuid>`, `tenant/<uuid>/generation/<uuid>`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct StreamName(String);

/// What a stream holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamKind {
    Budget(Period),
    Post(PostId),
    Generation(GenerationId),
}

impl StreamName {
    pub fn budget(tenant: TenantId, period: Period) -> Self {
        Self(format!("tenant/{tenant}/budget/{period}"))
    }

    pub fn post(tenant: TenantId, post: PostId) -> Self {
        Self(format!("tenant/{tenant}/post/{post}"))
    }

    pub fn generation(tenant: TenantId, generation: GenerationId) -> Self {
        Self(format!("tenant/{tenant}/generation/{generation}"))
    }

    /// Parses a stored stream name back into its tenant and kind.
    pub fn parse(raw: &str) -> Result<(TenantId, StreamKind), ValueError> {
        let bad = || ValueError::BadStreamName(raw.to_owned());
        let mut parts = raw.split('/');
        if parts.next() != Some("tenant") {
            return Err(bad());
        }
        let tenant: TenantId = parts.next().ok_or_else(bad)?.parse().map_err(|_| bad())?;
        let kind = match (parts.next(), parts.next(), parts.next()) {
            (Some("budget"), Some(p), None) => StreamKind::Budget(p.parse().map_err(|_| bad())?),
            (Some("post"), Some(p), None) => StreamKind::Post(p.parse().map_err(|_| bad())?),
            (Some("generation"), Some(g), None) => {
                StreamKind::Generation(g.parse().map_err(|_| bad())?)
            }
            _ => return Err(bad()),
        };
        // A UUID has several accepted spellings (upper case, braces, no hyphens).
        // Only the one `budget` and `post` write names a stored stream; accepting
        // another would let two names stand for one tenant's month.
        let canonical = match kind {
            StreamKind::Budget(period) => Self::budget(tenant, period),
            StreamKind::Post(post) => Self::post(tenant, post),
            StreamKind::Generation(generation) => Self::generation(tenant, generation),
        };
        if canonical.as_str() != raw {
            return Err(bad());
        }
        Ok((tenant, kind))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for StreamName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}
