//! The shared backends of a cluster of real `chatroom` processes: one
//! PostgreSQL database of the test's own and one Redis prefix (or a private
//! Redis), and the flags that point a node at them. Used by the cluster and
//! fault suites.

use super::pg::TestDatabase;
use super::process::ServerProcess;
use super::redis::RedisPrefix;

/// The shared backends of one cluster and the flags that point a node at
/// them.
pub struct Backends {
    pub database: TestDatabase,
    pub redis_url: String,
    pub prefix: String,
    /// PostgreSQL as the nodes see it (through a proxy, or directly).
    pub database_url: String,
}

impl Backends {
    /// A fresh database and a Redis prefix on the machine's servers
    /// (`None`, after a loud notice, where they are missing).
    pub async fn shared() -> Option<(Self, RedisPrefix)> {
        let database = TestDatabase::create().await?;
        let prefix = RedisPrefix::new()?;
        let backends = Backends {
            database_url: database.url().to_string(),
            redis_url: prefix.url.clone(),
            prefix: prefix.prefix.clone(),
            database,
        };
        Some((backends, prefix))
    }

    /// A node's flags: these backends, no pacing or pings.
    pub fn node_args(&self) -> Vec<String> {
        [
            "--database-url",
            &self.database_url,
            "--redis-url",
            &self.redis_url,
            "--redis-prefix",
            &self.prefix,
            "--send-rate",
            "0",
            "--frame-rate",
            "0",
            "--room-create-burst",
            "0",
            "--ping-secs",
            "0",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    }

    pub fn start_node(&self) -> ServerProcess {
        let args = self.node_args();
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        ServerProcess::start(&args).expect("/proc is available where PostgreSQL is")
    }

    pub fn start_nodes(&self, count: usize) -> Vec<ServerProcess> {
        (0..count).map(|_| self.start_node()).collect()
    }
}
