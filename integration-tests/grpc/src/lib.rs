//! `portico-grpc-tests`: gRPC through Portico's data path, with gRPC implementations nobody
//! here wrote: tonic's generated client and server, tonic-health's `grpc.health.v1` service,
//! and Python's grpcio (in a virtualenv the tests create).
//!
//! The library holds the echo service the tests call and a server that serves it; the tests
//! are one binary, `tests/grpc`, a module per concern.
//!
//! # Layout
//! - [`pb`]: the generated code of `proto/echo.proto` (client and server).
//! - [`EchoService`]: the service: one method per kind of call.
//! - [`EchoServer`]: a tonic server of the service and of `grpc.health.v1.Health` on port 0,
//!   stopped on drop; [`serve`] the same on a given socket (the `grpc-echo-server` binary,
//!   which the gRPC benchmark runs behind the gateway and nginx).

use std::net::SocketAddr;
use std::pin::Pin;
use std::time::Duration;

use futures::{Stream, StreamExt};
use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status, Streaming};
use tonic_health::ServingStatus;
use tonic_health::server::HealthReporter;

/// The generated code of the echo service.
#[allow(clippy::unwrap_used, missing_docs)]
pub mod pb {
    tonic::include_proto!("portico.test.echo");
}

use pb::Msg;
use pb::echo_server::{Echo, EchoServer as EchoGrpc};

/// The echo service's fully-qualified name, as health checks and routes name it.
pub const SERVICE: &str = "portico.test.echo.Echo";

/// The echo service (see `proto/echo.proto`), answering as `name`.
#[derive(Clone, Debug)]
pub struct EchoService {
    name: String,
    /// When set, every unary call fails with this code.
    fail: Option<tonic::Code>,
}

type MsgStream = Pin<Box<dyn Stream<Item = Result<Msg, Status>> + Send>>;

impl EchoService {
    fn reply(&self, text: String, count: u32) -> Msg {
        Msg {
            text,
            count,
            server: self.name.clone(),
            ..Msg::default()
        }
    }
}

/// A status that carries metadata besides code and message, to check that trailers pass
/// unchanged.
fn failure(code: u32) -> Status {
    let mut status = Status::new(tonic::Code::from_i32(code as i32), "asked to fail");
    status.metadata_mut().insert(
        "x-detail",
        tonic::metadata::MetadataValue::from_static("kept"),
    );
    status
}

#[tonic::async_trait]
impl Echo for EchoService {
    async fn unary(&self, request: Request<Msg>) -> Result<Response<Msg>, Status> {
        let msg = request.into_inner();
        if msg.delay_ms > 0 {
            // The server's own work taking time, as a slow server's would.
            tokio::time::sleep(Duration::from_millis(msg.delay_ms.into())).await;
        }
        if let Some(code) = self.fail {
            return Err(Status::new(code, format!("{} fails", self.name)));
        }
        if msg.fail_code != 0 {
            return Err(failure(msg.fail_code));
        }
        let len = u32::try_from(msg.payload.len()).unwrap_or(u32::MAX);
        Ok(Response::new(self.reply(msg.text, len)))
    }

    async fn collect(&self, request: Request<Streaming<Msg>>) -> Result<Response<Msg>, Status> {
        let mut stream = request.into_inner();
        let (mut text, mut count) = (String::new(), 0);
        while let Some(msg) = stream.next().await {
            text.push_str(&msg?.text);
            count += 1;
        }
        Ok(Response::new(self.reply(text, count)))
    }

    type ExpandStream = MsgStream;

    async fn expand(&self, request: Request<Msg>) -> Result<Response<MsgStream>, Status> {
        let msg = request.into_inner();
        let this = self.clone();
        let delay = Duration::from_millis(msg.delay_ms.into());
        let stream = async_stream(move |tx| async move {
            for i in 0..msg.count {
                if i > 0 && !delay.is_zero() {
                    tokio::time::sleep(delay).await;
                }
                let reply = this.reply(format!("{}-{i}", msg.text), i);
                if tx.send(Ok(reply)).await.is_err() {
                    return;
                }
            }
            if msg.fail_code != 0 {
                let _ = tx.send(Err(failure(msg.fail_code))).await;
            }
        });
        Ok(Response::new(stream))
    }

    type ChatStream = MsgStream;

    async fn chat(&self, request: Request<Streaming<Msg>>) -> Result<Response<MsgStream>, Status> {
        let this = self.clone();
        let stream = request
            .into_inner()
            .map(move |msg| msg.map(|m| this.reply(m.text, m.count)));
        Ok(Response::new(Box::pin(stream)))
    }
}

/// A stream fed by `produce` through a channel.
fn async_stream<F, Fut>(produce: F) -> MsgStream
where
    F: FnOnce(tokio::sync::mpsc::Sender<Result<Msg, Status>>) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let (tx, rx) = tokio::sync::mpsc::channel(16);
    tokio::spawn(produce(tx));
    Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx))
}

/// A tonic server of the echo service and `grpc.health.v1.Health` (h2c), on a port of its own
/// until dropped.
pub struct EchoServer {
    /// Where it listens.
    pub addr: SocketAddr,
    health: HealthReporter,
    stop: CancellationToken,
}

impl EchoServer {
    /// Starts a server answering as `name`.
    pub async fn start(name: &str) -> EchoServer {
        Self::serve(name, None).await
    }

    /// Starts a server whose every unary call fails with `code`.
    pub async fn failing(name: &str, code: tonic::Code) -> EchoServer {
        Self::serve(name, Some(code)).await
    }

    async fn serve(name: &str, fail: Option<tonic::Code>) -> EchoServer {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .unwrap_or_else(|e| panic!("binding the gRPC server {name}: {e}"));
        let addr = listener
            .local_addr()
            .unwrap_or_else(|e| panic!("the gRPC server's address: {e}"));
        let stop = CancellationToken::new();
        let (health, served) = serve(
            listener,
            EchoService {
                name: name.to_string(),
                fail,
            },
            stop.clone(),
        )
        .await;
        tokio::spawn(served);
        EchoServer { addr, health, stop }
    }

    /// Sets what the health service says of the echo service.
    pub async fn set_serving(&self, serving: bool) {
        let status = if serving {
            ServingStatus::Serving
        } else {
            ServingStatus::NotServing
        };
        self.health.set_service_status(SERVICE, status).await;
    }
}

/// A server of `echo` and of `grpc.health.v1.Health` (the echo service SERVING) on
/// `listener` until `stop` is cancelled: the health service's reporter, and the future that
/// serves.
pub async fn serve(
    listener: TcpListener,
    echo: EchoService,
    stop: CancellationToken,
) -> (
    HealthReporter,
    impl Future<Output = Result<(), tonic::transport::Error>> + Send + 'static,
) {
    let (health, health_service) = tonic_health::server::health_reporter();
    health
        .set_service_status(SERVICE, ServingStatus::Serving)
        .await;
    let echo = EchoGrpc::new(echo)
        .max_decoding_message_size(64 << 20)
        .max_encoding_message_size(64 << 20);
    let served = tonic::transport::Server::builder()
        .add_service(health_service)
        .add_service(echo)
        .serve_with_incoming_shutdown(TcpListenerStream::new(listener), stop.cancelled_owned());
    (health, served)
}

impl EchoService {
    /// The service answering as `name`.
    pub fn new(name: &str) -> Self {
        EchoService {
            name: name.to_string(),
            fail: None,
        }
    }
}

impl Drop for EchoServer {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}
