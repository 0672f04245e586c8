//! The agents' own compiler (`portico-proxy`'s `Runtime::compile`), run on a change before it
//! is written: config that any agent would NACK for its content is refused at apply and at
//! dry run, with the resource and field path the agent would report. Validation checks each
//! field by its rules; compiling builds what agents build (regex sets, TLS configurations,
//! JSON Web Keys, policies against the consumer directory) and finds what the rules miss.
//!
//! Agents compile only the listeners their node's selector matches, and everything else. The
//! config is compiled once for each node a listener selects (the listener's first region and
//! zone, and its labels), as that node's agent would, each compile starting from the previous
//! one so that clusters, policies and route tables are compiled once; with no listener, once
//! for any node. Nothing is bound, no health check starts, and the compiled parts' metrics go
//! nowhere (they would otherwise show up among the control plane's). It runs on a blocking
//! thread: a large config takes tens of milliseconds.

use std::collections::BTreeSet;

use portico_api::pb::resource::Spec;
use portico_api::validate::ValidationError;
use portico_api::{Kind, ResourceKey, ResourceSet};
use portico_proxy::config::ConfigSet;
use portico_proxy::runtime::{NodeInfo, Runtime};

/// Compiles `set` as every agent it selects would; the first error any of them would report.
pub async fn check(set: ResourceSet) -> Result<(), ValidationError> {
    let started = std::time::Instant::now();
    let resources = set.len();
    let compiled = tokio::task::spawn_blocking(move || check_blocking(&set)).await;
    tracing::debug!(
        resources,
        elapsed = ?started.elapsed(),
        "compiled the config as agents do"
    );
    match compiled {
        Ok(result) => result,
        // A panic in the compiler: refuse the change rather than store what agents may not
        // build either.
        Err(e) => Err(ValidationError {
            key: ResourceKey::default(),
            field: String::new(),
            message: format!("compiling the config as agents do failed: {e}"),
        }),
    }
}

/// [`check`] on the calling thread.
pub fn check_blocking(set: &ResourceSet) -> Result<(), ValidationError> {
    let config = ConfigSet {
        version: 0,
        resources: set.clone(),
        ..ConfigSet::default()
    };
    let recorder = metrics::NoopRecorder;
    metrics::with_local_recorder(&recorder, || {
        let mut previous = Runtime::default();
        for node in nodes(set) {
            previous = Runtime::compile(&config, &node, &previous, 1)?;
        }
        Ok(())
    })
}

/// One node per distinct listener selector (a node it selects), or one node when there is no
/// listener.
fn nodes(set: &ResourceSet) -> Vec<NodeInfo> {
    let mut seen = BTreeSet::new();
    let mut out = Vec::new();
    for r in set.of_kind(Kind::Listener) {
        let Some(Spec::Listener(l)) = &r.spec else {
            continue;
        };
        let node = NodeInfo::first_selected_by(l.selector.as_ref());
        let key = (node.region.clone(), node.zone.clone(), node.labels.clone());
        if seen.insert(key) {
            out.push(node);
        }
    }
    if out.is_empty() {
        out.push(NodeInfo::default());
    }
    out
}
