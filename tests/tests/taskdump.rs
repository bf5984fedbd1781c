//! Task dumps over the probe's socket, on real runtimes: identical async traces grouped with exact
//! counts and spawn locations, the refusal while a worker is stalled, a dump that misses its
//! deadline and the "busy" refusal while it finishes, and a client too old for the reply.
//!
//! The tasks are spawned as boxed futures. Tokio cuts a task's trace at the task's own poll
//! frame, so in an optimized build the async fns inlined into it (a small spawned async fn, and
//! what it awaits directly) are not in the trace; behind a `dyn Future` they keep a frame of their
//! own, as they do in services built on boxed futures. The release profile keeps line tables
//! only, so those frames are named `{async_fn#0}` with their file and line: the tests look for the
//! line of each function's `.await`.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::SeqCst};
use std::sync::Arc;
use std::time::{Duration, Instant};

use stallscope_tests::{serial, Client};
use stallscope_wire::intern::Received;
use stallscope_wire::proto::{Hello, ProtocolVersion};
use stallscope_wire::{Request, TaskDump, TaskGroup, Update};
use tokio::sync::Notify;

/// The line of `parked_on_notify`'s `.await` (three lines below).
const PARKED_AWAIT: u32 = line!() + 3;
async fn parked_on_notify(notify: Arc<Notify>, ready: Arc<AtomicUsize>) {
    ready.fetch_add(1, SeqCst);
    notify.notified().await;
}

/// The line of `napping_in_a_timer`'s `.await` (three lines below).
const NAPPING_AWAIT: u32 = line!() + 3;
async fn napping_in_a_timer(ready: Arc<AtomicUsize>) {
    ready.fetch_add(1, SeqCst);
    tokio::time::sleep(Duration::from_secs(3600)).await;
}

/// Spawns `fut` behind a `dyn Future` (see the module docs); the spawn location is the caller's.
#[track_caller]
fn spawn_boxed(rt: &tokio::runtime::Runtime, fut: impl Future<Output = ()> + Send + 'static) {
    let boxed: Pin<Box<dyn Future<Output = ()> + Send>> = Box::pin(fut);
    rt.spawn(boxed);
}

/// Blocks its worker (in `std::thread::sleep`) until `release` is set (or 20 s pass).
fn blocking_until(started: &AtomicBool, release: &AtomicBool) {
    started.store(true, SeqCst);
    let give_up = Instant::now() + Duration::from_secs(20);
    while !release.load(SeqCst) && Instant::now() < give_up {
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn multi_thread(probe: &stallscope_probe::Probe) -> tokio::runtime::Runtime {
    stallscope_tests::runtime_with(&probe)
}

fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !cond() {
        assert!(Instant::now() < deadline, "gave up waiting for {what}");
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// Asks for a dump and returns the probe's answer: the dump, or the error message.
fn ask(c: &mut Client, timeout_ms: u64) -> Result<TaskDump, String> {
    c.request(Request::TaskDump { timeout_ms }).unwrap();
    match c.reply().unwrap().expect("the probe answers") {
        Received::TaskDump(d) => Ok(d),
        Received::Error { message } => Err(message),
        other => panic!("not a reply: {other:?}"),
    }
}

/// Asks until the probe is no longer busy or stalled (what a client is told to do).
fn ask_until_served(c: &mut Client, timeout_ms: u64) -> TaskDump {
    for _ in 0..200 {
        match ask(c, timeout_ms) {
            Ok(d) => return d,
            Err(m) if m.contains("busy") || m.contains("stalled") => std::thread::sleep(Duration::from_millis(50)),
            Err(m) => panic!("refused: {m}"),
        }
    }
    panic!("the probe stayed busy");
}

/// The groups whose trace has a frame at `taskdump.rs:<line>`.
fn at_line(dump: &TaskDump, line: u32) -> Vec<&TaskGroup> {
    let needle = format!("tests/taskdump.rs:{line}:");
    dump.groups.iter().filter(|g| g.trace.contains(&needle)).collect()
}

fn describe(dump: &TaskDump) -> String {
    let mut o = format!("{} tasks in {} groups:\n", dump.tasks, dump.groups.len());
    for g in &dump.groups {
        o.push_str(&format!(
            "--- {} tasks spawned at {:?}, ids {:?}\n{}\n",
            g.count, g.spawned_at, g.task_ids, g.trace
        ));
    }
    o
}

#[test]
fn a_dump_groups_identical_async_traces_with_exact_counts() {
    let _s = serial();
    let probe = stallscope_probe::Probe::builder().build().unwrap();
    let rt = multi_thread(&probe);
    let _g = probe.start(rt.handle());
    let path = probe.socket_path().expect("listening");
    let notify = Arc::new(Notify::new());
    let ready = Arc::new(AtomicUsize::new(0));
    for _ in 0..50 {
        spawn_boxed(&rt, parked_on_notify(notify.clone(), ready.clone()));
    }
    for _ in 0..3 {
        spawn_boxed(&rt, napping_in_a_timer(ready.clone()));
    }
    wait_for("the 53 tasks to reach their await", || ready.load(SeqCst) == 53);

    let mut c = Client::connect(&path).unwrap();
    let dump = ask(&mut c, 5_000).unwrap_or_else(|m| panic!("refused: {m}"));
    let text = describe(&dump);

    // One group per function, found by the line of its `.await`, down to Tokio's leaf future.
    let parked = at_line(&dump, PARKED_AWAIT);
    assert_eq!(parked.len(), 1, "one group for the 50 identical tasks\n{text}");
    assert_eq!(parked[0].count, 50, "{text}");
    assert!(parked[0].trace.contains("sync/notify.rs"), "the trace reaches Tokio's Notified future\n{text}");
    let napping = at_line(&dump, NAPPING_AWAIT);
    assert_eq!(napping.len(), 1, "{text}");
    assert_eq!(napping[0].count, 3, "{text}");
    assert!(napping[0].trace.contains("time/sleep.rs"), "{text}");
    assert!(!napping[0].trace.contains("sync/notify.rs"), "{text}");

    // The probe saw these tasks spawned: each group names its spawn call.
    for g in [parked[0], napping[0]] {
        let at = g.spawned_at.as_deref().unwrap_or_else(|| panic!("no spawn location\n{text}"));
        assert!(at.contains("taskdump.rs"), "{at}");
    }
    assert_ne!(parked[0].spawned_at, napping[0].spawned_at);
    // Example ids: the 8 smallest, ascending and distinct; the counts stay exact.
    assert_eq!(parked[0].task_ids.len(), 8, "{text}");
    assert!(parked[0].task_ids.windows(2).all(|w| w[0] < w[1]), "{:?}", parked[0].task_ids);
    assert_eq!(napping[0].task_ids.len(), 3);

    // Most tasks first; nothing cut; every task listed (the probe's heartbeat task too).
    assert!(dump.groups.windows(2).all(|w| w[0].count >= w[1].count), "{text}");
    assert_eq!(dump.groups[0].count, 50);
    assert!(!dump.truncated && dump.omitted_groups == 0, "{text}");
    assert_eq!(dump.listed_tasks(), dump.tasks);
    assert!(dump.tasks >= 53, "{text}");
    assert!(dump.elapsed_ns > 0);

    // The service carries on: the parked tasks still wake up.
    notify.notify_waiters();
    // The connection stays usable for updates after a dump.
    assert!(c.next().unwrap().is_some());
}

#[test]
fn while_a_worker_is_stalled_a_dump_is_refused_and_served_after_the_stall() {
    let _s = serial();
    let probe = stallscope_probe::Probe::builder().build().unwrap();
    let rt = multi_thread(&probe);
    let _g = probe.start(rt.handle());
    let path = probe.socket_path().expect("listening");
    let mut c = Client::connect(&path).unwrap();
    let (started, release) = (Arc::new(AtomicBool::new(false)), Arc::new(AtomicBool::new(false)));
    {
        let (started, release) = (started.clone(), release.clone());
        rt.spawn(async move { blocking_until(&started, &release) });
    }
    wait_for("the blocking task to start", || started.load(SeqCst));
    assert!(c.until(Duration::from_secs(5), |u| matches!(u, Update::StallStarted(_))).is_some(), "stall seen");

    let refused = ask(&mut c, 5_000).expect_err("no dump while a worker is stalled");
    assert!(refused.contains("a worker is stalled"), "{refused}");
    assert!(refused.contains("retry"), "{refused}");

    release.store(true, SeqCst);
    assert!(c.until(Duration::from_secs(5), |u| matches!(u, Update::StallEnded(_))).is_some(), "stall ended");
    // Once the stall has ended, the same request is served.
    let dump = ask_until_served(&mut c, 5_000);
    assert!(dump.tasks >= 1, "{}", describe(&dump));
}

#[test]
fn a_dump_past_its_deadline_times_out_and_later_requests_are_busy_until_it_finishes() {
    let _s = serial();
    // A current-thread runtime: its dump runs as a task, which waits while the thread is blocked
    // (the threshold is high, so that blocking is not a stall and the dump is not refused).
    let probe = stallscope_probe::Probe::builder().stall_threshold(Duration::from_secs(30)).build().unwrap();
    let mut b = tokio::runtime::Builder::new_current_thread();
    b.enable_all();
    probe.install(&mut b);
    let rt = Arc::new(b.build().unwrap());
    let guard = probe.start(rt.handle());
    let stop = Arc::new(Notify::new());
    let driver = {
        let (rt, stop) = (rt.clone(), stop.clone());
        std::thread::spawn(move || rt.block_on(stop.notified()))
    };
    let path = probe.socket_path().expect("listening");
    let notify = Arc::new(Notify::new());
    let ready = Arc::new(AtomicUsize::new(0));
    for _ in 0..5 {
        spawn_boxed(&rt, parked_on_notify(notify.clone(), ready.clone()));
    }
    wait_for("the tasks to park", || ready.load(SeqCst) == 5);
    let (started, release) = (Arc::new(AtomicBool::new(false)), Arc::new(AtomicBool::new(false)));
    {
        let (started, release) = (started.clone(), release.clone());
        rt.spawn(async move { blocking_until(&started, &release) });
    }
    wait_for("the blocking task to start", || started.load(SeqCst));
    // On any failure below, unblock the runtime and end its driver before the probe's guard is
    // dropped: a failed assertion otherwise left the driver blocked and the test hung.
    let unblock = Unblock(release.clone(), stop.clone());

    let mut a = Client::connect(&path).unwrap();
    let mut b = Client::connect(&path).unwrap();
    // The runtime's only thread is blocked: the dump cannot run before its deadline.
    let late = ask(&mut a, 100).expect_err("the dump cannot finish while the runtime is blocked");
    assert!(late.contains("timed out"), "{late}");
    // It is still in flight: another client is told the probe is busy, not left waiting.
    let busy = ask(&mut b, 5_000).expect_err("one dump at a time");
    assert!(busy.contains("busy"), "{busy}");

    // Unblocked, the late dump finishes in the background and the probe serves dumps again.
    release.store(true, SeqCst);
    let dump = ask_until_served(&mut b, 5_000);
    let parked = at_line(&dump, PARKED_AWAIT);
    assert_eq!(parked.len(), 1, "{}", describe(&dump));
    assert_eq!(parked[0].count, 5, "{}", describe(&dump));

    drop(unblock);
    driver.join().unwrap();
    drop(guard);
}

/// Releases a blocked task and stops a runtime's driver when dropped, also when a test fails.
struct Unblock(Arc<AtomicBool>, Arc<Notify>);

impl Drop for Unblock {
    fn drop(&mut self) {
        self.0.store(true, SeqCst);
        // A permit, if the driver is not waiting yet: it returns at once when it does.
        self.1.notify_one();
    }
}

#[test]
fn a_client_speaking_protocol_1_0_is_told_it_cannot_receive_a_dump() {
    let _s = serial();
    let probe = stallscope_probe::Probe::builder().build().unwrap();
    let rt = multi_thread(&probe);
    let _g = probe.start(rt.handle());
    let path = probe.socket_path().expect("listening");
    let mut hello = Hello::new("old-stallscope", "0.0.9");
    hello.protocol = ProtocolVersion { major: 1, minor: 0 };
    let mut c = Client::connect_with(&path, &hello).unwrap();
    let refused = ask(&mut c, 1_000).expect_err("no reply message in 1.0");
    assert!(refused.contains("protocol 1.0"), "{refused}");
    // The connection goes on.
    assert!(c.next().unwrap().is_some());
}
