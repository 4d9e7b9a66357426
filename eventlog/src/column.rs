//! Column conversions both stores share: positions and versions are `u64` in the
//! API and `BIGINT` in the databases, and a value that does not fit is an encode or
//! decode error naming its column.

use sqlx::error::BoxDynError;

pub(crate) fn to_u64(value: i64, column: &str) -> Result<u64, sqlx::Error> {
    u64::try_from(value).map_err(|e| decode_error(column, e))
}

pub(crate) fn to_i64(value: u64) -> Result<i64, sqlx::Error> {
    i64::try_from(value).map_err(encode_error)
}

/// Positions and versions past `i64::MAX` cannot exist, so asking for what comes
/// after one is asking for nothing; clamping keeps that answer without an error.
pub(crate) fn saturating_i64(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

pub(crate) fn decode_error(column: &str, source: impl Into<BoxDynError>) -> sqlx::Error {
    sqlx::Error::ColumnDecode {
        index: column.to_owned(),
        source: source.into(),
    }
}

pub(crate) fn encode_error(source: impl Into<BoxDynError>) -> sqlx::Error {
    sqlx::Error::Encode(source.into())
}
