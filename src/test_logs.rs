//! For unit tests: what the code under test logs on this thread, at WARN
//! and above, so a test can check a failure is logged once and where.

use std::io::{self, Write};
use std::sync::{Arc, Mutex};

use tracing::subscriber::DefaultGuard;

/// The lines logged since [`capture`].
#[derive(Clone, Default)]
pub struct Logged(Arc<Mutex<Vec<u8>>>);

impl Write for Logged {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.lock().expect("log buffer").extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Logged {
    pub fn lines(&self) -> Vec<String> {
        String::from_utf8_lossy(&self.0.lock().expect("log buffer")).lines().map(str::to_string).collect()
    }
}

/// Captures this thread's warnings and errors until the guard is dropped
/// (a `#[tokio::test]` runs on one thread; `spawn_blocking` work is not
/// seen).
pub fn capture() -> (Logged, DefaultGuard) {
    let logged = Logged::default();
    let writer = logged.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::WARN)
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .finish();
    (logged, tracing::subscriber::set_default(subscriber))
}
