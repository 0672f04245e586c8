//! SIGTERM stops the agent cleanly.

use std::time::Duration;

use portico_integration_tests::agent::{Agent, AgentOptions};
use portico_integration_tests::net::{eventually, free_addr};

#[tokio::test]
async fn sigterm_exits_0() {
    let options = AgentOptions::new("term-1", &[format!("http://{}", free_addr())]);
    let mut agent = Agent::start(&options);
    eventually("the admin endpoint", Duration::from_secs(20), || async {
        agent.get("/healthz").await.filter(|r| r.0 == 200)
    })
    .await;
    agent.terminate();
    let status = agent.wait_exit(Duration::from_secs(10));
    assert!(status.success(), "exit status {status}\n{}", agent.log());
    assert!(agent.log().contains("agent stopped"), "{}", agent.log());
}
