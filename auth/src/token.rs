//! Bearer JWTs: minting, verification and the actix extractor.
//!
//! Tokens are HS256 JWTs carrying `sub`, `tenant_id` and `roles`, with `iss` and `aud`
//! fixed to `tidemark` and a required `exp`. The signing secret is a
//! [`secrecy::SecretString`] so it cannot end up in a log line by accident.

use std::future::{Ready, ready};
use std::str::FromStr;

use actix_web::dev::Payload;
use actix_web::http::StatusCode;
use actix_web::http::header::AUTHORIZATION;
use actix_web::{FromRequest, HttpRequest, web};
use chrono::{DateTime, TimeDelta, Utc};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::problem::Problem;

const ISSUER: &str = "tidemark";
const AUDIENCE: &str = "tidemark";
/// Shortest secret accepted: HS256 with less than 256 bits of key is guessable.
const MIN_SECRET_BYTES: usize = 32;

/// What a caller may do. Each role includes the ones below it:
/// `admin` ⊇ `editor` ⊇ `viewer`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Reads read models.
    Viewer,
    /// Creates and publishes posts, reserves and settles budget.
    Editor,
    /// Sets budget limits; everything an editor may do.
    Admin,
}

impl FromStr for Role {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "viewer" => Ok(Role::Viewer),
            "editor" => Ok(Role::Editor),
            "admin" => Ok(Role::Admin),
            other => Err(format!(
                "unknown role {other:?}: expected admin, editor or viewer"
            )),
        }
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Role::Viewer => "viewer",
            Role::Editor => "editor",
            Role::Admin => "admin",
        })
    }
}

/// The JWT claims Tidemark issues and accepts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    pub sub: String,
    pub tenant_id: Uuid,
    pub roles: Vec<Role>,
    pub iss: String,
    pub aud: String,
    pub iat: i64,
    pub exp: i64,
}

/// A verified caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    pub subject: String,
    pub tenant_id: Uuid,
    pub roles: Vec<Role>,
}

impl Principal {
    /// Succeeds when any of the caller's roles includes `role`.
    pub fn require(&self, role: Role) -> Result<(), AuthError> {
        if self.roles.iter().any(|r| *r >= role) {
            Ok(())
        } else {
            Err(AuthError::Forbidden { needed: role })
        }
    }
}

/// Why a request was not authenticated or not allowed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("the request has no bearer token")]
    Missing,
    #[error("the bearer token is not valid")]
    Invalid,
    #[error("the bearer token has expired")]
    Expired,
    #[error("this needs the {needed} role")]
    Forbidden { needed: Role },
}

impl From<AuthError> for Problem {
    fn from(error: AuthError) -> Self {
        let (status, code) = match error {
            AuthError::Missing => (StatusCode::UNAUTHORIZED, "missing_token"),
            AuthError::Invalid => (StatusCode::UNAUTHORIZED, "invalid_token"),
            AuthError::Expired => (StatusCode::UNAUTHORIZED, "token_expired"),
            AuthError::Forbidden { .. } => (StatusCode::FORBIDDEN, "forbidden"),
        };
        Problem::new(status, code, error.to_string())
    }
}

/// Token settings from configuration.
#[derive(Clone, Deserialize)]
pub struct TokenSettings {
    /// HS256 signing secret, at least 32 bytes.
    pub jwt_secret: SecretString,
}

impl std::fmt::Debug for TokenSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenSettings")
            .field("jwt_secret", &"[redacted]")
            .finish()
    }
}

/// Verifies (and, for the operator command, mints) tokens with one secret.
#[derive(Clone)]
pub struct Authenticator {
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
}

impl std::fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Authenticator { .. }")
    }
}

impl Authenticator {
    /// Builds an authenticator; refuses a secret shorter than 32 bytes.
    pub fn new(secret: &SecretString) -> Result<Self, String> {
        let bytes = secret.expose_secret().as_bytes();
        if bytes.len() < MIN_SECRET_BYTES {
            return Err(format!(
                "the JWT secret must be at least {MIN_SECRET_BYTES} bytes, it has {}",
                bytes.len()
            ));
        }
        let mut validation = Validation::new(Algorithm::HS256);
        validation.set_issuer(&[ISSUER]);
        validation.set_audience(&[AUDIENCE]);
        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        validation.leeway = 30;
        Ok(Self {
            encoding: EncodingKey::from_secret(bytes),
            decoding: DecodingKey::from_secret(bytes),
            validation,
        })
    }

    /// Mints a token for a tenant.
    pub fn mint(
        &self,
        subject: &str,
        tenant_id: Uuid,
        roles: &[Role],
        now: DateTime<Utc>,
        ttl: TimeDelta,
    ) -> Result<String, AuthError> {
        let claims = Claims {
            sub: subject.to_owned(),
            tenant_id,
            roles: roles.to_vec(),
            iss: ISSUER.to_owned(),
            aud: AUDIENCE.to_owned(),
            iat: now.timestamp(),
            exp: (now + ttl).timestamp(),
        };
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.encoding)
            .map_err(|_| AuthError::Invalid)
    }

    /// Verifies a token and returns its caller.
    pub fn verify(&self, token: &str) -> Result<Principal, AuthError> {
        let data = jsonwebtoken::decode::<Claims>(token, &self.decoding, &self.validation)
            .map_err(|e| match e.kind() {
                jsonwebtoken::errors::ErrorKind::ExpiredSignature => AuthError::Expired,
                _ => AuthError::Invalid,
            })?;
        let claims = data.claims;
        if claims.roles.is_empty() || claims.sub.is_empty() {
            return Err(AuthError::Invalid);
        }
        Ok(Principal {
            subject: claims.sub,
            tenant_id: claims.tenant_id,
            roles: claims.roles,
        })
    }

    /// Verifies the `Authorization: Bearer …` header of a request.
    pub fn authenticate(&self, request: &HttpRequest) -> Result<Principal, AuthError> {
        let header = request
            .headers()
            .get(AUTHORIZATION)
            .ok_or(AuthError::Missing)?;
        let value = header.to_str().map_err(|_| AuthError::Invalid)?;
        let token = value
            .strip_prefix("Bearer ")
            .or_else(|| value.strip_prefix("bearer "))
            .ok_or(AuthError::Invalid)?;
        self.verify(token.trim())
    }
}

impl FromRequest for Principal {
    type Error = Problem;
    type Future = Ready<Result<Self, Self::Error>>;

    fn from_request(request: &HttpRequest, _: &mut Payload) -> Self::Future {
        let result = match request.app_data::<web::Data<Authenticator>>() {
            Some(auth) => auth.authenticate(request).map_err(Problem::from),
            None => {
                tracing::error!("no Authenticator registered in the application data");
                Err(Problem::internal())
            }
        };
        ready(result)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn auth() -> Authenticator {
        Authenticator::new(&SecretString::from("a".repeat(32))).expect("secret is long enough")
    }

    #[test]
    fn a_minted_token_verifies_with_its_tenant_and_roles() {
        let tenant = Uuid::now_v7();
        let token = auth()
            .mint(
                "alice",
                tenant,
                &[Role::Editor],
                Utc::now(),
                TimeDelta::hours(1),
            )
            .expect("mint");
        let principal = auth().verify(&token).expect("verify");
        assert_eq!(principal.tenant_id, tenant);
        assert_eq!(principal.roles, vec![Role::Editor]);
        assert_eq!(principal.subject, "alice");
    }

    #[test]
    fn an_expired_token_is_refused_as_expired() {
        let token = auth()
            .mint(
                "a",
                Uuid::now_v7(),
                &[Role::Admin],
                Utc::now() - TimeDelta::hours(2),
                TimeDelta::hours(1),
            )
            .expect("mint");
        assert_eq!(auth().verify(&token), Err(AuthError::Expired));
    }

    #[test]
    fn a_token_signed_with_another_secret_is_invalid() {
        let other = Authenticator::new(&SecretString::from("b".repeat(32))).expect("secret");
        let token = other
            .mint(
                "a",
                Uuid::now_v7(),
                &[Role::Admin],
                Utc::now(),
                TimeDelta::hours(1),
            )
            .expect("mint");
        assert_eq!(auth().verify(&token), Err(AuthError::Invalid));
    }

    #[test]
    fn a_short_secret_is_refused() {
        assert!(Authenticator::new(&SecretString::from("short")).is_err());
    }

    #[test]
    fn roles_include_the_roles_below_them() {
        let p = |roles: Vec<Role>| Principal {
            subject: "s".into(),
            tenant_id: Uuid::nil(),
            roles,
        };
        assert!(p(vec![Role::Admin]).require(Role::Editor).is_ok());
        assert!(p(vec![Role::Editor]).require(Role::Viewer).is_ok());
        assert_eq!(
            p(vec![Role::Viewer]).require(Role::Editor),
            Err(AuthError::Forbidden {
                needed: Role::Editor
            })
        );
        assert!(p(vec![Role::Editor]).require(Role::Admin).is_err());
    }
}
