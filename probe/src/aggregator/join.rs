//! The stall join: one record per stall, put together from two routes that arrive in any order.
//!
//! - **The watchdog** (`Msg::StallStarted`, `Sample`, `StallEnded`, `PollAnatomy`): it saw a poll
//!   run past the threshold, sampled it, and saw it end.
//! - **The hook's long-poll ring** (drained by the aggregator): the exact start and duration of
//!   a poll the watchdog marked, written by the poll's own end.
//!
//! A stall is closed once the watchdog saw its end and its exact duration is in, or after one of
//! three grace timers: `END_GRACE` (the end was seen, the duration never came), `UNSEEN_GRACE`
//! (a ring record the watchdog never claimed), and the refresh's settle time in the aggregator
//! (`SETTLE`, which reads [`Join::unsettled`]). An unhooked stall (`FLAG_UNHOOKED`, no hook
//! around it) comes only from the watchdog and is confirmed or refuted by its samples
//! ([`Join::unhooked_sample`]).
//!
//! Pure bookkeeping on the aggregator thread: no clock read (callers pass `now`), no I/O, no
//! symbolization; the aggregator converts and publishes what it returns.

use std::collections::{HashMap, HashSet, VecDeque};
use std::time::{Duration, Instant};

use crate::aggregator::attribution::{Origin, Verdict};
use crate::aggregator::msg::StallStart;
use crate::poll::slots::{FLAG_TIMED, FLAG_UNHOOKED};
use crate::watchdog::anatomy::Raw;

/// A stall the watchdog saw end but whose exact duration never arrived is closed after this,
/// with the watchdog's end bound (or, without one, the detection time).
const END_GRACE: Duration = Duration::from_secs(1);
/// How long a stall seen only in the long-poll ring waits for the watchdog to claim it, once
/// every stall start the watchdog sent before the record was read has been handled (see
/// [`Join::starts_sent`]).
const UNSEEN_GRACE: Duration = Duration::from_millis(100);
/// How long such a record waits at most when those starts have not all been handled: a bound
/// for a count that never settles (the watchdog died between counting a start and sending it).
const UNSEEN_MAX: Duration = Duration::from_secs(5);
/// Finalized stall keys remembered, to ignore late watchdog messages for them.
const RECENT_KEYS: usize = 4096;
/// Anatomies of long polls kept for a long-poll record not drained yet (`Msg::PollAnatomy`).
const ORPHAN_ANATOMY: usize = 64;

/// A stall's key: its slot and the poll's sequence number (odd), or an even key of its own for an
/// unhooked stall.
pub(crate) type Key = (usize, u64);
/// A sample's stack (lookup addresses) and what the thread was blocked in when it was taken.
pub(crate) type SampleKey = (Vec<u64>, Option<String>);

#[derive(Debug)]
pub(crate) struct StallRec {
    pub(crate) id: u64,
    pub(crate) start: StallStart,
    /// Samples by stack and by what the thread was blocked in (then the stack gets an off-CPU
    /// leaf, `Frame::off_cpu`).
    pub(crate) stacks: HashMap<SampleKey, u64>,
    pub(crate) samples: u64,
    pub(crate) lost: u64,
    /// Exact duration from the hook, in ticks.
    pub(crate) ticks: Option<u64>,
    /// Raw end of the poll, from the long-poll ring.
    pub(crate) end: Option<u64>,
    /// `ticks` came from the long-poll ring (the hook's own end), not from the detection-time
    /// fallback: only then is the poll added to the poll-time histograms (`LongPolls`).
    pub(crate) exact: bool,
    /// When the watchdog reported the poll's end.
    pub(crate) ended_at: Option<Instant>,
    /// The watchdog's upper bound of the poll's end (raw clock), for a poll whose exact end the
    /// hook did not record.
    pub(crate) watch_end: Option<u64>,
    /// What the watchdog measured for the anatomy, with its end.
    pub(crate) anatomy: Option<Box<Raw>>,
    /// The watchdog saw the poll: it confirmed the stall or measured it (`Msg::PollAnatomy`).
    pub(crate) observed: bool,
    /// Set for a stall known only from the long-poll ring so far: the watchdog may still report
    /// it (its start message can trail the ring when the aggregator is busy), so it is closed
    /// only after `UNSEEN_GRACE` unless the watchdog claims it first.
    pub(crate) unseen_since: Option<Instant>,
    /// For such a stall: the watchdog's count of stall starts sent when its record was read
    /// ([`Join::starts_sent`]).
    pub(crate) unseen_starts: u64,
    /// For an unhooked stall (`FLAG_UNHOOKED`): what a sample showed it runs. Until one does,
    /// the stall is not published (it may be a thread that left its runtime).
    pub(crate) origin: Option<Origin>,
    /// For an unhooked stall: the first sample that showed the thread no longer in it (raw
    /// clock), a closer upper bound of its end than the watchdog's.
    pub(crate) end_hint: Option<u64>,
    /// For an unhooked stall not yet confirmed: the last sample that showed user code, and the
    /// innermost user function in it. Two in a row in the same function confirm the stall.
    pub(crate) candidate: Option<(String, SampleKey)>,
    /// For an unhooked stall: when the latest run of samples outside any runtime began.
    pub(crate) outside: Option<u64>,
}

impl StallRec {
    /// A stall the watchdog has just reported, with nothing measured yet.
    pub(crate) fn new(id: u64, start: StallStart) -> StallRec {
        StallRec {
            id,
            start,
            stacks: HashMap::new(),
            samples: 0,
            lost: 0,
            ticks: None,
            end: None,
            exact: false,
            ended_at: None,
            watch_end: None,
            anatomy: None,
            observed: true,
            unseen_since: None,
            unseen_starts: 0,
            origin: None,
            end_hint: None,
            candidate: None,
            outside: None,
        }
    }
}

/// One record of the hook's long-poll ring.
#[derive(Debug, Clone, Copy)]
pub(crate) struct LongPoll {
    pub(crate) seq: u64,
    pub(crate) start: u64,
    pub(crate) ticks: u64,
    pub(crate) task: u64,
    pub(crate) loc: usize,
    pub(crate) flags: u32,
}

/// What became of a sample of an unhooked stall.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Unhooked {
    /// Kept, dropped or left out; nothing to tell anyone.
    Quiet,
    /// It confirmed the stall: publish its start.
    Confirmed,
    /// The thread is outside its runtime: tell the watchdog to stop sampling this key.
    Refuted,
}

/// A closed stall.
#[derive(Debug)]
pub(crate) struct Closed {
    pub(crate) rec: StallRec,
    /// Neither the hook nor the watchdog gave its end (its ring record was overwritten): it
    /// carries the detection time instead.
    pub(crate) overrun: bool,
}

/// The stalls in progress and the keys of those recently closed.
#[derive(Debug)]
pub(crate) struct Join {
    active: HashMap<Key, StallRec>,
    recent: VecDeque<(Key, u64)>,
    recent_set: HashSet<Key>,
    /// See `Msg::PollAnatomy`.
    orphan_anatomy: VecDeque<(Key, Box<Raw>)>,
    next_stall_id: u64,
    /// The watchdog's count of stall starts sent (`Shared::stall_starts_sent`), read by the
    /// aggregator before it reads the long-poll rings, and of those the full queue lost; and the
    /// starts handled here. A record no start has claimed is closed as unobserved only once the
    /// starts handled and lost reach the count read before it: until then its start may still be
    /// queued behind other messages. That queue can hold well over `UNSEEN_GRACE` of messages
    /// while the aggregator is busy (its symbolizer's warm-up at start, on a loaded host), and a
    /// start handled after its stall was closed was ignored with every sample of it: the stall
    /// was reported without stacks and its samples counted as lost.
    pub(crate) starts_sent: u64,
    pub(crate) starts_lost: u64,
    starts_handled: u64,
    /// Samples kept per stall.
    max_samples: u64,
}

impl Join {
    pub(crate) fn new(max_samples: usize) -> Join {
        Join {
            active: HashMap::new(),
            recent: VecDeque::new(),
            recent_set: HashSet::new(),
            orphan_anatomy: VecDeque::new(),
            next_stall_id: 1,
            starts_sent: 0,
            starts_lost: 0,
            starts_handled: 0,
            max_samples: max_samples as u64,
        }
    }

    pub(crate) fn get(&self, key: Key) -> Option<&StallRec> {
        self.active.get(&key)
    }

    /// The stalls in progress a snapshot shows: not ended, claimed by the watchdog, and (for an
    /// unhooked one) confirmed by a sample.
    pub(crate) fn running(&self) -> impl Iterator<Item = &StallRec> {
        self.active.values().filter(|rec| {
            let unconfirmed = rec.start.flags & FLAG_UNHOOKED != 0 && rec.origin.is_none();
            rec.ended_at.is_none() && rec.unseen_since.is_none() && !unconfirmed
        })
    }

    /// Whether this key is an unhooked stall in progress (its samples go to `unhooked_sample`).
    pub(crate) fn is_unhooked(&self, key: Key) -> bool {
        self.active.get(&key).is_some_and(|r| r.start.flags & FLAG_UNHOOKED != 0)
    }

    /// The watchdog found a poll past the threshold. Returns the new record when its start is to
    /// be published now (a hooked stall; an unhooked one waits for a sample to confirm it).
    pub(crate) fn started(&mut self, s: StallStart) -> Option<&StallRec> {
        let key = (s.slot, s.seq);
        self.starts_handled += 1;
        if self.recent_set.contains(&key) {
            return None;
        }
        if let Some(rec) = self.active.get_mut(&key) {
            // Found in the long-poll ring first; now the watchdog owns its end.
            rec.unseen_since = None;
            rec.observed = true;
            rec.start.tid = s.tid;
            rec.start.detected = s.detected;
            if rec.start.flags & FLAG_TIMED == 0 {
                rec.start.start = s.start;
                if let Some(end) = rec.end {
                    rec.ticks = Some(end.saturating_sub(s.start));
                }
            }
            return None;
        }
        let rec = StallRec::new(self.next_stall_id, s);
        self.next_stall_id += 1;
        self.active.insert(key, rec);
        let rec = self.active.get(&key);
        rec.filter(|r| r.start.flags & FLAG_UNHOOKED == 0)
    }

    /// A sample of a hooked stall (`is_unhooked` is false). Returns false when the sample is lost
    /// to no stall (the probe counts it as a lost sample).
    pub(crate) fn sample(&mut self, key: Key, addrs: Vec<u64>, blocked: Option<String>) -> bool {
        match self.active.get_mut(&key) {
            Some(rec) if rec.samples < self.max_samples => {
                rec.samples += 1;
                *rec.stacks.entry((addrs, blocked)).or_insert(0) += 1;
                true
            }
            Some(rec) => {
                rec.lost += 1;
                true
            }
            // A refuted unhooked stall's last samples (its keys are even, polls' odd): nothing
            // was lost.
            None => key.1 & 1 == 0,
        }
    }

    /// The watchdog saw the poll end. `end` is the end it measured for an unhooked stall; `now_raw`
    /// stands in when it has none.
    pub(crate) fn ended(&mut self, key: Key, anatomy: Option<Box<Raw>>, end: Option<u64>, now_raw: u64, now: Instant) {
        let Some(rec) = self.active.get_mut(&key) else { return };
        if rec.start.flags & FLAG_UNHOOKED != 0 {
            if rec.origin.is_none() {
                // No sample showed user code under Tokio's poll: not a stall.
                self.active.remove(&key);
                return;
            }
            let end = end.unwrap_or(now_raw).min(rec.end_hint.unwrap_or(u64::MAX));
            rec.end = Some(end);
            rec.ticks = Some(end.saturating_sub(rec.start.start));
        }
        rec.ended_at = Some(now);
        rec.watch_end = end;
        // An unhooked stall whose thread left its runtime before the watchdog saw the
        // stall end (`end_hint`, from the samples): what the watchdog measured after
        // that belongs to whatever the thread did next (seen: a `block_on` that
        // returned and a join's futex wait reported as the stall's cause). No anatomy
        // rather than another call's.
        rec.anatomy = anatomy.filter(|raw| rec.end_hint.is_none_or(|h| raw.end.at <= h));
    }

    /// What the watchdog measured of a long poll it did not see cross the threshold.
    pub(crate) fn poll_anatomy(&mut self, key: Key, anatomy: Box<Raw>) {
        match self.active.get_mut(&key) {
            Some(rec) => {
                rec.anatomy.get_or_insert(anatomy);
                rec.observed = true;
            }
            None if !self.recent_set.contains(&key) => {
                // Its long-poll record is still in the ring: keep it for when it is drained
                // (most such polls never crossed the threshold and are never asked for).
                self.orphan_anatomy.push_back((key, anatomy));
                while self.orphan_anatomy.len() > ORPHAN_ANATOMY {
                    self.orphan_anatomy.pop_front();
                }
            }
            None => {}
        }
    }

    /// A record of slot `slot`'s long-poll ring; `tid` is the slot's thread.
    pub(crate) fn long_poll(&mut self, slot: usize, tid: i32, p: LongPoll, now: Instant) {
        let key = (slot, p.seq);
        if self.recent_set.contains(&key) {
            return;
        }
        let timed = p.flags & FLAG_TIMED != 0;
        let end = p.start.saturating_add(p.ticks);
        match self.active.get_mut(&key) {
            // Timed: exact. Untimed: the hook's end is exact and the watchdog's start
            // estimate is better than the one the watchdog gave the hook.
            Some(rec) if timed => {
                rec.start.start = p.start;
                rec.ticks = Some(p.ticks);
                rec.exact = true;
            }
            Some(rec) => {
                rec.ticks = Some(end.saturating_sub(rec.start.start));
                rec.exact = true;
            }
            None => {
                // A stall the watchdog did not see past the threshold (no samples), or one
                // whose watchdog messages are still queued.
                let LongPoll { seq, start, ticks, task, loc, flags } = p;
                let s = StallStart { slot, seq, start, task, loc, flags, tid, detected: start };
                let anatomy = self
                    .orphan_anatomy
                    .iter()
                    .position(|(k, _)| *k == key)
                    .and_then(|p| self.orphan_anatomy.remove(p))
                    .map(|(_, a)| a);
                let rec = StallRec {
                    ticks: Some(ticks),
                    end: Some(end),
                    exact: true,
                    observed: anatomy.is_some(),
                    anatomy,
                    unseen_since: Some(now),
                    unseen_starts: self.starts_sent,
                    ..StallRec::new(self.next_stall_id, s)
                };
                self.next_stall_id += 1;
                self.active.insert(key, rec);
            }
        }
    }

    /// Closes every stall that has both ended (per the watchdog) and has its exact duration, or
    /// that ended long enough ago that its duration will not come.
    pub(crate) fn finish_ready(&mut self, now: Instant) -> Vec<Closed> {
        let accounted = self.starts_handled + self.starts_lost;
        let ready: Vec<Key> = self
            .active
            .iter()
            .filter(|(_, r)| {
                r.ended_at.is_some_and(|t| r.ticks.is_some() || now.saturating_duration_since(t) >= END_GRACE)
                    || r.unseen_since.is_some_and(|t| {
                        let waited = now.saturating_duration_since(t);
                        (waited >= UNSEEN_GRACE && accounted >= r.unseen_starts) || waited >= UNSEEN_MAX
                    })
            })
            .map(|(k, _)| *k)
            .collect();
        let mut out = Vec::with_capacity(ready.len());
        for key in ready {
            let Some(mut rec) = self.active.remove(&key) else {
                continue;
            };
            // A stall read only from the long-poll ring is reported too, timed or not. An untimed
            // one got there because the watchdog marked it (`PollState::watched`) with its own
            // estimate of that very poll's start, the one a confirmed stall would carry; what is
            // missing is the watchdog's confirmation, which a late wake-up at the threshold
            // crossing can miss (such records used to be discarded: the likely way a 60 ms stall
            // once vanished from a CI run of `untimed_stall_starts_are_bounded_by_the_thread_anchor`).
            let mut overrun = false;
            if rec.ticks.is_none() {
                // No exact end: the poll ended before it saw the watchdog's mark (a race with a
                // late watchdog), or its record was overwritten in the ring. The watchdog's end
                // bound keeps the length from coming out short; the detection time, the last
                // resort, can.
                match rec.watch_end {
                    Some(end) => rec.ticks = Some(end.saturating_sub(rec.start.start)),
                    None => {
                        rec.ticks = Some(rec.start.detected.saturating_sub(rec.start.start));
                        overrun = true;
                    }
                }
            }
            self.recent.push_back((key, rec.id));
            self.recent_set.insert(key);
            while self.recent.len() > RECENT_KEYS {
                if let Some((k, _)) = self.recent.pop_front() {
                    self.recent_set.remove(&k);
                }
            }
            out.push(Closed { rec, overrun });
        }
        out
    }

    /// A sample of an unhooked stall, with what its frames show (`attribution::classify`) and
    /// the innermost user function in them: the first two in a row in the same user function
    /// under Tokio's `block_on` confirm it; two that show the thread outside any runtime refute it
    /// (or, once confirmed, end it), and the watchdog stops sampling it (`Slot::refuted`).
    /// Samples of Tokio's own code (parking, bookkeeping) are not the stall's and are left out.
    pub(crate) fn unhooked_sample(
        &mut self,
        key: Key,
        at: u64,
        sample: SampleKey,
        verdict: Verdict,
        top_user: Option<String>,
    ) -> Unhooked {
        let cap = self.max_samples;
        let Some(rec) = self.active.get_mut(&key) else { return Unhooked::Quiet };
        match verdict {
            Verdict::Polled(origin) => {
                if rec.end_hint.is_some() {
                    return Unhooked::Quiet;
                }
                rec.outside = None;
                if rec.origin.is_none() {
                    // Confirmed by two samples in a row, a sample interval apart, in the same
                    // user function: one sample could land in any of a `LocalSet`'s batch of
                    // short polls, which the watchdog cannot tell apart (`watchdog::Unhooked`),
                    // or in a moment of a loop turn the watchdog missed.
                    let top = top_user.unwrap_or_default();
                    match rec.candidate.take() {
                        Some((f, first)) if f == top => {
                            rec.samples += 1;
                            *rec.stacks.entry(first).or_insert(0) += 1;
                        }
                        _ => {
                            rec.candidate = Some((top, sample));
                            return Unhooked::Quiet;
                        }
                    }
                }
                if rec.samples < cap {
                    rec.samples += 1;
                    *rec.stacks.entry(sample).or_insert(0) += 1;
                } else {
                    rec.lost += 1;
                }
                if rec.origin.is_none() {
                    rec.origin = Some(origin);
                    return Unhooked::Confirmed;
                }
                Unhooked::Quiet
            }
            // Two in a row: one stack that unwound wrongly (skipping frames to the thread's
            // start) must not end or refute a stall.
            Verdict::Outside if rec.outside.is_none() => {
                rec.outside = Some(at);
                Unhooked::Quiet
            }
            Verdict::Outside if rec.origin.is_none() => {
                self.active.remove(&key);
                Unhooked::Refuted
            }
            Verdict::Outside => {
                let first = rec.outside.unwrap_or(at);
                rec.end_hint = Some(rec.end_hint.unwrap_or(first).min(first));
                Unhooked::Refuted
            }
            Verdict::Runtime => {
                rec.candidate = None;
                Unhooked::Quiet
            }
        }
    }

    /// Whether a hooked stall's poll is still running as far as the slot shows (`seq_now(slot)`
    /// has not moved on) and the watchdog has not seen it end.
    pub(crate) fn still_running(&self, seq_now: impl Fn(usize) -> Option<u64>) -> bool {
        self.active.values().any(|r| {
            r.start.flags & FLAG_UNHOOKED == 0 && r.ended_at.is_none() && seq_now(r.start.slot) == Some(r.start.seq)
        })
    }

    /// Whether a stall is caught between its end and its record: its poll has ended
    /// (`seq_now(slot)`, the slot's poll sequence now, moved on) but it is not closed yet.
    pub(crate) fn unsettled(&self, seq_now: impl Fn(usize) -> Option<u64>) -> bool {
        self.active.values().any(|r| {
            if r.start.flags & FLAG_UNHOOKED != 0 {
                // A confirmed one that has not ended may be a `block_on` that just returned:
                // the next sample or scan tells (within a sample interval).
                return r.origin.is_some();
            }
            let moved_on = seq_now(r.start.slot).is_none_or(|seq| seq != r.start.seq);
            moved_on || r.unseen_since.is_some() || (r.ticks.is_some() != r.ended_at.is_some())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::aggregator::attribution::Origin;

    const SLOT: usize = 3;
    const TID: i32 = 77;

    fn start(seq: u64, start: u64, detected: u64, flags: u32) -> StallStart {
        StallStart { slot: SLOT, seq, start, task: 9, loc: 0, flags, tid: TID, detected }
    }

    fn ring(seq: u64, start: u64, ticks: u64, flags: u32) -> LongPoll {
        LongPoll { seq, start, ticks, task: 9, loc: 0, flags }
    }

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn a_watchdog_stall_closes_with_the_hooks_exact_duration_once_both_are_in() {
        let mut j = Join::new(2000);
        let t0 = Instant::now();
        let id = j.started(start(5, 100, 1100, FLAG_TIMED)).expect("a hooked stall is published at once").id;
        assert!(j.sample((SLOT, 5), vec![1, 2], None));
        assert!(j.sample((SLOT, 5), vec![1, 2], Some("read".into())));
        assert_eq!(j.running().count(), 1);
        j.ended((SLOT, 5), None, None, 0, t0);
        assert!(j.finish_ready(t0).is_empty(), "its exact duration is not in yet");
        assert_eq!(j.running().count(), 0, "an ended stall is no longer shown as running");
        j.long_poll(SLOT, TID, ring(5, 120, 5000, FLAG_TIMED), t0);
        let closed = j.finish_ready(t0);
        assert_eq!(closed.len(), 1);
        let rec = &closed[0].rec;
        assert_eq!((rec.id, rec.start.start, rec.ticks, rec.exact, rec.samples), (id, 120, Some(5000), true, 2));
        assert!(!closed[0].overrun);
        // Late messages for a closed stall are ignored.
        assert!(j.started(start(5, 100, 1100, FLAG_TIMED)).is_none());
        j.long_poll(SLOT, TID, ring(5, 120, 5000, FLAG_TIMED), t0);
        assert!(j.get((SLOT, 5)).is_none());
        assert!(!j.sample((SLOT, 5), vec![1], None), "a sample of no stall is a lost sample");
    }

    #[test]
    fn a_ring_record_waits_for_the_watchdog_to_claim_it_then_closes_unseen() {
        let mut j = Join::new(2000);
        let t0 = Instant::now();
        // Untimed: the ring's end is exact, the watchdog's start estimate wins.
        j.long_poll(SLOT, TID, ring(7, 100, 5000, 0), t0);
        assert_eq!(j.running().count(), 0, "a record the watchdog has not claimed is not shown");
        assert!(j.finish_ready(t0 + ms(50)).is_empty());
        assert!(j.started(start(7, 90, 1090, 0)).is_none(), "a claimed record was already announced");
        let rec = j.get((SLOT, 7)).expect("claimed");
        assert_eq!((rec.observed, rec.unseen_since, rec.ticks), (true, None, Some(5100 - 90)));
        assert!(j.finish_ready(t0 + ms(200)).is_empty(), "a claimed stall waits for the watchdog's end");
        j.ended((SLOT, 7), None, None, 0, t0 + ms(200));
        assert_eq!(j.finish_ready(t0 + ms(200)).len(), 1);

        // One the watchdog never claims is closed after UNSEEN_GRACE, as unobserved.
        j.long_poll(SLOT, TID, ring(9, 100, 5000, FLAG_TIMED), t0);
        assert!(j.finish_ready(t0 + UNSEEN_GRACE - ms(1)).is_empty());
        let closed = j.finish_ready(t0 + UNSEEN_GRACE);
        assert_eq!(closed.len(), 1);
        assert!(!closed[0].rec.observed);
        assert_eq!(closed[0].rec.start.tid, TID);
    }

    /// The aggregator can be far behind on its queue (its symbolizer's warm-up at start on a
    /// loaded host): a record read while starts sent before it are still queued waits for them,
    /// however long past `UNSEEN_GRACE`, so that its own start still claims it with its samples.
    #[test]
    fn a_ring_record_waits_for_every_start_sent_before_it_was_read() {
        let mut j = Join::new(2000);
        let t0 = Instant::now();
        // Two starts were sent (one of this very stall), none handled yet.
        j.starts_sent = 2;
        j.long_poll(SLOT, TID, ring(7, 100, 5000, 0), t0);
        assert!(j.finish_ready(t0 + UNSEEN_GRACE * 5).is_empty(), "its start may be queued");
        assert!(j.started(start(5, 10, 20, 0)).is_some(), "another stall's start");
        assert!(j.finish_ready(t0 + UNSEEN_GRACE * 6).is_empty(), "one start still queued");
        assert!(j.started(start(7, 90, 1090, 0)).is_none(), "claimed, not closed");
        assert!(j.sample((SLOT, 7), vec![1, 2, 3], None), "its sample is kept");
        j.ended((SLOT, 7), None, None, 0, t0 + UNSEEN_GRACE * 6);
        let closed = j.finish_ready(t0 + UNSEEN_GRACE * 6);
        assert_eq!(closed.len(), 1);
        assert!(closed[0].rec.observed && closed[0].rec.samples == 1);

        // A start lost to a full queue counts as accounted for; a count that never settles
        // closes the record after UNSEEN_MAX.
        j.starts_sent = 4;
        j.long_poll(SLOT, TID, ring(9, 100, 5000, FLAG_TIMED), t0);
        j.starts_sent = 5;
        j.long_poll(SLOT, TID, ring(11, 100, 5000, FLAG_TIMED), t0);
        j.starts_lost = 2;
        let closed = j.finish_ready(t0 + UNSEEN_GRACE);
        assert_eq!(closed.iter().map(|c| c.rec.start.seq).collect::<Vec<_>>(), vec![9]);
        assert!(j.finish_ready(t0 + UNSEEN_MAX - ms(1)).is_empty());
        assert_eq!(j.finish_ready(t0 + UNSEEN_MAX).len(), 1);
    }

    #[test]
    fn an_anatomy_that_arrives_before_its_ring_record_is_joined_to_it() {
        let mut j = Join::new(2000);
        let t0 = Instant::now();
        let raw = Box::new(Raw::default());
        j.poll_anatomy((SLOT, 11), raw);
        j.long_poll(SLOT, TID, ring(11, 100, 5000, FLAG_TIMED), t0);
        let rec = j.get((SLOT, 11)).expect("from the ring");
        assert!(rec.anatomy.is_some() && rec.observed);
    }

    #[test]
    fn an_end_whose_duration_never_comes_closes_after_end_grace_with_the_detection_time() {
        let mut j = Join::new(2000);
        let t0 = Instant::now();
        j.started(start(13, 100, 1100, FLAG_TIMED));
        j.ended((SLOT, 13), None, None, 0, t0);
        assert!(j.finish_ready(t0 + END_GRACE - ms(1)).is_empty());
        let closed = j.finish_ready(t0 + END_GRACE);
        assert_eq!(closed.len(), 1);
        assert_eq!(closed[0].rec.ticks, Some(1000));
        assert!(closed[0].overrun);
        // With the watchdog's bound of the end, that bound is the end, and nothing was lost.
        j.started(start(14, 100, 1100, FLAG_TIMED));
        j.ended((SLOT, 14), None, Some(1900), 0, t0);
        let closed = j.finish_ready(t0 + END_GRACE);
        assert_eq!((closed[0].rec.ticks, closed[0].overrun), (Some(1800), false));
    }

    #[test]
    fn samples_past_the_cap_are_counted_as_lost_on_the_stall() {
        let mut j = Join::new(1);
        j.started(start(15, 100, 1100, FLAG_TIMED));
        assert!(j.sample((SLOT, 15), vec![1], None));
        assert!(j.sample((SLOT, 15), vec![2], None));
        let rec = j.get((SLOT, 15)).expect("running");
        assert_eq!((rec.samples, rec.lost), (1, 1));
    }

    #[test]
    fn an_unhooked_stall_is_confirmed_by_two_samples_in_one_function_and_ended_by_two_outside() {
        let mut j = Join::new(2000);
        let t0 = Instant::now();
        let key = (SLOT, 20);
        assert!(j.started(start(20, 100, 1100, FLAG_UNHOOKED)).is_none(), "not published before a sample");
        assert!(j.is_unhooked(key));
        let polled = || Verdict::Polled(Origin::BlockOnFuture);
        let user = |f: &str| Some(f.to_string());
        assert_eq!(j.unhooked_sample(key, 200, (vec![1], None), polled(), user("f")), Unhooked::Quiet);
        assert_eq!(j.unhooked_sample(key, 300, (vec![2], None), polled(), user("g")), Unhooked::Quiet);
        assert_eq!(j.running().count(), 0, "unconfirmed");
        assert_eq!(j.unhooked_sample(key, 400, (vec![3], None), polled(), user("g")), Unhooked::Confirmed);
        assert_eq!(j.get(key).map(|r| r.samples), Some(2), "both samples in g count");
        assert_eq!(j.running().count(), 1);
        assert_eq!(j.unhooked_sample(key, 500, (vec![4], None), Verdict::Outside, None), Unhooked::Quiet);
        assert_eq!(j.unhooked_sample(key, 600, (vec![5], None), Verdict::Outside, None), Unhooked::Refuted);
        assert_eq!(j.get(key).and_then(|r| r.end_hint), Some(500), "the first sample outside bounds its end");
        j.ended(key, None, Some(900), 0, t0);
        let closed = j.finish_ready(t0);
        assert_eq!(closed[0].rec.ticks, Some(500 - 100));
    }

    #[test]
    fn an_unconfirmed_unhooked_stall_is_dropped_when_refuted_or_ended() {
        let mut j = Join::new(2000);
        let t0 = Instant::now();
        j.started(start(22, 100, 1100, FLAG_UNHOOKED));
        assert_eq!(j.unhooked_sample((SLOT, 22), 200, (vec![1], None), Verdict::Outside, None), Unhooked::Quiet);
        assert_eq!(j.unhooked_sample((SLOT, 22), 300, (vec![1], None), Verdict::Outside, None), Unhooked::Refuted);
        assert!(j.get((SLOT, 22)).is_none());
        assert!(j.sample((SLOT, 22), vec![1], None), "a refuted stall's late samples are not lost samples");
        j.started(start(24, 100, 1100, FLAG_UNHOOKED));
        j.ended((SLOT, 24), None, Some(900), 0, t0);
        assert!(j.get((SLOT, 24)).is_none() && j.finish_ready(t0 + END_GRACE).is_empty());
    }

    #[test]
    fn a_stall_whose_poll_moved_on_is_unsettled_until_closed() {
        let mut j = Join::new(2000);
        let t0 = Instant::now();
        j.started(start(31, 100, 1100, FLAG_TIMED));
        assert!(!j.unsettled(|_| Some(31)), "still running");
        assert!(j.still_running(|_| Some(31)));
        assert!(j.unsettled(|_| Some(33)), "its poll ended, its record is open");
        assert!(!j.still_running(|_| Some(33)));
        j.ended((SLOT, 31), None, None, 0, t0);
        assert!(!j.still_running(|_| Some(31)), "the watchdog saw it end");
        j.long_poll(SLOT, TID, ring(31, 100, 5000, FLAG_TIMED), t0);
        j.finish_ready(t0);
        assert!(!j.unsettled(|_| Some(33)));
    }
}
