//! A child process owned by a test: its output kept for failure messages, and killed (and
//! reaped) when dropped, so no test leaks processes whichever way it ends.

use std::io::Write;
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::time::Duration;

use crate::wait::within_blocking;

/// SIGINT, as Ctrl-C sends.
pub const SIGINT: i32 = 2;

/// SIGTERM, as service managers send to stop a process.
pub const SIGTERM: i32 = 15;

/// A running (or exited, not yet dropped) child process.
pub struct Process {
    name: String,
    child: Child,
    /// Its stdin, when started with [`Process::spawn_with_input`].
    input: Option<ChildStdin>,
    stdout: PathBuf,
    stderr: PathBuf,
    // Holds the output files; declared last so they outlive the kill in `drop`.
    _dir: tempfile::TempDir,
}

impl Process {
    /// Starts `cmd` with stdin closed and stdout and stderr written to files of a temp dir,
    /// whatever `cmd` set for them. Panics with a clear message when it cannot be started.
    pub fn spawn(name: &str, cmd: Command) -> Process {
        Process::start(name, cmd, false)
    }

    /// [`Process::spawn`], with a stdin the test writes to ([`Process::write_line`]).
    pub fn spawn_with_input(name: &str, cmd: Command) -> Process {
        Process::start(name, cmd, true)
    }

    fn start(name: &str, mut cmd: Command, input: bool) -> Process {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("a temp dir for {name}: {e}"));
        let (stdout, stderr) = (dir.path().join("stdout"), dir.path().join("stderr"));
        let file = |path: &PathBuf| {
            std::fs::File::create(path)
                .unwrap_or_else(|e| panic!("creating {}: {e}", path.display()))
        };
        let mut child = cmd
            .stdin(if input { Stdio::piped() } else { Stdio::null() })
            .stdout(file(&stdout))
            .stderr(file(&stderr))
            .spawn()
            .unwrap_or_else(|e| panic!("starting {name} ({cmd:?}): {e}"));
        Process {
            name: name.to_string(),
            input: child.stdin.take(),
            child,
            stdout,
            stderr,
            _dir: dir,
        }
    }

    /// Writes `line` and a newline to its stdin; panics when it was started without one or
    /// stopped reading.
    pub fn write_line(&mut self, line: &str) {
        let name = &self.name;
        let input = self
            .input
            .as_mut()
            .unwrap_or_else(|| panic!("{name} was started without a stdin"));
        writeln!(input, "{line}")
            .and_then(|()| input.flush())
            .unwrap_or_else(|e| panic!("writing to {name}: {e}"));
    }

    /// The OS process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends `signal` (e.g. [`SIGTERM`]).
    pub fn signal(&self, signal: i32) {
        // No safe std API sends an arbitrary signal; the `kill` command keeps tests free of
        // unsafe code.
        let _ = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(self.child.id().to_string())
            .status();
    }

    /// SIGKILL, then reaps it.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Whether it has exited, and how.
    pub fn try_wait(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// Waits for the exit, up to `timeout`; after that kills it and panics (the output is
    /// printed when the unwinding drops it).
    pub fn wait_timeout(&mut self, timeout: Duration) -> ExitStatus {
        match within_blocking(timeout, || self.try_wait()) {
            Some(status) => status,
            None => {
                self.kill();
                panic!("{} did not exit within {timeout:?}", self.name);
            }
        }
    }

    /// What it wrote to stdout so far.
    pub fn stdout(&self) -> String {
        std::fs::read_to_string(&self.stdout).unwrap_or_default()
    }

    /// What it wrote to stderr so far.
    pub fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    /// Both outputs, headed by the process's name, for a failure message.
    pub fn output(&self) -> String {
        format!(
            "--- {name} (pid {pid}) stdout ---\n{}--- {name} stderr ---\n{}--- end of {name} ---",
            self.stdout(),
            self.stderr(),
            name = self.name,
            pid = self.pid(),
        )
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.kill();
        if std::thread::panicking() {
            eprintln!("{}", self.output());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shell(script: &str) -> Command {
        let mut cmd = Command::new("sh");
        cmd.args(["-c", script]);
        cmd
    }

    #[test]
    fn output_is_kept_apart_and_the_exit_status_returned() {
        let mut p = Process::spawn("sh", shell("echo out; echo err >&2; exit 3"));
        let status = p.wait_timeout(Duration::from_secs(10));
        assert_eq!(status.code(), Some(3));
        assert_eq!(
            (p.stdout().as_str(), p.stderr().as_str()),
            ("out\n", "err\n")
        );
        assert!(p.output().contains("--- sh (pid"), "{}", p.output());
    }

    #[test]
    fn a_dropped_process_is_killed_and_reaped() {
        let p = Process::spawn("sleep", shell("exec sleep 60"));
        let pid = p.pid();
        drop(p);
        // A reaped process has no /proc entry left (a zombie would).
        assert!(!std::path::Path::new(&format!("/proc/{pid}")).exists());
    }

    #[test]
    fn a_signal_reaches_the_process() {
        let mut p = Process::spawn("sleep", shell("exec sleep 60"));
        p.signal(SIGTERM);
        let status = p.wait_timeout(Duration::from_secs(10));
        assert!(!status.success());
    }

    #[test]
    #[should_panic(expected = "sleep did not exit within")]
    fn waiting_too_long_kills_and_panics() {
        let mut p = Process::spawn("sleep", shell("exec sleep 60"));
        p.wait_timeout(Duration::from_millis(100));
    }
}
