//! `dashboard-probe URL [--refreshes N] [--screenshot PATH]`: how the dashboard's fleet page
//! of the `portico-cp` at `URL` (its `--web-listen`) fares in headless chromium, for
//! `bench/dashboard/run.sh`. Prints one line per measure, `name value`:
//!
//! - `rows-shown-ms`: from navigation start to the end of the first render of the fleet table
//!   with rows, on the page's clock: when the page asked for the first Fleet page (its
//!   resource-timing start) plus that refresh's `data-load-ms` and `data-render-ms`.
//! - `load-ms-median`, `load-ms-max`, `render-ms-median`, `render-ms-max`: the fleet view's own
//!   `data-load-ms` (the call, until its answer is parsed) and `data-render-ms` over the N
//!   refreshes after the first (default 10; the page polls every 2 s).
//! - `js-heap-mib`: `performance.memory.usedJSHeapSize` after them (chromium runs with
//!   `--enable-precise-memory-info`, so it is not rounded).
//! - `dom-elements`, `agent-rows`, `agents-total`: what the page holds and shows.
//!
//! Then it saves a screenshot of the viewport (1280 px wide) at PATH when asked. A page error
//! fails the probe.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, bail};
use portico_integration_tests::browser::Browser;
use serde_json::Value;
use tokio::signal::unix::{SignalKind, signal};

/// How long the page may take to show the fleet, or to refresh once more.
const SHOW: Duration = Duration::from_secs(60);

/// The first refresh: when it asked, and how long its call and its rendering took.
const FIRST_REFRESH: &str = "(() => {
  const v = document.querySelector('#view');
  const call = performance.getEntriesByType('resource').find((e) => e.name.endsWith('/api/v1/Fleet'));
  if (!call) throw new Error('no Fleet call among the resource timings');
  return [Number(v.dataset.refreshes), call.startTime, Number(v.dataset.loadMs), Number(v.dataset.renderMs)];
})()";

struct Args {
    url: String,
    refreshes: usize,
    screenshot: Option<PathBuf>,
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let args = parse_args()?;
    // Returning (not being killed) drops the browser, which kills chromium's process group.
    let mut term = signal(SignalKind::terminate())?;
    tokio::select! {
        result = probe(&args) => result,
        _ = tokio::signal::ctrl_c() => bail!("interrupted"),
        _ = term.recv() => bail!("terminated"),
    }
}

async fn probe(args: &Args) -> anyhow::Result<()> {
    let browser = Browser::launch_with(&["--enable-precise-memory-info"]).await?;
    let page = browser.new_page().await?;
    page.goto(&format!("{}/#/fleet", args.url.trim_end_matches('/')))
        .await?;
    page.wait_for(
        "Number(document.querySelector('#view')?.dataset.refreshes) >= 1 && \
         document.querySelector('#fleet-agents tbody tr[data-node-id]') !== null",
        "the fleet table's first rows",
        SHOW,
    )
    .await?;
    // Read before the next refresh, 2 s later, overwrites it.
    let [refreshes, asked, load, render] = numbers(&page.eval(FIRST_REFRESH).await?)?;
    if refreshes != 1.0 {
        bail!("refresh {refreshes} had already replaced the first one's timings");
    }
    println!("rows-shown-ms {:.1}", asked + load + render);

    let (mut loads, mut renders) = (Vec::new(), Vec::new());
    let mut seen = refreshes;
    while loads.len() < args.refreshes {
        let next = page
            .wait_for(
                &format!(
                    "(() => {{ const v = document.querySelector('#view'); \
                     return Number(v.dataset.refreshes) > {seen} && \
                     [Number(v.dataset.refreshes), Number(v.dataset.loadMs), Number(v.dataset.renderMs)]; }})()"
                ),
                "the next refresh",
                SHOW,
            )
            .await?;
        let [count, load, render] = numbers(&next)?;
        seen = count;
        loads.push(load);
        renders.push(render);
    }
    let (median, max) = median_max(&mut loads);
    println!("load-ms-median {median:.1}\nload-ms-max {max:.1}");
    let (median, max) = median_max(&mut renders);
    println!("render-ms-median {median:.1}\nrender-ms-max {max:.1}");

    let heap = page.eval("performance.memory.usedJSHeapSize").await?;
    let heap = heap.as_f64().context("usedJSHeapSize is not a number")?;
    println!("js-heap-mib {:.1}", heap / (1024.0 * 1024.0));
    for (name, js) in [
        ("dom-elements", "document.getElementsByTagName('*').length"),
        (
            "agent-rows",
            "document.querySelectorAll('#fleet-agents tbody tr[data-node-id]').length",
        ),
        (
            "agents-total",
            "document.querySelector('#fleet-total [data-count=\"agents\"]').textContent",
        ),
    ] {
        match page.eval(js).await? {
            Value::String(text) => println!("{name} {text}"),
            value => println!("{name} {value}"),
        }
    }

    if let Some(path) = &args.screenshot {
        page.screenshot(path).await?;
    }
    let errors = page.errors();
    if !errors.is_empty() {
        bail!("the page reported errors:\n{}", errors.join("\n"));
    }
    Ok(())
}

/// A JSON array of `N` numbers.
fn numbers<const N: usize>(value: &Value) -> anyhow::Result<[f64; N]> {
    let list: Option<Vec<f64>> = value
        .as_array()
        .map(|list| list.iter().filter_map(Value::as_f64).collect());
    list.and_then(|list| list.try_into().ok())
        .with_context(|| format!("not {N} numbers: {value}"))
}

/// The median (the upper one of an even count) and the largest of `values`.
fn median_max(values: &mut [f64]) -> (f64, f64) {
    values.sort_by(f64::total_cmp);
    let at = |i: usize| values.get(i).copied().unwrap_or(0.0);
    (at(values.len() / 2), at(values.len().saturating_sub(1)))
}

fn parse_args() -> anyhow::Result<Args> {
    const USAGE: &str = "usage: dashboard-probe URL [--refreshes N] [--screenshot PATH]";
    let mut args = Args {
        url: String::new(),
        refreshes: 10,
        screenshot: None,
    };
    let mut words = std::env::args().skip(1);
    while let Some(word) = words.next() {
        match word.as_str() {
            "--refreshes" => {
                let n = words.next().context(USAGE)?;
                args.refreshes = n.parse().with_context(|| format!("--refreshes {n}"))?;
            }
            "--screenshot" => args.screenshot = Some(words.next().context(USAGE)?.into()),
            url if args.url.is_empty() && !url.starts_with('-') => args.url = url.to_string(),
            _ => bail!("{USAGE}"),
        }
    }
    if args.url.is_empty() {
        bail!("{USAGE}");
    }
    Ok(args)
}
