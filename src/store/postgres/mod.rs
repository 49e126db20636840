//! The PostgreSQL backend: every storage trait over one database that any
//! number of chatroom nodes share (`--database-url`).
//!
//! - `schema`: the versioned migrations (`migrations/*.sql`), applied at
//!   open under an advisory lock; a database newer than this binary is
//!   refused.
//! - `messages`: [`MessageStore`](crate::store::MessageStore): rooms, the
//!   event log and messages as they are now; `plan` decides what a batch
//!   writes (pure code, no SQL); `commit` is the one committer task per
//!   store that stores the batches of many rooms in one transaction
//!   (group commit).
//! - `accounts`: users (look-alike skeletons in their own unique table),
//!   sessions, subscriptions and read markers.
//! - `import`: what `chatroom migrate` writes (events with their seqs).
//!
//! Every operation runs on a pooled connection under one deadline
//! ([`OPERATION_TIMEOUT`]), pool wait and connect included, and the server
//! has a `statement_timeout` too; so when PostgreSQL is unreachable or a
//! connection is cut, a caller gets [`StoreError::Unavailable`] within
//! five seconds, never a hang. A connection whose operation did not finish
//! (timed out, or failed on the wire) is closed, never handed out again.

mod access;
mod accounts;
mod commit;
mod import;
mod messages;
mod plan;
mod schema;
mod search;

use std::time::Duration;

use deadpool_postgres::{GenericClient, Manager, ManagerConfig, Object, Pool, PoolError, RecyclingMethod, Runtime};
use tokio::time::Instant;
use tokio_postgres::types::ToSql;
use tokio_postgres::{NoTls, Row};

use crate::model::DEFAULT_ROOM;
use crate::store::{Fsync, StoreError};

/// Connections a node keeps at most.
const POOL_SIZE: usize = 16;
/// How long opening one connection may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// Every operation, from waiting for a connection to its last answer.
pub const OPERATION_TIMEOUT: Duration = Duration::from_secs(4);
/// The server-side bound on one statement (a little under the above, so
/// the server gives up first and the connection stays usable).
const STATEMENT_TIMEOUT_MS: u64 = 3_500;
/// A transaction left idle this long (its node died) is ended by the
/// server, releasing the room rows it locked.
const IDLE_IN_TRANSACTION_TIMEOUT_MS: u64 = 10_000;

/// Every store, in one PostgreSQL database. Cheap to share: clone the
/// `Arc` it is held in; the pool is inside.
pub struct PgStore {
    pool: Pool,
    /// Where `append` hands its batch: this store's one committer task
    /// (`commit`), which ends when the store is dropped.
    appends: commit::Queue,
}

impl PgStore {
    /// Connects to `url` (postgres://…), brings the schema up to date and
    /// makes sure the default room exists. Refuses a database whose schema
    /// is newer than this binary ([`StoreError::SchemaTooNew`]). With
    /// `fsync` never, COMMIT does not wait for the write-ahead log to reach
    /// the disk (`synchronous_commit = off`); always and batch wait (every
    /// commit here is a group commit already).
    pub async fn open(url: &str, fsync: Fsync) -> Result<Self, StoreError> {
        let pool = build_pool(url, fsync)?;
        let appends = commit::start(pool.clone());
        let store = Self { pool, appends };
        schema::migrate(&store).await?;
        store.ensure_room(DEFAULT_ROOM, "chatroom").await?;
        tokio::spawn(backfill_search(store.pool.clone()));
        Ok(store)
    }

    /// Runs `work` on a pooled connection, the whole of it (pool wait
    /// included) bounded by [`OPERATION_TIMEOUT`]: past it, the answer is
    /// `Unavailable` and the connection is closed instead of going back to
    /// the pool.
    async fn run<T>(&self, what: &'static str, work: impl AsyncFnOnce(&mut Object) -> Result<T, StoreError>) -> Result<T, StoreError> {
        self.run_within(OPERATION_TIMEOUT, what, work).await
    }

    /// Runs one statement (prepared once per connection) as [`run`](Self::run)
    /// runs its work; how many rows it changed.
    async fn run_statement(&self, what: &'static str, sql: &str, params: &[&(dyn ToSql + Sync)]) -> Result<u64, StoreError> {
        self.run(what, async |client| execute(&*client, what, sql, params).await).await
    }

    async fn run_within<T>(
        &self,
        limit: Duration,
        what: &'static str,
        work: impl AsyncFnOnce(&mut Object) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        run_until(&self.pool, Instant::now() + limit, limit, what, work).await
    }

    /// `SELECT 1`, bounded: can this node reach the database now?
    pub(super) async fn ping(&self) -> Result<(), StoreError> {
        self.run("check the database", async |client| {
            client.simple_query("SELECT 1").await.map_err(|e| db_error("check the database", e))?;
            Ok(())
        })
        .await
    }
}

/// Gives the messages stored before search existed their search rows
/// (`search::backfill`), logging what it did.
async fn backfill_search(pool: Pool) {
    match search::backfill(&pool).await {
        Ok(0) => {}
        Ok(count) => tracing::info!(messages = count, "indexed the messages stored before search existed"),
        Err(e) => tracing::warn!(error = %e, "could not index the messages stored before search existed; the next start tries again"),
    }
}

/// Runs `work` on a connection of `pool`, the whole of it (pool wait
/// included) ending by `deadline` (`limit` after the operation began, as
/// the error says): past it, the answer is `Unavailable` and the
/// connection is closed instead of going back to the pool.
async fn run_until<T>(
    pool: &Pool,
    deadline: Instant,
    limit: Duration,
    what: &'static str,
    work: impl AsyncFnOnce(&mut Object) -> Result<T, StoreError>,
) -> Result<T, StoreError> {
    let attempt = async {
        let mut lease = Lease(Some(pool.get().await.map_err(|e| pool_error(what, e))?));
        let result = work(lease.connection()).await;
        // Finished, well or not: a connection that failed on the wire
        // is closed already, and the pool does not hand it out again.
        lease.give_back();
        result
    };
    match tokio::time::timeout_at(deadline, attempt).await {
        Ok(result) => result,
        Err(_) => {
            // The idle connections were most likely cut too: drop them
            // all, so the next operation connects afresh instead of
            // timing out on each of them in turn.
            pool.retain(|_, _| false);
            Err(StoreError::Unavailable(format!("PostgreSQL did not answer within {} s ({what})", limit.as_secs())))
        }
    }
}

/// A pooled connection that goes back to the pool only when its operation
/// finished ([`give_back`](Self::give_back)); dropped otherwise (a timeout
/// cancelled it mid-way), it is detached and closed, so a connection in an
/// unknown state (a statement still in flight) is never reused.
struct Lease(Option<Object>);

impl Lease {
    fn connection(&mut self) -> &mut Object {
        self.0.as_mut().expect("a lease holds its connection until it ends")
    }

    fn give_back(mut self) {
        drop(self.0.take());
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        if let Some(connection) = self.0.take() {
            drop(Object::take(connection));
        }
    }
}

/// `url` as it may be logged: user, hosts, ports and database, never the
/// password (`postgres://chat@db.example.com:5432/chat`).
pub fn display_url(url: &str) -> String {
    let Ok(config) = url.parse::<tokio_postgres::Config>() else { return "postgres://(a URL that does not parse)".into() };
    let hosts: Vec<String> = config
        .get_hosts()
        .iter()
        .zip(config.get_ports().iter().chain(std::iter::repeat(&5432)))
        .map(|(host, port)| match host {
            tokio_postgres::config::Host::Tcp(name) => format!("{name}:{port}"),
            tokio_postgres::config::Host::Unix(path) => path.display().to_string(),
        })
        .collect();
    let user = config.get_user().map(|u| format!("{u}@")).unwrap_or_default();
    format!("postgres://{user}{}/{}", hosts.join(","), config.get_dbname().unwrap_or(""))
}

/// The pool for `url`: short connect timeout, TCP keepalives, and the
/// server-side timeouts set as start-up options of every connection.
fn build_pool(url: &str, fsync: Fsync) -> Result<Pool, StoreError> {
    let mut config: tokio_postgres::Config =
        url.parse().map_err(|e| StoreError::Unavailable(format!("the database URL is not valid: {e}")))?;
    let synchronous_commit = if fsync == Fsync::Never { "off" } else { "on" };
    let timeouts = format!(
        "-c statement_timeout={STATEMENT_TIMEOUT_MS} -c idle_in_transaction_session_timeout={IDLE_IN_TRANSACTION_TIMEOUT_MS} -c synchronous_commit={synchronous_commit}"
    );
    let options = match config.get_options() {
        Some(given) if !given.trim().is_empty() => format!("{given} {timeouts}"),
        _ => timeouts,
    };
    config
        .options(options)
        .application_name("chatroom")
        .connect_timeout(CONNECT_TIMEOUT)
        .tcp_user_timeout(OPERATION_TIMEOUT)
        .keepalives(true)
        .keepalives_idle(Duration::from_secs(10))
        .keepalives_interval(Duration::from_secs(2))
        .keepalives_retries(3);
    let manager = Manager::from_config(config, NoTls, ManagerConfig { recycling_method: RecyclingMethod::Fast });
    Pool::builder(manager)
        .max_size(POOL_SIZE)
        .create_timeout(Some(CONNECT_TIMEOUT))
        .recycle_timeout(Some(CONNECT_TIMEOUT))
        .runtime(Runtime::Tokio1)
        .build()
        .map_err(|e| StoreError::Unavailable(format!("cannot set up the database pool: {e}")))
}

/// No connection could be had: the database is unreachable (or every
/// connection is busy for too long).
fn pool_error(what: &str, error: PoolError) -> StoreError {
    StoreError::Unavailable(format!("cannot reach PostgreSQL to {what}: {error}"))
}

/// A statement failed. Answers the database gives on purpose (a unique
/// key, a missing room) are matched by the callers before this; anything
/// left is a failure: `Unavailable`, with the database's reason.
fn db_error(what: &str, error: tokio_postgres::Error) -> StoreError {
    match error.as_db_error() {
        Some(db) => StoreError::Unavailable(format!("PostgreSQL refused to {what}: {} ({})", db.message(), db.code().code())),
        None => StoreError::Unavailable(format!("PostgreSQL failed to {what}: {error}")),
    }
}

/// Runs `sql` (prepared once per connection, then reused) and returns
/// its rows; `what` names the operation in an error.
async fn rows(client: &impl GenericClient, what: &str, sql: &str, params: &[&(dyn ToSql + Sync)]) -> Result<Vec<Row>, StoreError> {
    let statement = client.prepare_cached(sql).await.map_err(|e| db_error(what, e))?;
    client.query(&statement, params).await.map_err(|e| db_error(what, e))
}

/// Runs `sql` (prepared once per connection) and returns how many rows it
/// changed.
async fn execute(client: &impl GenericClient, what: &str, sql: &str, params: &[&(dyn ToSql + Sync)]) -> Result<u64, StoreError> {
    let statement = client.prepare_cached(sql).await.map_err(|e| db_error(what, e))?;
    client.execute(&statement, params).await.map_err(|e| db_error(what, e))
}

/// A `u64` id or seq as PostgreSQL's `bigint` (ids never come near 2^63).
fn to_db(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// A `bigint` from the database as an id or seq (never negative: a CHECK
/// constraint or the way it was made says so).
fn from_db(n: i64) -> u64 {
    u64::try_from(n).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_logged_url_never_shows_the_password() {
        let shown = display_url("postgres://chat:s3cret@db.example.com:6543/chat?sslmode=disable");
        assert_eq!(shown, "postgres://chat@db.example.com:6543/chat");
        assert_eq!(display_url("postgres://postgres@127.0.0.1/test"), "postgres://postgres@127.0.0.1:5432/test");
    }
}
