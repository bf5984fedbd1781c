//! Interning round trips: realistic updates through Encoder → frames over a Unix socket pair →
//! Decoder, exact (`assert_eq!`), across many updates, with resets, and the decoder's refusals.

mod support;

use std::io::{BufWriter, Write};
use std::os::unix::net::UnixStream;
use std::thread;

use stallscope_wire::frame::{write_frame, FramedReader};
use stallscope_wire::intern::{Define, InternLimits, Interned, StrId, WireStall, WireUpdate};
use stallscope_wire::proto::{client_handshake, server_handshake, Hello};
use stallscope_wire::{Decoder, Encoder, Error, Received, ServerMessage, Table, Update};

use support::{assert_same, fixture};

/// Probe side: handshake, then every update (and a drop notice and an error) as frames.
fn serve(mut stream: UnixStream, updates: Vec<Update>, limits: InternLimits) -> (u64, usize) {
    server_handshake(&mut stream, &fixture::process_info()).unwrap();
    let mut out = BufWriter::new(stream);
    let mut encoder = Encoder::with_limits(limits);
    let mut bytes = 0;
    for (i, u) in updates.iter().enumerate() {
        let payload = encoder.encode(u).unwrap().to_payload().unwrap();
        bytes += payload.len();
        write_frame(&mut out, &payload).unwrap();
        if i == 3 {
            write_frame(&mut out, &ServerMessage::Dropped { intervals: 2 }.to_payload().unwrap()).unwrap();
            write_frame(
                &mut out,
                &ServerMessage::Error { message: "task dumps are not served yet".into() }.to_payload().unwrap(),
            )
            .unwrap();
        }
    }
    out.flush().unwrap();
    (encoder.limit_resets(), bytes)
}

/// Client side: handshake, then decode until the probe hangs up.
fn receive(mut stream: UnixStream) -> Vec<Received> {
    let welcome = client_handshake(&mut stream, &Hello::new("wire-tests", "0")).unwrap();
    assert_eq!(welcome.process, fixture::process_info());
    let mut frames = FramedReader::new(stream);
    let mut decoder = Decoder::new();
    let mut got = Vec::new();
    while let Some(payload) = frames.read_frame().unwrap() {
        got.push(decoder.decode_payload(&payload).unwrap());
    }
    got
}

fn expected(updates: &[Update]) -> Vec<Received> {
    let mut out = Vec::new();
    for (i, u) in updates.iter().enumerate() {
        out.push(Received::Update(u.clone()));
        if i == 3 {
            out.push(Received::Dropped { intervals: 2 });
            out.push(Received::Error { message: "task dumps are not served yet".into() });
        }
    }
    out
}

#[test]
fn realistic_session_round_trips_exactly_over_a_socket() {
    let updates = fixture::session(11, 60);
    assert!(updates.iter().filter(|u| matches!(u, Update::Tick { .. })).count() > 20);
    let (client, server) = UnixStream::pair().unwrap();
    let sent = updates.clone();
    let probe = thread::spawn(move || serve(server, sent, InternLimits::default()));
    let got = receive(client);
    let (resets, bytes) = probe.join().unwrap();
    assert_eq!(resets, 0);
    assert_same(&got, &expected(&updates));
    // Later ticks reuse earlier definitions: far smaller than the plain encoding.
    let plain: usize = updates.iter().map(|u| stallscope_wire::codec::encode(u).unwrap().len()).sum();
    assert!(bytes * 10 < plain, "interned {bytes} bytes vs plain {plain}");
}

#[test]
fn later_updates_carry_only_new_definitions() {
    let mut enc = Encoder::new();
    let first = enc.encode_interned(&fixture::tick(3, 1)).unwrap();
    assert!(first.reset, "a fresh encoder's first message is self-contained");
    assert!(first.define.strings.len() > 50 && first.define.frames.len() > 50 && first.define.stacks.len() > 50);
    assert_eq!(first.define.bounds.len(), 1, "one set of bucket bounds");
    let again = enc.encode_interned(&fixture::tick(3, 1)).unwrap();
    assert!(!again.reset);
    assert_eq!(again.define, Define::default(), "nothing new the second time");
    let next = enc.encode_interned(&fixture::tick(3, 2)).unwrap();
    assert!(!next.reset);
    // Tick 2's window of recent stalls shifted by one: a new running stall and the previous
    // running one, now ended with its samples, bring new stacks; the other 38 stalls none.
    assert!(next.define.stacks.len() <= 2 * fixture::STACKS_PER_STALL, "{}", next.define.stacks.len());
    assert!(next.define.strings.is_empty(), "every location and symbol was already sent");

    let mut dec = Decoder::new();
    assert_eq!(dec.decode_interned(first).unwrap(), fixture::tick(3, 1));
    assert_eq!(dec.decode_interned(again).unwrap(), fixture::tick(3, 1));
    assert_eq!(dec.decode_interned(next).unwrap(), fixture::tick(3, 2));
}

#[test]
fn bounded_tables_reset_and_still_round_trip_exactly() {
    // Limits that a single tick fits in but two rolling ticks do not.
    let mut limits = InternLimits::default();
    limits.stacks = 230;
    limits.frames = 4_000;
    let updates = fixture::session(5, 40);
    let (client, server) = UnixStream::pair().unwrap();
    let sent = updates.clone();
    let probe = thread::spawn(move || serve(server, sent, limits));
    let got = receive(client);
    let (resets, _) = probe.join().unwrap();
    assert!(resets > 0, "the limits were meant to force resets");
    assert_same(&got, &expected(&updates));
}

#[test]
fn encoder_resets_keep_its_tables_within_the_limits() {
    let mut limits = InternLimits::default();
    limits.stacks = 230;
    let mut enc = Encoder::with_limits(limits);
    let mut dec = Decoder::with_limits(limits);
    let mut resets = 0;
    for u in fixture::session(8, 50) {
        let m = enc.encode_interned(&u).unwrap();
        resets += m.reset as u32;
        // A decoder with the same limits accepts everything.
        assert_eq!(dec.decode_interned(m).unwrap(), u);
    }
    assert!(resets > 1, "{resets}");
    assert_eq!(enc.limit_resets() + 1, resets as u64);

    // One update larger than the limits on its own is an error, and the encoder is reset.
    limits.stacks = 10;
    let mut enc = Encoder::with_limits(limits);
    let err = enc.encode(&fixture::tick(1, 1)).unwrap_err();
    assert!(matches!(err, Error::TableFull { table: Table::Stacks, limit: 10 }), "{err:?}");
    let pool = fixture::frame_pool(&mut fixture::Rng::new(1));
    let small = Update::StallEnded(fixture::stall(&mut fixture::Rng::new(2), &pool, 9, true));
    let m = enc.encode_interned(&small).unwrap();
    assert!(m.reset, "the failed encode left the encoder reset");
    assert_eq!(Decoder::new().decode_interned(m).unwrap(), small);
}

#[test]
fn decoder_refuses_tables_past_its_limits() {
    let mut small = InternLimits::default();
    small.strings = 20;
    let mut dec = Decoder::with_limits(small);
    let m = Encoder::new().encode(&fixture::tick(1, 1)).unwrap();
    let err = dec.decode(m).unwrap_err();
    assert!(matches!(err, Error::TableFull { table: Table::Strings, limit: 20 }), "{err:?}");
}

fn stall_ref(spawned_at: u32) -> WireStall {
    WireStall {
        id: 1,
        start_unix_ms: 0,
        duration_ns: None,
        elapsed_ns: 0,
        worker: 0,
        tid: 0,
        task: None,
        spawned_at: StrId(spawned_at),
        in_block_in_place: false,
        stacks: Vec::new(),
        samples_lost: 0,
    }
}

#[test]
fn undefined_ids_are_errors_and_leave_the_tables_intact() {
    let mut enc = Encoder::new();
    let mut dec = Decoder::new();
    let u = fixture::session(2, 3);
    for x in &u[..2] {
        assert_eq!(&dec.decode(enc.encode(x).unwrap()).unwrap(), &Received::Update(x.clone()));
    }
    // A reference past the table.
    let bad = Interned {
        reset: false,
        define: Define::default(),
        update: WireUpdate::StallStarted(stall_ref(1_000_000)),
        ext: Default::default(),
    };
    let err = dec.decode_interned(bad).unwrap_err();
    assert!(matches!(err, Error::UndefinedId { table: Table::Strings, id: 1_000_000, .. }), "{err:?}");
    // Definitions that refer to undefined ids are refused as a whole...
    let mut define = Define { strings: vec!["new".into()], ..Define::default() };
    define.stacks.push(vec![stallscope_wire::intern::FrameId(999_999)]);
    let bad =
        Interned { reset: false, define, update: WireUpdate::StallStarted(stall_ref(0)), ext: Default::default() };
    assert!(matches!(dec.decode_interned(bad), Err(Error::UndefinedId { table: Table::Frames, .. })));
    // ...and nothing of the failed messages stuck: the encoder's next message still decodes.
    assert_eq!(dec.decode(enc.encode(&u[2]).unwrap()).unwrap(), Received::Update(u[2].clone()));
    // A fresh decoder knows nothing.
    let err = Decoder::new().decode(enc.encode(&u[0]).unwrap()).unwrap_err();
    assert!(matches!(err, Error::UndefinedId { .. }), "{err:?}");
}

#[test]
fn expansion_bombs_are_refused() {
    // One long string referred to by a stack of many frames, repeated.
    let long = "x".repeat(1 << 16);
    let define = Define {
        strings: vec![long],
        frames: vec![stallscope_wire::intern::WireFrame {
            function: StrId(0),
            file: Some(StrId(0)),
            line: None,
            inlined: false,
            kind: stallscope_wire::FrameKind::User,
        }],
        stacks: vec![vec![stallscope_wire::intern::FrameId(0); 1_000]],
        bounds: Vec::new(),
    };
    let mut stall = stall_ref(0);
    stall.stacks =
        vec![stallscope_wire::intern::WireStackCount { stack: stallscope_wire::intern::StackId(0), count: 1 }; 1_000];
    let bomb = Interned { reset: true, define, update: WireUpdate::StallEnded(stall), ext: Default::default() };
    // The encoded bomb is small...
    assert!(stallscope_wire::codec::encode(&bomb).unwrap().len() < 80_000);
    // ...but would expand to 1000 × 1000 × 128 KiB.
    let err = Decoder::new().decode_interned(bomb).unwrap_err();
    assert!(matches!(err, Error::TooLarge { .. }), "{err:?}");
}

#[test]
fn explicit_reset_makes_the_next_message_self_contained() {
    let mut enc = Encoder::new();
    let u = fixture::session(4, 6);
    let mut dec = Decoder::new();
    for x in &u[..3] {
        dec.decode(enc.encode(x).unwrap()).unwrap();
    }
    enc.reset();
    let m = enc.encode_interned(&u[3]).unwrap();
    assert!(m.reset);
    // A decoder that saw nothing before can start here.
    assert_eq!(Decoder::new().decode_interned(m.clone()).unwrap(), u[3]);
    assert_eq!(dec.decode_interned(m).unwrap(), u[3]);
    assert_eq!(dec.decode(enc.encode(&u[4]).unwrap()).unwrap(), Received::Update(u[4].clone()));
}

#[test]
fn decode_update_rejects_other_messages() {
    let err = Decoder::new().decode_update(ServerMessage::Dropped { intervals: 1 }).unwrap_err();
    assert!(matches!(err, Error::Unexpected { expected: "Update", .. }), "{err:?}");
}

#[test]
fn task_dump_replies_round_trip_between_updates_without_touching_the_tables() {
    let updates = fixture::session(21, 4);
    let dump = fixture::task_dump(4, 12);
    let (client, mut server) = UnixStream::pair().unwrap();
    let (sent, sent_dump) = (updates.clone(), dump.clone());
    let probe = thread::spawn(move || {
        server_handshake(&mut server, &fixture::process_info()).unwrap();
        let mut enc = Encoder::new();
        for (i, u) in sent.iter().enumerate() {
            write_frame(&mut server, &enc.encode(u).unwrap().to_payload().unwrap()).unwrap();
            if i == 1 {
                write_frame(&mut server, &ServerMessage::TaskDump(sent_dump.clone()).to_payload().unwrap()).unwrap();
            }
        }
    });
    let got = receive(client);
    probe.join().unwrap();
    let mut want: Vec<Received> = updates.iter().cloned().map(Received::Update).collect();
    want.insert(2, Received::TaskDump(dump.clone()));
    // The updates after the dump still resolve their ids: the reply is self-contained.
    assert_same(&got, &want);
    assert_eq!(dump.listed_tasks(), dump.tasks);

    // A task dump is not an update.
    let err = Decoder::new().decode_update(ServerMessage::TaskDump(dump)).unwrap_err();
    assert!(matches!(err, Error::Unexpected { expected: "Update", .. }), "{err:?}");
}

#[test]
fn the_largest_task_dump_the_limits_allow_fits_far_below_the_frame_limit() {
    let limits = stallscope_wire::TaskDumpLimits::DEFAULT;
    let dump = fixture::largest_task_dump(limits);
    let payload = ServerMessage::TaskDump(dump.clone()).to_payload().unwrap();
    assert!(payload.len() < 3 << 20 && payload.len() * 5 < stallscope_wire::MAX_FRAME_BYTES, "{} bytes", payload.len());
    assert_eq!(Decoder::new().decode_payload(&payload).unwrap(), Received::TaskDump(dump));
}

/// Protocol 1.2 carries each stall's anatomy and the alerts of kinds added in 1.2 after the
/// message. A 1.1 client decodes the message and ignores them; a 1.2 client reading a 1.1
/// probe's (or recording's) message, which has no extension, gets the other fields as they were.
#[test]
fn the_1_2_extension_is_invisible_to_1_1_peers_and_optional_for_1_2_ones() {
    use stallscope_wire::{codec, AlertKind};
    let tick = fixture::tick(7, 30);
    let Update::Tick { snapshot, .. } = &tick else { panic!("a tick") };
    assert!(snapshot.stalls.iter().any(|s| s.anatomy.is_some()), "the fixture has anatomies");
    assert!(snapshot.alerts.iter().any(|a| a.kind == AlertKind::CpuStarvation));
    let message = Encoder::new().encode(&tick).unwrap();
    let payload = message.to_payload().unwrap();

    // A 1.1 client: `codec::decode` of the whole payload, trailing bytes ignored.
    let old_view: ServerMessage = codec::decode(&payload).unwrap();
    let ServerMessage::Update(interned) = &old_view else { panic!("an update") };
    let bare = codec::encode(&old_view).unwrap();
    assert!(bare.len() < payload.len(), "the extension follows the message");
    assert!(interned.ext.is_empty(), "a 1.1 decoder does not see the extension");
    // What such a client gets: every alert it knows, none of the new kind, no anatomies.
    let Update::Tick { snapshot: old, .. } = Decoder::new().decode_update(old_view).unwrap() else { panic!() };
    assert!(old.alerts.iter().all(|a| a.kind.known_in(1)));
    assert_eq!(old.alerts.len(), snapshot.alerts.len() - 1);
    assert!(old.stalls.iter().all(|s| s.anatomy.is_none()));

    // A 1.1 probe's payload (the message alone) read by this build: no extension, no error.
    let from_old_probe = Decoder::new().decode_payload(&bare).unwrap();
    let Received::Update(Update::Tick { snapshot: got, .. }) = from_old_probe else { panic!() };
    assert_eq!(got.stalls.len(), snapshot.stalls.len());
    assert!(got.stalls.iter().all(|s| s.anatomy.is_none()));

    // And the whole 1.2 payload comes back exactly, alert order included.
    assert_eq!(Decoder::new().decode_payload(&payload).unwrap(), Received::Update(tick));
}

/// An extension that lists fewer stalls than the update holds is damage, reported as such.
#[test]
fn a_short_extension_is_refused() {
    let tick = fixture::tick(7, 30);
    let ServerMessage::Update(mut interned) = Encoder::new().encode(&tick).unwrap() else { panic!() };
    assert!(interned.ext.stalls.len() > 1);
    interned.ext.stalls.truncate(1);
    interned.ext.stalls[0].anatomy = Some(Default::default());
    let payload = ServerMessage::Update(interned).to_payload().unwrap();
    let err = Decoder::new().decode_payload(&payload).unwrap_err();
    assert!(err.to_string().contains("stall anatomies"), "{err}");
}
