//! A stall record as the wire shows it ([`Stall`]): its spawn location by name, its stacks
//! symbolized, trimmed to the task's poll and grouped, and its anatomy scaled to the exact
//! duration. On the aggregator thread, for every stall published and every running stall in
//! each snapshot. A running stall never waits for the symbolizer: its new stacks are asked for
//! and shown from a later tick on. Stacks are not requested as samples arrive: the lookup would
//! then compete for a CPU with the stalled thread of every short stall, which the old
//! lookup-at-close did not.

use std::collections::HashMap;
use std::panic::Location;

use stallscope_wire as wire;
use stallscope_wire::Stall;

use crate::aggregator::join::{SampleKey, StallRec};
use crate::poll::clock::{now_raw, Clock};

/// Spawn-location names, cached by the location's address.
#[derive(Debug, Default)]
pub(crate) struct Names {
    names: HashMap<usize, String>,
}

impl Names {
    /// `file:line:column` of a location key the hooks stored (0: unknown).
    pub(crate) fn get(&mut self, key: usize) -> String {
        if key == 0 {
            return "(unknown)".to_string();
        }
        self.names
            .entry(key)
            .or_insert_with(|| {
                // SAFETY: keys are addresses of `&'static Location<'static>` stored by the hooks.
                let loc: &'static Location<'static> = unsafe { &*(key as *const Location<'static>) };
                format!("{}:{}:{}", loc.file(), loc.line(), loc.column())
            })
            .clone()
    }
}

/// Distinct stacks cached, past which the cache starts over.
const STACK_CACHE: usize = 20_000;

/// Each sampled stack (lookup addresses and what the thread was blocked in) symbolized, trimmed
/// to the task's poll and given its off-CPU leaf once, when all its addresses are resolved: a
/// running stall is converted on every tick, and a stack recurs across stalls.
#[derive(Debug, Default)]
pub(crate) struct Stacks {
    /// Frames, and whether they pass through `block_in_place`.
    resolved: HashMap<SampleKey, (Vec<wire::Frame>, bool)>,
}

impl Stacks {
    /// The stack's frames, from the cache, or built now if every address is resolved (or if
    /// `always`, with the missing ones as addresses, not cached then).
    #[cfg(all(target_os = "linux", any(target_arch = "x86_64", target_arch = "aarch64")))]
    fn get(&mut self, key: &SampleKey, always: bool) -> Option<(Vec<wire::Frame>, bool)> {
        use crate::sampler::symbolize;
        if let Some(r) = self.resolved.get(key) {
            return Some(r.clone());
        }
        let (addrs, blocked) = key;
        let resolved = symbolize::is_resolved(addrs);
        if !resolved && !always {
            // Looked up in the background; a later tick shows it.
            symbolize::request(addrs);
            return None;
        }
        let mut frames = symbolize::frames(addrs);
        let in_bip = frames.iter().any(|f| f.function.contains("block_in_place"));
        symbolize::trim(&mut frames);
        if let Some(b) = blocked {
            frames.insert(0, wire::Frame::off_cpu(b));
        }
        if resolved {
            if self.resolved.len() >= STACK_CACHE {
                self.resolved.clear();
            }
            self.resolved.insert(key.clone(), (frames.clone(), in_bip));
        }
        Some((frames, in_bip))
    }
}

/// What converting a stall needs besides the record.
#[derive(Debug)]
pub(crate) struct Converter {
    pub(crate) clock: &'static Clock,
    /// Whether stacks are sampled (and so symbolized).
    pub(crate) symbolize: bool,
    pub(crate) threshold_ns: u64,
    pub(crate) names: Names,
    pub(crate) stacks: Stacks,
}

impl Converter {
    /// Waits (up to `symbolize::WAIT` in all) for the symbolizer to resolve the stacks of a stall
    /// about to be closed (the ones a tick already showed are resolved).
    pub(crate) fn settle(&mut self, rec: &StallRec) {
        #[cfg(all(target_os = "linux", any(target_arch = "x86_64", target_arch = "aarch64")))]
        if self.symbolize {
            use crate::sampler::symbolize;
            let deadline = std::time::Instant::now() + symbolize::WAIT;
            for (addrs, _) in rec.stacks.keys() {
                // At once when it is resolved already, as it mostly is.
                symbolize::wait_for(addrs, deadline.saturating_duration_since(std::time::Instant::now()));
            }
        }
        let _ = rec;
    }

    pub(crate) fn wire_stall(&mut self, rec: &StallRec, ended: bool) -> Stall {
        let s = rec.start;
        let now = now_raw();
        let elapsed_ticks = rec.ticks.unwrap_or_else(|| now.saturating_sub(s.start));
        let mut stacks: Vec<wire::StackCount> = Vec::new();
        let mut in_bip = false;
        #[cfg(all(target_os = "linux", any(target_arch = "x86_64", target_arch = "aarch64")))]
        if self.symbolize {
            for (key, count) in &rec.stacks {
                // A running stall shows the stacks resolved so far; a closed one has waited for
                // its own (`settle`) and shows any address still missing as its value.
                let Some((frames, bip)) = self.stacks.get(key, ended) else { continue };
                in_bip |= bip;
                match stacks.iter_mut().find(|x| x.frames == frames) {
                    Some(x) => x.count += count,
                    None => stacks.push(wire::StackCount { frames, count: *count }),
                }
            }
        }
        stacks.sort_by_key(|s| std::cmp::Reverse(s.count));
        let clock = self.clock;
        let anatomy = match (&rec.anatomy, ended) {
            (Some(raw), true) => {
                let threshold_ns = self.threshold_ns;
                raw.anatomy(clock.ticks_to_ns(elapsed_ticks), threshold_ns, |t| clock.ticks_to_ns(t))
            }
            _ => None,
        };
        Stall {
            id: rec.id,
            start_unix_ms: self.clock.raw_to_unix_ns(s.start) / 1_000_000,
            duration_ns: ended.then(|| self.clock.ticks_to_ns(elapsed_ticks)),
            elapsed_ns: self.clock.ticks_to_ns(elapsed_ticks),
            worker: s.slot as u32,
            tid: s.tid,
            // An `instrument`ed future has task 0 (Tokio's task ids start at 1); so has an
            // unhooked stall, which is named by what it runs.
            task: (s.task != 0).then_some(s.task),
            spawned_at: match rec.origin {
                Some(origin) => origin.spawned_at().to_string(),
                None => self.names.get(s.loc),
            },
            in_block_in_place: in_bip,
            stacks,
            samples_lost: rec.lost,
            anatomy,
            // Only a finished stall can tell: a running one may still be confirmed.
            unobserved: ended && !rec.observed && rec.samples == 0,
        }
    }
}
