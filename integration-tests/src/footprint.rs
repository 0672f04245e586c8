//! CPU time and memory of other processes, read from `/proc`.

use std::collections::HashMap;

use anyhow::Context;

/// CPU seconds (user + system) used so far by process `pid`, all threads included.
pub fn cpu_seconds(pid: u32) -> anyhow::Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .with_context(|| format!("reading /proc/{pid}/stat"))?;
    // The command name may hold spaces; the fields that follow it are fixed.
    let after_name = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest)
        .context("malformed /proc stat")?;
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of stat(5), i.e. 12 and 13 after the name.
    let ticks: u64 = [11, 12]
        .iter()
        .map(|&i| {
            fields
                .get(i)
                .and_then(|f| f.parse::<u64>().ok())
                .unwrap_or(0)
        })
        .sum();
    Ok(ticks as f64 / clock_ticks())
}

/// The on-CPU time of every thread of a process, in nanoseconds: finer than
/// [`cpu_seconds`], whose clock ticks are 10 ms.
pub struct ThreadCpu(HashMap<String, u64>);

impl ThreadCpu {
    /// Reads `/proc/<pid>/task/*/schedstat` (its first field is the time on CPU).
    pub fn read(pid: u32) -> anyhow::Result<Self> {
        let dir = format!("/proc/{pid}/task");
        let mut threads = HashMap::new();
        for task in std::fs::read_dir(&dir).with_context(|| format!("reading {dir}"))? {
            let tid = task?.file_name().to_string_lossy().into_owned();
            // A thread may exit between the listing and the read.
            let Ok(stat) = std::fs::read_to_string(format!("{dir}/{tid}/schedstat")) else {
                continue;
            };
            let ns = stat
                .split_whitespace()
                .next()
                .and_then(|f| f.parse().ok())
                .context("malformed schedstat")?;
            threads.insert(tid, ns);
        }
        Ok(ThreadCpu(threads))
    }

    /// CPU seconds spent since `earlier`. A thread that exited in between is left out, so this
    /// can undercount by what such a thread ran in the interval.
    pub fn seconds_since(&self, earlier: &ThreadCpu) -> f64 {
        let ns: u64 = self
            .0
            .iter()
            .map(|(tid, now)| now.saturating_sub(earlier.0.get(tid).copied().unwrap_or(0)))
            .sum();
        ns as f64 / 1e9
    }
}

/// Resident set size of process `pid` in bytes.
pub fn rss_bytes(pid: u32) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("reading /proc/{pid}/status"))?;
    let kib = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .context("no VmRSS in /proc status")?;
    Ok(kib * 1024)
}

fn clock_ticks() -> f64 {
    // USER_HZ is 100 on every Linux architecture this runs on; getconf would need unsafe libc.
    100.0
}
