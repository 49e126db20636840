//! The one error type every part of the server speaks.
//!
//! Each variant has a stable machine-readable `code` (part of the public
//! protocol, see docs/PROTOCOL.md) and an HTTP status. The `http` module
//! turns them into `{"error":{"code","message"}}` responses and the
//! WebSocket connection into `{"type":"error",…}` events; nothing else
//! formats errors for clients.

use thiserror::Error;

use crate::store::StoreError;

#[derive(Debug, Error)]
pub enum ChatError {
    #[error("{0}")]
    InvalidRoomName(String),
    #[error("{0}")]
    InvalidUsername(String),
    #[error("{0}")]
    InvalidText(String),
    #[error("{0}")]
    InvalidEmoji(String),
    #[error("client_id must be 1-64 printable ASCII characters")]
    InvalidClientId,
    #[error("{0}")]
    InvalidJson(String),
    #[error("{0}")]
    BadRequest(String),
    #[error("no room named '{0}'")]
    RoomNotFound(String),
    #[error("no message {0} in this room")]
    MessageNotFound(u64),
    #[error("{0}")]
    Forbidden(String),
    #[error("a room named '{0}' already exists")]
    RoomExists(String),
    #[error("the name '{0}' is taken")]
    NameTaken(String),
    #[error("no user named '{0}'")]
    UserNotFound(String),
    #[error("{0}")]
    NoMembers(String),
    #[error("you are not logged in")]
    Unauthorized,
    #[error("this request's Origin is not allowed")]
    ForbiddenOrigin,
    #[error("this server does not answer to the host name {0:?}; set --public-url to the address users open")]
    ForbiddenHost(String),
    #[error("guest access is turned off on this server; sign up or log in")]
    GuestsDisabled,
    #[error("wrong username or password")]
    BadCredentials,
    #[error("{0}")]
    WeakPassword(String),
    #[error("too many attempts; try again in {retry_after_secs} s")]
    TooManyAttempts { retry_after_secs: u64 },
    #[error("one connection may join at most {0} rooms; leave one first")]
    TooManyRooms(usize),
    #[error("you are sending too fast; slow down")]
    RateLimited,
    #[error("too many at once; try again in {retry_after_secs} s")]
    RateLimitedFor { retry_after_secs: u64 },
    #[error("the server is busy; try again shortly")]
    Busy,
    #[error("the server has too many connections open; try again shortly")]
    ServerFull,
    #[error("too many connections from your address (at most {0}); close one first")]
    TooManyConnections(usize),
    #[error("join the room '{0}' first")]
    NotJoined(String),
    #[error("requests must be JSON (Content-Type: application/json)")]
    UnsupportedMediaType,
    #[error("the request body is too large")]
    PayloadTooLarge,
    #[error("not found")]
    NotFound,
    /// The store failed (see [`StoreError`]); a conflict it reports
    /// becomes its own variant instead (`From<StoreError>`).
    #[error("storage failed: {0}")]
    Storage(StoreError),
    #[error("internal error: {0}")]
    Internal(String),
}

impl ChatError {
    /// The stable code clients branch on.
    pub fn code(&self) -> &'static str {
        match self {
            Self::InvalidRoomName(_) => "invalid_room_name",
            Self::InvalidUsername(_) => "invalid_username",
            Self::InvalidText(_) => "invalid_text",
            Self::InvalidEmoji(_) => "invalid_emoji",
            Self::InvalidClientId => "invalid_client_id",
            Self::InvalidJson(_) => "invalid_json",
            Self::BadRequest(_) => "bad_request",
            Self::RoomNotFound(_) => "room_not_found",
            Self::MessageNotFound(_) => "not_found",
            Self::Forbidden(_) => "forbidden",
            Self::RoomExists(_) => "room_exists",
            Self::NameTaken(_) => "name_taken",
            Self::UserNotFound(_) => "user_not_found",
            Self::NoMembers(_) => "no_members",
            Self::Unauthorized => "unauthorized",
            Self::ForbiddenOrigin => "forbidden_origin",
            Self::ForbiddenHost(_) => "forbidden_host",
            Self::GuestsDisabled => "guests_disabled",
            Self::BadCredentials => "bad_credentials",
            Self::WeakPassword(_) => "weak_password",
            Self::TooManyAttempts { .. } => "too_many_attempts",
            Self::TooManyRooms(_) => "too_many_rooms",
            Self::RateLimited | Self::RateLimitedFor { .. } => "rate_limited",
            Self::Busy => "busy",
            Self::ServerFull => "server_full",
            Self::TooManyConnections(_) => "too_many_connections",
            Self::NotJoined(_) => "not_joined",
            Self::UnsupportedMediaType => "unsupported_media_type",
            Self::PayloadTooLarge => "payload_too_large",
            Self::NotFound => "not_found",
            Self::Storage(StoreError::Unavailable(_)) => "store_unavailable",
            Self::Storage(failure) if failure.is_disk_full() => "storage_full",
            Self::Storage(_) | Self::Internal(_) => "internal",
        }
    }

    /// The HTTP status that fits this error.
    pub fn http_status(&self) -> u16 {
        match self {
            Self::InvalidRoomName(_)
            | Self::InvalidUsername(_)
            | Self::InvalidText(_)
            | Self::InvalidEmoji(_)
            | Self::InvalidClientId
            | Self::InvalidJson(_)
            | Self::BadRequest(_)
            | Self::WeakPassword(_) => 400,
            Self::Unauthorized | Self::BadCredentials => 401,
            Self::Forbidden(_) | Self::ForbiddenOrigin | Self::ForbiddenHost(_) | Self::GuestsDisabled | Self::NotJoined(_) | Self::TooManyRooms(_) => 403,
            Self::RoomNotFound(_) | Self::NotFound | Self::MessageNotFound(_) | Self::UserNotFound(_) => 404,
            Self::RoomExists(_) | Self::NameTaken(_) | Self::NoMembers(_) => 409,
            Self::PayloadTooLarge => 413,
            Self::UnsupportedMediaType => 415,
            Self::TooManyAttempts { .. } | Self::RateLimited | Self::RateLimitedFor { .. } | Self::TooManyConnections(_) => 429,
            Self::Storage(StoreError::Unavailable(_)) => 503,
            Self::Storage(failure) if failure.is_disk_full() => 507,
            Self::Storage(_) | Self::Internal(_) => 500,
            Self::Busy | Self::ServerFull => 503,
        }
    }

    /// The message shown to the client. Internal failures are not detailed
    /// to clients (they are logged instead).
    pub fn client_message(&self) -> String {
        match self {
            Self::Storage(StoreError::Unavailable(_)) => "storage is unavailable; try again shortly (a resend with the same client_id is never stored twice)".into(),
            Self::Storage(failure) if failure.is_disk_full() => "the server's disk is full: nothing was stored; try again later (a resend with the same client_id is never stored twice)".into(),
            Self::Storage(_) | Self::Internal(_) => "the server failed to do that; it has been logged".into(),
            other => other.to_string(),
        }
    }
}
