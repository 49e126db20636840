//! Child processes (the chatroom server, the baseline relay) and what
//! `/proc` says about them: CPU time and resident memory.
//!
//! Each server runs as its own process so its CPU time (utime + stime from
//! `/proc/<pid>/stat`, which includes threads that have already exited) and
//! its RSS are its own, not mixed with the load generator's.

use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock, mpsc};
use std::time::{Duration, Instant};

/// How long a child may take to print its address.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// A server running as a child of the benchmark; killed on drop.
pub struct ServerProcess {
    pub addr: SocketAddr,
    pub pid: u32,
    /// From spawn to the "listening" log line.
    pub startup: Duration,
    /// Log lines at WARN or ERROR level so far.
    pub warnings: Arc<AtomicU64>,
    child: Child,
}

impl ServerProcess {
    /// Spawns `command` and waits until it logs `marker` followed by
    /// `http://ADDR`. Stdout and stderr are drained in background threads.
    pub fn spawn(name: &'static str, mut command: Command, marker: &str) -> Result<Self, String> {
        command.stdout(Stdio::piped()).stderr(Stdio::piped()).stdin(Stdio::null()).env("NO_COLOR", "1");
        let started = Instant::now();
        let mut child = command.spawn().map_err(|e| format!("cannot start {name} ({command:?}): {e}"))?;
        let (found, addr_rx) = mpsc::channel::<SocketAddr>();
        let warnings = Arc::new(AtomicU64::new(0));
        let stdout = child.stdout.take().expect("piped");
        let stderr = child.stderr.take().expect("piped");
        drain_log(name, stdout, marker.to_string(), found.clone(), warnings.clone());
        drain_log(name, stderr, marker.to_string(), found, warnings.clone());
        let addr = match addr_rx.recv_timeout(START_TIMEOUT) {
            Ok(addr) => addr,
            Err(_) => {
                let _ = child.kill();
                let status = child.wait().map(|s| s.to_string()).unwrap_or_default();
                return Err(format!("{name} did not report its address ({status})"));
            }
        };
        Ok(Self { addr, pid: child.id(), startup: started.elapsed(), warnings, child })
    }

    /// CPU time and RSS of the child now.
    pub fn usage(&self) -> Usage {
        Usage::of_pid(&self.pid.to_string())
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Reads a child's output line by line: sends the address after `marker`
/// once, counts warnings, echoes errors so a failing server is visible.
fn drain_log(
    name: &'static str,
    pipe: impl Read + Send + 'static,
    marker: String,
    found: mpsc::Sender<SocketAddr>,
    warnings: Arc<AtomicU64>,
) {
    std::thread::spawn(move || {
        for line in BufReader::new(pipe).lines() {
            let Ok(line) = line else { break };
            let line = strip_ansi(&line);
            if let Some(addr) = address_after(&line, &marker) {
                let _ = found.send(addr);
            }
            let warning = line.contains(" WARN ") || line.contains(" ERROR ");
            if warning && warnings.fetch_add(1, Ordering::Relaxed) < 3 {
                eprintln!("[{name}] {line}");
            }
        }
    });
}

/// `http://ADDR` following `marker` in a log line.
fn address_after(line: &str, marker: &str) -> Option<SocketAddr> {
    let rest = &line[line.find(marker)? + marker.len()..];
    let rest = rest.trim_start().strip_prefix("http://")?;
    rest.split(|c: char| c.is_whitespace() || c == '/').next()?.parse().ok()
}

fn strip_ansi(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            // Skip "ESC [ ... letter".
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// A command that runs `program`, pinned to `cpus` with `taskset` if given.
pub fn command(program: &Path, cpus: Option<&str>) -> Command {
    match cpus {
        Some(cpus) => {
            let mut c = Command::new("taskset");
            c.arg("-c").arg(cpus).arg(program);
            c
        }
        None => Command::new(program),
    }
}

/// Pins every thread of this process to `cpus` (threads started later
/// inherit it). Needs `taskset` from util-linux.
pub fn pin_self(cpus: &str) -> Result<(), String> {
    let status = Command::new("taskset")
        .args(["-a", "-p", "-c", cpus, &std::process::id().to_string()])
        .stdout(Stdio::null())
        .status()
        .map_err(|e| format!("taskset: {e}"))?;
    status.success().then_some(()).ok_or_else(|| format!("taskset -p -c {cpus} failed"))
}

/// The `chatroom` binary next to this one (both live in target/release).
pub fn sibling_binary(name: &str) -> PathBuf {
    let me = std::env::current_exe().expect("current exe");
    me.with_file_name(name)
}

/// CPU time and resident memory of a process at one moment.
#[derive(Debug, Clone, Copy, Default)]
pub struct Usage {
    /// User + system time.
    pub cpu: Duration,
    /// System (kernel) time alone: syscalls, and on loopback the TCP work.
    pub sys: Duration,
    pub rss_kib: u64,
    /// Peak resident memory so far (`VmHWM`).
    pub hwm_kib: u64,
    pub at: Option<Instant>,
}

impl Usage {
    /// `pid` is a number or `self`.
    pub fn of_pid(pid: &str) -> Self {
        let cpu = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok().and_then(|s| cpu_from_stat(&s));
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
        let (user, sys) = cpu.unwrap_or_default();
        Self {
            cpu: user + sys,
            sys,
            rss_kib: kib_from_status(&status, "VmRSS:").unwrap_or(0),
            hwm_kib: kib_from_status(&status, "VmHWM:").unwrap_or(0),
            at: Some(Instant::now()),
        }
    }

    pub fn of_self() -> Self {
        Self::of_pid("self")
    }

    /// Kernel time used between `earlier` and `self`.
    pub fn sys_since(&self, earlier: &Usage) -> Duration {
        self.sys.saturating_sub(earlier.sys)
    }

    /// CPU used between `earlier` and `self`, and the fraction of one core.
    pub fn cpu_since(&self, earlier: &Usage) -> (Duration, f64) {
        let cpu = self.cpu.saturating_sub(earlier.cpu);
        let wall = match (self.at, earlier.at) {
            (Some(a), Some(b)) => a.duration_since(b).as_secs_f64(),
            _ => 0.0,
        };
        (cpu, if wall > 0.0 { cpu.as_secs_f64() / wall } else { 0.0 })
    }
}

/// Open file descriptors of `pid` (a number or `self`): the entries of
/// `/proc/<pid>/fd`.
pub fn open_fds(pid: &str) -> Option<usize> {
    Some(std::fs::read_dir(format!("/proc/{pid}/fd")).ok()?.count())
}

/// The soft open-file limit of this process (children inherit it), from
/// `/proc/self/limits`.
pub fn open_file_limit() -> Option<u64> {
    limit_from(&std::fs::read_to_string("/proc/self/limits").ok()?, "Max open files")
}

/// The soft value of one row of a `/proc/<pid>/limits` table.
fn limit_from(limits: &str, name: &str) -> Option<u64> {
    let row = limits.lines().find(|l| l.starts_with(name))?;
    row[name.len()..].split_whitespace().next()?.parse().ok()
}

/// CPU time (user + system) of every process whose command name
/// (`/proc/<pid>/comm`) is `name`, summed: e.g. all of PostgreSQL's
/// backends. Processes that ended in between are not counted.
pub fn cpu_of_command(name: &str) -> Duration {
    let Ok(entries) = std::fs::read_dir("/proc") else { return Duration::ZERO };
    entries
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_str().is_some_and(|n| n.bytes().all(|b| b.is_ascii_digit())))
        .filter_map(|e| std::fs::read_to_string(e.path().join("stat")).ok())
        .filter(|stat| command_of_stat(stat) == Some(name))
        .filter_map(|stat| cpu_from_stat(&stat))
        .map(|(user, sys)| user + sys)
        .sum()
}

/// The command name (field 2, in parentheses) of a `/proc/<pid>/stat` line.
fn command_of_stat(stat: &str) -> Option<&str> {
    Some(&stat[stat.find('(')? + 1..stat.rfind(')')?])
}

/// utime and stime (fields 14 and 15) of a `/proc/<pid>/stat` line.
fn cpu_from_stat(stat: &str) -> Option<(Duration, Duration)> {
    // The command name (field 2) may hold spaces; fields restart after ')'.
    let after = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = after.split_whitespace().collect();
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    let tick = clock_ticks_per_second();
    let time = |ticks: u64| Duration::from_nanos(ticks * 1_000_000_000 / tick);
    Some((time(utime), time(stime)))
}

/// A `kB` field of `/proc/<pid>/status` (`VmRSS:`, `VmHWM:`).
fn kib_from_status(status: &str, field: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with(field))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// `getconf CLK_TCK`, asked once (100 on every common Linux).
fn clock_ticks_per_second() -> u64 {
    static TICKS: OnceLock<u64> = OnceLock::new();
    *TICKS.get_or_init(|| {
        Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8(o.stdout).ok())
            .and_then(|s| s.trim().parse().ok())
            .filter(|&t| t > 0)
            .unwrap_or(100)
    })
}

/// A fresh, empty directory under the system temp dir; removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(label: &str) -> std::io::Result<Self> {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let path = std::env::temp_dir().join(format!("chatroom-bench-{}-{label}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path)?;
        Ok(Self(path))
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_proc_fields() {
        let stat = "1234 (my prog) S 1 2 3 4 5 6 7 8 9 10 250 50 0 0 20 0 4 0";
        assert_eq!(cpu_from_stat(stat), Some((Duration::from_millis(2500), Duration::from_millis(500))));
        let status = "Name:\tx\nVmHWM:\t  4096 kB\nVmRSS:\t  2048 kB\n";
        assert_eq!(kib_from_status(status, "VmRSS:"), Some(2048));
        assert_eq!(kib_from_status(status, "VmHWM:"), Some(4096));
        assert_eq!(command_of_stat(stat), Some("my prog"));
        let limits = "Limit                     Soft Limit           Hard Limit           Units\nMax open files            20000                20000                files\n";
        assert_eq!(limit_from(limits, "Max open files"), Some(20000));
    }

    #[test]
    fn finds_the_address_in_a_log_line() {
        let line = "2026-01-01T00:00:00Z  INFO chatroom: chatroom is listening on http://127.0.0.1:4321 data_dir=\"x\"";
        assert_eq!(address_after(line, "listening on"), "127.0.0.1:4321".parse().ok());
        assert_eq!(strip_ansi("\u{1b}[2mhi\u{1b}[0m"), "hi");
    }
}
