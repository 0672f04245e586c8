//! Unified diffs of resources as YAML: what `portico diff` prints, and the diff of a history
//! change (`GetChange`) that the CLI and the dashboard show.

use similar::TextDiff;

use crate::file::{RenderError, to_yaml};
use crate::pb::{Resource, ResourceDelta};

/// A unified diff with three lines of context.
pub fn unified(old: &str, new: &str, old_label: &str, new_label: &str) -> String {
    TextDiff::from_lines(old, new)
        .unified_diff()
        .context_radius(3)
        .header(old_label, new_label)
        .to_string()
}

/// The diff of the deltas of the change that made `revision`, one resource after another.
/// Secrets show as history keeps them (material redacted), with their fingerprints when the
/// material changed and nothing else did.
pub fn change(revision: i64, deltas: &[ResourceDelta]) -> Result<String, RenderError> {
    let yaml = |r: &Option<Resource>| match r {
        Some(r) => to_yaml(std::slice::from_ref(r)),
        None => Ok(String::new()),
    };
    let mut out = String::new();
    for delta in deltas {
        let key = delta.key.clone().unwrap_or_default().to_string();
        let (old, new) = (yaml(&delta.before)?, yaml(&delta.after)?);
        let old_label = match delta.before {
            Some(_) => format!("{key} (revision {})", revision - 1),
            None => "/dev/null".to_string(),
        };
        let new_label = match delta.after {
            Some(_) => format!("{key} (revision {revision})"),
            None => "/dev/null".to_string(),
        };
        if old == new {
            if delta.before_fingerprint != delta.after_fingerprint {
                out.push_str(&format!(
                    "{key}: secret material changed ({} -> {})\n",
                    delta.before_fingerprint, delta.after_fingerprint
                ));
            }
            continue;
        }
        out.push_str(&unified(&old, &new, &old_label, &new_label));
    }
    Ok(out)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::Kind;
    use crate::pb::ResourceKey;

    #[test]
    fn unified_diff_shows_changed_lines_with_labels() {
        let d = unified("a: 1\nb: 2\n", "a: 1\nb: 3\n", "old", "new");
        assert_eq!(
            d,
            "--- old\n+++ new\n@@ -1,2 +1,2 @@\n a: 1\n-b: 2\n+b: 3\n"
        );
    }

    #[test]
    fn a_change_diffs_each_resource_and_labels_creations_and_deletions() {
        let cluster = |name: &str, timeout: u32| {
            let yaml = format!(
                "kind: Cluster\nname: {name}\nspec:\n  endpoints:\n  - address: 10.0.0.1:80\n  \
                 connect_timeout: {timeout}s\n"
            );
            crate::file::parse(std::path::Path::new("t.yaml"), &yaml).unwrap()[0]
                .resource
                .clone()
        };
        let deltas = vec![
            ResourceDelta {
                key: Some(ResourceKey::new(Kind::Cluster, "a")),
                before: Some(cluster("a", 1)),
                after: Some(cluster("a", 2)),
                ..Default::default()
            },
            ResourceDelta {
                key: Some(ResourceKey::new(Kind::Cluster, "b")),
                after: Some(cluster("b", 1)),
                ..Default::default()
            },
        ];
        let d = change(7, &deltas).unwrap();
        assert!(
            d.contains("--- Cluster/a (revision 6)\n+++ Cluster/a (revision 7)"),
            "{d}"
        );
        assert!(
            d.contains("-  connectTimeout: 1s\n+  connectTimeout: 2s"),
            "{d}"
        );
        assert!(
            d.contains("--- /dev/null\n+++ Cluster/b (revision 7)"),
            "{d}"
        );
    }
}
