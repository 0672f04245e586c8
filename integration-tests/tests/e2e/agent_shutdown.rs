//! SIGTERM stops the agent cleanly: listeners close, requests in flight finish, exit 0.

use std::time::Duration;

use portico_integration_tests::agent::{Agent, AgentOptions};
use portico_integration_tests::cp::ControlPlane;
use portico_test_support::http::fetch;
use portico_test_support::net::{free_port, is_listening, localhost, refusing};
use portico_test_support::resources::routed;
use portico_test_support::upstream::Upstream;
use portico_test_support::wait::eventually;

#[tokio::test]
async fn sigterm_exits_0() {
    let down = refusing();
    let options = AgentOptions::new("term-1", &[down.url()]);
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_an_in_flight_request_then_exits_0() {
    let cp = ControlPlane::embedded();
    let slow = Upstream::start_name_only("slow").await;
    let mut options = AgentOptions::new("term-2", &[cp.endpoint()]);
    options.drain_timeout = Some(Duration::from_secs(20));
    let mut agent = Agent::start(&options);
    let port = free_port();
    let version = cp.apply(routed("shop", port, &[slow.addr])).await.revision;
    agent.wait_for_version(version).await;

    let request = tokio::spawn(fetch(format!("http://127.0.0.1:{port}/slow/2000")));
    eventually(
        "the request to reach the upstream",
        Duration::from_secs(10),
        || async { (slow.hits() == 1).then_some(()) },
    )
    .await;
    agent.terminate();
    // New connections are refused while the request is still running...
    eventually("the listener to close", Duration::from_secs(10), || async {
        (!is_listening(localhost(port))).then_some(())
    })
    .await;
    assert!(
        !request.is_finished(),
        "the slow request ended before the drain"
    );
    // ...and the request in flight finishes.
    let answer = request.await.unwrap();
    assert_eq!(answer, Some((200, "slow\n".to_string())));
    let status = tokio::task::spawn_blocking(move || {
        let status = agent.wait_exit(Duration::from_secs(20));
        (status, agent.log())
    })
    .await
    .unwrap();
    assert!(status.0.success(), "exit status {}\n{}", status.0, status.1);
}
