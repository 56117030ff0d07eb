//! Identity: projects, users with per-project roles (`admin`, `member`, `reader`), PBKDF2
//! password hashes, and the bearer tokens Keystone hands out. Every API route except discovery
//! takes an [`Auth`] extractor.

use std::collections::HashMap;
use std::marker::PhantomData;
use std::sync::{Arc, Mutex};

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use time::OffsetDateTime;

use super::ApiState;
use super::error::{ApiError, Flavor};
use crate::store::seal::random;

/// Who is calling, for one request.
#[derive(Clone, Debug)]
pub struct Principal {
    pub user_id: String,
    pub user_name: String,
    pub project_id: String,
    pub project_name: String,
    pub roles: Vec<String>,
}

impl Principal {
    pub fn is_admin(&self) -> bool {
        self.roles.iter().any(|r| r == "admin")
    }

    /// Members and admins write; readers only read.
    pub fn can_write(&self) -> bool {
        self.roles.iter().any(|r| r == "admin" || r == "member")
    }

    /// Whether an object of `project_id` is visible to this caller.
    pub fn sees(&self, project_id: &str) -> bool {
        self.is_admin() || self.project_id == project_id
    }

    pub fn require_write<F>(&self) -> Result<(), ApiError<F>> {
        if self.can_write() { Ok(()) } else { Err(ApiError::forbidden()) }
    }
}

/// An issued token.
#[derive(Clone, Debug)]
pub struct Token {
    pub principal: Principal,
    pub issued_at: OffsetDateTime,
    pub expires_at: OffsetDateTime,
}

/// Tokens live in memory: a restarted lbd asks clients to authenticate again (clients do so
/// on 401).
#[derive(Default)]
pub struct Tokens(Mutex<HashMap<String, Token>>);

impl Tokens {
    pub fn issue(&self, principal: Principal) -> (String, Token) {
        let id = hex::encode(random::<32>());
        let now = OffsetDateTime::now_utc();
        let token = Token { principal, issued_at: now, expires_at: now + time::Duration::hours(12) };
        let mut map = self.0.lock().unwrap_or_else(|e| e.into_inner());
        map.retain(|_, t| t.expires_at > now);
        map.insert(id.clone(), token.clone());
        (id, token)
    }

    pub fn validate(&self, id: &str) -> Option<Token> {
        let map = self.0.lock().unwrap_or_else(|e| e.into_inner());
        map.get(id).filter(|t| t.expires_at > OffsetDateTime::now_utc()).cloned()
    }
}

/// The authenticated caller, or a 401 in flavor `F`.
pub struct Auth<F>(pub Principal, pub PhantomData<F>);

impl<F: Flavor> FromRequestParts<Arc<ApiState>> for Auth<F> {
    type Rejection = ApiError<F>;

    async fn from_request_parts(parts: &mut Parts, state: &Arc<ApiState>) -> Result<Self, Self::Rejection> {
        let token = parts.headers.get("x-auth-token").and_then(|v| v.to_str().ok()).ok_or_else(ApiError::unauthorized)?;
        let token = state.tokens.validate(token).ok_or_else(ApiError::unauthorized)?;
        Ok(Auth(token.principal, PhantomData))
    }
}

