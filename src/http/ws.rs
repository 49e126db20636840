//! `GET /ws`: the WebSocket upgrade.
//!
//! warp's own `ws()` filter builds its socket with tungstenite's defaults,
//! which allocate a 128 KiB read buffer per connection. We do the handshake
//! ourselves (the accept key comes from tungstenite) and build the stream
//! with a [`WebSocketConfig`] sized for many mostly idle sockets; the
//! connection logic itself lives in `crate::connection`.

use std::sync::Arc;

use hyper_util::rt::TokioIo;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};
use warp::http::header::{HeaderMap, HeaderValue};
use warp::http::StatusCode;
use warp::hyper::upgrade::OnUpgrade;

use super::State;
use super::reply::{self, HttpResponse};
use crate::auth::sessions::Session;
use crate::connection::{self, ConnectionContext, MAX_FRAME_BYTES};
use crate::error::ChatError;

/// Socket buffers: small reads (client frames are tiny; the buffer grows for
/// a big one), writes gathered up to 16 KiB before a syscall. tungstenite
/// zero-fills the free part of its read buffer each time the socket is
/// polled, even when nothing arrived, so its size is paid for on every
/// event a connection relays, not only in memory.
fn socket_config() -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(1024)
        .write_buffer_size(16 * 1024)
        .max_write_buffer_size(4 * 1024 * 1024)
        .max_message_size(Some(MAX_FRAME_BYTES))
        .max_frame_size(Some(MAX_FRAME_BYTES))
}

/// GET /ws — the session cookie is required; Origin is checked by the route.
pub async fn upgrade(
    state: State,
    session: Option<Arc<Session>>,
    headers: HeaderMap,
    on_upgrade: Option<OnUpgrade>,
) -> Result<HttpResponse, warp::Rejection> {
    let Some(session) = session else {
        return Ok(reply::error(&ChatError::Unauthorized));
    };
    let (Some(key), Some(on_upgrade)) = (websocket_key(&headers), on_upgrade) else {
        let err = ChatError::BadRequest("this is a WebSocket endpoint: send a WebSocket upgrade request".into());
        return Ok(reply::error(&err));
    };
    let accept = derive_accept_key(key.as_bytes());
    state.connections.spawn(serve_socket(state.clone(), session, on_upgrade));
    let mut response = HttpResponse::default();
    *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let h = response.headers_mut();
    h.insert("connection", HeaderValue::from_static("upgrade"));
    h.insert("upgrade", HeaderValue::from_static("websocket"));
    h.insert("sec-websocket-accept", HeaderValue::from_str(&accept).expect("base64 is a valid header"));
    Ok(response)
}

/// The client's key, if this is a well-formed version 13 upgrade request.
fn websocket_key(headers: &HeaderMap) -> Option<String> {
    let has_token = |name: &str, token: &str| {
        headers.get_all(name).iter().filter_map(|v| v.to_str().ok()).any(|v| {
            v.split(',').any(|t| t.trim().eq_ignore_ascii_case(token))
        })
    };
    let version_ok = headers.get("sec-websocket-version").is_some_and(|v| v == "13");
    if !(has_token("connection", "upgrade") && has_token("upgrade", "websocket") && version_ok) {
        return None;
    }
    headers.get("sec-websocket-key")?.to_str().ok().map(str::to_string)
}

async fn serve_socket(state: State, session: Arc<Session>, on_upgrade: OnUpgrade) {
    let upgraded = match on_upgrade.await {
        Ok(upgraded) => upgraded,
        Err(e) => {
            tracing::debug!(error = %e, "WebSocket upgrade failed");
            return;
        }
    };
    let socket = WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Server, Some(socket_config())).await;
    let ctx = ConnectionContext {
        chat: state.chat.clone(),
        session,
        shutdown: state.shutdown.clone(),
        frame_rate: state.config.frame_rate,
        write_timeout: state.config.limits.write_timeout,
        ping_interval: state.config.limits.ping_interval,
    };
    connection::run(socket, ctx).await;
}
