//! What the rest of the machine did during a run, from `/proc/stat` and `/proc/self/stat`.
//!
//! Included by path in the overhead bench (`probe/benches/overhead.rs`, and its CPU-time pairs)
//! and in the comparison harness (`probe/compare/src/main.rs`, a workspace of its own), so that
//! every table's "other load" column means the same thing.

/// CPU ticks (USER_HZ, 100 per second on Linux) used by the whole machine (busy + stolen by the
/// hypervisor) and by this process, read together.
#[derive(Clone, Copy, Debug)]
pub(crate) struct CpuTicks {
    pub(crate) machine: u64,
    pub(crate) own: u64,
}

pub(crate) fn cpu_ticks() -> Option<CpuTicks> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    // cpu  user nice system idle iowait irq softirq steal ...
    let v: Vec<u64> = stat.lines().next()?.split_whitespace().skip(1).map_while(|x| x.parse().ok()).collect();
    let machine = v.first()? + v.get(1)? + v.get(2)? + v.get(5)? + v.get(6)? + v.get(7)?;
    let me = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the command name start at field 3; utime and stime are fields 14 and 15.
    let f: Vec<&str> = me.get(me.rfind(')')? + 2..)?.split_whitespace().collect();
    let own = f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?;
    Some(CpuTicks { machine, own })
}

/// Cores kept busy by other processes (and the hypervisor), and by this one, between two
/// readings `secs` apart.
pub(crate) fn cores(a: Option<CpuTicks>, b: Option<CpuTicks>, secs: f64) -> Option<(f64, f64)> {
    let (a, b) = (a?, b?);
    let own = b.own.saturating_sub(a.own);
    let other = b.machine.saturating_sub(a.machine).saturating_sub(own);
    Some((other as f64 / 100.0 / secs, own as f64 / 100.0 / secs))
}
