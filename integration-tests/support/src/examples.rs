//! The example config files shipped under `deploy/`: what users copy first, so every test
//! that checks "valid config works" runs over them too.

use std::path::{Path, PathBuf};

/// Every YAML or JSON file in `deploy/examples/` and `deploy/compose/config/`, sorted.
pub fn example_files() -> Vec<PathBuf> {
    let deploy = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy");
    let mut files = Vec::new();
    for dir in [deploy.join("examples"), deploy.join("compose/config")] {
        let entries = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("cannot list {}: {e}", dir.display()));
        for entry in entries {
            let path = entry
                .unwrap_or_else(|e| panic!("cannot list {}: {e}", dir.display()))
                .path();
            if path.extension().is_some_and(|x| x == "yaml" || x == "json") {
                files.push(path);
            }
        }
    }
    files.sort();
    files
}
