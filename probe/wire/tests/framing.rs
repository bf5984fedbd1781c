//! Framing: oversized frames, truncated frames (hang-up mid-frame), garbage payloads, partial
//! frames across read timeouts.

use std::io::{Cursor, Write};
use std::os::unix::net::UnixStream;
use std::thread;
use std::time::Duration;

use stallscope_wire::frame::{frame_into, read_frame, write_frame, FrameReader, FramedReader, MAX_FRAME_BYTES};
use stallscope_wire::{ClientMessage, Error, Request, ServerMessage};

#[test]
fn frames_round_trip_over_a_socket() {
    let (mut a, mut b) = UnixStream::pair().unwrap();
    let writer = thread::spawn(move || {
        for n in [0usize, 1, 100, 70_000, 1 << 20] {
            write_frame(&mut a, &vec![n as u8; n]).unwrap();
        }
    });
    for n in [0usize, 1, 100, 70_000, 1 << 20] {
        assert_eq!(read_frame(&mut b).unwrap().unwrap(), vec![n as u8; n]);
    }
    writer.join().unwrap();
    assert!(read_frame(&mut b).unwrap().is_none(), "clean end of stream");
}

#[test]
fn oversized_frame_is_refused_on_write() {
    let mut out = Vec::new();
    let big = vec![0u8; MAX_FRAME_BYTES + 1];
    let err = write_frame(&mut out, &big).unwrap_err();
    assert!(
        matches!(err, Error::Oversized { len, limit } if len == MAX_FRAME_BYTES as u64 + 1 && limit == MAX_FRAME_BYTES as u64),
        "{err:?}"
    );
    assert!(out.is_empty(), "nothing written");
    assert!(frame_into(&big, &mut out).is_err());
    // Exactly the limit is fine.
    write_frame(&mut out, &big[..MAX_FRAME_BYTES]).unwrap();
    assert_eq!(out.len(), 4 + MAX_FRAME_BYTES);
}

#[test]
fn oversized_frame_is_refused_on_read_before_its_payload_arrives() {
    let announced = (MAX_FRAME_BYTES as u32 + 1).to_le_bytes();
    let err = read_frame(&mut Cursor::new(announced.to_vec())).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!("frame of {} bytes exceeds the limit of {} bytes", MAX_FRAME_BYTES + 1, MAX_FRAME_BYTES)
    );

    let mut r = FrameReader::new();
    r.feed(&announced);
    assert!(matches!(r.next_frame(), Err(Error::Oversized { .. })));
    // It stays failed: the stream cannot be resynchronised.
    r.feed(&[0; 16]);
    assert!(matches!(r.next_frame(), Err(Error::Oversized { .. })));

    let mut small = FrameReader::with_limit(10);
    small.feed(&[11, 0, 0, 0]);
    assert!(matches!(small.next_frame(), Err(Error::Oversized { len: 11, limit: 10 })));
}

#[test]
fn hang_up_mid_frame_is_truncated_with_the_missing_count() {
    let (mut a, mut b) = UnixStream::pair().unwrap();
    a.write_all(&100u32.to_le_bytes()).unwrap();
    a.write_all(&[7; 60]).unwrap();
    drop(a);
    let err = read_frame(&mut b).unwrap_err();
    assert!(matches!(err, Error::Truncated { missing: 40 }), "{err:?}");
    assert_eq!(err.to_string(), "truncated frame: the stream ended 40 bytes before the end of the frame");

    // Cut inside the length prefix.
    let (mut a, mut b) = UnixStream::pair().unwrap();
    a.write_all(&[5, 0]).unwrap();
    drop(a);
    assert!(matches!(read_frame(&mut b), Err(Error::Truncated { missing: 2 })));

    // The same through FramedReader.
    let (mut a, b) = UnixStream::pair().unwrap();
    write_frame(&mut a, b"whole").unwrap();
    a.write_all(&10u32.to_le_bytes()).unwrap();
    a.write_all(b"half").unwrap();
    drop(a);
    let mut r = FramedReader::new(b);
    assert_eq!(r.read_frame().unwrap().unwrap(), b"whole");
    assert!(matches!(r.read_frame(), Err(Error::Truncated { missing: 6 })));
}

#[test]
fn framed_reader_keeps_partial_frames_across_timeouts() {
    let (mut a, b) = UnixStream::pair().unwrap();
    b.set_read_timeout(Some(Duration::from_millis(20))).unwrap();
    let mut r = FramedReader::new(b);
    a.write_all(&5u32.to_le_bytes()).unwrap();
    a.write_all(b"he").unwrap();
    match r.read_frame() {
        Err(Error::Io(e)) => {
            assert!(matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut), "{e:?}")
        }
        other => panic!("expected a timeout, got {other:?}"),
    }
    a.write_all(b"llo").unwrap();
    assert_eq!(r.read_frame().unwrap().unwrap(), b"hello");
    drop(a);
    assert!(r.read_frame().unwrap().is_none());
}

#[test]
fn frame_reader_accepts_any_split() {
    let mut stream = Vec::new();
    let payloads: Vec<Vec<u8>> = (0..20).map(|i| vec![i as u8; i * 37]).collect();
    for p in &payloads {
        frame_into(p, &mut stream).unwrap();
    }
    for chunk in [1, 2, 3, 5, 64, 4096] {
        let mut r = FrameReader::new();
        let mut got = Vec::new();
        for c in stream.chunks(chunk) {
            r.feed(c);
            while let Some(f) = r.next_frame().unwrap() {
                got.push(f);
            }
        }
        r.finish().unwrap();
        assert_eq!(got, payloads, "chunk {chunk}");
        assert_eq!(r.buffered(), 0);
    }
}

#[test]
fn garbage_payloads_are_payload_errors() {
    for bytes in [&b""[..], b"\xff\xff\xff\xff\xff\xff", b"\x07", b"\x00\x01", b"\x02", b"\x02\x05ab"] {
        let err = ServerMessage::from_payload(bytes).unwrap_err();
        assert!(matches!(err, Error::Payload { .. }), "{bytes:?}: {err:?}");
        assert!(err.to_string().starts_with("undecodable payload: "), "{err}");
        assert!(matches!(ClientMessage::from_payload(bytes), Err(Error::Payload { .. })), "{bytes:?}");
    }
}

#[test]
fn client_messages_round_trip() {
    let m = ClientMessage::Request(Request::TaskDump { timeout_ms: 2_000 });
    let (mut a, mut b) = UnixStream::pair().unwrap();
    stallscope_wire::proto::send(&mut a, &m).unwrap();
    drop(a);
    let got: Option<ClientMessage> = stallscope_wire::proto::recv(&mut b).unwrap();
    assert_eq!(got, Some(m));
    let none: Option<ClientMessage> = stallscope_wire::proto::recv(&mut b).unwrap();
    assert_eq!(none, None);
}
