//! Where the aggregator's output goes: the latest snapshot, and every subscriber's bounded
//! queue (the socket server's clients, the recorder, [`Probe::subscribe`](crate::Probe::subscribe)).
//! The aggregator publishes; any thread reads or subscribes.
//!
//! An update is made once and shared (`Arc`) by every queue it goes into: 64 clients cost one
//! copy of a tick, not 64. Each queue is bounded twice: by a count of updates and by the bytes
//! those updates hold ([`approx_bytes`]), so a client that stops reading holds at most its byte
//! budget, whatever the size of the snapshots. What a full queue refuses is counted.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::*};
use std::sync::mpsc::{self, Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use stallscope_wire::fit::approx_bytes;
use stallscope_wire::{Interval, Snapshot, Update};

/// The latest snapshot and the subscribers.
#[derive(Debug, Default)]
pub(crate) struct Publisher {
    latest: Mutex<Option<Arc<Snapshot>>>,
    /// The latest snapshot as a new subscriber's first update, shared by the subscribers that
    /// start from the same snapshot, and freed once they have all sent it.
    first: Mutex<Weak<Update>>,
    subscribers: Mutex<Vec<(SyncSender<Queued>, Arc<Queue>)>>,
    /// Updates subscribers lost, summed.
    pub(crate) subscriber_drops: AtomicU64,
    /// What serving the clients lost besides the updates full queues refused.
    pub(crate) losses: Losses,
}

/// What the server and the recorder lost while sending, shown in each snapshot (`drops` and
/// `process.missing`).
#[derive(Debug, Default)]
pub(crate) struct Losses {
    /// Clients disconnected because a write blocked for `client_write_timeout`.
    pub(crate) clients_timed_out: AtomicU64,
    /// Updates that could not be encoded for a client even trimmed (also in `subscriber_drops`).
    pub(crate) encode_failures: AtomicU64,
    /// Stall records left out of updates too large for a frame (`fit`), per client.
    pub(crate) trimmed_stalls: AtomicU64,
    /// Stacks left out of the stalls of such updates, and the samples they held.
    pub(crate) trimmed_stacks: AtomicU64,
    pub(crate) trimmed_samples: AtomicU64,
}

impl Losses {
    /// Counts what `fit` left out of one update.
    pub(crate) fn trimmed(&self, t: stallscope_wire::fit::Trimmed) {
        if !t.is_empty() {
            self.trimmed_stalls.fetch_add(t.stalls, Relaxed);
            self.trimmed_stacks.fetch_add(t.stacks, Relaxed);
            self.trimmed_samples.fetch_add(t.samples, Relaxed);
        }
    }
}

/// An update in a queue, with the bytes it was counted for.
type Queued = (Arc<Update>, usize);

/// One subscriber's bounds and losses.
#[derive(Debug)]
struct Queue {
    /// Bytes of the updates in the queue now.
    bytes: AtomicUsize,
    budget: usize,
    dropped: AtomicU64,
}

impl Publisher {
    /// The most recent snapshot, if one has been made.
    pub(crate) fn latest(&self) -> Option<Arc<Snapshot>> {
        self.latest.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Makes `s` the latest snapshot.
    pub(crate) fn set_latest(&self, s: Arc<Snapshot>) {
        *self.latest.lock().unwrap_or_else(|e| e.into_inner()) = Some(s);
    }

    /// The latest snapshot as a tick with an empty interval: what a new subscriber starts with.
    /// Made once per snapshot while someone holds it (64 clients that attach at once share it).
    pub(crate) fn first_update(&self) -> Option<Arc<Update>> {
        let snap = self.latest()?;
        let mut first = self.first.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(u) = first.upgrade() {
            if matches!(&*u, Update::Tick { snapshot, .. } if snapshot.seq == snap.seq) {
                return Some(u);
            }
        }
        let u = Arc::new(Update::Tick {
            interval: Box::new(Interval { seq: snap.seq, ..Interval::default() }),
            snapshot: Box::new((*snap).clone()),
        });
        *first = Arc::downgrade(&u);
        Some(u)
    }

    /// A new subscriber with a queue of at most `capacity` updates holding at most `budget`
    /// bytes ([`approx_bytes`]; one update larger than the budget still goes into an empty
    /// queue, so that a subscriber is never starved by the size of a snapshot).
    pub(crate) fn subscribe(&self, capacity: usize, budget: usize) -> Subscription {
        let (tx, rx) = mpsc::sync_channel(capacity.max(1));
        let queue = Arc::new(Queue { bytes: AtomicUsize::new(0), budget, dropped: AtomicU64::new(0) });
        self.subscribers.lock().unwrap_or_else(|e| e.into_inner()).push((tx, queue.clone()));
        Subscription { rx, queue }
    }

    /// Sends an update to every subscriber without blocking; a full queue (by count or by bytes)
    /// loses the update and counts it. Returns the number of subscribers that lost it.
    pub(crate) fn publish(&self, u: Update) -> u64 {
        let mut subs = self.subscribers.lock().unwrap_or_else(|e| e.into_inner());
        if subs.is_empty() {
            return 0;
        }
        let size = approx_bytes(&u);
        let u = Arc::new(u);
        let mut dropped = 0;
        subs.retain(|(tx, q)| {
            // Only this thread adds to `bytes` (under the lock); the receiver only takes away.
            let queued = q.bytes.load(Acquire);
            let over = queued > 0 && queued.saturating_add(size) > q.budget;
            let sent = if over {
                Err(TrySendError::Full(()))
            } else {
                q.bytes.fetch_add(size, AcqRel);
                tx.try_send((u.clone(), size)).map_err(|e| {
                    q.bytes.fetch_sub(size, AcqRel);
                    match e {
                        TrySendError::Full(_) => TrySendError::Full(()),
                        TrySendError::Disconnected(_) => TrySendError::Disconnected(()),
                    }
                })
            };
            match sent {
                Ok(()) => true,
                Err(TrySendError::Full(())) => {
                    q.dropped.fetch_add(1, Relaxed);
                    self.subscriber_drops.fetch_add(1, Relaxed);
                    dropped += 1;
                    true
                }
                Err(TrySendError::Disconnected(())) => false,
            }
        });
        dropped
    }
}

/// A stream of [`Update`]s from [`Probe::subscribe`](crate::Probe::subscribe).
#[derive(Debug)]
pub struct Subscription {
    rx: Receiver<Queued>,
    queue: Arc<Queue>,
}

impl Subscription {
    /// Waits up to `timeout` for the next update.
    pub fn recv_timeout(&self, timeout: Duration) -> Option<Update> {
        self.recv_shared(timeout).map(|u| Arc::try_unwrap(u).unwrap_or_else(|u| (*u).clone()))
    }

    /// Waits up to `timeout` for the next update, as shared with the other subscribers.
    pub(crate) fn recv_shared(&self, timeout: Duration) -> Option<Arc<Update>> {
        let (u, size) = self.rx.recv_timeout(timeout).ok()?;
        self.queue.bytes.fetch_sub(size, AcqRel);
        Some(u)
    }

    /// Updates lost because this subscriber's queue was full.
    pub fn dropped(&self) -> u64 {
        self.queue.dropped.load(Relaxed)
    }

    /// Bytes held by the updates in this subscriber's queue now ([`approx_bytes`]).
    #[cfg(test)]
    fn queued_bytes(&self) -> usize {
        self.queue.bytes.load(Acquire)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use stallscope_wire::{Frame, FrameKind, StackCount, Stall};

    /// A tick whose snapshot holds one stall with `frames` frames of 100-byte names.
    fn big_tick(seq: u64, frames: usize) -> Update {
        let frame = Frame { function: "f".repeat(100), file: None, line: None, inlined: false, kind: FrameKind::User };
        let stall = Stall {
            id: seq,
            start_unix_ms: 0,
            duration_ns: Some(1),
            elapsed_ns: 1,
            worker: 0,
            tid: 1,
            task: None,
            spawned_at: String::new(),
            in_block_in_place: false,
            stacks: vec![StackCount { frames: vec![frame; frames], count: 1 }],
            samples_lost: 0,
            anatomy: None,
            unobserved: false,
        };
        Update::Tick {
            snapshot: Box::new(Snapshot { seq, stalls: vec![stall], ..Snapshot::default() }),
            interval: Box::new(Interval::default()),
        }
    }

    /// A subscriber that never reads holds at most its byte budget, whatever its count bound
    /// (P7 defect 4: the queues were bounded by count only, each entry a deep copy).
    #[test]
    fn a_subscriber_that_never_reads_holds_at_most_its_byte_budget() {
        let p = Publisher::default();
        let budget = 1 << 20;
        let idle = p.subscribe(64, budget);
        let reader = p.subscribe(64, budget);
        let size = approx_bytes(&big_tick(0, 1000));
        assert!(size > 100_000 && size < budget / 4, "{size}");
        for seq in 0..64 {
            p.publish(big_tick(seq, 1000));
            assert!(reader.recv_shared(Duration::ZERO).is_some());
        }
        assert!(idle.queued_bytes() <= budget, "{} bytes queued", idle.queued_bytes());
        let kept = budget / size;
        assert_eq!(idle.dropped(), 64 - kept as u64);
        assert_eq!(reader.dropped(), 0);
        assert_eq!(p.subscriber_drops.load(Relaxed), idle.dropped());
        // Reading frees the budget.
        while idle.recv_shared(Duration::ZERO).is_some() {}
        assert_eq!(idle.queued_bytes(), 0);
        p.publish(big_tick(64, 1000));
        assert!(idle.recv_shared(Duration::ZERO).is_some());
        // One update larger than the budget still reaches an empty queue.
        p.publish(big_tick(65, 20_000));
        assert!(idle.recv_shared(Duration::ZERO).is_some());
    }

    /// Every queue holds the same copy of an update.
    #[test]
    fn subscribers_share_one_copy_of_each_update() {
        let p = Publisher::default();
        let subs: Vec<_> = (0..8).map(|_| p.subscribe(4, 1 << 20)).collect();
        p.publish(big_tick(1, 10));
        let got: Vec<_> = subs.iter().map(|s| s.recv_shared(Duration::ZERO).unwrap()).collect();
        assert!(got.iter().all(|u| Arc::ptr_eq(u, &got[0])));
        assert_eq!(Arc::strong_count(&got[0]), 8);
        // Two subscribers that start from the same snapshot share their first update too.
        p.set_latest(Arc::new(Snapshot { seq: 3, ..Snapshot::default() }));
        let (a, b) = (p.first_update().unwrap(), p.first_update().unwrap());
        assert!(Arc::ptr_eq(&a, &b));
        drop((a, b));
        p.set_latest(Arc::new(Snapshot { seq: 4, ..Snapshot::default() }));
        assert!(matches!(&*p.first_update().unwrap(), Update::Tick { snapshot, .. } if snapshot.seq == 4));
    }
}
