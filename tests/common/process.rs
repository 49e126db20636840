//! The real `chatroom` binary as a child process, for tests that measure
//! the server from outside: file descriptors, memory and CPU time read
//! from `/proc/<pid>` (Linux only; [`ServerProcess::start`] returns `None`
//! elsewhere, and the caller says loudly that it skipped).
//!
//! `CHATROOM_TEST_BINARY` runs another build of the server instead of the
//! test profile's (e.g. `target/release/chatroom` for the soak figures).

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use tempfile::TempDir;

use super::{Endpoint, TIMEOUT};

/// A `chatroom` process with its own data directory (or one the test
/// gave it); killed on drop.
pub struct ServerProcess {
    child: Child,
    pub addr: SocketAddr,
    /// The data directory, kept while the process lives (`_dir`: one made
    /// for it, deleted with it).
    data: PathBuf,
    _dir: Option<TempDir>,
    /// The wrapper command and the server's own arguments, to start it
    /// again the same way ([`restart`](Self::restart)).
    prefix: Vec<String>,
    args: Vec<String>,
}

impl ServerProcess {
    /// Starts the binary with `args` (plus `--addr 127.0.0.1:0` and a fresh
    /// data directory) and waits until it listens. `None` where `/proc`
    /// does not exist.
    pub fn start(args: &[&str]) -> Option<Self> {
        Self::start_with_prefix(&[], args)
    }

    /// Like [`start`](Self::start), run under a wrapper command such as
    /// `prlimit --nofile=128:128`.
    pub fn start_with_prefix(prefix: &[&str], args: &[&str]) -> Option<Self> {
        if !Path::new("/proc/self/fd").exists() {
            eprintln!("SKIPPED: /proc is not available; this test measures the server through /proc/<pid>");
            return None;
        }
        let dir = tempfile::tempdir().expect("a temporary directory");
        let prefix: Vec<String> = prefix.iter().map(|s| s.to_string()).collect();
        let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        let (child, addr) = spawn(&prefix, &args, dir.path()).unwrap_or_else(|why| panic!("the server did not say where it listens: {why}"));
        Some(Self { child, addr, data: dir.path().to_path_buf(), _dir: Some(dir), prefix, args })
    }

    /// Like [`start`](Self::start), on the test's own data directory `data`
    /// (left in place afterwards). `Err` with the server's last log line
    /// if it exits before it listens.
    pub fn start_in(data: &Path, args: &[&str]) -> Result<Self, String> {
        let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        let (child, addr) = spawn(&[], &args, data)?;
        Ok(Self { child, addr, data: data.to_path_buf(), _dir: None, prefix: Vec::new(), args })
    }

    /// Kills the process if it still runs (SIGKILL), then starts it again
    /// with the same arguments on the same data directory, and waits until
    /// it listens (on a new port: [`addr`](Self::addr) changes).
    pub fn restart(&mut self) {
        self.kill();
        let (child, addr) = spawn(&self.prefix, &self.args, &self.data).unwrap_or_else(|why| panic!("the server did not start again: {why}"));
        self.child = child;
        self.addr = addr;
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn endpoint(&self) -> Endpoint {
        Endpoint { addr: self.addr }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// Open file descriptors (sockets included).
    pub fn open_fds(&self) -> usize {
        std::fs::read_dir(format!("/proc/{}/fd", self.pid())).map(|d| d.count()).unwrap_or(0)
    }

    /// Resident memory now, in KiB.
    pub fn rss_kib(&self) -> u64 {
        self.status_kib("VmRSS:")
    }

    /// Peak resident memory so far, in KiB.
    pub fn peak_rss_kib(&self) -> u64 {
        self.status_kib("VmHWM:")
    }

    fn status_kib(&self, field: &str) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap_or_default();
        status
            .lines()
            .find_map(|l| l.strip_prefix(field))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or(0)
    }

    /// CPU time used so far (user + system).
    pub fn cpu_time(&self) -> Duration {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.pid())).unwrap_or_default();
        // Fields after the command name (which is in parentheses).
        let fields: Vec<&str> = stat.rsplit_once(')').map(|(_, rest)| rest.split_whitespace().collect()).unwrap_or_default();
        let ticks: u64 = [11, 12].iter().filter_map(|&i| fields.get(i)?.parse::<u64>().ok()).sum();
        Duration::from_millis(ticks * 10) // USER_HZ is 100 on Linux
    }

    /// Whether the server still holds (has a descriptor for) its end of the
    /// TCP connection whose client end is `client`: read from
    /// `/proc/net/tcp{,6}` (the connection's socket inode) and
    /// `/proc/<pid>/fd` (the server's sockets).
    pub fn holds_connection(&self, client: SocketAddr) -> bool {
        let Some(inode) = connection_inode(self.addr.port(), client.port()) else { return false };
        let wanted = format!("socket:[{inode}]");
        std::fs::read_dir(format!("/proc/{}/fd", self.pid()))
            .map(|dir| dir.filter_map(Result::ok).any(|fd| std::fs::read_link(fd.path()).is_ok_and(|l| l.to_string_lossy() == wanted)))
            .unwrap_or(false)
    }

    /// Kills the process with SIGKILL (no shutdown, no flush) and reaps it.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Waits (polling `/proc`, at most `within`) until `condition` holds.
    pub async fn wait_until(&self, within: Duration, mut condition: impl FnMut(&Self) -> bool) -> bool {
        let deadline = tokio::time::Instant::now() + within;
        while tokio::time::Instant::now() < deadline {
            if condition(self) {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        condition(self)
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts the server binary (under `prefix`, if any) with `args` on the
/// data directory `dir` and a port of its choosing; where it listens, or
/// the last line of its log if it ended first (it is not left running).
fn spawn(prefix: &[String], args: &[String], dir: &Path) -> Result<(Child, SocketAddr), String> {
    let binary = std::env::var("CHATROOM_TEST_BINARY").unwrap_or_else(|_| env!("CARGO_BIN_EXE_chatroom").to_string());
    let (program, rest) = match prefix.split_first() {
        Some((first, rest)) => (first.clone(), rest.iter().cloned().chain([binary]).collect::<Vec<_>>()),
        None => (binary, Vec::new()),
    };
    let mut child = Command::new(program)
        .args(rest)
        .args(["--addr", "127.0.0.1:0", "--data-dir"])
        .arg(dir)
        .args(args)
        .env("NO_COLOR", "1")
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the chatroom binary starts");
    match listening_address(&mut child) {
        Ok(addr) => Ok((child, addr)),
        Err(why) => {
            // Not left running behind the failing test.
            let _ = child.kill();
            let _ = child.wait();
            Err(why)
        }
    }
}

/// The inode of the server-side socket of the TCP connection between the
/// local ports `server_port` and `client_port`, if the kernel has one.
fn connection_inode(server_port: u16, client_port: u16) -> Option<String> {
    let port_of = |field: &str| field.rsplit(':').next().and_then(|p| u16::from_str_radix(p, 16).ok());
    ["/proc/net/tcp", "/proc/net/tcp6"].iter().find_map(|table| {
        let text = std::fs::read_to_string(table).ok()?;
        text.lines().skip(1).find_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let matches = fields.len() > 9
                && port_of(fields[1]) == Some(server_port)
                && port_of(fields[2]) == Some(client_port)
                && fields[9] != "0";
            matches.then(|| fields[9].to_string())
        })
    })
}

/// Reads the child's log until it says where it listens; the rest of its
/// log is passed on to the test's stderr (shown when a test fails). `Err`
/// with the last line of its log if it ended (or fell silent) first.
fn listening_address(child: &mut Child) -> Result<SocketAddr, String> {
    let stderr = child.stderr.take().expect("piped stderr");
    let (found, address) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut last = String::new();
        let mut listening = false;
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            eprintln!("[server] {line}");
            if let Some(rest) = line.split("listening on http://").nth(1).filter(|_| !listening) {
                let addr: String = rest.chars().take_while(|c| !c.is_whitespace()).collect();
                if let Ok(addr) = addr.parse::<SocketAddr>() {
                    listening = true;
                    let _ = found.send(Ok(addr));
                }
            }
            last = line;
        }
        if !listening {
            let _ = found.send(Err(last));
        }
    });
    address.recv_timeout(TIMEOUT).unwrap_or_else(|_| Err(format!("no word within {TIMEOUT:?}")))
}
