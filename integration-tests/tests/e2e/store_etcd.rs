//! What only the etcd store has: connecting (fail fast, TLS with client certificates) and
//! losing the connection (errors are retryable, watches end with an error).

use std::path::Path;
use std::time::{Duration, Instant};

use futures::StreamExt;
use portico_control_plane::store::etcd::{EtcdConfig, EtcdStore, EtcdTls};
use portico_control_plane::store::{Op, Store, StoreError, Txn, TxnOutcome};
use portico_integration_tests::etcd::{Etcd, EtcdTlsFiles};
use portico_test_support::net::free_addr;
use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair, SanType};

fn put(key: &str) -> Txn {
    Txn {
        compares: vec![],
        ops: vec![Op::Put {
            key: key.into(),
            value: b"v".to_vec(),
            lease: None,
        }],
    }
}

#[tokio::test]
async fn connect_fails_fast_when_etcd_is_unreachable() {
    let endpoint = format!("http://{}", free_addr());
    let mut config = EtcdConfig::new([endpoint.clone()]);
    config.connect_timeout = Duration::from_secs(1);
    let started = Instant::now();
    match EtcdStore::connect(&config).await {
        Err(e @ StoreError::Unavailable(_)) => {
            assert!(e.to_string().contains(&endpoint), "{e}");
        }
        Err(e) => panic!("expected Unavailable, got {e}"),
        Ok(_) => panic!("connected to nothing"),
    }
    // Bounded by the connect timeout, with slack for a busy machine.
    assert!(started.elapsed() < Duration::from_secs(10));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_live_endpoint_of_several_is_enough() {
    let etcd = tokio::task::spawn_blocking(Etcd::start)
        .await
        .expect("etcd");
    let dead = format!("http://{}", free_addr());
    let store = EtcdStore::connect(&EtcdConfig::new([dead, etcd.endpoint()]))
        .await
        .expect("connect with one endpoint down");
    for i in 0..10 {
        let key = format!("/multi/{i}");
        store.txn(put(&key)).await.expect("txn");
        assert!(store.get(&key).await.expect("get").is_some());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_etcd_gives_retryable_errors_and_ends_watches() {
    let mut etcd = tokio::task::spawn_blocking(Etcd::start)
        .await
        .expect("etcd");
    let mut config = EtcdConfig::new([etcd.endpoint()]);
    config.request_timeout = Duration::from_secs(2);
    let store = EtcdStore::connect(&config).await.expect("connect");
    let TxnOutcome::Committed(rev) = store.txn(put("/a")).await.expect("txn") else {
        panic!("conflict without compares");
    };
    let mut watch = store.watch("/", rev + 1).await.expect("watch");

    etcd.kill();
    let err = store.get("/a").await.expect_err("get from a dead etcd");
    assert!(err.is_retryable(), "{err:?}");
    let end = tokio::time::timeout(Duration::from_secs(30), watch.next())
        .await
        .expect("the watch notices within 30s");
    match end {
        Some(Err(e)) => assert!(e.is_retryable(), "{e:?}"),
        other => panic!("expected a watch error, got {other:?}"),
    }
}

/// A CA, and etcd's server certificate and a client certificate signed by it, as PEM files.
fn write_certs(dir: &Path) -> (EtcdTlsFiles, EtcdTls) {
    let ca_key = KeyPair::generate().expect("key");
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("params");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca_cert = ca_params.self_signed(&ca_key).expect("CA");
    let ca = Issuer::new(ca_params, ca_key);

    let sign = |name: &str, sans: Vec<SanType>| {
        let key = KeyPair::generate().expect("key");
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
        params.subject_alt_names = sans;
        let cert = params.signed_by(&key, &ca).expect("sign");
        let cert_path = dir.join(format!("{name}.pem"));
        let key_path = dir.join(format!("{name}-key.pem"));
        std::fs::write(&cert_path, cert.pem()).expect("write cert");
        std::fs::write(&key_path, key.serialize_pem()).expect("write key");
        (cert_path, key_path)
    };
    let (server_cert, server_key) = sign("server", vec![SanType::IpAddress([127, 0, 0, 1].into())]);
    let (client_cert, client_key) = sign(
        "client",
        vec![SanType::DnsName("portico-cp".try_into().expect("name"))],
    );
    let ca_path = dir.join("ca.pem");
    std::fs::write(&ca_path, ca_cert.pem()).expect("write CA");
    let server = EtcdTlsFiles {
        cert: server_cert,
        key: server_key,
        client_ca: ca_path.clone(),
    };
    let client = EtcdTls {
        ca: Some(ca_path),
        client_cert: Some(client_cert),
        client_key: Some(client_key),
        server_name: None,
    };
    (server, client)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_with_a_client_certificate() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (server, client) = write_certs(dir.path());
    let etcd = tokio::task::spawn_blocking(move || Etcd::start_tls(&server))
        .await
        .expect("etcd");
    assert!(etcd.endpoint().starts_with("https://"));

    let mut config = EtcdConfig::new([etcd.endpoint()]);
    config.tls = Some(client.clone());
    let store = EtcdStore::connect(&config).await.expect("connect over TLS");
    store.txn(put("/tls")).await.expect("txn over TLS");
    let kv = store.get("/tls").await.expect("get").expect("/tls exists");
    assert_eq!(kv.value, b"v");

    // etcd requires the client certificate.
    config.tls = Some(EtcdTls {
        client_cert: None,
        client_key: None,
        ..client.clone()
    });
    config.connect_timeout = Duration::from_secs(2);
    match EtcdStore::connect(&config).await {
        Err(StoreError::Unavailable(_)) => {}
        Err(e) => panic!("expected Unavailable, got {e}"),
        Ok(_) => panic!("connected without a client certificate"),
    }

    // A certificate without its key is a configuration error.
    config.tls = Some(EtcdTls {
        client_key: None,
        ..client
    });
    match EtcdStore::connect(&config).await {
        Err(StoreError::Invalid(_)) => {}
        other => panic!("expected Invalid, got {:?}", other.err()),
    }
}
