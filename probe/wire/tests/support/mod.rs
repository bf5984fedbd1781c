//! Helpers shared by the wire tests.
#![allow(dead_code)]

pub mod fixture;

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
