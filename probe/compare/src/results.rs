//! The raw results of one run of the comparison, as written to the JSON file (`--json`, default
//! `probe/compare/target/compare-results.json`) and read back by `--chart-from`.
//!
//! Schema (version 1):
//!
//! ```text
//! {
//!   "schema": 1,
//!   "started_utc": "2026-11-22T01:38:04Z",  "finished_utc": "...",
//!   "mode": "full" | "quick",  "rounds": 5,  "workers": 2,
//!   "machine": { "nproc": 2, "cpu_model": "...", "kernel": "6.8.0-...", "mem_total_kib": 24000000,
//!                "loadavg_before": "1.52 1.71 1.80 ...", "loadavg_after": "..." },   // /proc/loadavg
//!   "configs":   [ { "id": "probe", "label": "stallscope probe (defaults)", "short": "stallscope probe" }, ... ],
//!   "workloads": [ { "id": "w1", "title": "W1 yield storm: ...", "size": 19999,
//!                    "units": 20000000, "unit": "poll",        // added cost is per unit
//!                    "skipped": [ { "config": "probe-stalled-client", "reason": "...",
//!                                   "shown": false } ] }, ... ],  // shown: a "not run" table row
//!   "runs": [ { "workload": "w1", "config": "bare", "round": 1,  // 1..=rounds; 0 = bare warm-up
//!               "wall_secs": 0.91, "peak_rss_kib": 4700,
//!               "other_cores": 0.01,   // cores other processes kept busy during the timed part
//!               "own_cores": 1.98,     // cores the child itself kept busy meanwhile
//!               "counters": { "subscriber_drops": 0, ... } }, ... ]
//! }
//! ```
//!
//! `counters` holds what a configuration reports besides the common fields:
//! - `subscriber_drops` (every probe configuration): updates the probe dropped for slow clients,
//!   cumulative, read from a fresh snapshot right after the timed part;
//! - `probe_bytes`: bytes the draining client read from the probe;
//! - `console_updates`: updates the console gRPC client read;
//! - the never-reading client (`probe-stalled-client`, W3 only): `stalled_full_ms`, how long after
//!   its handshake the socket stopped filling (the probe's writer blocked); `stalled_dropping_ms`,
//!   when the probe first dropped an update for it (the timed part starts then; −1 if it had not
//!   after 40 s); `stalled_pending_bytes`, the bytes waiting in its socket at that point;
//!   `stalled_drops_at_start`, `subscriber_drops` at that point (so `subscriber_drops` minus it
//!   is what the probe dropped during the run).
//!
//! Non-finite numbers are written as `null`.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

/// Bumped when a field changes meaning or goes away.
pub(crate) const SCHEMA: u32 = 1;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Results {
    pub(crate) schema: u32,
    pub(crate) started_utc: String,
    pub(crate) finished_utc: String,
    pub(crate) mode: String,
    pub(crate) rounds: usize,
    pub(crate) workers: usize,
    pub(crate) machine: Machine,
    pub(crate) configs: Vec<ConfigInfo>,
    pub(crate) workloads: Vec<WorkloadInfo>,
    pub(crate) runs: Vec<RunRecord>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Machine {
    pub(crate) nproc: usize,
    pub(crate) cpu_model: String,
    pub(crate) kernel: String,
    pub(crate) mem_total_kib: u64,
    pub(crate) loadavg_before: String,
    pub(crate) loadavg_after: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct ConfigInfo {
    pub(crate) id: String,
    pub(crate) label: String,
    pub(crate) short: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct WorkloadInfo {
    pub(crate) id: String,
    pub(crate) title: String,
    pub(crate) size: u64,
    pub(crate) units: u64,
    pub(crate) unit: String,
    pub(crate) skipped: Vec<SkipInfo>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct SkipInfo {
    pub(crate) config: String,
    pub(crate) reason: String,
    pub(crate) shown: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct RunRecord {
    pub(crate) workload: String,
    pub(crate) config: String,
    pub(crate) round: usize,
    #[serde(with = "finite")]
    pub(crate) wall_secs: f64,
    pub(crate) peak_rss_kib: u64,
    #[serde(with = "finite")]
    pub(crate) other_cores: f64,
    #[serde(with = "finite")]
    pub(crate) own_cores: f64,
    pub(crate) counters: BTreeMap<String, f64>,
}

/// NaN and infinities as `null` (JSON has no other spelling for them), and back.
mod finite {
    use serde::{Deserialize, Deserializer, Serializer};

    pub(crate) fn serialize<S: Serializer>(v: &f64, s: S) -> Result<S::Ok, S::Error> {
        if v.is_finite() {
            s.serialize_f64(*v)
        } else {
            s.serialize_none()
        }
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
        Ok(Option::<f64>::deserialize(d)?.unwrap_or(f64::NAN))
    }
}

// === impl Results ===

impl Results {
    /// Empty results stamped with the machine and the start time.
    pub(crate) fn new(mode: &str, rounds: usize, workers: usize) -> Results {
        Results {
            schema: SCHEMA,
            started_utc: utc_now(),
            finished_utc: String::new(),
            mode: mode.into(),
            rounds,
            workers,
            machine: Machine::probe(),
            configs: Vec::new(),
            workloads: Vec::new(),
            runs: Vec::new(),
        }
    }

    /// Stamps the end time and load.
    pub(crate) fn finish(&mut self) {
        self.finished_utc = utc_now();
        self.machine.loadavg_after = loadavg();
    }

    pub(crate) fn save(&self, path: &Path) -> Result<(), String> {
        let s = serde_json::to_string_pretty(self).map_err(|e| format!("encoding the results: {e}"))?;
        std::fs::write(path, s + "\n").map_err(|e| format!("writing the results {}: {e}", path.display()))
    }

    pub(crate) fn load(path: &Path) -> Result<Results, String> {
        let s = std::fs::read_to_string(path).map_err(|e| format!("reading the results {}: {e}", path.display()))?;
        let r: Results =
            serde_json::from_str(&s).map_err(|e| format!("while reading results {}: {e}", path.display()))?;
        if r.schema != SCHEMA {
            return Err(format!("{}: schema {} (this binary reads {SCHEMA})", path.display(), r.schema));
        }
        Ok(r)
    }

    pub(crate) fn workload(&self, id: &str) -> Option<&WorkloadInfo> {
        self.workloads.iter().find(|w| w.id == id)
    }

    pub(crate) fn config(&self, id: &str) -> Option<&ConfigInfo> {
        self.configs.iter().find(|c| c.id == id)
    }

    /// The measured runs (warm-up left out) of a configuration on a workload, by round.
    pub(crate) fn runs(&self, work: &str, config: &str) -> Vec<&RunRecord> {
        let mut v: Vec<&RunRecord> =
            self.runs.iter().filter(|r| r.workload == work && r.config == config && r.round > 0).collect();
        v.sort_by_key(|r| r.round);
        v
    }

    /// Per round, `f(run, base run)` for the rounds where both configurations ran.
    pub(crate) fn paired(
        &self,
        work: &str,
        config: &str,
        base: &str,
        f: impl Fn(&RunRecord, &RunRecord) -> f64,
    ) -> Vec<f64> {
        let base_runs = self.runs(work, base);
        self.runs(work, config)
            .into_iter()
            .filter_map(|r| base_runs.iter().find(|b| b.round == r.round).map(|b| f(r, b)))
            .collect()
    }

    /// Per-round wall-time ratios of `config` to `base` (usually `bare`).
    pub(crate) fn ratios_to(&self, work: &str, config: &str, base: &str) -> Vec<f64> {
        self.paired(work, config, base, |r, b| r.wall_secs / b.wall_secs)
    }

    pub(crate) fn ratios(&self, work: &str, config: &str) -> Vec<f64> {
        self.ratios_to(work, config, "bare")
    }

    /// Per-round added nanoseconds per unit of work, against bare.
    pub(crate) fn added_ns(&self, work: &str, config: &str) -> Vec<f64> {
        let units = self.workload(work).map_or(f64::NAN, |w| w.units as f64);
        self.paired(work, config, "bare", |r, b| (r.wall_secs - b.wall_secs) * 1e9 / units)
    }

    /// Why a configuration was left out of a workload, if it was.
    pub(crate) fn skip(&self, work: &str, config: &str) -> Option<&SkipInfo> {
        self.workload(work)?.skipped.iter().find(|s| s.config == config)
    }
}

// === statistics ===

/// Median, min and max of a non-empty series (NaN for an empty one).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Spread {
    pub(crate) median: f64,
    pub(crate) min: f64,
    pub(crate) max: f64,
    pub(crate) n: usize,
}

impl Spread {
    pub(crate) fn of(v: &[f64]) -> Spread {
        let mut v: Vec<f64> = v.iter().copied().filter(|x| !x.is_nan()).collect();
        v.sort_by(|a, b| a.total_cmp(b));
        let n = v.len();
        if n == 0 {
            return Spread { median: f64::NAN, min: f64::NAN, max: f64::NAN, n };
        }
        let median = if n % 2 == 1 { v[n / 2] } else { (v[n / 2 - 1] + v[n / 2]) / 2.0 };
        Spread { median, min: v[0], max: v[n - 1], n }
    }
}

// === the machine ===

impl Machine {
    fn probe() -> Machine {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let cpu_model = cpuinfo
            .lines()
            .find(|l| l.starts_with("model name"))
            .and_then(|l| l.split_once(':'))
            .map_or_else(|| "unknown".to_string(), |(_, v)| v.trim().to_string());
        let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .map_or_else(|_| "unknown".to_string(), |s| s.trim().to_string());
        let mem_total_kib = std::fs::read_to_string("/proc/meminfo")
            .ok()
            .and_then(|s| {
                s.lines().find(|l| l.starts_with("MemTotal:"))?.split_whitespace().nth(1).and_then(|v| v.parse().ok())
            })
            .unwrap_or(0);
        Machine {
            nproc: std::thread::available_parallelism().map_or(0, |n| n.get()),
            cpu_model,
            kernel,
            mem_total_kib,
            loadavg_before: loadavg(),
            loadavg_after: String::new(),
        }
    }
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg").map_or_else(|_| String::new(), |s| s.trim().to_string())
}

/// Now, as `YYYY-MM-DDTHH:MM:SSZ`.
pub(crate) fn utc_now() -> String {
    let secs = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let (days, rem) = ((secs / 86_400) as i64, secs % 86_400);
    let (y, m, d) = civil_from_days(days);
    format!("{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z", rem / 3600, rem / 60 % 60, rem % 60)
}

/// Days since 1970-01-01 to a proleptic Gregorian date (Howard Hinnant's `civil_from_days`).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(11_016), (2000, 2, 29));
        assert_eq!(civil_from_days(20_779), (2026, 11, 22));
    }

    #[test]
    fn spread() {
        let s = Spread::of(&[3.0, 1.0, 2.0, 10.0]);
        assert_eq!((s.median, s.min, s.max, s.n), (2.5, 1.0, 10.0, 4));
        assert!(Spread::of(&[]).median.is_nan());
    }
}
