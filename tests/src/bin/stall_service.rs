//! A service with the probe and its socket server that stalls every 200 ms in
//! `service_culprit`, for tests that attach from outside or kill the process. Prints the socket
//! path on its first line, then runs for the number of seconds given as its argument (default 30).

use std::hint::black_box;
use std::io::Write;
use std::time::Duration;

#[inline(never)]
fn service_culprit() {
    std::thread::sleep(black_box(Duration::from_millis(30)));
    black_box(());
}

fn main() {
    let secs: u64 = std::env::args().nth(1).and_then(|s| s.parse().ok()).unwrap_or(30);
    let probe = stallscope_probe::Probe::builder().with_env().build().expect("probe");
    let mut b = tokio::runtime::Builder::new_multi_thread();
    b.worker_threads(2).enable_all();
    probe.install(&mut b);
    let rt = b.build().expect("runtime");
    let _guard = probe.start(rt.handle());
    let path = probe.socket_path().expect("the probe listens");
    println!("{}", path.display());
    std::io::stdout().flush().unwrap();
    rt.block_on(async {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
        while tokio::time::Instant::now() < deadline {
            tokio::spawn(async { service_culprit() }).await.unwrap();
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    });
}
