//! Shared backends for a run: a fresh PostgreSQL database (created on the
//! server `--database-url` names, dropped afterwards) and a Redis prefix
//! of the run's own, so runs never see each other's data.
//!
//! The benchmark is synchronous where it starts servers, so the database
//! is created and dropped on a helper thread with a runtime of its own.

use std::time::{SystemTime, UNIX_EPOCH};

/// A database made for one target; dropped (with its connections) on drop.
pub struct FreshDatabase {
    admin_url: String,
    name: String,
    pub url: String,
}

impl FreshDatabase {
    /// Creates `chatroom_bench_<random>` on the server of `server_url`.
    pub fn create(server_url: &str) -> Result<Self, String> {
        let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos());
        let name = format!("chatroom_bench_{:x}", nanos % (1 << 48));
        let admin_url = with_database(server_url, "postgres");
        let url = with_database(server_url, &name);
        run_sql(&admin_url, &format!("CREATE DATABASE {name}"))?;
        Ok(Self { admin_url, name, url })
    }
}

impl Drop for FreshDatabase {
    fn drop(&mut self) {
        if let Err(e) = run_sql(&self.admin_url, &format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name)) {
            eprintln!("could not drop the benchmark database {}: {e}", self.name);
        }
    }
}

/// Updates the planner's statistics of the database at `url` (after a
/// bulk load, before timing queries).
pub fn analyze(url: &str) -> Result<(), String> {
    run_sql(url, "ANALYZE")
}

/// `url` with its database name replaced (`postgres://u@h:p/db?x` → `…/name?x`).
pub fn with_database(url: &str, name: &str) -> String {
    let (scheme, rest) = url.split_once("://").unwrap_or(("postgres", url));
    let (rest, query) = match rest.split_once('?') {
        Some((r, q)) => (r, format!("?{q}")),
        None => (rest, String::new()),
    };
    let authority = rest.split('/').next().unwrap_or(rest);
    format!("{scheme}://{authority}/{name}{query}")
}

/// Runs one statement (a name made here, never user input) on a thread of
/// its own.
fn run_sql(url: &str, statement: &str) -> Result<(), String> {
    let (url, statement) = (url.to_string(), statement.to_string());
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(|e| e.to_string())?;
        runtime.block_on(async {
            let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls).await.map_err(|e| format!("{url}: {e}"))?;
            tokio::spawn(connection);
            client.batch_execute(&statement).await.map_err(|e| format!("{statement}: {e}"))
        })
    })
    .join()
    .map_err(|_| "the database thread panicked".to_string())?
}

/// A Redis key prefix no other run uses.
pub fn redis_prefix(tag: &str) -> String {
    format!("chatroom-bench-{tag}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replaces_the_database_name() {
        assert_eq!(with_database("postgres://postgres@127.0.0.1:5432/test", "x"), "postgres://postgres@127.0.0.1:5432/x");
        assert_eq!(with_database("postgres://u@h/db?sslmode=disable", "x"), "postgres://u@h/x?sslmode=disable");
        assert_eq!(with_database("postgresql://u@h:1", "x"), "postgresql://u@h:1/x");
    }
}
