//! A child process that is killed (and reaped) when dropped, so no test leaks processes.

use std::process::{Child, Command, ExitStatus};

/// A running child process.
pub struct Process {
    name: String,
    child: Child,
}

impl Process {
    /// Starts `cmd`. Panics with a clear message when the program cannot be started.
    pub fn spawn(name: &str, mut cmd: Command) -> Process {
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("starting {name} ({cmd:?}): {e}"));
        Process {
            name: name.to_string(),
            child,
        }
    }

    /// The OS process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends a signal (e.g. `libc::SIGTERM`).
    pub fn signal(&self, signal: i32) {
        // There is no safe std API for arbitrary signals; the `kill` command keeps this crate
        // free of unsafe code.
        let _ = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(self.child.id().to_string())
            .status();
    }

    /// SIGKILL, then wait for the exit.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Whether it has exited, and how.
    pub fn try_wait(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// Waits for the exit, up to `timeout`; kills it and panics after that.
    pub fn wait_timeout(&mut self, timeout: std::time::Duration) -> ExitStatus {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            if let Some(status) = self.try_wait() {
                return status;
            }
            if std::time::Instant::now() > deadline {
                self.kill();
                panic!("{} did not exit within {timeout:?}", self.name);
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.kill();
    }
}
