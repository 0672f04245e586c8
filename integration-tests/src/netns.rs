//! Network faults between real processes: Linux network namespaces joined by veth pairs
//! (`ip netns`, `ip link`, from iproute2; needs root, which CI has). A process runs inside a
//! namespace through `ip netns exec`; a [`Link`] joins two namespaces (or one and the test's
//! own) with a /30 of its own, and [`Link::cut`] takes its second end down: what the first
//! side sends is dropped on the way, as in a real partition (no reset, no error: connections
//! hang and time out), and the second side finds no route, until [`Link::restore`].
//!
//! Names and subnets carry the test process's id and a counter, so tests running in parallel
//! never share one; everything is removed when dropped. Where namespaces cannot be made the
//! test fails with the reason, never skips.

use std::net::{IpAddr, Ipv4Addr};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

/// What to tell whoever runs the tests when `ip` is missing.
pub const INSTALL_HINT: &str = "install iproute2 (apt-get install -y iproute2) and run as root";

static NEXT: AtomicU32 = AtomicU32::new(0);

fn next() -> u32 {
    NEXT.fetch_add(1, Ordering::Relaxed)
}

/// Runs `ip ARGS`; panics with its error output when it fails.
fn ip(args: &[&str]) {
    let out = Command::new("ip")
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("running `ip {}`: {e}; {INSTALL_HINT}", args.join(" ")));
    if !out.status.success() {
        panic!(
            "`ip {}` failed ({}): {}; network-fault tests need root and iproute2",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
}

/// A network namespace, deleted when dropped (drop the processes in it first).
pub struct Netns {
    name: String,
}

impl Netns {
    /// A new namespace with its loopback up.
    pub fn new() -> Netns {
        let name = format!("portico-{}-{}", std::process::id(), next());
        ip(&["netns", "add", &name]);
        let ns = Netns { name };
        ip(&["-n", &ns.name, "link", "set", "lo", "up"]);
        ns
    }

    /// Its name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// `cmd`, run inside this namespace.
    pub fn command(&self, cmd: &Command) -> Command {
        inside(&self.name, cmd)
    }
}

/// `cmd` (same program, arguments and environment), run inside the namespace `name`.
pub fn inside(name: &str, cmd: &Command) -> Command {
    let mut inside = Command::new("ip");
    inside
        .args(["netns", "exec", name])
        .arg(cmd.get_program())
        .args(cmd.get_args());
    for (key, value) in cmd.get_envs() {
        match value {
            Some(value) => inside.env(key, value),
            None => inside.env_remove(key),
        };
    }
    if let Some(dir) = cmd.get_current_dir() {
        inside.current_dir(dir);
    }
    inside
}

impl Default for Netns {
    fn default() -> Self {
        Netns::new()
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        // Deleting the namespace deletes its ends of every veth pair, and so the pairs.
        let _ = Command::new("ip")
            .args(["netns", "delete", &self.name])
            .status();
    }
}

/// A veth pair between two namespaces (`None`: the test's own), each end with an address of a
/// /30 of its own.
pub struct Link {
    ends: [(Option<String>, String); 2],
    /// The address of the first end.
    pub a: IpAddr,
    /// The address of the second end.
    pub b: IpAddr,
}

impl Link {
    /// Joins `a` and `b` (either `None` for the test's own namespace) and brings the link up.
    pub fn new(a: Option<&Netns>, b: Option<&Netns>) -> Link {
        let n = next();
        let pid = std::process::id();
        // 10.<pid bits>.<pid bits>.<4n>/30: distinct for every link of every test process.
        let base = Ipv4Addr::new(
            10,
            (100 + (pid >> 8) % 150) as u8,
            (pid & 0xff) as u8,
            ((n % 64) * 4) as u8,
        );
        let [o1, o2, o3, o4] = base.octets();
        let (ip_a, ip_b) = (
            Ipv4Addr::new(o1, o2, o3, o4 + 1),
            Ipv4Addr::new(o1, o2, o3, o4 + 2),
        );
        let (if_a, if_b) = (format!("pv{pid}x{n}a"), format!("pv{pid}x{n}b"));
        ip(&["link", "add", &if_a, "type", "veth", "peer", "name", &if_b]);
        let ends = [
            (a.map(|ns| ns.name.clone()), if_a),
            (b.map(|ns| ns.name.clone()), if_b),
        ];
        for ((ns, ifname), addr) in ends.iter().zip([ip_a, ip_b]) {
            if let Some(ns) = ns {
                ip(&["link", "set", ifname, "netns", ns]);
            }
            let cidr = format!("{addr}/30");
            ip(&with_ns(ns, &["addr", "add", &cidr, "dev", ifname]));
        }
        let link = Link {
            ends,
            a: IpAddr::V4(ip_a),
            b: IpAddr::V4(ip_b),
        };
        link.restore();
        link
    }

    /// Takes the second end down: nothing crosses the link; the first side is not told.
    pub fn cut(&self) {
        let (ns, ifname) = &self.ends[1];
        ip(&with_ns(ns, &["link", "set", ifname, "down"]));
    }

    /// Brings both ends up.
    pub fn restore(&self) {
        for (ns, ifname) in &self.ends {
            ip(&with_ns(ns, &["link", "set", ifname, "up"]));
        }
    }
}

impl Drop for Link {
    fn drop(&mut self) {
        // Gone already when its namespace was deleted first.
        let (ns, ifname) = &self.ends[0];
        let _ = Command::new("ip")
            .args(with_ns(ns, &["link", "delete", ifname]))
            .output();
    }
}

fn with_ns<'a>(ns: &'a Option<String>, args: &[&'a str]) -> Vec<&'a str> {
    let mut all = Vec::new();
    if let Some(ns) = ns {
        all.extend(["-n", ns.as_str()]);
    }
    all.extend_from_slice(args);
    all
}
