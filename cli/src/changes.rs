//! The change list printed by `apply`, `rollback` and `delete`: what happened to each resource
//! and the resulting revision.

use portico_api::pb::{ChangeType, ResourceChange};
use serde::Serialize;

use crate::files::FieldError;
use crate::output::Style;

/// One changed (or unchanged) resource. JSON: `{"kind", "name", "change"}` where `change` is
/// one of `created`, `updated`, `unchanged`, `deleted`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Change {
    /// The resource's kind, e.g. "RouteTable".
    pub kind: String,
    /// The resource's name.
    pub name: String,
    /// created, updated, unchanged or deleted.
    pub change: &'static str,
}

impl Change {
    /// From the API's form.
    pub fn from_pb(c: &ResourceChange) -> Change {
        let key = c.key.clone().unwrap_or_default();
        Change {
            kind: key.kind().display_name().to_string(),
            name: key.name,
            change: change_name(c.change()),
        }
    }
}

/// The name of a change type as printed and in JSON.
pub fn change_name(c: ChangeType) -> &'static str {
    match c {
        ChangeType::Created => "created",
        ChangeType::Updated => "updated",
        ChangeType::Unchanged => "unchanged",
        ChangeType::Deleted => "deleted",
        ChangeType::Unspecified => "unknown",
    }
}

/// The outcome of a config change. Rendered as JSON/YAML by `apply`, `rollback` and `delete`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Outcome {
    /// The config revision after the change (the current one when nothing changed or on a
    /// dry run).
    pub revision: i64,
    /// True when nothing changed and no revision was created.
    pub noop: bool,
    /// True when nothing was written because `--dry-run` was given.
    pub dry_run: bool,
    /// For a rollback: the revision whose config was restored.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rollback_of: Option<i64>,
    /// For `apply --canary`: the selector of the agents that get the revision first.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub canary: Option<String>,
    /// Every resource involved, in the order the server listed them.
    pub changes: Vec<Change>,
    /// Validation errors; when non-empty nothing was written.
    pub errors: Vec<FieldError>,
}

impl Outcome {
    /// The human form: one line per resource, then a summary line, and for a canary apply
    /// that wrote a revision, how to follow its rollout.
    pub fn table(&self, style: Style) -> String {
        let mut out = String::new();
        for c in &self.changes {
            // As wide as the longest word, "unchanged", so names line up across commands.
            let padded = format!("{:9}", c.change);
            let word = match c.change {
                "created" => style.green(&padded),
                "updated" => style.yellow(&padded),
                "deleted" => style.red(&padded),
                _ => padded,
            };
            let name = crate::output::escaped(&c.name, false);
            out.push_str(&format!("{word}   {}/{name}\n", c.kind));
        }
        out.push_str(&self.summary());
        out.push('\n');
        if let Some(selector) = self
            .canary
            .as_deref()
            .filter(|_| !self.dry_run && !self.noop)
        {
            out.push_str(&format!(
                "revision {} is rolling out to the canary agents ({}); follow it with: \
                 portico rollout status --wait\n",
                self.revision,
                crate::output::escaped(selector, false)
            ));
        }
        out
    }

    fn summary(&self) -> String {
        let count = |what: &str| self.changes.iter().filter(|c| c.change == what).count();
        let counts = format!(
            "{} created, {} updated, {} deleted, {} unchanged",
            count("created"),
            count("updated"),
            count("deleted"),
            count("unchanged")
        );
        if self.dry_run {
            format!(
                "dry run: {counts}; nothing was written (config is at revision {})",
                self.revision
            )
        } else if self.noop {
            format!("no changes; config is at revision {}", self.revision)
        } else if let Some(old) = self.rollback_of {
            format!(
                "{counts}; restored revision {old} as revision {}",
                self.revision
            )
        } else {
            format!("{counts}; revision {}", self.revision)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn change(kind: &str, name: &str, change: &'static str) -> Change {
        Change {
            kind: kind.into(),
            name: name.into(),
            change,
        }
    }

    #[test]
    fn applied_changes_list_each_resource_and_the_new_revision() {
        let outcome = Outcome {
            revision: 12,
            changes: vec![
                change("Listener", "public", "created"),
                change("Cluster", "web", "unchanged"),
                change("Cluster", "old", "deleted"),
            ],
            ..Default::default()
        };
        assert_eq!(
            outcome.table(Style::plain()),
            "created     Listener/public\n\
             unchanged   Cluster/web\n\
             deleted     Cluster/old\n\
             1 created, 0 updated, 1 deleted, 1 unchanged; revision 12\n"
        );
    }

    #[test]
    fn dry_runs_and_noops_say_nothing_was_written() {
        let dry = Outcome {
            revision: 4,
            dry_run: true,
            changes: vec![change("Cluster", "web", "updated")],
            ..Default::default()
        };
        assert!(dry.table(Style::plain()).ends_with(
            "dry run: 0 created, 1 updated, 0 deleted, 0 unchanged; nothing was written (config is at revision 4)\n"
        ));
        let noop = Outcome {
            revision: 4,
            noop: true,
            ..Default::default()
        };
        assert_eq!(
            noop.table(Style::plain()),
            "no changes; config is at revision 4\n"
        );
    }

    #[test]
    fn a_canary_apply_says_how_to_follow_the_rollout() {
        let outcome = Outcome {
            revision: 7,
            canary: Some("slot=1".into()),
            changes: vec![change("RouteTable", "shop", "updated")],
            ..Default::default()
        };
        assert_eq!(
            outcome.table(Style::plain()),
            "updated     RouteTable/shop\n\
             0 created, 1 updated, 0 deleted, 0 unchanged; revision 7\n\
             revision 7 is rolling out to the canary agents (slot=1); follow it with: portico \
             rollout status --wait\n"
        );
        // Nothing rolls out when nothing was written.
        for outcome in [
            Outcome {
                noop: true,
                ..outcome.clone()
            },
            Outcome {
                dry_run: true,
                ..outcome.clone()
            },
        ] {
            assert!(!outcome.table(Style::plain()).contains("rolling out"));
        }
        let v = serde_json::to_value(&outcome).unwrap();
        assert_eq!(v["canary"], "slot=1");
        assert_eq!(v["revision"], 7);
    }

    #[test]
    fn outcome_json_fields_are_stable() {
        let outcome = Outcome {
            revision: 3,
            rollback_of: Some(1),
            changes: vec![change("RouteTable", "shop", "updated")],
            ..Default::default()
        };
        let v = serde_json::to_value(&outcome).unwrap();
        assert_eq!(
            v,
            serde_json::json!({
                "revision": 3, "noop": false, "dry_run": false, "rollback_of": 1,
                "changes": [{"kind": "RouteTable", "name": "shop", "change": "updated"}],
                "errors": []
            })
        );
    }
}
