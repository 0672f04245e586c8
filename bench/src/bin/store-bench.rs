//! Store benchmark: commit latency and throughput of the embedded store and etcd.
//!
//! Usage: `store-bench [--etcd URL] [--ops N]`. Without `--etcd` it starts a local etcd the way
//! the test harness does (temp data dir on the same disk as the embedded store's). Each store
//! runs three workloads with 256-byte values on fresh keys: sequential single-key transactions,
//! sequential 100-key transactions, and single-key transactions from 16 concurrent tasks.
//! Prints a Markdown table.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use portico_control_plane::store::embedded::EmbeddedStore;
use portico_control_plane::store::etcd::{EtcdConfig, EtcdStore};
use portico_control_plane::store::{Op, Store, Txn, TxnOutcome};
use portico_integration_tests::etcd::Etcd;

const VALUE_LEN: usize = 256;
const CONCURRENCY: usize = 16;

struct Args {
    etcd: Option<String>,
    ops: usize,
}

fn parse_args() -> anyhow::Result<Args> {
    let mut args = Args {
        etcd: None,
        ops: 1000,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--etcd" => args.etcd = Some(it.next().context("--etcd needs a URL")?),
            "--ops" => args.ops = it.next().context("--ops needs a number")?.parse()?,
            other => bail!("unknown argument {other}; usage: store-bench [--etcd URL] [--ops N]"),
        }
    }
    Ok(args)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = parse_args()?;
    let dir = tempfile::tempdir()?;
    let embedded: Arc<dyn Store> = Arc::new(EmbeddedStore::open(dir.path())?);
    let (_etcd, endpoint) = match &args.etcd {
        Some(url) => (None, url.clone()),
        None => {
            let etcd = tokio::task::spawn_blocking(Etcd::start).await?;
            let endpoint = etcd.endpoint();
            (Some(etcd), endpoint)
        }
    };
    let etcd: Arc<dyn Store> = Arc::new(EtcdStore::connect(&EtcdConfig::new([endpoint])).await?);

    println!("| store | workload | txns | p50 | p99 | txns/s | keys/s |");
    println!("|---|---|---|---|---|---|---|");
    for (name, store) in [("embedded", &embedded), ("etcd", &etcd)] {
        let runs = [
            ("1 key, sequential", run(store, args.ops, 1, 1).await?),
            (
                "100 keys, sequential",
                run(store, args.ops / 5, 100, 1).await?,
            ),
            (
                "1 key, 16 concurrent",
                run(store, args.ops, 1, CONCURRENCY).await?,
            ),
        ];
        for (workload, result) in runs {
            println!("| {name} | {workload} | {} |", result.row());
        }
    }
    Ok(())
}

struct Measured {
    latencies: Vec<Duration>,
    elapsed: Duration,
    keys_per_txn: usize,
}

impl Measured {
    fn row(&self) -> String {
        let mut sorted = self.latencies.clone();
        sorted.sort();
        let pct = |p: f64| {
            let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
            sorted.get(i).copied().unwrap_or_default()
        };
        let txns = sorted.len() as f64 / self.elapsed.as_secs_f64();
        format!(
            "{} | {:.2} ms | {:.2} ms | {:.0} | {:.0}",
            sorted.len(),
            pct(0.5).as_secs_f64() * 1e3,
            pct(0.99).as_secs_f64() * 1e3,
            txns,
            txns * self.keys_per_txn as f64
        )
    }
}

/// Commits `txns` transactions of `keys` fresh keys each, spread over `tasks` tasks.
async fn run(
    store: &Arc<dyn Store>,
    txns: usize,
    keys: usize,
    tasks: usize,
) -> anyhow::Result<Measured> {
    static RUN: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let run = RUN.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let start = Instant::now();
    let handles: Vec<_> = (0..tasks)
        .map(|task| {
            let store = store.clone();
            tokio::spawn(async move {
                let mut latencies = Vec::new();
                for n in (task..txns).step_by(tasks) {
                    let ops = (0..keys)
                        .map(|k| Op::Put {
                            key: format!("/bench/{run}/{n}/{k}"),
                            value: vec![b'x'; VALUE_LEN],
                            lease: None,
                        })
                        .collect();
                    let txn = Txn {
                        compares: vec![],
                        ops,
                    };
                    let t = Instant::now();
                    match store.txn(txn).await? {
                        TxnOutcome::Committed(_) => latencies.push(t.elapsed()),
                        TxnOutcome::Conflict(_) => {
                            bail!("a transaction without compares conflicted")
                        }
                    }
                }
                Ok(latencies)
            })
        })
        .collect();
    let mut latencies = Vec::with_capacity(txns);
    for handle in handles {
        latencies.extend(handle.await??);
    }
    Ok(Measured {
        latencies,
        elapsed: start.elapsed(),
        keys_per_txn: keys,
    })
}
