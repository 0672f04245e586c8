//! How many worker threads serve traffic by default: one per core the agent may run on.

use portico_integration_tests::agent::{Agent, AgentOptions};
use portico_test_support::net::free_addr;
use portico_test_support::wait::eventually;
use std::time::Duration;

/// The agent's `portico_agent_proxy_workers` gauge, once its metrics show it.
async fn workers(agent: &Agent) -> usize {
    eventually(
        "the agent's worker gauge",
        Duration::from_secs(30),
        || async {
            let (_, body) = agent.get("/metrics").await?;
            body.lines()
                .find_map(|l| l.strip_prefix("portico_agent_proxy_workers "))
                .and_then(|v| v.trim().parse().ok())
        },
    )
    .await
}

#[tokio::test]
async fn the_default_worker_count_follows_the_cores_the_agent_may_use() {
    // No control plane answers there: the agent serves its admin endpoint regardless.
    let nowhere = format!("http://{}", free_addr());
    let cores = std::thread::available_parallelism().unwrap().get();
    let all = Agent::start(&AgentOptions::new(
        "all-cores",
        std::slice::from_ref(&nowhere),
    ));
    assert_eq!(workers(&all).await, cores);

    // Pinned to one core (`taskset -c 0`, util-linux): one worker, whatever the host has.
    let pinned = Agent::start(&AgentOptions {
        cpus: Some("0".into()),
        ..AgentOptions::new("one-core", &[nowhere])
    });
    assert_eq!(workers(&pinned).await, 1);
}
