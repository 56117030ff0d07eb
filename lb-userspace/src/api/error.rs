//! API errors in each service's own wire format, so the stock clients print them: Octavia
//! `{"faultstring"}`, Barbican `{"code","title","description"}`, Keystone `{"error":{...}}`.

use std::marker::PhantomData;

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use crate::store::StoreError;

/// How one service shapes its error bodies.
pub trait Flavor: Send + Sync + 'static {
    fn body(status: StatusCode, message: &str) -> Value;
}

pub struct Octavia;
pub struct Barbican;
pub struct Keystone;

impl Flavor for Octavia {
    fn body(_: StatusCode, message: &str) -> Value {
        json!({"faultcode": "Client", "faultstring": message, "debuginfo": null})
    }
}

impl Flavor for Barbican {
    fn body(status: StatusCode, message: &str) -> Value {
        json!({"code": status.as_u16(), "title": status.canonical_reason().unwrap_or("Error"), "description": message})
    }
}

impl Flavor for Keystone {
    fn body(status: StatusCode, message: &str) -> Value {
        json!({"error": {"code": status.as_u16(), "title": status.canonical_reason().unwrap_or("Error"), "message": message}})
    }
}

/// An error answered as `status` with `message`, in flavor `F`.
pub struct ApiError<F> {
    pub status: StatusCode,
    pub message: String,
    flavor: PhantomData<F>,
}

impl<F> std::fmt::Debug for ApiError<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.status, self.message)
    }
}

impl<F> ApiError<F> {
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        ApiError { status, message: message.into(), flavor: PhantomData }
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }

    pub fn not_found(what: &str, id: &str) -> Self {
        Self::new(StatusCode::NOT_FOUND, format!("{what} {id} not found."))
    }

    pub fn conflict(message: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, message)
    }

    pub fn forbidden() -> Self {
        Self::new(StatusCode::FORBIDDEN, "Policy does not allow this request to be performed.")
    }

    pub fn unauthorized() -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "The request you have made requires authentication.")
    }
}

impl<F> From<StoreError> for ApiError<F> {
    fn from(e: StoreError) -> Self {
        tracing::error!(error = %e, "store failure");
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "internal error: the state store failed; see lbd's log")
    }
}

impl<F: Flavor> IntoResponse for ApiError<F> {
    fn into_response(self) -> Response {
        (self.status, Json(F::body(self.status, &self.message))).into_response()
    }
}

/// Parses a JSON request body, answering malformed input with a 400 that says what is wrong.
pub fn parse_body<T: serde::de::DeserializeOwned, F>(body: &[u8]) -> Result<T, ApiError<F>> {
    serde_json::from_slice(body).map_err(|e| ApiError::bad_request(format!("Invalid input: {e}")))
}
