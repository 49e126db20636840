//! The schema's versions: each migration is a SQL file embedded in the
//! binary (`migrations/NNNN_name.sql`), applied once, in order, and
//! recorded in `schema_migrations (version, applied_at)`.
//!
//! Several nodes may start at once against one database: all of it runs in
//! one transaction holding a transaction-level advisory lock, so one node
//! applies what is missing and the others, once it committed, find nothing
//! left to do. A database at a version this binary does not know (a newer
//! chatroom migrated it) is refused, not written to.

use std::time::Duration;

use super::{PgStore, db_error};
use crate::store::StoreError;

/// One step of the schema.
pub(super) struct Migration {
    pub version: i32,
    pub sql: &'static str,
}

/// Every migration this binary knows, oldest first, versions 1, 2, 3…
pub(super) const MIGRATIONS: &[Migration] = &[
    Migration { version: 1, sql: include_str!("migrations/0001_initial.sql") },
    Migration { version: 2, sql: include_str!("migrations/0002_private_rooms.sql") },
    Migration { version: 3, sql: include_str!("migrations/0003_threads_reactions.sql") },
    Migration { version: 4, sql: include_str!("migrations/0004_search.sql") },
];

/// The newest schema version this binary knows.
pub(super) fn latest_version() -> i32 {
    MIGRATIONS.last().map_or(0, |m| m.version)
}

/// The advisory lock every node takes to migrate ("chatroom" in ASCII).
const MIGRATION_LOCK: i64 = 0x6368_6174_726f_6f6d;
/// Migrating may wait for another node's migration.
const MIGRATION_TIMEOUT: Duration = Duration::from_secs(60);

const CREATE_VERSIONS: &str = "CREATE TABLE IF NOT EXISTS schema_migrations (
    version     integer PRIMARY KEY,
    applied_at  timestamptz NOT NULL DEFAULT now()
)";

/// Brings the database up to [`latest_version`], or refuses it when it is
/// newer ([`StoreError::SchemaTooNew`]). Returns the versions applied now.
pub(super) async fn migrate(store: &PgStore) -> Result<Vec<i32>, StoreError> {
    const WHAT: &str = "migrate the schema";
    store
        .run_within(MIGRATION_TIMEOUT, WHAT, async |client| {
            let fail = |e| db_error(WHAT, e);
            let tx = client.transaction().await.map_err(fail)?;
            let wait = format!("SET LOCAL statement_timeout = {}", MIGRATION_TIMEOUT.as_millis());
            tx.batch_execute(&wait).await.map_err(fail)?;
            tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK]).await.map_err(fail)?;
            tx.batch_execute(CREATE_VERSIONS).await.map_err(fail)?;
            let current: i32 = tx.query_one("SELECT coalesce(max(version), 0) FROM schema_migrations", &[]).await.map_err(fail)?.get(0);
            if current > latest_version() {
                return Err(StoreError::SchemaTooNew { database: current, known: latest_version() });
            }
            let mut applied = Vec::new();
            for migration in MIGRATIONS.iter().filter(|m| m.version > current) {
                tx.batch_execute(migration.sql).await.map_err(fail)?;
                tx.execute("INSERT INTO schema_migrations (version) VALUES ($1)", &[&migration.version]).await.map_err(fail)?;
                applied.push(migration.version);
            }
            tx.commit().await.map_err(fail)?;
            Ok(applied)
        })
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_count_up_from_one() {
        let versions: Vec<i32> = MIGRATIONS.iter().map(|m| m.version).collect();
        let expected: Vec<i32> = (1..=MIGRATIONS.len() as i32).collect();
        assert_eq!(versions, expected);
        assert_eq!(latest_version(), MIGRATIONS.len() as i32);
    }
}
