//! Ports and addresses on 127.0.0.1 for tests.
//!
//! In-process servers bind port 0 themselves. What must be told its port up front (a listener
//! in a config, a process's flags) takes [`free_port`]; what must refuse connections takes
//! [`refusing`].

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::Duration;

/// A port that was free a moment ago (bound to port 0, then released).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or_else(|e| panic!("no free port: {e}"))
}

/// `127.0.0.1:<free port>`.
pub fn free_addr() -> SocketAddr {
    localhost(free_port())
}

/// `127.0.0.1:<port>`.
pub fn localhost(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// An address that refuses connections for as long as this value lives: a socket bound to it
/// but not listening. Unlike a port that was free a moment ago, nothing else (another test, an
/// outgoing connection's source port) can take it meanwhile.
pub struct Refusing {
    // std cannot bind without listening; tokio's socket can, and needs no runtime for it.
    _socket: tokio::net::TcpSocket,
    addr: SocketAddr,
}

impl Refusing {
    /// The address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://<address>`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

/// A bound, non-listening socket on 127.0.0.1.
pub fn refusing() -> Refusing {
    let socket = tokio::net::TcpSocket::new_v4().unwrap_or_else(|e| panic!("a TCP socket: {e}"));
    socket
        .bind(localhost(0))
        .unwrap_or_else(|e| panic!("binding 127.0.0.1:0: {e}"));
    let addr = socket
        .local_addr()
        .unwrap_or_else(|e| panic!("a bound socket's address: {e}"));
    Refusing {
        _socket: socket,
        addr,
    }
}

/// Whether something accepts TCP connections at `addr` (within 200 ms).
pub fn is_listening(addr: SocketAddr) -> bool {
    TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refusing_address_refuses_while_held() {
        let refusing = refusing();
        assert!(TcpStream::connect(refusing.addr()).is_err());
        assert!(refusing.url().starts_with("http://127.0.0.1:"));
    }
}
