//! Python's grpcio (C-core, from PyPI) on both sides of the gateway: its server behind an
//! HTTP2 cluster, its client through the h2c and the HTTPS listener. The virtualenv is made
//! on first use under the target directory; without python3 or PyPI the test fails, naming
//! what is missing.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use portico_api::pb;
use portico_test_support::process::Process;

use crate::support::*;

/// The grpcio server: the four kinds of call on raw bytes (no generated code), and an error
/// with trailing metadata.
const SERVER: &str = r#"
import sys
from concurrent import futures
import grpc

def unary(request, context):
    if request == b"fail":
        context.set_trailing_metadata((("x-detail", "kept"),))
        context.abort(grpc.StatusCode.NOT_FOUND, "asked to fail")
    return request

def collect(requests, context):
    return b"".join(requests)

def expand(request, context):
    for i in range(3):
        yield request + str(i).encode()

def chat(requests, context):
    for message in requests:
        yield message

handlers = {
    "Unary": grpc.unary_unary_rpc_method_handler(unary),
    "Collect": grpc.stream_unary_rpc_method_handler(collect),
    "Expand": grpc.unary_stream_rpc_method_handler(expand),
    "Chat": grpc.stream_stream_rpc_method_handler(chat),
}
server = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler("py.Echo", handlers),))
port = server.add_insecure_port("127.0.0.1:0")
server.start()
print(port, flush=True)
server.wait_for_termination()
"#;

/// The grpcio client: every kind of call and two error statuses through the gateway at
/// argv[1]; with argv[2] (a CA file), over TLS to the name grpc.test.
const CLIENT: &str = r#"
import sys
import grpc

target = sys.argv[1]
if len(sys.argv) > 2:
    with open(sys.argv[2], "rb") as f:
        credentials = grpc.ssl_channel_credentials(root_certificates=f.read())
    channel = grpc.secure_channel(
        target, credentials, options=(("grpc.ssl_target_name_override", "grpc.test"),)
    )
else:
    channel = grpc.insecure_channel(target)

unary = channel.unary_unary("/py.Echo/Unary")
assert unary(b"hello", timeout=10) == b"hello"
collect = channel.stream_unary("/py.Echo/Collect")
assert collect(iter([b"a", b"b", b"c"]), timeout=10) == b"abc"
expand = channel.unary_stream("/py.Echo/Expand")
assert list(expand(b"n", timeout=10)) == [b"n0", b"n1", b"n2"]
chat = channel.stream_stream("/py.Echo/Chat")
assert list(chat(iter([b"x", b"y"]), timeout=10)) == [b"x", b"y"]

try:
    unary(b"fail", timeout=10)
    sys.exit("the failing call succeeded")
except grpc.RpcError as err:
    assert err.code() == grpc.StatusCode.NOT_FOUND, err.code()
    assert err.details() == "asked to fail", err.details()
    assert ("x-detail", "kept") in err.trailing_metadata(), err.trailing_metadata()

try:
    channel.unary_unary("/py.Nothing/Call")(b"x", timeout=10)
    sys.exit("a call without a route succeeded")
except grpc.RpcError as err:
    assert err.code() == grpc.StatusCode.UNIMPLEMENTED, err.code()
    assert "no_route" in err.details(), err.details()

print("grpcio client: ok")
"#;

/// A virtualenv with grpcio, made once under the target directory.
fn grpcio_python() -> PathBuf {
    let venv = Path::new(env!("CARGO_TARGET_TMPDIR")).join("grpcio-venv");
    let python = venv.join("bin/python");
    let works = |python: &Path| {
        Command::new(python)
            .args(["-c", "import grpc"])
            .status()
            .is_ok_and(|s| s.success())
    };
    if works(&python) {
        return python;
    }
    let made = Command::new("python3")
        .args(["-m", "venv"])
        .arg(&venv)
        .output()
        .unwrap_or_else(|e| {
            panic!("this test needs python3 (with venv) to run grpcio: starting python3: {e}")
        });
    assert!(
        made.status.success(),
        "python3 -m venv {} failed (on Debian: apt-get install python3-venv): {}",
        venv.display(),
        String::from_utf8_lossy(&made.stderr)
    );
    let pip = Command::new(venv.join("bin/pip"))
        .args([
            "install",
            "--quiet",
            "--disable-pip-version-check",
            "grpcio",
        ])
        .output()
        .unwrap_or_else(|e| panic!("starting pip in {}: {e}", venv.display()));
    assert!(
        pip.status.success() && works(&python),
        "pip could not install grpcio from PyPI into {}: {}",
        venv.display(),
        String::from_utf8_lossy(&pip.stderr)
    );
    python
}

#[tokio::test(flavor = "multi_thread")]
async fn grpcio_clients_and_servers_talk_through_the_gateway() {
    let python = grpcio_python();
    let dir = tempfile::tempdir().unwrap();
    let (server_py, client_py) = (dir.path().join("server.py"), dir.path().join("client.py"));
    std::fs::write(&server_py, SERVER).unwrap();
    std::fs::write(&client_py, CLIENT).unwrap();
    let mut command = Command::new(&python);
    command.arg(&server_py);
    let server = Process::spawn("grpcio server", command);
    let port: u16 = eventually(
        "the grpcio server's port",
        Duration::from_secs(20),
        || async { server.stdout().lines().next()?.trim().parse().ok() },
    )
    .await;

    let (h2c, tls) = (free_port(), free_port());
    let cert = self_signed("grpc.test");
    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, &cert.secret.certificate_chain).unwrap();
    let backend = cluster("py", &[([127, 0, 0, 1], port).into()]).with(|c: &mut pb::Cluster| {
        c.protocol = pb::cluster::UpstreamProtocol::Http2 as i32;
    });
    let cfg = config(
        1,
        vec![
            listener("web", h2c, "rt"),
            https_listener("tls", tls, "rt", vec![sni("cert", &["grpc.test"])]),
            secret("cert", cert.secret),
            backend,
            route_table(
                "rt",
                vec![vhost(
                    "all",
                    &["*"],
                    vec![grpc_route("py", "py.Echo", "", "py")],
                )],
            ),
        ],
    );
    let proxy = proxy_with(&cfg).await;
    for (name, args) in [
        ("grpcio client (h2c)", vec![format!("127.0.0.1:{h2c}")]),
        (
            "grpcio client (TLS)",
            vec![format!("127.0.0.1:{tls}"), ca.display().to_string()],
        ),
    ] {
        let mut command = Command::new(&python);
        command.arg(&client_py).args(&args);
        let mut client = Process::spawn(name, command);
        let status = client.wait_timeout(Duration::from_secs(60));
        assert!(
            status.success(),
            "{name} failed:\n{}\n{}",
            client.output(),
            server.output()
        );
        assert!(
            client.stdout().contains("grpcio client: ok"),
            "{}",
            client.output()
        );
    }
    proxy.shutdown(Duration::from_secs(1)).await;
}
