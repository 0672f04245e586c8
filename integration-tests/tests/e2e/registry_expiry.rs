//! The agent registry forgets agents that stay disconnected longer than `--agent-expiry`;
//! until then they are listed as `disconnected`.

use std::time::Duration;

use portico_integration_tests::agent::{Agent, AgentOptions};
use portico_integration_tests::cp::{ControlPlane, CpOptions};
use portico_test_support::wait::eventually;

/// Each agent's id and state, as `portico agents -o json` lists them.
fn states(cp: &ControlPlane) -> Vec<(String, String)> {
    let agents = cp.portico(&["-o", "json", "agents"]).ok().json();
    agents["agents"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            let text = |f: &str| a[f].as_str().unwrap_or_default().to_string();
            (text("id"), text("state"))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_disconnected_agent_is_listed_until_it_expires() {
    let cp = ControlPlane::embedded_with(|o| CpOptions {
        args: vec!["--agent-expiry".into(), "3s".into()],
        ..o
    });
    let mut gone = Agent::start(&AgentOptions::new("gone-1", &[cp.endpoint()]));
    let _stays = Agent::start(&AgentOptions::new("stays-1", &[cp.endpoint()]));
    for id in ["gone-1", "stays-1"] {
        cp.wait_for_record(id, "the agent to register", |r| r.connected)
            .await;
    }
    gone.kill();
    let wait = Duration::from_secs(30);
    eventually("gone-1 to be listed as disconnected", wait, || async {
        states(&cp)
            .contains(&("gone-1".to_string(), "disconnected".to_string()))
            .then_some(())
    })
    .await;
    let forgotten = eventually("gone-1 to be forgotten", wait, || async {
        let states = states(&cp);
        (!states.iter().any(|(id, _)| id == "gone-1")).then_some(states)
    })
    .await;
    assert_eq!(forgotten.len(), 1, "{forgotten:?}");
    assert_eq!(forgotten[0].0, "stays-1", "a connected agent never expires");
    assert_ne!(forgotten[0].1, "disconnected");
}
