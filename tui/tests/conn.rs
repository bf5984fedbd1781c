//! `Connection` requests against a fake probe (a thread speaking the server side of the protocol
//! over a real Unix socket): a task dump request goes out as the protocol's frame, and the reply
//! comes back through `recv` in order with the updates.

use std::os::unix::net::UnixListener;
use std::thread;
use std::time::{Duration, Instant};

use stallscope::conn::{ConnError, ConnectOptions, Connection};
use stallscope::target::Endpoint;
use stallscope_wire::proto::{self, ClientMessage, ServerMessage};
use stallscope_wire::{ProcessInfo, Received, Request, TaskDump, TaskGroup};

/// How long a test waits for what the fake probe sends before it fails (instead of hanging).
const WAIT: Duration = Duration::from_secs(10);

fn dump() -> TaskDump {
    TaskDump {
        tasks: 12,
        elapsed_ns: 2_500_000,
        groups: vec![
            TaskGroup {
                count: 10,
                trace: "╼ shopd::queue::wait at src/queue.rs:40:9\n└╼ poll at tokio/src/sync/notify.rs:1034:14".into(),
                task_ids: vec![3, 4, 5],
                spawned_at: Some("src/main.rs:12:5".into()),
                ..TaskGroup::default()
            },
            TaskGroup { count: 2, trace: "╼ poll at tokio/src/time/sleep.rs:457:27".into(), ..TaskGroup::default() },
        ],
        ..TaskDump::default()
    }
}

#[test]
fn a_task_dump_request_is_sent_and_its_reply_arrives_through_recv() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(format!("{}-fakeprobe.sock", std::process::id()));
    let listener = UnixListener::bind(&path).unwrap();
    let probe = thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        proto::server_handshake(&mut s, &ProcessInfo { pid: 4242, name: "shopd".into(), ..ProcessInfo::default() })
            .unwrap();
        let request: ClientMessage = proto::recv(&mut s).unwrap().expect("a request");
        proto::send(&mut s, &ServerMessage::Dropped { intervals: 1 }).unwrap();
        proto::send(&mut s, &ServerMessage::TaskDump(dump())).unwrap();
        let second: ClientMessage = proto::recv(&mut s).unwrap().expect("a second request");
        proto::send(&mut s, &ServerMessage::Error { message: "task dump refused: busy".into() }).unwrap();
        (request, second)
    });

    let mut conn = Connection::open(&Endpoint::Unix(path), &ConnectOptions::default()).unwrap();
    conn.request_task_dump(Duration::from_millis(1_500)).unwrap();
    let mut got = Vec::new();
    let deadline = Instant::now() + WAIT;
    while got.len() < 2 {
        assert!(Instant::now() < deadline, "only {got:?} arrived within {WAIT:?}");
        if let Some(r) = conn.recv().unwrap() {
            got.push(r);
        }
    }
    assert_eq!(got, vec![Received::Dropped { intervals: 1 }, Received::TaskDump(dump())]);
    // A reply is not an update.
    assert_eq!(conn.updates(), 0);

    conn.send_request(&Request::TaskDump { timeout_ms: 20_000 }).unwrap();
    let deadline = Instant::now() + WAIT;
    let refused = loop {
        assert!(Instant::now() < deadline, "no answer to the second request within {WAIT:?}");
        if let Some(r) = conn.recv().unwrap() {
            break r;
        }
    };
    assert_eq!(refused, Received::Error { message: "task dump refused: busy".into() });
    let (request, second) = probe.join().unwrap();
    assert_eq!(request, ClientMessage::Request(Request::TaskDump { timeout_ms: 1_500 }));
    assert_eq!(second, ClientMessage::Request(Request::TaskDump { timeout_ms: 20_000 }));

    // Once the probe is gone, a request fails and the connection is over.
    let mut failed = None;
    for _ in 0..100 {
        match conn.request_task_dump(Duration::from_secs(1)) {
            Ok(()) => thread::sleep(Duration::from_millis(10)),
            Err(e) => {
                failed = Some(e);
                break;
            }
        }
    }
    let failed = failed.expect("sending to a closed probe fails");
    assert!(matches!(failed, ConnError::Closed { .. } | ConnError::Send { .. }), "{failed:?}");
    assert!(matches!(conn.recv(), Err(ConnError::Closed { .. })));
}
