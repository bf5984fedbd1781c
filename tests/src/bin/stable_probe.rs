//! A service that blocks its current-thread runtime for 60 ms, with the probe. Built by the
//! `without_tokio_unstable` test with plain RUSTFLAGS to show what the probe still reports, and
//! what it answers to a task dump request.

use std::time::Duration;

fn main() {
    let probe = stallscope_probe::Probe::builder().build().expect("probe");
    let mut b = tokio::runtime::Builder::new_current_thread();
    b.enable_all();
    probe.install(&mut b);
    let rt = b.build().expect("runtime");
    let guard = probe.start(rt.handle());
    rt.block_on(async {
        tokio::time::sleep(Duration::from_millis(100)).await;
        tokio::spawn(async { std::thread::sleep(Duration::from_millis(60)) }).await.unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
    });
    let before = probe.refresh(Duration::from_secs(5)).expect("snapshot");
    println!("stack_sampling_before={}", before.process.stack_sampling);
    // No hooks and no watched thread: nothing for the watchdog to watch, so it sleeps.
    let wakes = probe.sampler_stats().watchdog_wakes;
    std::thread::sleep(Duration::from_secs(1));
    println!("idle_watchdog_wakes={}", probe.sampler_stats().watchdog_wakes - wakes);
    // Without task hooks, a future wrapped in `instrument` is still watched: a 60 ms block in it
    // is a stall with a stack.
    rt.block_on(stallscope_probe::instrument(async {
        tokio::time::sleep(Duration::from_millis(10)).await;
        std::thread::sleep(Duration::from_millis(60));
    }));
    let snap = probe.refresh(Duration::from_secs(5)).expect("snapshot");
    println!("stack_sampling_after={}", snap.process.stack_sampling);
    let instrumented = snap.stalls.iter().filter(|s| s.stacks.iter().any(|st| !st.frames.is_empty())).count();
    println!("stalls_with_stacks={instrumented}");
    println!("tokio_unstable={}", snap.process.tokio_unstable);
    println!("lag_max_ns={}", snap.lag.lag.max_ns);
    println!("lag_count={}", snap.lag.lag.count);
    println!("stall_count={}", snap.stall_count);
    println!("runtime_workers={}", snap.runtime.as_ref().map(|r| r.workers).unwrap_or(0));
    print!("{}", probe.report());
    // Task dumps need `tokio_unstable`: the probe says so to a client that asks.
    if let Some(path) = probe.socket_path() {
        let answer = stallscope_tests::Client::connect(&path).and_then(|mut c| {
            c.request(stallscope_wire::Request::TaskDump { timeout_ms: 1_000 })?;
            c.reply()
        });
        match answer {
            Ok(Some(stallscope_wire::Received::Error { message })) => println!("task_dump_error={message}"),
            other => println!("task_dump_answer={other:?}"),
        }
    }
    drop(guard);
}
