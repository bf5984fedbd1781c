//! A build without `--cfg tokio_unstable` compiles, reports loop lag and the stable runtime
//! metrics, watches futures wrapped in `instrument`, and says clearly which measures need the cfg (task dumps included). This builds and
//! runs a real service with plain RUSTFLAGS (overriding the repo's `.cargo/config.toml`) in its
//! own target dir.

use std::process::Command;

#[test]
fn without_tokio_unstable_the_probe_reports_lag_and_names_what_is_missing() {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/..");
    let out = Command::new(cargo)
        .current_dir(root)
        .env("RUSTFLAGS", "")
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .args(["run", "--quiet", "--release", "-p", "stallscope-tests", "--bin", "stable_probe"])
        .args(["--target-dir", "target/no-tokio-unstable"])
        .output()
        .expect("run cargo");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "build or run failed:\n{stderr}\n{stdout}");
    assert!(stdout.contains("tokio_unstable=false"), "{stdout}");
    let field = |name: &str| -> u64 {
        stdout
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{name}=")))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or_else(|| panic!("no {name} in {stdout}"))
    };
    // A 60 ms block is seen at least 60 - 25 (the heartbeat period) = 35 ms late.
    assert!(field("lag_max_ns") >= 30_000_000, "lag shows the 60 ms block:\n{stdout}");
    assert!(field("lag_count") >= 3);
    // No hooks: the spawned task's 60 ms block is no stall; the instrumented root future's is,
    // with its stack, and stack sampling is claimed only once a thread is watched.
    assert_eq!(field("stall_count"), 1, "only the instrumented future's stall:\n{stdout}");
    assert_eq!(field("stalls_with_stacks"), 1, "{stdout}");
    assert!(stdout.contains("stack_sampling_before=false"), "{stdout}");
    // The watchdog's cadence (threshold / 2) would be 200 wake-ups in that second.
    assert!(field("idle_watchdog_wakes") <= 10, "the watchdog sleeps with nothing to watch:\n{stdout}");
    assert!(stdout.contains("stack_sampling_after=true"), "{stdout}");
    assert_eq!(field("runtime_workers"), 1, "stable runtime metrics are there");
    assert!(stdout.contains("missing: stalls, stack samples") && stdout.contains("tokio_unstable"), "{stdout}");
    // A task dump request is answered with what is missing.
    let dump = stdout.lines().find_map(|l| l.strip_prefix("task_dump_error=")).unwrap_or_else(|| panic!("{stdout}"));
    assert!(dump.starts_with("task dumps are not available in this probe"), "{dump}");
    assert!(dump.contains("--cfg tokio_unstable"), "{dump}");
}
