//! Every example config under `deploy/` loads and validates, so none goes stale. (The CLI
//! tests also apply them to a real control plane.)

use std::path::{Path, PathBuf};

use portico_api::ResourceSet;
use portico_api::file::load_paths;
use portico_api::validate::validate_set;

/// The resource files of the examples: `deploy/examples/*` and the compose demo's config.
fn example_files() -> Vec<PathBuf> {
    let deploy = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy");
    let mut files = Vec::new();
    for dir in [deploy.join("examples"), deploy.join("compose/config")] {
        let entries = std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
        for entry in entries {
            let path = entry
                .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
                .path();
            if path
                .extension()
                .is_some_and(|x| x == "yaml" || x == "yml" || x == "json")
            {
                files.push(path);
            }
        }
    }
    files.sort();
    files
}

#[test]
fn every_example_config_loads_and_validates() {
    let files = example_files();
    assert!(
        files
            .iter()
            .any(|f| f.ends_with("examples/quickstart.yaml")),
        "quickstart.yaml missing from {files:?}"
    );
    for file in files {
        let loaded = load_paths(std::slice::from_ref(&file)).unwrap_or_else(|errors| {
            let lines: Vec<String> = errors.iter().map(ToString::to_string).collect();
            panic!("{} does not load:\n{}", file.display(), lines.join("\n"))
        });
        assert!(!loaded.is_empty(), "{} holds no resources", file.display());
        let set: ResourceSet = loaded.into_iter().map(|l| l.resource).collect();
        let errors = validate_set(&set);
        assert!(
            errors.is_empty(),
            "{} does not validate:\n{}",
            file.display(),
            errors
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("\n")
        );
    }
}
