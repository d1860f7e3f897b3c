//! chainlock benchmarks: a small hand-rolled harness (no criterion) that prints one table.
//!
//! Why it exists: the quality bar says performance is measured here, never in timed tests, and
//! that memory must not grow with artifact size and no work may be quadratic in links or
//! artifacts. Each section measures one of those claims on the real code paths:
//!
//! - `task` and `scriptworker`: whole tasks through chainlock's worker, and through the
//!   reference Python scriptworker, against a dev queue answering every request `L` ms late;
//! - `hash`: `artifacts::collect` (streaming sha256 of the task's artifact directory) over a
//!   small and a large file: throughput, and peak RSS growth, which must not follow file size;
//! - `upload`: `QueueClient::upload_file` with gzip to an in-process dev queue on loopback;
//! - `download`: `QueueClient::get_latest_artifact_to_file` of that gzip-encoded artifact;
//! - `verify`: `verify::verify` over synthetic bundles of N links / M artifacts; the time per
//!   link and per artifact must stay flat as N grows (the harness flags growth);
//! - `openpgp`: detached OpenPGP sign and verify, and ed25519 chain-of-trust checks, per second;
//! - `canonical`: canonical JSON of a large task, and strict parsing of a large document.
//!
//! Usage: `cargo bench --bench chainlock -- [--quick] [--large-mib N] [SECTION...]`
//! (`scripts/bench` wraps it). It must not be run as a test: nothing here asserts timing.

mod crypto;
mod fetch;
mod io;
mod scriptworker;
mod verify;

use std::time::{Duration, Instant};

/// What one measurement produced.
pub struct Row {
    /// Section and case, e.g. `hash 512 MiB`.
    pub name: String,
    /// Wall time of one run (the best of the repetitions, where repeated).
    pub time: Duration,
    /// Throughput or rate, already formatted.
    pub rate: String,
    /// Peak RSS growth during the run, if measured.
    pub rss: Option<u64>,
    /// Anything else worth printing.
    pub note: String,
}

impl Row {
    fn print(&self) {
        let rss = self
            .rss
            .map(|b| format!("{:.1} MiB", b as f64 / (1024.0 * 1024.0)))
            .unwrap_or_else(|| "-".into());
        println!(
            "{:<34} {:>10} {:>16} {:>12}  {}",
            self.name,
            fmt_duration(self.time),
            self.rate,
            rss,
            self.note
        );
    }
}

/// Settings from the command line.
pub struct Settings {
    /// Small sizes, fewer links (for development).
    pub quick: bool,
    /// The large file size for hash/upload/download, MiB.
    pub large_mib: u64,
    /// The small file size, MiB.
    pub small_mib: u64,
}

fn fmt_duration(d: Duration) -> String {
    let s = d.as_secs_f64();
    if s >= 1.0 {
        format!("{s:.2} s")
    } else if s >= 1e-3 {
        format!("{:.2} ms", s * 1e3)
    } else {
        format!("{:.1} µs", s * 1e6)
    }
}

/// Throughput in MB/s (10^6 bytes) for `bytes` in `d`.
pub fn cores() -> usize {
    std::thread::available_parallelism()
        .map(std::num::NonZeroUsize::get)
        .unwrap_or(1)
}

pub fn mb_per_s(bytes: u64, d: Duration) -> String {
    format!("{:.0} MB/s", bytes as f64 / 1e6 / d.as_secs_f64().max(1e-9))
}

/// A `/proc/self/status` field in bytes (`VmHWM`, `VmRSS`).
fn proc_status_bytes(field: &str) -> Option<u64> {
    let text = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = text.lines().find(|l| l.starts_with(field))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// Measures the peak RSS growth of `f`: resets the high-water mark (`clear_refs` 5, Linux ≥ 4.0)
/// so that earlier sections do not hide it, then compares `VmHWM` after with `VmRSS` before.
pub fn with_peak_rss<T>(f: impl FnOnce() -> T) -> (T, Option<u64>) {
    let reset = std::fs::write("/proc/self/clear_refs", "5").is_ok();
    let before = proc_status_bytes("VmRSS:");
    let hwm_before = proc_status_bytes("VmHWM:");
    let out = f();
    let after = proc_status_bytes("VmHWM:");
    let base = if reset { before } else { hwm_before };
    let growth = match (base, after) {
        (Some(b), Some(a)) => Some(a.saturating_sub(b)),
        _ => None,
    };
    (out, growth)
}

/// Runs `f` `reps` times and keeps the fastest run (the least disturbed by other processes).
pub fn best_of<T>(reps: usize, mut f: impl FnMut() -> T) -> (Duration, T) {
    let mut best: Option<(Duration, T)> = None;
    for _ in 0..reps.max(1) {
        let start = Instant::now();
        let out = f();
        let took = start.elapsed();
        if best.as_ref().is_none_or(|(b, _)| took < *b) {
            best = Some((took, out));
        }
    }
    best.expect("reps.max(1) >= 1 iteration ran")
}

const SECTIONS: [&str; 10] = [
    "task",
    "scriptworker",
    "sign",
    "fetch",
    "hash",
    "upload",
    "download",
    "verify",
    "openpgp",
    "canonical",
];

fn main() {
    // CHAINLOCK_BENCH_LOG=<filter> prints the log of what runs in-process (the worker's stages
    // with microsecond timestamps), to see where a row's time goes.
    if let Ok(filter) = std::env::var("CHAINLOCK_BENCH_LOG") {
        tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
            .with_writer(std::io::stderr)
            .init();
    }
    let mut quick = false;
    let mut large_mib = 512;
    let mut wanted = Vec::new();
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            // cargo bench passes `--bench` to harness = false targets.
            "--bench" => {}
            "--quick" => quick = true,
            "--large-mib" => {
                large_mib = args
                    .next()
                    .and_then(|v| v.parse().ok())
                    .unwrap_or_else(|| usage("--large-mib needs a number"));
            }
            s if SECTIONS.contains(&s) => wanted.push(s.to_owned()),
            other => usage(&format!("unknown argument {other:?}")),
        }
    }
    if wanted.is_empty() {
        wanted = SECTIONS.iter().map(|s| s.to_string()).collect();
    }
    let settings = Settings {
        quick,
        large_mib: if quick { large_mib.min(32) } else { large_mib },
        small_mib: if quick { 4 } else { 64 },
    };
    println!(
        "{:<34} {:>10} {:>16} {:>12}  note",
        "benchmark", "time", "rate", "peak RSS +"
    );
    println!("{}", "-".repeat(100));
    let print_all = |rows: Vec<Row>| rows.iter().for_each(Row::print);
    for section in &wanted {
        match section.as_str() {
            "task" => print_all(fetch::tasks(&settings)),
            "scriptworker" => print_all(scriptworker::tasks(&settings)),
            "sign" => print_all(crypto::sign_vs_gpg(&settings)),
            "fetch" => print_all(fetch::evidence(&settings)),
            "hash" => print_all(io::hash(&settings)),
            "upload" | "download" => {
                // Both run on the same dev queue; do them once when both are asked for.
                if section == "download" && wanted.iter().any(|s| s == "upload") {
                    continue;
                }
                let with_download = wanted.iter().any(|s| s == "download");
                let with_upload = wanted.iter().any(|s| s == "upload");
                print_all(io::transfer(&settings, with_upload, with_download));
            }
            "verify" => print_all(verify::scaling(&settings)),
            "openpgp" => print_all(crypto::signatures(&settings)),
            "canonical" => print_all(crypto::canonical(&settings)),
            _ => unreachable!("sections are checked when parsing arguments"),
        }
    }
}

fn usage(msg: &str) -> ! {
    eprintln!("{msg}");
    eprintln!(
        "usage: cargo bench --bench chainlock -- [--quick] [--large-mib N] [{}]...",
        SECTIONS.join("|")
    );
    std::process::exit(64)
}
