//! The coordinator as a real process: `veribench coordinator …`, from the umbrella binary cargo
//! builds for the root package's tests anyway (no second build of `veribench-coordinator`), its
//! log in a file, stopped with SIGKILL or SIGTERM.

use std::ffi::OsStr;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// The umbrella binary; `veribench coordinator` is the whole `veribench-coordinator` CLI.
pub const VERIBENCH: &str = env!("CARGO_BIN_EXE_veribench");

/// A loopback port free right now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port()
}

/// A coordinator process; killed (SIGKILL) when dropped.
#[derive(Debug)]
pub struct CoordinatorProcess {
    child: Child,
    log: PathBuf,
}

impl CoordinatorProcess {
    /// `veribench coordinator run --config CONFIG`, see [`CoordinatorProcess::spawn_args`].
    pub fn spawn(config: &Path, log: &Path) -> CoordinatorProcess {
        Self::spawn_args([OsStr::new("run"), OsStr::new("--config"), config.as_os_str()], log)
    }

    /// `veribench coordinator ARGS…` with stderr appended to `log` and `RUST_LOG=info`. The
    /// `VERIBENCH_*` variables of the test's environment are removed, so only `args` and the
    /// files they name configure it.
    pub fn spawn_args<I, S>(args: I, log: &Path) -> CoordinatorProcess
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let out =
            std::fs::OpenOptions::new().create(true).append(true).open(log).expect("log file");
        let mut cmd = Command::new(VERIBENCH);
        cmd.arg("coordinator").args(args);
        for (key, _) in std::env::vars_os()
            .filter(|(k, _)| k.to_str().is_some_and(|k| k.starts_with("VERIBENCH_")))
        {
            cmd.env_remove(key);
        }
        cmd.env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(out));
        let child = cmd.spawn().unwrap_or_else(|e| panic!("cannot spawn {VERIBENCH}: {e}"));
        CoordinatorProcess { child, log: log.to_owned() }
    }

    /// The process id.
    pub fn id(&self) -> u32 {
        self.child.id()
    }

    /// SIGKILL (std's `Child::kill` on unix) and reap.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Sends SIGTERM (a graceful shutdown) unless the process has already exited; follow with
    /// [`CoordinatorProcess::wait_exit`].
    pub fn sigterm(&mut self) {
        if let Ok(Some(_)) = self.child.try_wait() {
            return;
        }
        let pid = libc::pid_t::try_from(self.child.id()).expect("a pid fits pid_t");
        // SAFETY: kill(2) only sends a signal. The child is not reaped (only `&mut self` reaps,
        // and `try_wait` just said it is running), so the pid is still its own.
        let sent = unsafe { libc::kill(pid, libc::SIGTERM) };
        assert_eq!(sent, 0, "kill({pid}, SIGTERM): {}", std::io::Error::last_os_error());
    }

    /// The exit status once the process has exited, or `None` if it is still running after
    /// `timeout`.
    pub async fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let started = Instant::now();
        loop {
            match self.child.try_wait() {
                Ok(Some(status)) => return Some(status),
                Ok(None) if started.elapsed() < timeout => {
                    tokio::time::sleep(Duration::from_millis(25)).await;
                }
                Ok(None) => return None,
                Err(e) => panic!("cannot wait for the coordinator: {e}"),
            }
        }
    }

    /// The last 40 lines of the log.
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }

    /// Waits until `/healthz` answers 200; panics with the log if the process exits or hangs.
    pub async fn healthy(&mut self, http: SocketAddr) {
        let started = Instant::now();
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("the coordinator exited with {status}:\n{}", self.log_tail());
            }
            if let Ok(r) = super::try_http_get(http, "/healthz").await
                && r.status == 200
            {
                return;
            }
            if started.elapsed() > Duration::from_secs(30) {
                panic!("the coordinator did not become healthy:\n{}", self.log_tail());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for CoordinatorProcess {
    fn drop(&mut self) {
        self.kill();
    }
}
