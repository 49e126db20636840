//! Building responses: JSON bodies, errors, cookies and the headers every
//! response carries.

use serde::Serialize;
use warp::http::header::{HeaderMap, HeaderValue};
use warp::http::StatusCode;
use warp::reply::Reply;

use crate::error::ChatError;

pub type HttpResponse = warp::reply::Response;

/// The name of the session cookie.
pub const SESSION_COOKIE: &str = "chatroom_session";

/// The page policy: only our own scripts, styles and sockets; no framing.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; script-src 'self'; style-src 'self'; \
img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; \
form-action 'self'; object-src 'none'";

/// Headers sent with every response.
pub fn security_headers() -> HeaderMap {
    let mut headers = HeaderMap::new();
    let mut set = |name: &'static str, value: &'static str| {
        headers.insert(name, HeaderValue::from_static(value));
    };
    set("content-security-policy", CONTENT_SECURITY_POLICY);
    set("x-content-type-options", "nosniff");
    set("referrer-policy", "no-referrer");
    set("x-frame-options", "DENY");
    set("cross-origin-opener-policy", "same-origin");
    headers
}

/// `body` as JSON with `status`.
pub fn json<T: Serialize>(status: StatusCode, body: &T) -> HttpResponse {
    warp::reply::with_status(warp::reply::json(body), status).into_response()
}

/// The JSON error body `{"error":{"code","message"}}` with its status.
pub fn error(err: &ChatError) -> HttpResponse {
    if matches!(err, ChatError::Storage(_) | ChatError::Internal(_)) {
        tracing::error!(error = %err, "request failed");
    }
    let status = StatusCode::from_u16(err.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let body = serde_json::json!({ "error": { "code": err.code(), "message": err.client_message() } });
    let mut response = json(status, &body);
    if let ChatError::TooManyAttempts { retry_after_secs } | ChatError::RateLimitedFor { retry_after_secs } = err {
        response.headers_mut().insert("retry-after", HeaderValue::from(*retry_after_secs));
    }
    response
}

/// `Ok` or the error as a response.
pub fn or_error(result: Result<HttpResponse, ChatError>) -> HttpResponse {
    result.unwrap_or_else(|e| error(&e))
}

/// 204 No Content.
pub fn no_content() -> HttpResponse {
    let mut response = HttpResponse::default();
    *response.status_mut() = StatusCode::NO_CONTENT;
    response
}

/// A 302 to `location` (a path on this server).
pub fn redirect(location: &'static str) -> HttpResponse {
    let mut response = HttpResponse::default();
    *response.status_mut() = StatusCode::FOUND;
    response.headers_mut().insert("location", HeaderValue::from_static(location));
    response.headers_mut().insert("cache-control", HeaderValue::from_static("no-store"));
    response
}

/// Adds a `Set-Cookie` that stores a session id for `max_age_secs`.
pub fn set_session_cookie(mut response: HttpResponse, raw_id: &str, max_age_secs: u64, secure: bool) -> HttpResponse {
    let secure = if secure { "; Secure" } else { "" };
    let cookie = format!("{SESSION_COOKIE}={raw_id}; HttpOnly; SameSite=Lax; Path=/; Max-Age={max_age_secs}{secure}");
    if let Ok(value) = HeaderValue::from_str(&cookie) {
        response.headers_mut().append("set-cookie", value);
    }
    response
}

/// Adds a `Set-Cookie` that removes the session cookie.
pub fn clear_session_cookie(mut response: HttpResponse, secure: bool) -> HttpResponse {
    let secure = if secure { "; Secure" } else { "" };
    let cookie = format!("{SESSION_COOKIE}=; HttpOnly; SameSite=Lax; Path=/; Max-Age=0{secure}");
    if let Ok(value) = HeaderValue::from_str(&cookie) {
        response.headers_mut().append("set-cookie", value);
    }
    response
}
