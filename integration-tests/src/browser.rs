//! A small Chrome DevTools Protocol client for end-to-end browser tests: Debian's headless
//! chromium started as a process with a fresh profile, and pages driven over one websocket.
//!
//! One websocket carries every page's commands and events; a reader task dispatches what the
//! browser sends in the order it sent it, so an event sent before an answer is always seen
//! before it (`cdp`).
//!
//! A page keeps its console errors and uncaught exceptions ([`Page::errors`]); waiting for the
//! page ([`Page::wait_for`]) polls with a deadline, and a timeout says what was awaited, what
//! the check last returned and what the page showed.
//!
//! # Layout
//! - this file: the chromium process, [`Browser`] and [`artifacts_dir`].
//! - `page`: [`Page`], what a test does with a tab.
//! - `cdp`: the DevTools connection, its reader and writer tasks, and its errors.

mod cdp;
mod page;

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use anyhow::{Context, anyhow, bail};
use portico_test_support::wait::within_blocking;
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, BufReader, Lines};
use tokio::process::{Child, ChildStderr, Command};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

use self::cdp::{COMMAND_TIMEOUT, Cdp};
pub use self::page::Page;

/// Where Debian installs chromium; `PORTICO_CHROMIUM` names another binary.
const CHROMIUM: &str = "/usr/bin/chromium";

/// What to tell whoever runs the tests when chromium is missing.
pub const INSTALL_HINT: &str =
    "install Debian's chromium (apt-get install -y chromium; ./test.sh does)";

/// Chromium's flags besides the profile: headless, nothing started for a human user, nothing
/// fetched from the internet, and the DevTools port chosen by the OS and printed on stderr.
const FLAGS: &[&str] = &[
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-extensions",
    "--remote-debugging-port=0",
    "--window-size=1280,900",
    "about:blank",
];

/// How long chromium may take to print its DevTools address.
const LAUNCH_TIMEOUT: Duration = Duration::from_secs(30);

/// How much of chromium's stderr is kept (its end) for failure messages.
const STDERR_KEPT: usize = 16 * 1024;

/// How long a killed chromium may take to be reaped.
const EXIT_TIMEOUT: Duration = Duration::from_secs(5);

/// The largest message taken from the browser: a screenshot is one message.
const MAX_MESSAGE: usize = 256 << 20;

/// The directory for files tests keep (screenshots): `test-artifacts` in the workspace's
/// target directory (`CARGO_TARGET_DIR` when set), created when missing.
pub fn artifacts_dir() -> PathBuf {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    let workspace = manifest.parent().unwrap_or(manifest);
    let target = match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) => workspace.join(dir),
        None => workspace.join("target"),
    };
    let dir = target.join("test-artifacts");
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("creating {}: {e}", dir.display()));
    dir
}

/// A running headless chromium, killed with every process it started when dropped.
pub struct Browser {
    cdp: Arc<Cdp>,
    _process: Chromium,
}

impl Browser {
    /// Starts chromium (`PORTICO_CHROMIUM`, else `/usr/bin/chromium`) with a fresh profile
    /// and connects to its DevTools socket.
    pub async fn launch() -> anyhow::Result<Browser> {
        Browser::launch_with(&[]).await
    }

    /// [`Browser::launch`] with more command-line flags (e.g. `--ignore-certificate-errors`
    /// for a server whose CA the browser does not know).
    pub async fn launch_with(extra: &[&str]) -> anyhow::Result<Browser> {
        let binary = std::env::var_os("PORTICO_CHROMIUM")
            .map_or_else(|| PathBuf::from(CHROMIUM), PathBuf::from);
        if !binary.is_file() {
            bail!(
                "chromium not found: {INSTALL_HINT} (looked for {}; PORTICO_CHROMIUM names another binary)",
                binary.display()
            );
        }
        let profile = tempfile::tempdir().context("creating a profile dir for chromium")?;
        let mut child = Command::new(&binary)
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .args(FLAGS)
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            // A group of its own, so dropping it kills the processes it forks too.
            .process_group(0)
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting {}", binary.display()))?;
        let stderr = child
            .stderr
            .take()
            .context("chromium's stderr is not piped")?;
        let mut process = Chromium {
            child,
            stderr: Arc::new(Mutex::new(String::new())),
            _profile: profile,
        };
        let url = process.devtools_url(BufReader::new(stderr).lines()).await?;

        let config = WebSocketConfig::default()
            .max_message_size(Some(MAX_MESSAGE))
            .max_frame_size(Some(MAX_MESSAGE));
        let connect =
            tokio_tungstenite::connect_async_with_config(url.as_str(), Some(config), true);
        let (socket, _) = tokio::time::timeout(COMMAND_TIMEOUT, connect)
            .await
            .map_err(|_| anyhow!("connecting to {url} took over {COMMAND_TIMEOUT:?}"))?
            .with_context(|| format!("connecting to chromium's DevTools at {url}"))?;
        Ok(Browser {
            cdp: Cdp::start(socket),
            _process: process,
        })
    }

    /// Opens a tab on `about:blank`, with the Runtime and Page domains enabled and its console
    /// errors and uncaught exceptions collected from now on.
    pub async fn new_page(&self) -> anyhow::Result<Page> {
        Page::open(self.cdp.clone()).await
    }
}

/// The chromium process: killed, with its whole process group, and reaped when dropped; its
/// stderr printed when that happens during a panic.
struct Chromium {
    child: Child,
    /// The end of what it wrote to stderr.
    stderr: Arc<Mutex<String>>,
    // Declared last: the profile is removed after the kill in `drop`.
    _profile: tempfile::TempDir,
}

impl Chromium {
    /// Reads stderr until chromium prints `DevTools listening on ws://...`, then keeps
    /// draining it in the background (a full pipe would stall chromium).
    async fn devtools_url(
        &mut self,
        mut lines: Lines<BufReader<ChildStderr>>,
    ) -> anyhow::Result<String> {
        let mut said = String::new();
        let found = tokio::time::timeout(LAUNCH_TIMEOUT, async {
            while let Some(line) = lines.next_line().await? {
                said.push_str(&line);
                said.push('\n');
                if line.starts_with("DevTools listening on")
                    && let Some(at) = line.find("ws://")
                {
                    return Ok(Some(line[at..].trim().to_string()));
                }
            }
            Ok::<_, std::io::Error>(None)
        })
        .await;
        *lock(&self.stderr) = said.clone();
        if said.is_empty() {
            said = "(nothing)".to_string();
        }
        let url = match found {
            Ok(Ok(Some(url))) => url,
            Ok(Ok(None)) => {
                let status = self.child.wait().await.map(|s| s.to_string());
                bail!(
                    "chromium exited ({}) before printing its DevTools address; its stderr:\n{said}",
                    status.unwrap_or_else(|e| e.to_string())
                );
            }
            Ok(Err(e)) => bail!("reading chromium's stderr: {e}; it said:\n{said}"),
            Err(_) => bail!(
                "chromium printed no DevTools address within {LAUNCH_TIMEOUT:?}; its stderr:\n{said}"
            ),
        };
        let kept = self.stderr.clone();
        tokio::spawn(async move {
            while let Ok(Some(line)) = lines.next_line().await {
                keep_end(&mut lock(&kept), &line);
            }
        });
        Ok(url)
    }
}

impl Drop for Chromium {
    fn drop(&mut self) {
        if let Some(pid) = self.child.id() {
            // The group leader's pid is the group's id. No safe std API signals a group; the
            // `kill` command keeps this free of unsafe code.
            let _ = std::process::Command::new("kill")
                .args(["-KILL", "--", &format!("-{pid}")])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
        let _ = self.child.start_kill();
        let reaped = within_blocking(EXIT_TIMEOUT, || self.child.try_wait().ok().flatten());
        if reaped.is_none() {
            eprintln!("chromium was not reaped within {EXIT_TIMEOUT:?} of SIGKILL");
        }
        if std::thread::panicking() {
            eprintln!(
                "--- chromium stderr (its end) ---\n{}--- end of chromium ---",
                lock(&self.stderr)
            );
        }
    }
}

/// Appends `line` to `kept`, dropping its start beyond [`STDERR_KEPT`] bytes.
fn keep_end(kept: &mut String, line: &str) {
    kept.push_str(line);
    kept.push('\n');
    if kept.len() > STDERR_KEPT {
        let mut cut = kept.len() - STDERR_KEPT;
        while !kept.is_char_boundary(cut) {
            cut += 1;
        }
        kept.drain(..cut);
    }
}

/// The string `field` of a command's answer.
fn string_field(answer: &Value, field: &str, method: &str) -> anyhow::Result<String> {
    answer
        .get(field)
        .and_then(Value::as_str)
        .map(str::to_string)
        .ok_or_else(|| anyhow!("{method}: no {field} in its answer {answer}"))
}

/// Locks `mutex`, even when a panic poisoned it (what it guards stays consistent).
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_end_of_stderr_is_kept() {
        let mut kept = String::new();
        for _ in 0..STDERR_KEPT {
            keep_end(&mut kept, "é");
        }
        assert!(
            kept.len() <= STDERR_KEPT && kept.ends_with("é\n"),
            "{}",
            kept.len()
        );
    }
}
