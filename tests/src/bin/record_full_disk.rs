//! A service recording its updates (`record_to`) onto a disk that fills up and then has room
//! again, for `tests/faults.rs`. The "disk" is the process's file-size limit (`RLIMIT_FSIZE`,
//! with `SIGXFSZ` ignored, so a write past it fails with EFBIG as ENOSPC would): `LIMIT` bytes
//! for the first `FULL_FOR`, then none. Stalls every 100 ms, runs for the seconds given, then
//! prints the probe's problems, one per line, and its count of lost subscriber updates.
//!
//! Usage: `record_full_disk PATH SECS`

use std::hint::black_box;
use std::time::{Duration, Instant};

const LIMIT: u64 = 48 * 1024;
const FULL_FOR: Duration = Duration::from_secs(2);

#[inline(never)]
fn full_disk_culprit() {
    std::thread::sleep(black_box(Duration::from_millis(15)));
    black_box(());
}

fn set_fsize(bytes: libc::rlim_t) {
    let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit/setrlimit write or read one rlimit struct we own.
    unsafe {
        assert_eq!(libc::getrlimit(libc::RLIMIT_FSIZE, &mut lim), 0);
        lim.rlim_cur = bytes.min(lim.rlim_max);
        assert_eq!(libc::setrlimit(libc::RLIMIT_FSIZE, &lim), 0);
    }
}

fn main() {
    let mut args = std::env::args().skip(1);
    let path = std::path::PathBuf::from(args.next().expect("PATH"));
    let secs: u64 = args.next().and_then(|s| s.parse().ok()).unwrap_or(5);
    // SAFETY: ignoring a signal has no preconditions.
    unsafe { libc::signal(libc::SIGXFSZ, libc::SIG_IGN) };
    set_fsize(LIMIT);
    let probe =
        stallscope_probe::Probe::builder().record_to(&path).record_keep(8).server(false).build().expect("probe");
    let mut b = tokio::runtime::Builder::new_multi_thread();
    b.worker_threads(2).enable_all();
    probe.install(&mut b);
    let rt = b.build().expect("runtime");
    let guard = probe.start(rt.handle());
    let began = Instant::now();
    let mut full = true;
    rt.block_on(async {
        while began.elapsed() < Duration::from_secs(secs) {
            if full && began.elapsed() >= FULL_FOR {
                // Room again.
                set_fsize(libc::RLIM_INFINITY);
                full = false;
            }
            tokio::spawn(async { full_disk_culprit() }).await.unwrap();
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
    let snap = probe.refresh(Duration::from_secs(5)).expect("a snapshot");
    drop(guard);
    for m in &snap.process.missing {
        println!("problem: {m}");
    }
    println!("lost updates: {}", snap.drops.subscriber_updates);
    println!("stalls: {}", snap.stall_count);
}
