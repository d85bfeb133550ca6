//! What a run measures besides its own counts: latency percentiles, and the
//! CPU time and memory of the processes under test (and of the bench itself)
//! read from /proc.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Linux reports CPU times in USER_HZ ticks, 100 per second on every
/// architecture this runs on.
const TICKS_PER_SECOND: f64 = 100.0;

/// Latencies in microseconds; percentiles once the run is over.
#[derive(Debug, Default, Clone)]
pub struct Latencies(Vec<u32>);

impl Latencies {
    pub fn record_ns(&mut self, ns: u64) {
        self.0.push((ns / 1000).min(u32::MAX as u64) as u32);
    }

    pub fn extend(&mut self, other: Latencies) {
        self.0.extend(other.0);
    }

    /// Samples recorded.
    pub fn count(&self) -> usize {
        self.0.len()
    }

    /// The p-th quantile (0..=1) in milliseconds; None without samples.
    pub fn quantile_ms(&mut self, p: f64) -> Option<f64> {
        if self.0.is_empty() {
            return None;
        }
        self.0.sort_unstable();
        let at = ((self.0.len() as f64 * p) as usize).min(self.0.len() - 1);
        Some(self.0[at] as f64 / 1000.0)
    }
}

/// Processes whose cost is reported under one label ("gateway", "rocketmq").
#[derive(Debug, Clone)]
pub struct Process {
    pub label: String,
    pub pids: Vec<u32>,
}

/// utime + stime of a process in seconds ("self" for this one).
pub fn cpu_seconds(pid: &str) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces; fields count from after its ')'.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) / TICKS_PER_SECOND)
}

/// Resident memory in MiB.
pub fn rss_mib(pid: &str) -> Option<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}

/// CPU seconds used by a group of processes between `start` and `stop`.
#[derive(Debug)]
pub struct CpuMeter {
    process: Process,
    started: f64,
}

impl CpuMeter {
    pub fn start(process: &Process) -> CpuMeter {
        CpuMeter {
            started: Self::total(process),
            process: process.clone(),
        }
    }

    fn total(process: &Process) -> f64 {
        process
            .pids
            .iter()
            .filter_map(|p| cpu_seconds(&p.to_string()))
            .sum()
    }

    /// (label, CPU seconds since start)
    pub fn stop(&self) -> (String, f64) {
        (
            self.process.label.clone(),
            Self::total(&self.process) - self.started,
        )
    }
}

/// Counts shared between a run's tasks and the progress line.
#[derive(Debug, Default)]
pub struct Counters {
    pub published: AtomicU64,
    pub confirmed: AtomicU64,
    pub delivered: AtomicU64,
}

impl Counters {
    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }
}

/// Prints progress every two seconds and samples the peak resident memory
/// of each process, until dropped.
pub struct Watch {
    task: tokio::task::JoinHandle<()>,
    peaks: Arc<std::sync::Mutex<Vec<(String, f64)>>>,
}

impl Watch {
    pub fn start(name: String, counters: Arc<Counters>, processes: &[Process]) -> Watch {
        let peaks = Arc::new(std::sync::Mutex::new(
            processes
                .iter()
                .map(|p| (p.label.clone(), 0.0f64))
                .collect::<Vec<_>>(),
        ));
        let (processes, shared) = (processes.to_vec(), peaks.clone());
        let task = tokio::spawn(async move {
            let started = std::time::Instant::now();
            let mut tick = tokio::time::interval(Duration::from_millis(500));
            let mut n = 0u64;
            loop {
                tick.tick().await;
                n += 1;
                {
                    let mut peaks = shared.lock().unwrap_or_else(|p| p.into_inner());
                    for (process, peak) in processes.iter().zip(peaks.iter_mut()) {
                        let rss: f64 = process
                            .pids
                            .iter()
                            .filter_map(|p| rss_mib(&p.to_string()))
                            .sum();
                        peak.1 = peak.1.max(rss);
                    }
                }
                if n.is_multiple_of(4) {
                    eprintln!(
                        "  {name}: {:>4.0} s  published {}  confirmed {}  delivered {}",
                        started.elapsed().as_secs_f64(),
                        counters.published.load(Ordering::Relaxed),
                        counters.confirmed.load(Ordering::Relaxed),
                        counters.delivered.load(Ordering::Relaxed),
                    );
                }
            }
        });
        Watch { task, peaks }
    }

    /// Peak resident memory per process label, in MiB.
    pub fn stop(self) -> Vec<(String, f64)> {
        self.task.abort();
        let peaks = self.peaks.lock().unwrap_or_else(|p| p.into_inner());
        peaks.clone()
    }
}
