//! Upstream TLS end to end: a cluster without a CA Secret trusts the agent host's roots, which
//! `SSL_CERT_FILE` points at a CA made for the test (the test cannot reach a public upstream).

use portico_api::pb;
use portico_integration_tests::agent::{Agent, AgentOptions};
use portico_integration_tests::cli::Files;
use portico_integration_tests::cp::ControlPlane;
use portico_test_support::http::get;
use portico_test_support::net::free_port;
use portico_test_support::resources::{
    Edit, cluster, listener, prefix, route, route_table, sni, to, vhost,
};
use portico_test_support::tls::Ca;
use portico_test_support::upstream::Upstream;

/// An upstream serving HTTPS for `name` with a certificate `ca` issued.
async fn tls_upstream(ca: &Ca, name: &str) -> Upstream {
    let cert = ca.issue(name);
    let tls = portico_proxy::tls::server_config(
        &pb::ListenerTls {
            certificates: vec![sni("cert", &[name])],
            ..Default::default()
        },
        |_| Some(cert.secret.clone()),
    )
    .unwrap();
    Upstream::start_tls(name, tls).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_upstream_tls_without_a_ca_secret_trusts_the_system_roots() {
    let (trusted, unknown) = (Ca::new("host roots"), Ca::new("nobody"));
    let files = Files::new();
    let bundle = files.write("roots.pem", &trusted.trust().certificate_chain);
    let good = tls_upstream(&trusted, "good.internal").await;
    let bad = tls_upstream(&unknown, "bad.internal").await;

    let cp = ControlPlane::embedded();
    let mut options = AgentOptions::new("edge-tls", &[cp.endpoint()]);
    options.env.push(("SSL_CERT_FILE".into(), bundle));
    let agent = Agent::start(&options);
    let port = free_port();
    let system_tls = |name: &str, up: &Upstream| {
        cluster(name, &[up.addr]).with(|c: &mut pb::Cluster| {
            c.tls = Some(pb::UpstreamTls {
                enabled: true,
                server_name: format!("{name}.internal"),
                ..Default::default()
            })
        })
    };
    let v = cp
        .apply(vec![
            listener("web", port, "rt"),
            route_table(
                "rt",
                vec![vhost(
                    "all",
                    &["*"],
                    vec![
                        route("bad", prefix("/bad"), to("bad")),
                        route("good", prefix("/"), to("good")),
                    ],
                )],
            ),
            system_tls("good", &good),
            system_tls("bad", &bad),
        ])
        .await
        .revision;
    agent.wait_for_version(v).await;

    let answer = get(port, "shop", "/hello").await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_eq!(answer.upstream(), "good.internal");
    // A certificate from a CA the host does not trust: the handshake fails, and the client
    // gets 502, not a hang or a crash.
    let refused = get(port, "shop", "/bad").await;
    assert_eq!(refused.status, 502, "{}", refused.body);
    assert_eq!(bad.hits(), 0);
    assert_eq!(good.hits(), 1);
}
