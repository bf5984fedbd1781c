//! A stall's anatomy, end to end on real runtimes: where the stalled thread's wall time went (on
//! CPU, waiting for a CPU, blocked) and what it was blocked in, from the kernel's accounting of
//! that thread. Each test asserts the dominant part; the blocked ones also the system call and
//! its target. They must hold beside other load: the parts are the thread's own, not the host's.

use std::io::{Read, Write};
use std::time::{Duration, Instant};

use stallscope_probe::wire::{AlertKind, Snapshot, Stall, StallCause};
use stallscope_tests::{describe, expect_stall, serial, Flavor, Service};

const THRESHOLD: Duration = Duration::from_millis(20);

fn service(flavor: Flavor) -> Service {
    Service::of(flavor).probe(|b| b.stall_threshold(THRESHOLD))
}

/// The one finished stall of `snap` naming `function`, with its anatomy.
fn the_stall<'a>(snap: &'a Snapshot, function: &str) -> &'a Stall {
    let e = expect_stall(snap).naming(function).once();
    let s = e.stalls()[0];
    assert!(s.anatomy.is_some(), "no anatomy for the stall in {function}\n{}", describe(snap));
    // What a person reads (`--nocapture` shows it; docs/guide.md quotes these lines).
    println!("{function}: {} · {}", s.kind_label(), s.anatomy.as_ref().unwrap().describe());
    s
}

fn dominant(s: &Stall) -> StallCause {
    s.anatomy.as_ref().map(|a| a.dominant()).expect("an anatomy")
}

#[inline(never)]
fn sleep_blocking(ms: u64) -> u64 {
    std::thread::sleep(Duration::from_millis(ms));
    // Work after the call, so that the call is not a tail call (which leaves no frame).
    std::hint::black_box(ms)
}

#[test]
fn a_sleep_is_blocked_in_a_sleep_system_call() {
    let _g = serial();
    for flavor in [Flavor::Multi, Flavor::Current] {
        let (snap, probe) = service(flavor).run_with(|p| async move {
            tokio::spawn(async { sleep_blocking(80) }).await.unwrap();
            p
        });
        let s = the_stall(&snap, "sleep_blocking");
        // The in-process report says it too.
        let report = probe.report();
        assert!(report.contains("anatomy: blocked") && report.contains("nanosleep(2) (a sleep)"), "{report}");
        let a = s.anatomy.as_ref().unwrap();
        assert_eq!(dominant(s), StallCause::Blocked, "{flavor:?}: {}", a.describe());
        let main = a.main_blocked_in().unwrap_or_else(|| panic!("{flavor:?}: blocked in nothing: {a:?}"));
        assert!(main.syscall.contains("nanosleep"), "{flavor:?}: {}", a.describe());
        assert_eq!(a.on_cpu_ns + a.waiting_ns + a.blocked_ns, s.duration_ns.unwrap());
        assert!(!a.cpu_starved);
        assert!(snap.alerts.iter().any(|al| al.kind == AlertKind::BlockingPoll && al.summary.contains("blocked")));
    }
}

#[inline(never)]
fn lock_contended(m: &std::sync::Mutex<u64>) -> u64 {
    *m.lock().unwrap()
}

#[test]
fn a_contended_lock_is_blocked_in_futex() {
    let _g = serial();
    let m = std::sync::Arc::new(std::sync::Mutex::new(0u64));
    let snap = service(Flavor::Multi).run(|_| async move {
        let (held_tx, held_rx) = std::sync::mpsc::channel();
        let holder = {
            let m = m.clone();
            std::thread::spawn(move || {
                let mut g = m.lock().unwrap();
                held_tx.send(()).unwrap();
                std::thread::sleep(Duration::from_millis(80));
                *g += 1;
            })
        };
        held_rx.recv().unwrap();
        let task_m = m.clone();
        tokio::spawn(async move { lock_contended(&task_m) }).await.unwrap();
        holder.join().unwrap();
    });
    let s = the_stall(&snap, "lock_contended");
    let a = s.anatomy.as_ref().unwrap();
    assert_eq!(dominant(s), StallCause::Blocked, "{}", a.describe());
    let main = a.main_blocked_in().expect("blocked in something");
    assert_eq!(main.syscall, "futex(2)", "{}", a.describe());
    assert!(a.describe().contains("futex(2) (a lock"), "{}", a.describe());
}

#[inline(never)]
fn spin_on_cpu(ms: u64) -> u64 {
    // Measured in the thread's own CPU time, so a busy host stretches the wall time but not
    // the work.
    let start = thread_cpu_ns();
    let mut x = 0u64;
    while thread_cpu_ns() - start < ms * 1_000_000 {
        x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(7));
    }
    x
}

fn thread_cpu_ns() -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: valid out pointer.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

#[test]
fn a_cpu_loop_is_on_cpu() {
    let _g = serial();
    for flavor in [Flavor::Multi, Flavor::Current] {
        let snap = service(flavor).run(|_| async {
            tokio::spawn(async { spin_on_cpu(60) }).await.unwrap();
        });
        let s = the_stall(&snap, "spin_on_cpu");
        let a = s.anatomy.as_ref().unwrap();
        assert_eq!(dominant(s), StallCause::OnCpu, "{flavor:?}: {}", a.describe());
        // 60 ms of the thread's CPU time, give or take what the window's scaling moves.
        assert!(a.on_cpu_ns >= 40_000_000, "{flavor:?}: {}", a.describe());
        assert!(!a.cpu_starved);
    }
}

#[inline(never)]
fn read_fifo(path: &std::path::Path) -> usize {
    // O_RDWR: opening does not wait for a writer, the read does.
    let mut f = std::fs::OpenOptions::new().read(true).write(true).open(path).unwrap();
    let mut buf = [0u8; 16];
    f.read(&mut buf).unwrap()
}

#[test]
fn a_blocking_read_names_the_file_it_waits_on() {
    let _g = serial();
    let dir = std::env::temp_dir().join(format!("stallscope-anatomy-fifo-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let fifo = dir.join("orders.fifo");
    let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
    // SAFETY: a valid C string.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0, "mkfifo");
    let path = fifo.clone();
    let snap = service(Flavor::Multi).run(|_| async move {
        let writer = {
            let path = path.clone();
            std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(80));
                let mut w = std::fs::OpenOptions::new().write(true).open(path).unwrap();
                w.write_all(b"x").unwrap();
            })
        };
        tokio::spawn(async move { read_fifo(&path) }).await.unwrap();
        writer.join().unwrap();
    });
    std::fs::remove_dir_all(&dir).unwrap();
    let s = the_stall(&snap, "read_fifo");
    let a = s.anatomy.as_ref().unwrap();
    assert_eq!(dominant(s), StallCause::Blocked, "{}", a.describe());
    let main = a.main_blocked_in().expect("blocked in something");
    assert_eq!(main.syscall, "read(2)", "{}", a.describe());
    assert_eq!(main.target.as_deref(), Some(fifo.to_str().unwrap()), "{}", a.describe());
    assert!(a.describe().contains(&format!("read(2) on {}", fifo.display())), "{}", a.describe());
}

#[inline(never)]
fn read_socket(peer: std::net::SocketAddr) -> usize {
    let mut s = std::net::TcpStream::connect(peer).unwrap();
    let mut buf = [0u8; 16];
    s.read(&mut buf).unwrap()
}

#[test]
fn a_blocking_socket_read_names_its_peer() {
    let _g = serial();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let peer = listener.local_addr().unwrap();
    let snap = service(Flavor::Multi).run(|_| async move {
        let server = std::thread::spawn(move || {
            let (mut conn, _) = listener.accept().unwrap();
            std::thread::sleep(Duration::from_millis(80));
            conn.write_all(b"pong").unwrap();
        });
        tokio::spawn(async move { read_socket(peer) }).await.unwrap();
        server.join().unwrap();
    });
    let s = the_stall(&snap, "read_socket");
    let a = s.anatomy.as_ref().unwrap();
    assert_eq!(dominant(s), StallCause::Blocked, "{}", a.describe());
    let main = a.main_blocked_in().expect("blocked in something");
    assert!(matches!(main.syscall.as_str(), "read(2)" | "recvfrom(2)"), "{}", a.describe());
    assert_eq!(main.target, Some(format!("a socket to {peer}")), "{}", a.describe());
}

/// `n` threads spinning until `stop` (they inherit the caller's CPU affinity).
fn spawn_hogs(n: usize, stop: &std::sync::Arc<std::sync::atomic::AtomicBool>) -> Vec<std::thread::JoinHandle<()>> {
    (0..n)
        .map(|_| {
            let stop = stop.clone();
            std::thread::spawn(move || {
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    std::hint::black_box(0u64);
                }
            })
        })
        .collect()
}

/// Pins the calling thread (and the threads it starts after this) to one CPU.
fn pin_to(cpu: usize) {
    // SAFETY: a zeroed cpu_set_t is an empty set; CPU_SET writes inside it.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        assert_eq!(libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set), 0, "sched_setaffinity");
    }
}

#[inline(never)]
fn short_cpu_work() -> u64 {
    spin_on_cpu(2)
}

/// Polls of 2 ms of CPU each on a worker that shares its CPU with six spinning threads: their
/// wall time crosses the threshold only because the worker waits for its turn. The probe must
/// say so and blame no code.
#[test]
fn a_worker_sharing_its_cpu_with_hogs_waited_for_a_cpu_and_no_code_is_blamed() {
    let _g = serial();
    let (snap, (long_polls, probe)) = service(Flavor::Current).run_with(|p| async move {
        // This is the runtime's only thread (current-thread runtime: the body runs on it). The
        // probe's threads were started before: they keep every CPU.
        pin_to(0);
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let hogs = spawn_hogs(6, &stop);
        // Until five polls took longer than the threshold (bounded in time).
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut long_polls = 0;
        while long_polls < 5 && Instant::now() < deadline {
            let began = Instant::now();
            tokio::spawn(async { short_cpu_work() }).await.unwrap();
            if began.elapsed() > THRESHOLD + Duration::from_millis(5) {
                long_polls += 1;
            }
            tokio::task::yield_now().await;
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        for h in hogs {
            h.join().unwrap();
        }
        (long_polls, p)
    });
    assert!(long_polls >= 5, "the hogs never stretched a poll past the threshold\n{}", describe(&snap));
    let stalls: Vec<&Stall> = snap.finished_stalls().filter(|s| s.anatomy.is_some()).collect();
    assert!(!stalls.is_empty(), "no long poll was measured\n{}", describe(&snap));
    for s in &stalls {
        let a = s.anatomy.as_ref().unwrap();
        assert!(a.cpu_starved, "a {} ms poll blamed on code: {}", s.elapsed_ns / 1_000_000, a.describe());
        assert_eq!(a.dominant(), StallCause::WaitingForCpu, "{}", a.describe());
    }
    assert!(!snap.alerts.iter().any(|a| a.kind == AlertKind::BlockingPoll), "code was blamed: {:?}", snap.alerts);
    let starved = snap.alerts.iter().find(|a| a.kind == AlertKind::CpuStarvation).expect("a CPU starvation alert");
    println!("{}", starved.summary);
    if let Some(s) = stalls.first() {
        println!("short_cpu_work: {} · {}", s.kind_label(), s.anatomy.as_ref().unwrap().describe());
    }
    assert!(starved.summary.starts_with("worker waited"), "{}", starved.summary);
    let report = probe.report();
    assert!(report.contains("(waited for a CPU: no code blamed)"), "{report}");
}

/// The mini-redis row of P5: a socket server answering 50 clients on a host so busy that its
/// thread waits for a CPU most of the time. Its polls are socket reads and writes that return at
/// once; their wall time crosses the threshold only because the thread is not running. No code
/// may be blamed (the report of that run blamed `connection.rs`'s read and flush and advised
/// `spawn_blocking`).
#[test]
fn a_socket_server_under_client_load_on_a_busy_host_blames_no_code() {
    const CLIENTS: usize = 50;
    let _g = serial();
    let (snap, answered) = service(Flavor::Current).run_with(|p| async move {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        // The clients, unpinned (started before the pin): each sends a command and waits for
        // its answer, like redis-benchmark's clients.
        let clients: Vec<_> = (0..CLIENTS)
            .map(|_| {
                let stop = stop.clone();
                std::thread::spawn(move || {
                    let mut s = std::net::TcpStream::connect(addr).unwrap();
                    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
                    let (mut answered, mut buf) = (0u64, [0u8; 7]);
                    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                        if s.write_all(b"PING\r\n").is_err() || s.read_exact(&mut buf).is_err() {
                            break;
                        }
                        answered += 1;
                    }
                    answered
                })
            })
            .collect();
        let server = tokio::spawn(async move {
            loop {
                let Ok((mut conn, _)) = listener.accept().await else { break };
                tokio::spawn(async move {
                    use tokio::io::{AsyncReadExt, AsyncWriteExt};
                    let mut buf = [0u8; 6];
                    while conn.read_exact(&mut buf).await.is_ok() {
                        if conn.write_all(b"+PONG\r\n").await.is_err() {
                            break;
                        }
                    }
                });
            }
        });
        // The runtime's only thread shares CPU 0 with eight spinning threads.
        pin_to(0);
        let hogs = spawn_hogs(8, &stop);
        // Until the host stretched a few polls past the threshold (bounded in time).
        let deadline = Instant::now() + Duration::from_secs(15);
        tokio::time::sleep(Duration::from_secs(2)).await;
        while p.snapshot().map_or(0, |s| s.stall_count) < 3 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        for h in hogs {
            h.join().unwrap();
        }
        server.abort();
        // The clients may wait on an answer the aborted server never sends: their read times out.
        let answered: u64 =
            tokio::task::spawn_blocking(move || clients.into_iter().map(|c| c.join().unwrap()).sum()).await.unwrap();
        answered
    });
    assert!(answered > 1000, "the server answered only {answered} requests\n{}", describe(&snap));
    assert!(snap.stall_count >= 1, "the hogs never stretched a poll past the threshold\n{}", describe(&snap));
    let blamed: Vec<&Stall> = snap.finished_stalls().filter(|s| s.blames_code()).collect();
    assert!(
        blamed.is_empty(),
        "code blamed for a busy host: {:?}\n{}",
        blamed.first().map(|s| s.anatomy.as_ref().map(|a| a.describe())),
        describe(&snap)
    );
    assert!(!snap.alerts.iter().any(|a| a.kind == AlertKind::BlockingPoll), "code was blamed: {:?}", snap.alerts);
    println!("{answered} answers, {} long polls, none blamed on code", snap.stall_count);
}
