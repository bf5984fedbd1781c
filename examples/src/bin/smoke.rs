use std::time::Duration;

#[inline(never)]
fn culprit_sleep() {
    std::thread::sleep(std::hint::black_box(Duration::from_millis(50)));
    std::hint::black_box(());
}

fn main() {
    let probe = stallscope_probe::Probe::builder().build().unwrap();
    let mut b = tokio::runtime::Builder::new_multi_thread();
    b.enable_all().worker_threads(2);
    probe.install(&mut b);
    let rt = b.build().unwrap();
    let guard = probe.start(rt.handle());
    rt.block_on(async {
        tokio::spawn(async { culprit_sleep() }).await.unwrap();
        tokio::time::sleep(Duration::from_millis(200)).await;
    });
    println!("{}", probe.report());
    for s in &probe.snapshot().unwrap().stalls { for st in &s.stacks { println!("--- {}", st.count); for f in &st.frames { println!("  {:?} {} {:?}:{:?}", f.kind, f.function, f.file, f.line); } } }
    drop(guard);
}
