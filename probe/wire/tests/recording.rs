//! Recordings: exact round trip, truncated tail, corrupted middle, inserted garbage, size bound
//! and rotation, header errors.

mod support;

use std::io::Cursor;
use std::path::PathBuf;

use stallscope_wire::recording::{
    rotate, rotated_path, Append, Damage, RecordingHeader, RecordingOptions, RecordingReader, RecordingWriter,
    RECORD_HEADER_BYTES,
};
use stallscope_wire::{Error, Peer, ProtocolVersion, Received, Update};

use support::{assert_same, fixture, record};

fn read(bytes: &[u8]) -> stallscope_wire::recording::Recording {
    RecordingReader::new(Cursor::new(bytes.to_vec())).expect("header").read_all()
}

fn updates_of(events: &[stallscope_wire::recording::Recorded]) -> Vec<Update> {
    events
        .iter()
        .map(|r| match &r.event {
            Received::Update(u) => u.clone(),
            other => panic!("unexpected {other:?}"),
        })
        .collect()
}

/// A temporary directory removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> TempDir {
        let dir = std::env::temp_dir().join(format!("stallscope-wire-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[test]
fn recording_round_trips_exactly_through_a_file() {
    let dir = TempDir::new("roundtrip");
    let path = dir.0.join("run.stsc");
    let updates = fixture::session(21, 30);
    let header = RecordingHeader::new(fixture::process_info(), "wire-tests 0");
    let mut w = RecordingWriter::create(&path, &header, RecordingOptions::default().keyframe_every(7)).unwrap();
    for (i, u) in updates.iter().enumerate() {
        assert!(matches!(w.write_update(u).unwrap(), Append::Written { .. }));
        if i == 10 {
            w.write_dropped(3).unwrap();
        }
    }
    let size = w.bytes_written();
    drop(w.into_inner().unwrap());
    assert_eq!(std::fs::metadata(&path).unwrap().len(), size);

    let rec = RecordingReader::open(&path).unwrap().read_all();
    assert_eq!(rec.header, header);
    assert_eq!(rec.header.protocol, ProtocolVersion::CURRENT);
    assert_eq!(rec.skipped, vec![]);
    assert_eq!(rec.stop, None);
    assert_eq!(rec.lost, 0);
    let mut expected: Vec<Received> = updates.iter().cloned().map(Received::Update).collect();
    expected.insert(11, Received::Dropped { intervals: 3 });
    let got: Vec<Received> = rec.events.into_iter().map(|r| r.event).collect();
    assert_same(&got, &expected);
}

#[test]
fn truncated_file_reads_up_to_the_damage_and_says_where() {
    let updates = fixture::session(22, 12);
    let (bytes, offsets) = record(&updates, RecordingOptions::default());
    // Cut in the middle of record 8 (the recorder was killed while writing it).
    let record_len = offsets[9] - offsets[8];
    let kept = RECORD_HEADER_BYTES as u64 + (record_len - RECORD_HEADER_BYTES as u64) / 2;
    let cut = (offsets[8] + kept) as usize;
    let mut reader = RecordingReader::new(Cursor::new(bytes[..cut].to_vec())).unwrap();
    let got: Vec<Update> = updates_of(&reader.by_ref().collect::<Vec<_>>());
    assert_same(&got, &updates[..8]);
    let (offset, reason) = reader.stopped_at().expect("stopped early");
    assert_eq!(offset, offsets[8]);
    assert_eq!(*reason, Damage::Truncated { missing: record_len - kept });
    let message = reader.stop().unwrap().to_string();
    assert!(message.contains(&format!("byte {}", offsets[8])), "{message}");
    assert!(message.contains("truncated record"), "{message}");
    assert!(reader.skipped().is_empty());

    // Cut inside a record header, and exactly at a record boundary.
    let rec = read(&bytes[..offsets[5] as usize + 5]);
    assert_same(&updates_of(&rec.events), &updates[..5]);
    assert_eq!(rec.stop.unwrap().offset, offsets[5]);
    let rec = read(&bytes[..offsets[5] as usize]);
    assert_same(&updates_of(&rec.events), &updates[..5]);
    assert_eq!(rec.stop, None, "a file cut between records is simply shorter");
}

#[test]
fn corrupted_middle_is_skipped_and_reading_resumes() {
    let updates = fixture::session(23, 24);
    let (mut bytes, offsets) = record(&updates, RecordingOptions::default().keyframe_every(5));
    // Scribble over the payload of record 7 (it keeps its length, so the checksum catches it).
    let start = offsets[7] as usize + RECORD_HEADER_BYTES + 10;
    for b in &mut bytes[start..start + 50] {
        *b ^= 0x5A;
    }
    let rec = read(&bytes);
    assert_eq!(rec.stop, None);
    assert_eq!(rec.skipped.len(), 1, "{:?}", rec.skipped);
    let s = &rec.skipped[0];
    assert_eq!((s.start, s.end), (offsets[7], offsets[8]));
    assert_eq!(s.reason, Damage::BadChecksum);
    assert!(s.to_string().contains(&format!("skipped bytes {}..{}", offsets[7], offsets[8])), "{s}");

    // Records 0..7 read exactly; 8 and 9 need definitions from record 7 or from before the
    // damage, so they are lost until the keyframe at record 10 (every 5 records: 0, 5, 10, ...).
    let got: Vec<(u64, Update)> = rec
        .events
        .iter()
        .map(|r| match &r.event {
            Received::Update(u) => (r.offset, u.clone()),
            other => panic!("{other:?}"),
        })
        .collect();
    let expected: Vec<(u64, Update)> =
        (0..24).filter(|i| !(7..10).contains(i)).map(|i| (offsets[i], updates[i].clone())).collect();
    assert_same(&got, &expected);
    assert_eq!(rec.lost, 2);
}

#[test]
fn damaged_record_header_and_inserted_garbage_are_skipped() {
    let updates = fixture::session(24, 10);
    let (bytes, offsets) = record(&updates, RecordingOptions::default().keyframe_every(1));

    // A length field blown up to 4 GB: the record's header is wrong, its bytes are skipped.
    let mut damaged = bytes.clone();
    damaged[offsets[3] as usize + 4..offsets[3] as usize + 8].copy_from_slice(&u32::MAX.to_le_bytes());
    let rec = read(&damaged);
    assert_eq!(rec.skipped.len(), 1);
    assert_eq!((rec.skipped[0].start, rec.skipped[0].end), (offsets[3], offsets[4]));
    assert!(matches!(rec.skipped[0].reason, Damage::Oversized { len } if len == u32::MAX as u64));
    let mut expected = updates.clone();
    expected.remove(3);
    assert_same(&updates_of(&rec.events), &expected); // every record is a keyframe: nothing else lost
    assert_eq!(rec.lost, 0);

    // 1000 bytes of garbage (including a fake marker) between records 5 and 6.
    let mut garbage: Vec<u8> = (0..1000u32).map(|i| (i.wrapping_mul(2654435761) >> 13) as u8).collect();
    garbage[100..104].copy_from_slice(&stallscope_wire::recording::RECORD_SYNC);
    let at = offsets[6] as usize;
    let mut inserted = bytes[..at].to_vec();
    inserted.extend_from_slice(&garbage);
    inserted.extend_from_slice(&bytes[at..]);
    let rec = read(&inserted);
    assert_eq!(rec.skipped.len(), 1, "{:?}", rec.skipped);
    assert_eq!((rec.skipped[0].start, rec.skipped[0].end), (offsets[6], offsets[6] + 1000));
    assert_eq!(rec.skipped[0].reason, Damage::BadSync);
    assert_same(&updates_of(&rec.events), &updates);
    assert_eq!(rec.events[6].offset, offsets[6] + 1000);
}

#[test]
fn damage_with_nothing_valid_after_it_stops_there() {
    let updates = fixture::session(25, 6);
    let (mut bytes, offsets) = record(&updates, RecordingOptions::default());
    let n = bytes.len();
    for b in &mut bytes[offsets[4] as usize + 3..n] {
        *b = 0;
    }
    let rec = read(&bytes);
    assert_same(&updates_of(&rec.events), &updates[..4]);
    let stop = rec.stop.unwrap();
    assert_eq!(stop.offset, offsets[4]);
    assert_eq!(stop.reason, Damage::BadSync);
    assert_eq!(stop.to_string(), format!("recording stops at byte {}: no record marker", offsets[4]));
}

#[test]
fn size_bound_reports_full_and_rotation_names_files() {
    let dir = TempDir::new("rotate");
    let path = dir.0.join("run.stsc");
    let updates = fixture::session(26, 40);
    let header = RecordingHeader::new(fixture::process_info(), "wire-tests");
    let options = RecordingOptions::default().max_bytes(120_000);
    let mut files = 0;
    let mut w = RecordingWriter::create(&path, &header, options).unwrap();
    for u in &updates {
        if let Append::Full = w.write_update(u).unwrap() {
            assert!(w.is_full());
            assert!(w.bytes_written() <= 120_000);
            assert_eq!(w.write_update(u).unwrap(), Append::Full, "stays full");
            drop(w.into_inner().unwrap());
            assert!(std::fs::metadata(&path).unwrap().len() <= 120_000);
            rotate(&path, 100).unwrap();
            files += 1;
            w = RecordingWriter::create(&path, &header, options).unwrap();
            assert!(matches!(w.write_update(u).unwrap(), Append::Written { .. }));
        }
    }
    drop(w.into_inner().unwrap());
    assert!(files >= 2, "{files}");
    // Oldest is the highest number; every file reads on its own and together they hold it all.
    let mut all = Vec::new();
    for n in (0..=files).rev() {
        let p = rotated_path(&path, n);
        let rec = RecordingReader::open(&p).unwrap().read_all();
        assert_eq!((rec.skipped.len(), rec.stop.is_none(), rec.lost), (0, true, 0), "{}", p.display());
        all.extend(updates_of(&rec.events));
    }
    assert_same(&all, &updates);
    assert!(!rotated_path(&path, files + 1).exists());

    // keep = 2 drops the oldest.
    rotate(&path, 2).unwrap();
    assert!(!path.exists());
    assert!(rotated_path(&path, 1).exists() && rotated_path(&path, 2).exists());
}

#[test]
fn a_single_update_larger_than_the_bound_still_goes_in_first() {
    let (bytes, _) = record(&[fixture::tick(1, 1)], RecordingOptions::default().max_bytes(100));
    assert_same(&updates_of(&read(&bytes).events), &[fixture::tick(1, 1)]);
}

#[test]
fn header_errors() {
    let (bytes, _) = record(&fixture::session(27, 2), RecordingOptions::default());

    let err = RecordingReader::new(Cursor::new(b"not a recording at all".to_vec())).unwrap_err();
    assert!(matches!(err, Error::BadMagic { expected: b"STSCREC", .. }), "{err:?}");

    let mut v = bytes.clone();
    v[7] = 9;
    let err = RecordingReader::new(Cursor::new(v)).unwrap_err();
    assert!(matches!(err, Error::FormatVersion { ours: 1, theirs: 9 }), "{err:?}");

    let mut v = bytes.clone();
    v[9] = 2; // protocol major
    v[11] = 0; // protocol minor (2.0, whatever this build's minor is)
    let err = RecordingReader::new(Cursor::new(v)).unwrap_err();
    assert!(matches!(err, Error::Version { peer: Peer::Recording, .. }), "{err:?}");
    assert_eq!(err.to_string(), "protocol version mismatch: this stallscope speaks 1.x, the recording speaks 2.0");

    let err = RecordingReader::new(Cursor::new(bytes[..20].to_vec())).unwrap_err();
    assert!(matches!(err, Error::Truncated { .. }), "{err:?}");

    let mut v = bytes.clone();
    v[35] ^= 1; // inside the header body
    let err = RecordingReader::new(Cursor::new(v)).unwrap_err();
    assert!(matches!(err, Error::Payload { .. }), "{err:?}");

    // An empty recording (header only) is fine.
    let (empty, _) = record(&[], RecordingOptions::default());
    let rec = read(&empty);
    assert!(rec.events.is_empty() && rec.stop.is_none() && rec.skipped.is_empty());
}

#[test]
fn task_dump_replies_are_not_recorded() {
    let updates = fixture::session(23, 3);
    let header = RecordingHeader::new(fixture::process_info(), "wire-tests 0");
    let mut w = RecordingWriter::new(Cursor::new(Vec::new()), &header, RecordingOptions::default()).unwrap();
    w.write_received(&Received::Update(updates[0].clone())).unwrap();
    let before = w.bytes_written();
    let append = w.write_received(&Received::TaskDump(fixture::task_dump(1, 3))).unwrap();
    assert_eq!(append, Append::Written { bytes: 0 });
    assert_eq!(w.bytes_written(), before);
    w.write_received(&Received::Update(updates[1].clone())).unwrap();
    let rec = read(&w.into_inner().unwrap().into_inner());
    assert_same(&updates_of(&rec.events), &updates[..2]);
}
