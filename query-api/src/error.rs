//! The query API's one error type and its mapping to problem bodies.

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError};
use auth::{AuthError, Problem};

/// Everything a query can fail with.
#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    #[error(transparent)]
    Auth(#[from] AuthError),
    #[error("invalid query parameters: {0}")]
    BadQuery(String),
    #[error("{0} was not found")]
    NotFound(&'static str),
    #[error("no budget limits are set for {0}")]
    BudgetNotConfigured(String),
    #[error("the read models did not reach position {position} within {waited_ms} ms")]
    ConsistencyTimeout { position: u64, waited_ms: u128 },
    #[error("unexpected failure")]
    Internal(#[from] anyhow::Error),
}

impl QueryError {
    pub fn problem(&self) -> Problem {
        use StatusCode as S;
        let detail = self.to_string();
        match self {
            QueryError::Auth(e) => Problem::from(e.clone()),
            QueryError::BadQuery(_) => Problem::new(S::BAD_REQUEST, "invalid_query", detail),
            QueryError::NotFound(what) => {
                Problem::new(S::NOT_FOUND, &format!("{what}_not_found"), detail)
            }
            QueryError::BudgetNotConfigured(_) => {
                Problem::new(S::NOT_FOUND, "budget_not_configured", detail)
            }
            QueryError::ConsistencyTimeout { .. } => {
                Problem::new(S::SERVICE_UNAVAILABLE, "consistency_timeout", detail).retry_after(1)
            }
            QueryError::Internal(e) => {
                tracing::error!(error = ?e, "query failed unexpectedly");
                Problem::internal()
            }
        }
    }
}

impl From<projector::readmodel::DbError> for QueryError {
    fn from(e: projector::readmodel::DbError) -> Self {
        QueryError::Internal(e.into())
    }
}

impl ResponseError for QueryError {
    fn status_code(&self) -> StatusCode {
        self.problem().status_code()
    }

    fn error_response(&self) -> HttpResponse {
        self.problem().to_response()
    }
}
