//! What the watchdog and the handles send to the aggregator thread ([`Msg`]), and the answers
//! it sends back. Below the aggregator and the state in the layers: the watchdog, the task
//! dumper and `Shared` (which holds the channel) name these types without naming the aggregator.

use std::sync::mpsc::SyncSender;

/// What the watchdog and the handles send to the aggregator.
#[derive(Debug)]
pub(crate) enum Msg {
    StallStarted(StallStart),
    Sample {
        slot: usize,
        seq: u64,
        /// When the sample was requested (raw clock).
        at: u64,
        addrs: Vec<u64>,
        /// What the thread was blocked in when the sample was requested, if anything.
        blocked: Option<String>,
    },
    StallEnded {
        slot: usize,
        seq: u64,
        /// The thread's counters over the stall, for its anatomy.
        anatomy: Option<Box<crate::watchdog::anatomy::Raw>>,
        /// The end the watchdog measured (raw clock, an upper bound: the scan that saw the poll
        /// over). An unhooked stall has no other; a poll's hook records the exact end unless the
        /// poll ended before it saw the watchdog's mark (`PollState::watched`).
        end: Option<u64>,
    },
    /// What the watchdog measured of a long poll it did not see cross the threshold (it woke
    /// late): the anatomy of the long-poll record the hook wrote, if it did cross.
    PollAnatomy {
        slot: usize,
        seq: u64,
        anatomy: Box<crate::watchdog::anatomy::Raw>,
    },
    Refresh(SyncSender<()>),
    TaskLocations(LocationsRequest),
    /// An event ring is filling up (sent by the watchdog).
    Drain,
    Stop,
}

/// A poll the watchdog found running past the threshold.
#[derive(Debug, Clone, Copy)]
pub(crate) struct StallStart {
    pub(crate) slot: usize,
    pub(crate) seq: u64,
    pub(crate) start: u64,
    pub(crate) task: u64,
    pub(crate) loc: usize,
    pub(crate) flags: u32,
    pub(crate) tid: i32,
    pub(crate) detected: u64,
}

/// A question for the aggregator: where were the tasks with these ids spawned?
#[derive(Debug)]
pub(crate) struct LocationsRequest {
    pub(crate) ids: Vec<u64>,
    pub(crate) reply: std::sync::mpsc::SyncSender<TaskLocations>,
}

/// Where the aggregator saw each task spawned: `of_task[i]` indexes `names` for the i-th task id
/// asked about (None: not tracked).
#[derive(Debug, Default)]
pub(crate) struct TaskLocations {
    pub(crate) names: Vec<String>,
    pub(crate) of_task: Vec<Option<u32>>,
}
