//! Helpers shared by the wire tests.
#![allow(dead_code)]

pub mod fixture;
pub mod fuzz;

use std::io::Cursor;

use stallscope_wire::recording::{RecordingHeader, RecordingOptions, RecordingWriter};
use stallscope_wire::Update;

/// A recording of `updates` in memory, with the byte offset of each record.
pub fn record(updates: &[Update], options: RecordingOptions) -> (Vec<u8>, Vec<u64>) {
    let header = RecordingHeader::new(fixture::process_info(), "wire-tests");
    let mut w = RecordingWriter::new(Cursor::new(Vec::new()), &header, options).expect("header");
    let mut offsets = Vec::new();
    for u in updates {
        offsets.push(w.bytes_written());
        w.write_update(u).expect("write");
    }
    (w.into_inner().expect("flush").into_inner(), offsets)
}

/// `assert_eq!` for long lists of updates that reports the first difference instead of printing
/// megabytes of `Debug`.
#[track_caller]
pub fn assert_same<T: PartialEq + std::fmt::Debug>(got: &[T], expected: &[T]) {
    for (i, (g, e)) in got.iter().zip(expected).enumerate() {
        if g != e {
            let (g, e) = (format!("{g:?}"), format!("{e:?}"));
            let at = g.bytes().zip(e.bytes()).position(|(a, b)| a != b).unwrap_or(0);
            let from = at.saturating_sub(200);
            panic!(
                "item {i} differs at char {at}:\n  got      …{}…\n  expected …{}…",
                &g[from..(at + 200).min(g.len())],
                &e[from..(at + 200).min(e.len())]
            );
        }
    }
    assert_eq!(got.len(), expected.len(), "lengths differ (the common prefix is equal)");
}
