//! Handshake over a real Unix socket pair: accepted, major mismatch (both sides), minor
//! mismatch accepted, refusal, garbage, hang-ups.

mod support;

use std::io::Write;
use std::os::unix::net::UnixStream;
use std::thread;

use stallscope_wire::frame::{read_frame, write_frame};
use stallscope_wire::proto::{
    client_handshake, server_handshake, server_handshake_with, Hello, ProtocolVersion, Refused, Reply, Welcome,
};
use stallscope_wire::{Error, Peer, PROTOCOL_MAJOR, PROTOCOL_MINOR};

use support::fixture::process_info;

/// Runs the probe side on a thread and the client side here.
fn handshake(hello: Hello) -> (Result<Welcome, Error>, Result<Hello, Error>) {
    let (mut client, mut server) = UnixStream::pair().unwrap();
    let probe = thread::spawn(move || server_handshake(&mut server, &process_info()));
    let client_result = client_handshake(&mut client, &hello);
    (client_result, probe.join().unwrap())
}

#[test]
fn handshake_ok() {
    let (client, server) = handshake(Hello::new("stallscope", "0.1.0"));
    let welcome = client.unwrap();
    assert_eq!(welcome.protocol, ProtocolVersion { major: PROTOCOL_MAJOR, minor: PROTOCOL_MINOR });
    assert_eq!(welcome.process, process_info());
    let hello = server.unwrap();
    assert_eq!(hello.client_name, "stallscope");
    assert_eq!(hello.client_version, "0.1.0");
    assert_eq!(hello.protocol, ProtocolVersion::CURRENT);
}

#[test]
fn client_of_another_major_is_refused_with_both_versions() {
    let mut hello = Hello::new("stallscope", "9.0.0");
    hello.protocol = ProtocolVersion { major: PROTOCOL_MAJOR + 1, minor: 0 };
    let (mut client, mut server) = UnixStream::pair().unwrap();
    let probe = thread::spawn(move || server_handshake(&mut server, &process_info()));
    write_frame(&mut client, &hello.to_payload().unwrap()).unwrap();
    let server_err = probe.join().unwrap().unwrap_err();
    match &server_err {
        Error::Version { ours, theirs, peer } => {
            assert_eq!(*ours, ProtocolVersion::CURRENT);
            assert_eq!(theirs.major, PROTOCOL_MAJOR + 1);
            assert_eq!(*peer, Peer::Client);
        }
        other => panic!("expected a version error, got {other:?}"),
    }
    assert_eq!(
        server_err.to_string(),
        format!(
            "protocol version mismatch: this probe speaks {PROTOCOL_MAJOR}.x, the stallscope speaks {}.0",
            PROTOCOL_MAJOR + 1
        )
    );
    // The probe still answered, with its own version in the prefix (a client of that other
    // major reports the mismatch from it) and the reason in words.
    let reply = Reply::from_payload(&read_frame(&mut client).unwrap().unwrap()).unwrap();
    match reply {
        Reply::Refused(Refused { protocol, reason }) => {
            assert_eq!(protocol, ProtocolVersion::CURRENT);
            assert_eq!(reason, server_err.to_string());
        }
        other => panic!("expected Refused, got {other:?}"),
    }
}

#[test]
fn probe_of_another_major_gives_a_version_error_naming_both() {
    let (mut client, mut server) = UnixStream::pair().unwrap();
    let probe = thread::spawn(move || {
        let hello = Hello::from_payload(&read_frame(&mut server).unwrap().unwrap()).unwrap();
        let theirs = ProtocolVersion { major: 2, minor: 0 };
        let reply = Reply::Welcome(Welcome { protocol: theirs, process: process_info() });
        write_frame(&mut server, &reply.to_payload().unwrap()).unwrap();
        hello
    });
    let err = client_handshake(&mut client, &Hello::new("stallscope", "0.1.0")).unwrap_err();
    probe.join().unwrap();
    match &err {
        Error::Version { ours, theirs, peer } => {
            assert_eq!(*ours, ProtocolVersion::CURRENT);
            assert_eq!(*theirs, ProtocolVersion { major: 2, minor: 0 });
            assert_eq!(*peer, Peer::Probe);
        }
        other => panic!("expected a version error, got {other:?}"),
    }
    assert_eq!(err.to_string(), "protocol version mismatch: this stallscope speaks 1.x, the probe speaks 2.0");
}

#[test]
fn minor_mismatch_is_accepted_both_ways() {
    // Newer client minor.
    let mut hello = Hello::new("stallscope", "0.2.0");
    hello.protocol = ProtocolVersion { major: PROTOCOL_MAJOR, minor: PROTOCOL_MINOR + 7 };
    let (client, server) = handshake(hello);
    let welcome = client.unwrap();
    let hello = server.unwrap();
    assert_eq!(hello.protocol.minor, PROTOCOL_MINOR + 7);
    assert_eq!(ProtocolVersion::CURRENT.common(hello.protocol), ProtocolVersion::CURRENT);
    assert_eq!(welcome.protocol, ProtocolVersion::CURRENT);

    // Newer probe minor, with a longer welcome body (a later minor may append fields).
    let (mut client, mut server) = UnixStream::pair().unwrap();
    let probe = thread::spawn(move || {
        read_frame(&mut server).unwrap().unwrap();
        let newer = ProtocolVersion { major: PROTOCOL_MAJOR, minor: PROTOCOL_MINOR + 3 };
        let mut payload = Reply::Welcome(Welcome { protocol: newer, process: process_info() }).to_payload().unwrap();
        payload.extend_from_slice(b"fields a later minor appended");
        write_frame(&mut server, &payload).unwrap();
    });
    let welcome = client_handshake(&mut client, &Hello::new("stallscope", "0.1.0")).unwrap();
    probe.join().unwrap();
    assert_eq!(welcome.protocol.minor, PROTOCOL_MINOR + 3);
    assert_eq!(welcome.process, process_info());
    assert_eq!(ProtocolVersion::CURRENT.common(welcome.protocol), ProtocolVersion::CURRENT);
}

#[test]
fn probe_can_refuse_with_a_reason() {
    let (mut client, mut server) = UnixStream::pair().unwrap();
    let probe = thread::spawn(move || server_handshake_with(&mut server, |_| Err("too many clients (8)".to_string())));
    let err = client_handshake(&mut client, &Hello::new("stallscope", "0.1.0")).unwrap_err();
    assert!(matches!(&err, Error::Refused { reason } if reason == "too many clients (8)"), "{err:?}");
    assert_eq!(err.to_string(), "the probe refused the connection: too many clients (8)");
    assert!(matches!(probe.join().unwrap(), Err(Error::Refused { .. })));
}

#[test]
fn garbage_instead_of_hello_is_bad_magic() {
    let (mut client, mut server) = UnixStream::pair().unwrap();
    let probe = thread::spawn(move || server_handshake(&mut server, &process_info()));
    // A frame that is not a hello at all.
    write_frame(&mut client, b"GET / HTTP/1.1\r\n").unwrap();
    let err = probe.join().unwrap().unwrap_err();
    assert!(matches!(&err, Error::BadMagic { found, .. } if found == b"GET "), "{err:?}");
    assert_eq!(err.to_string(), "bad magic: expected \"STSC\", found \"GET \"");
    // No answer: the probe just drops the connection.
    assert!(read_frame(&mut client).unwrap().is_none());
}

#[test]
fn raw_garbage_bytes_instead_of_a_frame() {
    // Not even a frame: "HTTP" as a little-endian length is ~1.3 GB, far over the limit.
    let (mut client, mut server) = UnixStream::pair().unwrap();
    let probe = thread::spawn(move || server_handshake(&mut server, &process_info()));
    client.write_all(b"HTTP/1.1 200 OK\r\n\r\n").unwrap();
    let err = probe.join().unwrap().unwrap_err();
    assert!(matches!(err, Error::Oversized { len: 0x5054_5448, limit } if limit == 16 << 20), "{err:?}");
}

#[test]
fn garbage_reply_is_bad_magic_for_the_client() {
    let (mut client, mut server) = UnixStream::pair().unwrap();
    let probe = thread::spawn(move || {
        read_frame(&mut server).unwrap();
        write_frame(&mut server, b"\x00\x01\x02").unwrap();
    });
    let err = client_handshake(&mut client, &Hello::new("stallscope", "0.1.0")).unwrap_err();
    probe.join().unwrap();
    assert!(matches!(err, Error::BadMagic { .. }), "{err:?}");
}

#[test]
fn wrong_handshake_kind_is_unexpected() {
    // A client that talks to another client: it gets a Hello back.
    let (mut a, mut b) = UnixStream::pair().unwrap();
    let other = thread::spawn(move || {
        read_frame(&mut b).unwrap();
        write_frame(&mut b, &Hello::new("stallscope", "0.1.0").to_payload().unwrap()).unwrap();
    });
    let err = client_handshake(&mut a, &Hello::new("stallscope", "0.1.0")).unwrap_err();
    other.join().unwrap();
    assert!(matches!(&err, Error::Unexpected { expected: "Welcome or Refused", found } if found == "Hello"), "{err:?}");

    // A probe that gets a Refused frame where a hello belongs.
    let refused = Reply::Refused(Refused { protocol: ProtocolVersion::CURRENT, reason: "x".into() });
    let err = Hello::from_payload(&refused.to_payload().unwrap()).unwrap_err();
    assert!(matches!(err, Error::Unexpected { expected: "Hello", .. }), "{err:?}");
}

#[test]
fn hang_ups_during_the_handshake() {
    // Client connects and leaves without a word.
    let (client, mut server) = UnixStream::pair().unwrap();
    drop(client);
    let err = server_handshake(&mut server, &process_info()).unwrap_err();
    assert!(matches!(err, Error::Closed { .. }), "{err:?}");

    // Client sends half a hello.
    let (mut client, mut server) = UnixStream::pair().unwrap();
    let payload = Hello::new("stallscope", "0.1.0").to_payload().unwrap();
    client.write_all(&(payload.len() as u32).to_le_bytes()).unwrap();
    client.write_all(&payload[..5]).unwrap();
    drop(client);
    let err = server_handshake(&mut server, &process_info()).unwrap_err();
    assert!(matches!(err, Error::Truncated { missing } if missing == (payload.len() - 5) as u64), "{err:?}");

    // Probe reads the hello and leaves without answering.
    let (mut client, mut server) = UnixStream::pair().unwrap();
    let probe = thread::spawn(move || {
        read_frame(&mut server).unwrap();
    });
    let err = client_handshake(&mut client, &Hello::new("stallscope", "0.1.0")).unwrap_err();
    probe.join().unwrap();
    assert!(matches!(err, Error::Closed { .. }), "{err:?}");
}

#[test]
fn short_handshake_frames_are_errors_not_panics() {
    for len in 0..9 {
        let bytes = &b"STSC\x01\x00\x00\x00\x01"[..len];
        assert!(Hello::from_payload(bytes).is_err(), "{len}");
        assert!(Reply::from_payload(bytes).is_err(), "{len}");
    }
}
