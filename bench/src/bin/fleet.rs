//! `fleet`: the control-plane fan-out benchmark. Applies a fleet config through one
//! `portico-cp`, connects N simulated agents spread over the replicas given, then pushes single
//! route changes and measures how fast every agent receives them, and what the control planes
//! spend in memory and CPU (summed over the replicas).

use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use portico_bench::fleet::quantile;
use portico_bench::{admin, config};
use portico_integration_tests::fleet::{Fleet, Placement};
use portico_integration_tests::footprint as process;
use tokio::time::Instant;

/// Resources per Apply call (the control plane caps one change at 126).
const APPLY_BATCH: usize = 100;

#[derive(Parser)]
struct Args {
    /// The control plane's Admin API.
    #[arg(long, default_value = "http://127.0.0.1:7000")]
    admin: String,
    /// The Discovery API of every replica, comma-separated; agent i starts on replica
    /// i mod n and fails over to the others (default: the Admin URL).
    #[arg(long, value_delimiter = ',')]
    discovery: Vec<String>,
    /// Bearer token for the Admin API, if it needs one.
    #[arg(long, env = "PORTICO_TOKEN")]
    token: Option<String>,
    /// The replicas' process ids, comma-separated, for RSS and CPU.
    #[arg(long, value_delimiter = ',', required = true)]
    cp_pid: Vec<u32>,
    /// Simulated agents.
    #[arg(long, default_value_t = 1000)]
    agents: usize,
    /// Agent streams per HTTP/2 connection (stay under the server's concurrent-stream limit).
    #[arg(long, default_value_t = 100)]
    streams_per_connection: usize,
    /// Listeners in the fleet config (each selects one of 5 regions).
    #[arg(long, default_value_t = 200)]
    listeners: usize,
    /// Routes per route table.
    #[arg(long, default_value_t = 10)]
    routes: usize,
    /// Single-route pushes measured.
    #[arg(long, default_value_t = 5)]
    pushes: u64,
    /// Seconds after each push in which the control plane finishes what follows the ACKs
    /// (registry records are flushed every 500 ms, in batches), counted in its own CPU column
    /// and kept out of the next push's.
    #[arg(long, default_value_t = 2.0)]
    settle: f64,
    /// The replicas' metrics URLs (`http://HOST:PORT`), comma-separated, to count the registry
    /// transactions each push costs.
    #[arg(long, value_delimiter = ',')]
    metrics: Vec<String>,
    /// Print only the Markdown table row.
    #[arg(long)]
    row: bool,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let discovery = if args.discovery.is_empty() {
        vec![args.admin.clone()]
    } else {
        args.discovery.clone()
    };
    let token = args.token.as_deref();
    let mut client = admin::connect(&args.admin, Duration::from_secs(30)).await?;
    // One apply may touch only so many resources; referenced kinds go first so that every
    // batch validates on its own.
    let mut resources = config::fleet(args.listeners, args.routes);
    resources.sort_by_key(|r| std::cmp::Reverse(r.kind() as i32));
    let mut base = 0;
    for batch in resources.chunks(APPLY_BATCH) {
        base = admin::apply(&mut client, token, batch.to_vec(), "fleet bench config").await?;
    }

    let rss_before = rss(&args.cp_pid)?;
    let start = Instant::now();
    let placement = Placement {
        homes: discovery,
        fallbacks: Vec::new(),
        streams_per_connection: args.streams_per_connection,
        id_prefix: "sim".into(),
    };
    let mut fleet = Fleet::start(&placement, args.agents);
    fleet
        .wait_for(base, start, Duration::from_secs(300))
        .await
        .context("connect storm")?;
    let storm = start.elapsed();
    let rss_after = rss(&args.cp_pid)?;
    let storm_retries = fleet
        .counters
        .retries
        .load(std::sync::atomic::Ordering::Relaxed)
        + fleet
            .counters
            .pushed_back
            .load(std::sync::atomic::Ordering::Relaxed);
    let per_agent = rss_after.saturating_sub(rss_before) as f64 / args.agents as f64;

    let mut p50 = Vec::new();
    let mut p99 = Vec::new();
    let mut max = Vec::new();
    let mut cpu = Vec::new();
    let mut cpu_settled = Vec::new();
    let mut registry: Vec<u64> = Vec::new();
    for generation in 1..=args.pushes {
        let cpu_before = cpu_now(&args.cp_pid)?;
        let writes_before = registry_writes(&args.metrics).await;
        let pushed = Instant::now();
        let version = admin::apply(
            &mut client,
            token,
            config::fleet_change(args.routes, generation),
            "fleet bench: one route",
        )
        .await?;
        let times = fleet
            .wait_for(version, pushed, Duration::from_secs(60))
            .await
            .with_context(|| format!("push {generation}"))?;
        cpu.push(Duration::from_secs_f64(seconds_since(
            &args.cp_pid,
            &cpu_before,
        )?));
        tokio::time::sleep_until(pushed + Duration::from_secs_f64(args.settle)).await;
        cpu_settled.push(Duration::from_secs_f64(seconds_since(
            &args.cp_pid,
            &cpu_before,
        )?));
        registry.push(
            registry_writes(&args.metrics)
                .await
                .saturating_sub(writes_before),
        );
        p50.push(quantile(&times, 0.50));
        p99.push(quantile(&times, 0.99));
        max.push(quantile(&times, 1.0));
        if !args.row {
            println!(
                "push {generation}: version {version}, p50 {:?}, p99 {:?}, all {:?}",
                p50.last().copied().unwrap_or_default(),
                p99.last().copied().unwrap_or_default(),
                max.last().copied().unwrap_or_default(),
            );
        }
    }
    fleet.stop().await;

    let ms = |d: Duration| format!("{:.1}", d.as_secs_f64() * 1e3);
    let median = |v: &mut Vec<Duration>| {
        v.sort();
        quantile(v, 0.5)
    };
    if !args.row {
        println!(
            "| agents | replicas | connect storm s | storm reconnects | push→50% ms | push→99% ms | push→100% ms | CP RSS MiB | RSS KiB/agent | CP CPU ms/push | CP CPU ms/push, settled | registry txns/push |"
        );
        println!("|---|---|---|---|---|---|---|---|---|---|---|---|");
    }
    println!(
        "| {} | {} | {:.2} | {} | {} | {} | {} | {:.1} | {:.1} | {} | {} | {} |",
        args.agents,
        args.cp_pid.len(),
        storm.as_secs_f64(),
        storm_retries,
        ms(median(&mut p50)),
        ms(median(&mut p99)),
        ms(median(&mut max)),
        rss_after as f64 / (1024.0 * 1024.0),
        per_agent / 1024.0,
        ms(median(&mut cpu)),
        ms(median(&mut cpu_settled)),
        {
            registry.sort_unstable();
            registry
                .get(registry.len() / 2)
                .copied()
                .unwrap_or_default()
        },
    );
    Ok(())
}

/// The replicas' RSS together, in bytes.
fn rss(pids: &[u32]) -> anyhow::Result<u64> {
    pids.iter().map(|&pid| process::rss_bytes(pid)).sum()
}

/// The replicas' CPU time counters now.
fn cpu_now(pids: &[u32]) -> anyhow::Result<Vec<process::ThreadCpu>> {
    pids.iter()
        .map(|&pid| process::ThreadCpu::read(pid))
        .collect()
}

/// The replicas' CPU seconds since `before`, summed.
fn seconds_since(pids: &[u32], before: &[process::ThreadCpu]) -> anyhow::Result<f64> {
    let now = cpu_now(pids)?;
    Ok(now
        .iter()
        .zip(before)
        .map(|(n, b)| n.seconds_since(b))
        .sum())
}

/// `portico_cp_registry_writes_total` summed over the replicas' metrics (0 for one that does
/// not answer).
async fn registry_writes(urls: &[String]) -> u64 {
    let mut total = 0.0;
    for url in urls {
        if let Some((200, text)) = portico_test_support::http::fetch(format!("{url}/metrics")).await
        {
            total += text
                .lines()
                .find_map(|l| l.strip_prefix("portico_cp_registry_writes_total "))
                .and_then(|v| v.trim().parse::<f64>().ok())
                .unwrap_or(0.0);
        }
    }
    total as u64
}
