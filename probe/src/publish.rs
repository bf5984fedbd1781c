//! Where the aggregator's output goes: the latest snapshot, and every subscriber's bounded
//! queue (the socket server's clients, the recorder, [`Probe::subscribe`](crate::Probe::subscribe)).
//! The aggregator publishes; any thread reads or subscribes.

use std::sync::atomic::{AtomicU64, Ordering::*};
use std::sync::mpsc::{self, Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use stallscope_wire::{Snapshot, Update};

/// The latest snapshot and the subscribers.
#[derive(Debug, Default)]
pub(crate) struct Publisher {
    latest: Mutex<Option<Arc<Snapshot>>>,
    subscribers: Mutex<Vec<(SyncSender<Update>, Arc<AtomicU64>)>>,
    /// Updates subscribers lost, summed.
    pub(crate) subscriber_drops: AtomicU64,
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

    /// A new subscriber with a queue of `capacity` updates.
    pub(crate) fn subscribe(&self, capacity: usize) -> Subscription {
        let (tx, rx) = mpsc::sync_channel(capacity.max(1));
        let dropped = Arc::new(AtomicU64::new(0));
        self.subscribers.lock().unwrap_or_else(|e| e.into_inner()).push((tx, dropped.clone()));
        Subscription { rx, dropped }
    }

    /// Sends an update to every subscriber without blocking; a full queue loses the update
    /// and counts it.
    pub(crate) fn publish(&self, u: &Update) -> u64 {
        let mut subs = self.subscribers.lock().unwrap_or_else(|e| e.into_inner());
        let mut dropped = 0;
        subs.retain(|(tx, drops)| match tx.try_send(u.clone()) {
            Ok(()) => true,
            Err(TrySendError::Full(_)) => {
                drops.fetch_add(1, Relaxed);
                self.subscriber_drops.fetch_add(1, Relaxed);
                dropped += 1;
                true
            }
            Err(TrySendError::Disconnected(_)) => false,
        });
        dropped
    }
}

/// A stream of [`Update`]s from [`Probe::subscribe`](crate::Probe::subscribe).
#[derive(Debug)]
pub struct Subscription {
    rx: Receiver<Update>,
    dropped: Arc<AtomicU64>,
}

impl Subscription {
    /// Waits up to `timeout` for the next update.
    pub fn recv_timeout(&self, timeout: Duration) -> Option<Update> {
        self.rx.recv_timeout(timeout).ok()
    }

    /// Updates lost because this subscriber's queue was full.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Relaxed)
    }
}
