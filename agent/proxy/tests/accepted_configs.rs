//! Every config validation accepts compiles on an agent: the example files shipped under
//! `deploy/`, the valid fixture configuration and the edge cases validation accepts. A field
//! validation lets through but the agent cannot build is a config that the control plane
//! stores and every agent then rejects.
#![allow(clippy::unwrap_used)]

use std::path::Path;

use portico_api::file::load_paths;
use portico_api::node::DataPlane;
use portico_api::pb::resource::Spec;
use portico_api::validate::validate_set;
use portico_api::{Kind, ResourceSet};
use portico_proxy::config::ConfigSet;
use portico_proxy::runtime::{NodeInfo, Runtime};
use portico_test_support::examples::example_files;
use portico_test_support::fixtures::{accepted, valid, valid_with};

/// Checks that `set` validates, then compiles it, with two proxy workers, on a node that
/// each of its listeners selects, and that the listener is then served, unless Portico agents
/// do not run it (API listeners, listeners for Envoy only).
fn validates_and_compiles(what: &str, set: &ResourceSet) {
    let errors: Vec<String> = validate_set(set).iter().map(|e| e.to_string()).collect();
    assert!(
        errors.is_empty(),
        "{what} does not validate:\n{}",
        errors.join("\n")
    );
    let config = ConfigSet {
        version: 1,
        resources: set.clone(),
        ..Default::default()
    };
    let mut listeners = 0;
    for r in set.of_kind(Kind::Listener) {
        let Some(Spec::Listener(l)) = &r.spec else {
            continue;
        };
        let node = NodeInfo::first_selected_by(l.selector.as_ref());
        assert!(node.selected_by(l.selector.as_ref()), "{what}: {}", r.name);
        let runtime = Runtime::compile(&config, &node, &Runtime::default(), 2)
            .unwrap_or_else(|e| panic!("{what} does not compile on {node:?}: {e}"));
        let served = runtime
            .listeners
            .values()
            .any(|compiled| *compiled.conn.name == *r.name);
        // API listeners and listeners for Envoy only are compiled around, never bound.
        let portico = DataPlane::Portico.runs(l);
        assert_eq!(
            served,
            portico,
            "{what}: listener {} is {}served on {node:?}",
            r.name,
            if served { "" } else { "not " }
        );
        listeners += 1;
    }
    assert!(listeners > 0, "{what} has no listener to compile");
}

#[test]
fn example_files_compile() {
    let files = example_files();
    assert!(
        files
            .iter()
            .any(|f| f.ends_with(Path::new("examples/quickstart.yaml"))),
        "{files:?}"
    );
    for file in files {
        let loaded = load_paths(std::slice::from_ref(&file)).unwrap_or_else(|errors| {
            let lines: Vec<String> = errors.iter().map(ToString::to_string).collect();
            panic!("{} does not load:\n{}", file.display(), lines.join("\n"))
        });
        let set: ResourceSet = loaded.into_iter().map(|l| l.resource).collect();
        validates_and_compiles(&file.display().to_string(), &set);
    }
}

#[test]
fn valid_fixtures_compile() {
    validates_and_compiles("the valid fixtures", &valid().into_iter().collect());
    for (what, yaml) in accepted() {
        validates_and_compiles(what, &valid_with(&yaml));
    }
}
