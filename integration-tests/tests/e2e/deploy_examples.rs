//! Every example config under `deploy/` loads and validates, so none goes stale. (The CLI
//! tests also apply them to a real control plane, and the agent's tests compile them.)

use portico_api::ResourceSet;
use portico_api::file::load_paths;
use portico_api::validate::validate_set;
use portico_test_support::examples::example_files;

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
