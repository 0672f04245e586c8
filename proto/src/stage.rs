//! Canary rollout stages by name, as the CLI prints them and the control plane's metrics label
//! them.

use crate::pb::RolloutStage;

impl RolloutStage {
    /// The stage's name: `canary`, `baking`, `promoting`, `done`, `aborted`, or `unknown` when
    /// unset.
    pub fn name(self) -> &'static str {
        match self {
            RolloutStage::Canary => "canary",
            RolloutStage::Baking => "baking",
            RolloutStage::Promoting => "promoting",
            RolloutStage::Done => "done",
            RolloutStage::Aborted => "aborted",
            RolloutStage::Unspecified => "unknown",
        }
    }
}
