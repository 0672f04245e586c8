//! Apply → all-ACK latency for a fleet of scripted agents on one `portico-cp` (embedded store).
//! A measurement, not a test: ignored by default, it prints its numbers.
//!
//! `cargo test --release -p portico-integration-tests --test e2e control_plane_latency -- --ignored --nocapture`

use std::time::{Duration, Instant};

use portico_api::Resource;
use portico_api::pb::ApplyRequest;
use portico_integration_tests::cp::{ControlPlane, catch_all};
use portico_integration_tests::scripted_agent::{ScriptedAgent, node};
use portico_test_support::net::localhost;
use portico_test_support::resources::{cluster, listener};
use tokio::sync::mpsc;

/// Cluster `backend` with one endpoint on `port`.
fn backend(port: u16) -> Resource {
    cluster("backend", &[localhost(port)])
}

const FLEETS: [usize; 3] = [1, 100, 1000];
const ROUNDS: usize = 10;

#[tokio::test(flavor = "multi_thread")]
#[ignore = "a measurement; run with --ignored --nocapture"]
async fn apply_to_all_ack_latency() {
    for agents in FLEETS {
        let cp = ControlPlane::embedded();
        let admin = cp.admin().await;
        let apply = |resources: Vec<Resource>| {
            let mut admin = admin.clone();
            async move {
                admin
                    .apply(ApplyRequest {
                        resources,
                        ..Default::default()
                    })
                    .await
                    .expect("apply")
                    .into_inner()
                    .revision
            }
        };
        let first = apply(vec![
            listener("web", 8080, "shop"),
            catch_all("shop", "backend"),
            backend(9000),
        ])
        .await;

        // Each agent ACKs every update at once and reports the version it ACKed.
        let (acks, mut acked) = mpsc::unbounded_channel::<(i64, Instant)>();
        for i in 0..agents {
            let mut agent =
                ScriptedAgent::connect(&cp.endpoint(), node(&format!("a{i}"), "eu", "eu-1"), 0)
                    .await
                    .expect("connect");
            let acks = acks.clone();
            tokio::spawn(async move {
                while let Some(update) = agent.next_update(Duration::from_secs(60)).await {
                    agent.ack(&update);
                    if acks.send((update.version, Instant::now())).is_err() {
                        return;
                    }
                }
            });
        }
        wait_all(&mut acked, agents, first).await;

        let mut samples = Vec::with_capacity(ROUNDS);
        for round in 0..ROUNDS {
            let start = Instant::now();
            let revision = apply(vec![backend(9001 + round as u16)]).await;
            let last = wait_all(&mut acked, agents, revision).await;
            samples.push(last.duration_since(start));
        }
        samples.sort();
        println!(
            "agents={agents:5} rounds={ROUNDS} apply→all-ACK p50={:?} max={:?}",
            samples[ROUNDS / 2],
            samples[ROUNDS - 1]
        );
    }
}

/// Waits until `agents` ACKs of `version` (or newer) arrived; the time of the last one.
async fn wait_all(
    acked: &mut mpsc::UnboundedReceiver<(i64, Instant)>,
    agents: usize,
    version: i64,
) -> Instant {
    let mut count = 0;
    let mut last = Instant::now();
    while count < agents {
        let (v, at) = acked.recv().await.expect("agents alive");
        if v >= version {
            count += 1;
            last = at;
        }
    }
    last
}
