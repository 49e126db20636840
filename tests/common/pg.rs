//! PostgreSQL for tests: a database of the test's own on the machine's
//! server ([`TestDatabase`], created fresh and dropped afterwards, so tests
//! run side by side and leave nothing behind). To cut a node off from
//! PostgreSQL without touching the shared server, put a
//! [`TcpProxy`](super::proxy::TcpProxy) in front of [`SERVER`] and hand
//! the node [`TestDatabase::url_via`] the proxy.
//!
//! Without a reachable PostgreSQL a test is skipped, saying so loudly on
//! stderr; under `CI=true` it fails instead (there, PostgreSQL is
//! mandatory): [`super::skip_or_fail`].

use std::io::Write;
use std::net::SocketAddr;
use std::time::Duration;

/// The server's maintenance database, where test databases are created
/// (`CHATROOM_TEST_POSTGRES` overrides it).
const ADMIN_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";
/// Where the machine's PostgreSQL listens (what a test's proxy forwards
/// to); the host and port of [`ADMIN_URL`].
pub const SERVER: &str = "127.0.0.1:5432";

fn admin_url() -> String {
    std::env::var("CHATROOM_TEST_POSTGRES").unwrap_or_else(|_| ADMIN_URL.to_string())
}

/// A database of one test's own, dropped (with any connection still open
/// to it) when this is dropped.
pub struct TestDatabase {
    name: String,
    url: String,
}

impl TestDatabase {
    /// Creates `chatroom_t_<random hex>`; `None` when PostgreSQL cannot be
    /// reached (said loudly on stderr), a panic under `CI=true`.
    pub async fn create() -> Option<Self> {
        let admin = admin_url();
        let client = match connect(&admin).await {
            Ok(client) => client,
            Err(why) => {
                super::skip_or_fail(&format!("PostgreSQL is unavailable at {admin}: {why}"));
                return None;
            }
        };
        let name = format!("chatroom_t_{:016x}", rand::random::<u64>());
        assert!(name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_'), "a plain identifier");
        client.batch_execute(&format!("CREATE DATABASE {name}")).await.expect("the test database is created");
        let url = database_url(&admin, &name);
        Some(Self { name, url })
    }

    /// postgres://… of this database.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// This database's URL with its host and port replaced by `addr` (to
    /// reach it through a test's proxy in front of [`SERVER`]).
    pub fn url_via(&self, addr: SocketAddr) -> String {
        self.url.replacen(SERVER, &addr.to_string(), 1)
    }
}

impl Drop for TestDatabase {
    /// Drops the database on a thread of its own (with its own runtime: a
    /// test's runtime may be shutting down), and waits for it.
    fn drop(&mut self) {
        let (admin, name) = (admin_url(), self.name.clone());
        let dropped = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("a runtime");
            runtime.block_on(async {
                let client = connect(&admin).await.map_err(|e| e.to_string())?;
                client.batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)")).await.map_err(|e| e.to_string())
            })
        });
        if let Ok(Err(why)) = dropped.join() {
            let _ = writeln!(std::io::stderr(), "could not drop the test database {}: {why}", self.name);
        }
    }
}

/// `admin` with its database name replaced by `name`.
fn database_url(admin: &str, name: &str) -> String {
    let base = admin.rsplit_once('/').map_or(admin, |(base, _)| base);
    format!("{base}/{name}")
}

/// A client on `url` (its connection driven by a task), within 2 s.
async fn connect(url: &str) -> Result<tokio_postgres::Client, String> {
    let connecting = tokio_postgres::connect(url, tokio_postgres::NoTls);
    let (client, connection) = match tokio::time::timeout(Duration::from_secs(2), connecting).await {
        Ok(Ok(connected)) => connected,
        Ok(Err(e)) => return Err(e.to_string()),
        Err(_) => return Err("no answer within 2 s".into()),
    };
    tokio::spawn(connection);
    Ok(client)
}
