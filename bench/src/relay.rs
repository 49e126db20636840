//! The baseline: the smallest relay that speaks enough of the protocol for
//! the fan-out scenario. tokio-tungstenite with its default settings, one
//! broadcast channel per room, no persistence, no auth, no history.
//!
//! It is deliberately naive in the way most relays are: every frame is
//! written with its own `send` (one flush, so one syscall, per frame). It
//! does the same per-message work chatroom must do at the least: parse the
//! client's JSON, give the message an id and a time, serialise it once for
//! the room.
//!
//! Two variants run: the *naive* relay keeps tungstenite's default socket
//! settings (a 128 KiB read buffer, which tungstenite zero-fills before
//! every read: it costs CPU as well as memory); the *tuned* relay reads
//! through a small buffer like chatroom's, so the two differ in design
//! only.
//!
//! Run by the benchmark as a child process (`chatroom-bench relay`), so its
//! CPU time and memory are measured like the server's.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use chatroom::model::{Message, now_rfc3339};
use chatroom::protocol::{ClientEvent, ServerEvent};
use futures::{SinkExt, StreamExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::broadcast;
use tokio::sync::broadcast::error::RecvError;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{Message as WsMessage, Utf8Bytes};

/// Events a room's channel keeps for a slow receiver (as in chatroom).
const ROOM_CAPACITY: usize = 4096;

/// The line the benchmark waits for.
pub const LISTENING: &str = "relay is listening on";

struct Room {
    events: broadcast::Sender<Utf8Bytes>,
    /// The last id given; held while broadcasting so ids go out in order.
    last_id: Mutex<u64>,
}

type Rooms = Arc<Mutex<HashMap<String, Arc<Room>>>>;

/// Runs the relay until killed (multi-threaded, like chatroom).
/// `read_buffer`: bytes per socket read buffer (tungstenite's default if
/// `None`).
pub fn run(addr: SocketAddr, read_buffer: Option<usize>) -> Result<(), String> {
    let config = read_buffer.map(|size| WebSocketConfig::default().read_buffer_size(size));
    let runtime = tokio::runtime::Runtime::new().map_err(|e| e.to_string())?;
    runtime.block_on(async move {
        let listener = TcpListener::bind(addr).await.map_err(|e| format!("bind {addr}: {e}"))?;
        let local = listener.local_addr().map_err(|e| e.to_string())?;
        println!("{LISTENING} http://{local}");
        let rooms: Rooms = Arc::default();
        let next_conn = AtomicU64::new(0);
        loop {
            let (tcp, _) = listener.accept().await.map_err(|e| e.to_string())?;
            let _ = tcp.set_nodelay(true);
            let n = next_conn.fetch_add(1, Ordering::Relaxed);
            tokio::spawn(connection(tcp, rooms.clone(), format!("anon{n}"), config));
        }
    })
}

async fn connection(tcp: TcpStream, rooms: Rooms, user: String, config: Option<WebSocketConfig>) {
    let Ok(mut ws) = tokio_tungstenite::accept_async_with_config(tcp, config).await else { return };
    let mut joined: Option<(Arc<Room>, String, broadcast::Receiver<Utf8Bytes>)> = None;
    loop {
        let out = tokio::select! {
            frame = ws.next() => match frame {
                Some(Ok(WsMessage::Text(text))) => on_text(&text, &rooms, &user, &mut joined),
                Some(Ok(_)) => None,
                Some(Err(_)) | None => return,
            },
            event = next_event(&mut joined) => match event {
                Ok(frame) => Some(frame),
                Err(RecvError::Lagged(_)) => None, // a naive relay just drops
                Err(RecvError::Closed) => return,
            },
        };
        if let Some(frame) = out
            && ws.send(WsMessage::Text(frame)).await.is_err()
        {
            return;
        }
    }
}

async fn next_event(joined: &mut Option<(Arc<Room>, String, broadcast::Receiver<Utf8Bytes>)>) -> Result<Utf8Bytes, RecvError> {
    match joined {
        Some((_, _, events)) => events.recv().await,
        None => std::future::pending().await,
    }
}

/// Handles one client frame; returns a direct reply, if any.
fn on_text(
    text: &str,
    rooms: &Rooms,
    user: &str,
    joined: &mut Option<(Arc<Room>, String, broadcast::Receiver<Utf8Bytes>)>,
) -> Option<Utf8Bytes> {
    match serde_json::from_str::<ClientEvent>(text).ok()? {
        ClientEvent::Join { room: name, .. } => {
            let room = room(rooms, &name);
            let events = room.events.subscribe();
            *joined = Some((room, name.clone(), events));
            let reply = ServerEvent::Joined { room: name, history: Vec::new(), online: Vec::new(), has_more: false, seq: 0, read: 0 };
            Some(reply.to_json().into())
        }
        ClientEvent::Send { room: name, text, client_id, .. } => {
            let (room, joined_name, _) = joined.as_ref()?;
            if *joined_name != name {
                return None;
            }
            let mut last_id = room.last_id.lock().expect("room lock");
            *last_id += 1;
            let message = Message { id: *last_id, room: name, user: user.to_string(), text, ts: now_rfc3339(), client_id, ..Message::default() };
            let _ = room.events.send(ServerEvent::Message(message).to_json().into());
            None
        }
        ClientEvent::Leave { .. }
        | ClientEvent::Typing { .. }
        | ClientEvent::Edit { .. }
        | ClientEvent::Delete { .. }
        | ClientEvent::Read { .. }
        | ClientEvent::React { .. } => None,
    }
}

fn room(rooms: &Rooms, name: &str) -> Arc<Room> {
    let mut rooms = rooms.lock().expect("rooms lock");
    rooms
        .entry(name.to_string())
        .or_insert_with(|| Arc::new(Room { events: broadcast::channel(ROOM_CAPACITY).0, last_id: Mutex::new(0) }))
        .clone()
}
