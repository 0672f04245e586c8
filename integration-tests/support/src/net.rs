//! Ports and addresses on 127.0.0.1 for tests.
//!
//! In-process servers bind port 0 themselves. What must be told its port up front (a listener
//! in a config, a process's flags) takes [`free_port`]; what must refuse connections takes
//! [`refusing`].

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::Duration;

/// A port that was free a moment ago (bound, then released), for what must be told its port
/// before it binds.
///
/// It comes from below the kernel's ephemeral range when there is room there: ports in that
/// range are what the kernel hands to every outgoing connection and to every bind of port 0,
/// so in a busy test run one of them is soon taken again, while a port below it stays free
/// unless another test picks the same one.
pub fn free_port() -> u16 {
    let first_ephemeral = ephemeral_ports_start();
    if first_ephemeral > BELOW_EPHEMERAL_FROM + 1000 {
        let span = u64::from(first_ephemeral - BELOW_EPHEMERAL_FROM);
        for _ in 0..100 {
            let port = BELOW_EPHEMERAL_FROM + (random() % span) as u16;
            if TcpListener::bind(("127.0.0.1", port)).is_ok() {
                return port;
            }
        }
    }
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or_else(|e| panic!("no free port: {e}"))
}

/// Where [`free_port`] starts looking: above the ports of well-known services.
const BELOW_EPHEMERAL_FROM: u16 = 10_000;

/// The first port of the kernel's ephemeral range (Linux's default when it cannot be read).
fn ephemeral_ports_start() -> u16 {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|range| range.split_whitespace().next()?.parse().ok())
        .unwrap_or(32_768)
}

/// A random number: std's hasher keys are random per process and differ per call.
fn random() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    std::hash::RandomState::new().build_hasher().finish()
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
    fn free_ports_are_free_and_below_the_ephemeral_range() {
        let room_below = ephemeral_ports_start() > BELOW_EPHEMERAL_FROM + 1000;
        for _ in 0..20 {
            let port = free_port();
            if room_below {
                assert!(port >= BELOW_EPHEMERAL_FROM, "{port}");
                assert!(port < ephemeral_ports_start(), "{port}");
            }
            TcpListener::bind(localhost(port)).unwrap_or_else(|e| panic!("{port}: {e}"));
        }
    }

    #[test]
    fn a_refusing_address_refuses_while_held() {
        let refusing = refusing();
        assert!(TcpStream::connect(refusing.addr()).is_err());
        assert!(refusing.url().starts_with("http://127.0.0.1:"));
    }
}
