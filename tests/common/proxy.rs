//! A TCP proxy the test owns, to take a shared server (PostgreSQL) away
//! from the nodes behind it without touching the server itself: other
//! tests use it at the same time.
//!
//! - [`TcpProxy::stall`]: a network partition. Nothing is forwarded any
//!   more, new connections are accepted and left hanging; the peers see
//!   silence, not an error (their timeouts must notice).
//! - [`TcpProxy::cut`]: every connection is closed and new ones are closed
//!   at once (a crashed server).
//! - [`TcpProxy::restore`]: forwards again. Connections that lived through
//!   a stall or a cut are gone (as after a real partition).

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Open,
    Stalled,
    Cut,
}

pub struct TcpProxy {
    pub addr: SocketAddr,
    mode: Arc<watch::Sender<(Mode, u64)>>,
    accept: JoinHandle<()>,
}

impl TcpProxy {
    /// Listens on a free loopback port and forwards to `upstream`.
    pub async fn start(upstream: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("a free port for the proxy");
        let addr = listener.local_addr().expect("the proxy's address");
        let mode = Arc::new(watch::channel((Mode::Open, 0)).0);
        let accept = tokio::spawn(accept_loop(listener, upstream, mode.clone()));
        Self { addr, mode, accept }
    }

    pub fn stall(&self) {
        self.set(Mode::Stalled);
    }

    pub fn cut(&self) {
        self.set(Mode::Cut);
    }

    pub fn restore(&self) {
        self.set(Mode::Open);
    }

    /// A new generation each change: connections of an older one close
    /// when they see it.
    fn set(&self, mode: Mode) {
        self.mode.send_modify(|(m, generation)| {
            *m = mode;
            *generation += 1;
        });
    }
}

impl Drop for TcpProxy {
    fn drop(&mut self) {
        self.accept.abort();
        self.set(Mode::Cut);
    }
}

async fn accept_loop(listener: TcpListener, upstream: SocketAddr, mode: Arc<watch::Sender<(Mode, u64)>>) {
    while let Ok((client, _)) = listener.accept().await {
        tokio::spawn(serve(client, upstream, mode.subscribe()));
    }
}

/// One connection: forwarded while the proxy stays open in the generation
/// it was accepted in; held silent while stalled; closed otherwise.
async fn serve(mut client: TcpStream, upstream: SocketAddr, mut mode: watch::Receiver<(Mode, u64)>) {
    let (at_accept, generation) = *mode.borrow_and_update();
    match at_accept {
        Mode::Cut => {
            let _ = client.shutdown().await;
            return;
        }
        Mode::Stalled => {
            // Hold it until anything changes, then drop it.
            let _ = mode.changed().await;
            return;
        }
        Mode::Open => {}
    }
    let Ok(mut server) = TcpStream::connect(upstream).await else { return };
    let stalled = tokio::select! {
        _ = tokio::io::copy_bidirectional(&mut client, &mut server) => false,
        seen = mode.wait_for(|(m, g)| *m != Mode::Open || *g != generation) => seen.is_ok_and(|now| now.0 == Mode::Stalled),
    };
    if stalled {
        // Silence until the partition heals; then this connection is gone,
        // like a real one would be.
        let _ = mode.wait_for(|(m, _)| *m != Mode::Stalled).await;
    }
}
