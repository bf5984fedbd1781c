//! Serving what the aggregator publishes: the socket server (its listener, writer and reader
//! threads), the probe-side recorder thread, and task dumps (`stallscope-dump`).

pub(crate) mod recorder;
pub(crate) mod server;
pub(crate) mod taskdump;

#[cfg(test)]
pub(crate) mod testing {
    use stallscope_wire::frame::MAX_FRAME_BYTES;
    use stallscope_wire::{Interval, Snapshot, Stall, Update};

    /// A stall whose spawn location is `text`.
    pub(crate) fn stall(id: u64, text: String) -> Stall {
        Stall {
            id,
            start_unix_ms: id,
            duration_ns: Some(20_000_000),
            elapsed_ns: 20_000_000,
            worker: 0,
            tid: 1,
            task: Some(id),
            spawned_at: text,
            in_block_in_place: false,
            stacks: Vec::new(),
            samples_lost: 0,
            anatomy: None,
            unobserved: false,
        }
    }

    /// A tick whose encoding is just above a frame, with no intern table over its limit: its 16
    /// oldest stalls (ids 0..16) carry a spawn location of about 1 MiB each (just under the
    /// string table's 16 MiB together), 2,000 newer ones (ids 16..2016) share a short one.
    pub(crate) fn oversized_tick(seq: u64) -> Update {
        let big = MAX_FRAME_BYTES / 16 - 1024;
        let mut stalls: Vec<Stall> = (0..16).map(|i| stall(i, format!("{i:x}").repeat(big))).collect();
        stalls.extend((16..2016).map(|i| stall(i, "src/handlers/h.rs:10:5".to_string())));
        let update = Update::Tick {
            interval: Box::new(Interval { seq, ..Interval::default() }),
            snapshot: Box::new(Snapshot { seq, stalls, ..Snapshot::default() }),
        };
        let len = stallscope_wire::intern::Encoder::new().encode(&update).unwrap().to_payload().unwrap().len();
        assert!(len > MAX_FRAME_BYTES, "{len}");
        update
    }
}
