//! The client side of the public protocol, kept small on purpose: a
//! keep-alive HTTP/1.1 connection (enough for the JSON API: guest log-in,
//! rooms, history, posting) and the WebSocket connect with the session
//! cookie. Either can start from a chosen local address (`…_from`), so a
//! generator spread over 127.0.0.0/8 is not bound by one address's ports.

use std::io;
use std::net::{IpAddr, SocketAddr};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::{WebSocketStream, client_async_with_config};

pub type Ws = WebSocketStream<TcpStream>;

/// Largest response header block accepted.
const MAX_HEAD: usize = 64 * 1024;

/// One response: status, the session cookie if one was set, the body.
pub struct Response {
    pub status: u16,
    pub cookie: Option<String>,
    pub body: Vec<u8>,
}

/// A keep-alive HTTP/1.1 connection (one request at a time).
pub struct HttpConn {
    stream: TcpStream,
    host: String,
    buf: Vec<u8>,
    /// `name=value` sent as `Cookie` with every request, once known.
    pub cookie: Option<String>,
}

impl HttpConn {
    pub async fn connect(addr: SocketAddr) -> io::Result<Self> {
        Self::connect_from(addr, None).await
    }

    /// [`connect`](Self::connect) from `source` (any free port of it).
    pub async fn connect_from(addr: SocketAddr, source: Option<IpAddr>) -> io::Result<Self> {
        let stream = tcp_connect(addr, source).await?;
        stream.set_nodelay(true)?;
        Ok(Self { stream, host: addr.to_string(), buf: Vec::with_capacity(4096), cookie: None })
    }

    pub async fn get(&mut self, path: &str) -> io::Result<Response> {
        self.request("GET", path, None).await
    }

    pub async fn post_json(&mut self, path: &str, body: &str) -> io::Result<Response> {
        self.request("POST", path, Some(body)).await
    }

    async fn request(&mut self, method: &str, path: &str, body: Option<&str>) -> io::Result<Response> {
        let mut req = format!("{method} {path} HTTP/1.1\r\nHost: {}\r\n", self.host);
        if let Some(cookie) = &self.cookie {
            req.push_str(&format!("Cookie: {cookie}\r\n"));
        }
        if let Some(body) = body {
            req.push_str(&format!("Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}", body.len()));
        } else {
            req.push_str("\r\n");
        }
        self.stream.write_all(req.as_bytes()).await?;
        let response = self.read_response().await?;
        if let Some(cookie) = &response.cookie {
            self.cookie = Some(cookie.clone());
        }
        Ok(response)
    }

    /// Reads one response with a `Content-Length` body.
    async fn read_response(&mut self) -> io::Result<Response> {
        let head_end = loop {
            if let Some(i) = find(&self.buf, b"\r\n\r\n") {
                break i + 4;
            }
            if self.buf.len() > MAX_HEAD {
                return Err(bad("response head too large"));
            }
            self.fill().await?;
        };
        let head = std::str::from_utf8(&self.buf[..head_end]).map_err(|_| bad("non-UTF-8 response head"))?;
        let status = head.split(' ').nth(1).and_then(|s| s.parse().ok()).ok_or_else(|| bad("no status"))?;
        let mut length = 0usize;
        let mut cookie = None;
        for line in head.split("\r\n").skip(1) {
            let Some((name, value)) = line.split_once(':') else { continue };
            let value = value.trim();
            if name.eq_ignore_ascii_case("content-length") {
                length = value.parse().map_err(|_| bad("bad content-length"))?;
            } else if name.eq_ignore_ascii_case("set-cookie") && cookie.is_none() {
                cookie = value.split(';').next().map(str::to_string).filter(|c| !c.ends_with('='));
            } else if name.eq_ignore_ascii_case("transfer-encoding") {
                return Err(bad("chunked responses are not supported by this small client"));
            }
        }
        while self.buf.len() < head_end + length {
            self.fill().await?;
        }
        let body = self.buf[head_end..head_end + length].to_vec();
        self.buf.drain(..head_end + length);
        Ok(Response { status, cookie, body })
    }

    async fn fill(&mut self) -> io::Result<()> {
        let n = self.stream.read_buf(&mut self.buf).await?;
        if n == 0 {
            return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "connection closed"));
        }
        Ok(())
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

fn bad(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what.to_string())
}

/// Connects to `addr`, from a free port of `source` when one is given
/// (bound before connecting).
pub async fn tcp_connect(addr: SocketAddr, source: Option<IpAddr>) -> io::Result<TcpStream> {
    let Some(source) = source else { return TcpStream::connect(addr).await };
    let socket = if source.is_ipv4() { TcpSocket::new_v4()? } else { TcpSocket::new_v6()? };
    socket.bind(SocketAddr::new(source, 0))?;
    socket.connect(addr).await
}

/// Logs in as a guest; returns the session cookie (`name=value`).
pub async fn guest_login(addr: SocketAddr, username: &str) -> Result<(HttpConn, String), String> {
    guest_login_from(addr, None, username).await
}

/// [`guest_login`] over a connection from `source`.
pub async fn guest_login_from(addr: SocketAddr, source: Option<IpAddr>, username: &str) -> Result<(HttpConn, String), String> {
    let mut conn = HttpConn::connect_from(addr, source).await.map_err(|e| format!("connect: {e}"))?;
    let body = serde_json::json!({ "username": username }).to_string();
    let res = conn.post_json("/api/guest", &body).await.map_err(|e| format!("POST /api/guest: {e}"))?;
    match (res.status, res.cookie) {
        (200, Some(cookie)) => Ok((conn, cookie)),
        (status, _) => Err(format!("POST /api/guest as {username}: HTTP {status} {}", String::from_utf8_lossy(&res.body))),
    }
}

/// Creates a room (an existing one is fine).
pub async fn create_room(conn: &mut HttpConn, name: &str) -> Result<(), String> {
    let body = serde_json::json!({ "name": name }).to_string();
    let res = conn.post_json("/api/rooms", &body).await.map_err(|e| format!("POST /api/rooms: {e}"))?;
    match res.status {
        201 | 409 => Ok(()),
        s => Err(format!("POST /api/rooms {name}: HTTP {s} {}", String::from_utf8_lossy(&res.body))),
    }
}

/// Socket settings for the generator's clients: small buffers so 10,000 of
/// them fit, large enough not to cost extra reads under load.
pub fn client_config(read_buffer: usize) -> WebSocketConfig {
    WebSocketConfig::default().read_buffer_size(read_buffer).max_write_buffer_size(16 << 20)
}

/// Opens `ws://addr/ws`, with the session cookie when there is one, with
/// `TCP_NODELAY` set on the generator's side.
pub async fn ws_connect(addr: SocketAddr, cookie: Option<&str>, read_buffer: usize) -> Result<Ws, String> {
    ws_connect_with(addr, cookie, read_buffer, true).await
}

/// [`ws_connect`], choosing whether the generator's socket sets
/// `TCP_NODELAY`. Without it the socket is what an ordinary client (a
/// browser, a small script) may well have: Nagle's algorithm on, and the
/// kernel's delayed ACKs for what it receives.
pub async fn ws_connect_with(addr: SocketAddr, cookie: Option<&str>, read_buffer: usize, nodelay: bool) -> Result<Ws, String> {
    ws_connect_from(addr, None, cookie, read_buffer, nodelay).await
}

/// [`ws_connect_with`] from a free port of `source`, when one is given.
pub async fn ws_connect_from(
    addr: SocketAddr,
    source: Option<IpAddr>,
    cookie: Option<&str>,
    read_buffer: usize,
    nodelay: bool,
) -> Result<Ws, String> {
    let tcp = tcp_connect(addr, source).await.map_err(|e| format!("connect: {e}"))?;
    tcp.set_nodelay(nodelay).map_err(|e| e.to_string())?;
    let mut request = format!("ws://{addr}/ws").into_client_request().map_err(|e| e.to_string())?;
    if let Some(cookie) = cookie {
        let value = HeaderValue::from_str(cookie).map_err(|e| e.to_string())?;
        request.headers_mut().insert("cookie", value);
    }
    let (ws, _) = client_async_with_config(request, tcp, Some(client_config(read_buffer)))
        .await
        .map_err(|e| format!("WebSocket handshake: {e}"))?;
    Ok(ws)
}

/// Sends `join` for `room` and waits for `joined` (an error frame or the
/// socket's end is an error).
pub async fn join(ws: &mut Ws, room: &str) -> Result<(), String> {
    use futures::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    let join = serde_json::json!({ "type": "join", "room": room }).to_string();
    ws.send(Message::Text(join.into())).await.map_err(|e| e.to_string())?;
    while let Some(frame) = ws.next().await {
        match frame.map_err(|e| e.to_string())? {
            Message::Text(t) if t.starts_with(r#"{"type":"joined""#) => return Ok(()),
            Message::Text(t) if t.starts_with(r#"{"type":"error""#) => return Err(format!("join: {t}")),
            _ => {}
        }
    }
    Err("closed before joining".into())
}
