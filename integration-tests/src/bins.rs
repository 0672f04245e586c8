//! Builds and locates the workspace binaries.
//!
//! Integration tests run the real binaries. `cargo test` does not build the binaries of other
//! packages, so the first test that needs one runs `cargo build --bins --tests` for the
//! workspace (with the same profile as the test), once per test process. `--tests` makes cargo
//! resolve features as `cargo test` does, so the build reuses the test build's artifacts
//! instead of rebuilding every crate with dev-dependency features off. `test.sh` builds them
//! once before the tests and sets [`BUILT`]: then no test process runs cargo (hundreds of
//! no-op builds, each waiting on cargo's lock of the target directory while tests run in
//! parallel).

use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;

/// Set (to anything) when the binaries were built, as below, before the tests started.
pub const BUILT: &str = "PORTICO_TEST_BINS_BUILT";

/// The path of a workspace binary (`portico-cp`, `portico-agent` or `portico`), built first if
/// needed. Panics with the build output if it does not build: a test cannot run without it.
pub fn path(name: &str) -> PathBuf {
    static BUILT: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    let dir = BUILT.get_or_init(build).clone();
    match dir {
        Ok(dir) => dir.join(name),
        Err(e) => panic!("building the workspace binaries failed:\n{e}"),
    }
}

fn build() -> Result<PathBuf, String> {
    // Test executables live in target/<profile>/deps/.
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let profile_dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .ok_or("test executable has no target/<profile> directory")?
        .to_path_buf();
    if std::env::var_os(BUILT).is_some() {
        return Ok(profile_dir);
    }
    let mut cmd = Command::new(env!("CARGO"));
    cmd.args(["build", "--workspace", "--bins", "--tests"]);
    if profile_dir.file_name().is_some_and(|p| p == "release") {
        cmd.arg("--release");
    }
    cmd.current_dir(env!("CARGO_MANIFEST_DIR"));
    let out = cmd.output().map_err(|e| format!("running cargo: {e}"))?;
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).into_owned());
    }
    Ok(profile_dir)
}
