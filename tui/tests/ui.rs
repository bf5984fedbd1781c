//! The terminal UI on `TestBackend`: every view from the fixture at 80x24 and 160x48 (insta
//! snapshots), the run loop driven by key events, replay of a real recording file, and the
//! live connection losing and finding a (real, socket-speaking) probe again.

use std::io::Write as _;
use std::os::unix::net::UnixListener;
use std::sync::mpsc;
use std::time::Duration;

use ratatui::backend::TestBackend;
use ratatui::buffer::Buffer;
use ratatui::crossterm::event::{KeyCode, KeyEvent, KeyModifiers};
use ratatui::layout::Rect;
use ratatui::Terminal;
use stallscope::list::ProbeRow;
use stallscope::ui::conn::{Feed, Live};
use stallscope::ui::replay::Replay;
use stallscope::ui::state::picker::Picker;
use stallscope::ui::state::{App, ConnStatus, DumpState, FlameWindow, Source, Timeline, View};
use stallscope::ui::{fixture, input, run, update, view, Driver, Event, RunOptions};
use stallscope_wire::discovery::Found;
use stallscope_wire::recording::{RecordingHeader, RecordingOptions, RecordingReader, RecordingWriter};
use stallscope_wire::{Encoder, Received};

/// The screen as text, one line per row, trailing blanks trimmed.
fn text(buf: &Buffer) -> String {
    let area = buf.area;
    let mut out = String::new();
    for y in 0..area.height {
        let mut line = String::new();
        for x in 0..area.width {
            line.push_str(buf[(x, y)].symbol());
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

fn draw(app: &mut App, w: u16, h: u16) -> String {
    if app.view == View::Flame {
        app.refresh_flame();
    }
    let mut buf = Buffer::empty(Rect::new(0, 0, w, h));
    view::render_area(app, buf.area, &mut buf);
    text(&buf)
}

fn key(c: KeyCode) -> KeyEvent {
    KeyEvent::new(c, KeyModifiers::NONE)
}

fn press(app: &mut App, keys: &[KeyCode]) {
    for k in keys {
        if let Some(a) = input::map_key(app, key(*k)) {
            let _ = update::update(app, a);
        }
    }
}

/// Every view at both sizes.
#[test]
fn views_snapshot() {
    for (w, h) in [(80u16, 24u16), (160, 48)] {
        for v in View::ALL {
            let mut app = fixture::app();
            app.view = v;
            insta::assert_snapshot!(format!("{}_{w}x{h}", v.title().to_lowercase()), draw(&mut app, w, h));
        }
        let mut app = fixture::app();
        app.help = true;
        insta::assert_snapshot!(format!("help_{w}x{h}"), draw(&mut app, w, h));

        let mut app = fixture::app();
        app.view = View::Stalls;
        press(&mut app, &[KeyCode::Enter]);
        assert!(app.stalls_view.detail.is_some(), "Enter opens the newest stall");
        insta::assert_snapshot!(format!("stall_detail_{w}x{h}"), draw(&mut app, w, h));

        let mut app = fixture::app();
        app.view = View::Tasks;
        press(&mut app, &[KeyCode::Enter]);
        let location = app.tasks_view.detail.clone().expect("Enter opens the busiest location");
        app.tasks_view.dump = DumpState::Ready {
            location,
            groups: vec![(
                2388,
                "╼ checkout_api::watch::watch_request::{{closure}} at src/watch.rs:91:20\n  └╼ tokio::sync::notify::Notified::await".into(),
            )],
            note: "2388 idle task(s) of this location in 1 group(s); 2402 task(s) in the whole dump, taken in 3.1 ms".into(),
        };
        insta::assert_snapshot!(format!("task_detail_{w}x{h}"), draw(&mut app, w, h));
    }
}

/// The states a session passes through besides the views above, at 80x24: nothing received yet,
/// waiting for a probe, a probe lost after data came, a replay on its timeline, a task dump
/// asked for and refused, a flame search being typed and kept, and the picker.
#[test]
fn states_snapshot() {
    let (w, h) = (80, 24);
    let mut empty = App::new(Source::Live { target: "pid 4242".into() });
    insta::assert_snapshot!("empty_connecting", draw(&mut empty, w, h));
    empty.status = ConnStatus::Reconnecting {
        reason: "no probe with pid 4242 on this machine (no probes running; looked in /run/user/1000/stallscope)"
            .into(),
        attempt: 3,
        retry_in_ms: 1000,
    };
    insta::assert_snapshot!("empty_reconnecting", draw(&mut empty, w, h));

    let mut app = fixture::app();
    stallscope::ui::receive_feed(
        &mut app,
        Feed::Lost {
            reason: "the probe closed the connection".into(),
            attempt: 2,
            retry_in: Duration::from_millis(500),
        },
    );
    insta::assert_snapshot!("reconnecting", draw(&mut app, w, h));

    let dir = tempfile::tempdir().expect("tempdir");
    let mut rep =
        Replay::from_recording(RecordingReader::open(fixture_recording(dir.path())).expect("open").read_all());
    let mut app = App::new(Source::Replay { path: "session.stsc".into() });
    rep.start(&mut app);
    rep.seek(&mut app, fixture::T0 + 21_000);
    press(&mut app, &[KeyCode::Char('+'), KeyCode::Char('2')]);
    assert_eq!(app.timeline.map(|t| (t.playing, t.speed)), Some((true, 2.0)));
    insta::assert_snapshot!("replay_stalls", draw(&mut app, w, h));
    press(&mut app, &[KeyCode::Char(' ')]);
    assert_eq!(app.timeline.map(|t: Timeline| t.playing), Some(false));
    press(&mut app, &[KeyCode::Char('1')]);
    insta::assert_snapshot!("replay_overview_paused", draw(&mut app, w, h));

    let mut app = fixture::app();
    app.view = View::Tasks;
    press(&mut app, &[KeyCode::Enter]);
    let location = app.tasks_view.detail.clone().expect("Enter opens the busiest location");
    app.tasks_view.dump = DumpState::Waiting { location };
    insta::assert_snapshot!("task_dump_waiting", draw(&mut app, w, h));
    stallscope::ui::receive(
        &mut app,
        Received::Error { message: "task dump refused: a worker is stalled (worker 0 for 120 ms); try again".into() },
    );
    assert!(matches!(app.tasks_view.dump, DumpState::Failed { .. }));
    insta::assert_snapshot!("task_dump_failed", draw(&mut app, w, h));

    let mut app = fixture::app();
    press(&mut app, &[KeyCode::Char('3'), KeyCode::Char('/'), KeyCode::Char('m'), KeyCode::Char('u')]);
    insta::assert_snapshot!("flame_search_typing", draw(&mut app, w, h));
    press(&mut app, &[KeyCode::Char('t'), KeyCode::Enter]);
    insta::assert_snapshot!("flame_search", draw(&mut app, w, h));

    let mut picker = Picker::new(probe_rows(&[(101, "api", 3600), (202, "worker", 65), (303, "cron", 9)]));
    picker.selected = 1;
    insta::assert_snapshot!("picker", draw_picker(&picker, w, h));
    picker.set_probes(Vec::new());
    insta::assert_snapshot!("picker_empty", draw_picker(&picker, w, h));
}

fn draw_picker(p: &Picker, w: u16, h: u16) -> String {
    let mut buf = Buffer::empty(Rect::new(0, 0, w, h));
    view::render_picker_area(p, buf.area, &mut buf);
    text(&buf)
}

/// The fixture session written through the real recording writer into `dir`.
fn fixture_recording(dir: &std::path::Path) -> std::path::PathBuf {
    let path = dir.join("session.stallscope");
    let mut w =
        RecordingWriter::create(&path, &RecordingHeader::new(fixture::process(), "test"), RecordingOptions::default())
            .expect("create");
    for r in fixture::updates() {
        w.write_received(&r).expect("write");
    }
    w.into_inner().expect("flush").flush().expect("flush");
    path
}

/// Help lines that wrap continue under their own text, never back at the popup's left edge:
/// only section titles start there, at any scroll position.
#[test]
fn help_text_wraps_under_its_column() {
    let mut titles: Vec<&str> = input::help_sections().map(|s| s.title).collect();
    titles.push("Alerts");
    let mut app = fixture::app();
    app.help = true;
    let mut seen_advice = false;
    for scroll in (0..=80).step_by(10) {
        app.help_scroll = scroll;
        for line in draw(&mut app, 80, 24).lines().skip(2).take(20) {
            // Inside the popup's borders.
            let Some(inner) = line.split('│').nth(1) else { continue };
            let text = inner.trim_end();
            seen_advice |= text.contains("what to do:");
            assert!(
                text.is_empty() || text.starts_with("  ") || titles.contains(&text),
                "scroll {scroll}: a line back at the edge: {text:?}"
            );
        }
    }
    assert!(seen_advice, "the alerts' advice was on screen");
}

#[test]
fn no_color_draws_no_colour() {
    let mut app = fixture::app();
    app.no_color = true;
    for v in View::ALL {
        app.view = v;
        if v == View::Flame {
            app.refresh_flame();
        }
        let mut buf = Buffer::empty(Rect::new(0, 0, 120, 40));
        view::render_area(&app, buf.area, &mut buf);
        for cell in buf.content() {
            assert_eq!(cell.fg, ratatui::style::Color::Reset, "{v:?}: colour in NO_COLOR mode at '{}'", cell.symbol());
            assert_eq!(cell.bg, ratatui::style::Color::Reset, "{v:?}: background in NO_COLOR mode");
        }
    }
}

#[test]
fn overview_shows_what_matters() {
    let mut app = fixture::app();
    let screen = draw(&mut app, 80, 24);
    assert!(screen.contains("loop lag p99"), "{screen}");
    assert!(screen.contains("w0") && screen.contains("93%"), "worker busy bars: {screen}");
    // Newest alert first: the pool saturated at second 8, the leak at 5, the blocking poll at 12.
    let blocking = screen.find("blocking poll").expect("blocking poll alert");
    let leak = screen.find("task leak suspect").expect("leak alert");
    assert!(blocking < leak, "newest first: {screen}");
    assert!(screen.contains("checkout-api (pid 4242)") && screen.contains("connected"), "{screen}");
}

#[test]
fn stalls_sort_and_filter() {
    let mut app = fixture::app();
    app.view = View::Stalls;
    let ids = |app: &App| app.stall_rows().iter().map(|s| s.id).collect::<Vec<_>>();
    assert_eq!(ids(&app), vec![3, 2, 1], "newest first");
    press(&mut app, &[KeyCode::Right]); // sort by duration, longest first
    assert_eq!(ids(&app), vec![1, 2, 3]);
    press(&mut app, &[KeyCode::Char('i')]);
    assert_eq!(ids(&app), vec![3, 2, 1]);
    press(&mut app, &[KeyCode::Char('/'), KeyCode::Char('r'), KeyCode::Char('e'), KeyCode::Char('n'), KeyCode::Enter]);
    assert_eq!(ids(&app), vec![2], "filter 'ren' keeps render_report_cpu");
    let screen = draw(&mut app, 80, 24);
    assert!(screen.contains("filter: ren") && screen.contains("render_report_cpu"), "{screen}");
    press(&mut app, &[KeyCode::Esc]);
    assert_eq!(ids(&app).len(), 3, "Esc clears the filter");
}

#[test]
fn flame_view_search_zoom_and_export() {
    let mut app = fixture::app();
    press(&mut app, &[KeyCode::Char('3')]);
    assert_eq!(app.view, View::Flame);
    let screen = draw(&mut app, 160, 48);
    assert!(screen.contains("fetch_rates_blocking"), "{screen}");
    press(&mut app, &[KeyCode::Char('/'), KeyCode::Char('m'), KeyCode::Char('u'), KeyCode::Char('t'), KeyCode::Enter]);
    let screen = draw(&mut app, 160, 48);
    // 14 of 60 samples are in the mutex stall.
    assert!(screen.contains("23.3%"), "search share on screen: {screen}");
    press(&mut app, &[KeyCode::Esc, KeyCode::Down, KeyCode::Down, KeyCode::Enter]);
    assert_ne!(app.flame.cursor.zoom, 0, "Enter zoomed in");
    let dir = tempfile::tempdir().expect("tempdir");
    let msg = stallscope::ui::export_flame(&app, Some(dir.path()));
    assert!(msg.starts_with("exported 60 samples to "), "{msg}");
    let path = msg.rsplit(' ').next().expect("path");
    let svg = std::fs::read_to_string(path).expect("svg written");
    assert!(svg.contains("fetch_rates_blocking") && svg.contains("<svg"), "export holds the view");
    press(&mut app, &[KeyCode::Char('w')]);
    assert_eq!(app.flame.window, FlameWindow::Last10s);
    // The CPU stall (ended at 20.46 s) and the mutex stall (27.96 s) ended in the last 10 s of
    // the 30 s session; the sleep (12.3 s) did not.
    assert_eq!(app.flame.stalls, 2);
}

/// The run loop on TestBackend, fed keys through its channel as the real input thread does.
#[test]
fn run_loop_follows_keys_and_quits() {
    let mut app = fixture::app();
    let mut terminal = Terminal::new(TestBackend::new(80, 24)).expect("terminal");
    let (tx, rx) = mpsc::channel();
    for k in [KeyCode::Char('2'), KeyCode::Char('j'), KeyCode::Enter] {
        tx.send(Event::Key(key(k))).expect("send");
    }
    drop(tx);
    let mut driver = Driver::None;
    run(&mut terminal, &mut app, &rx, &mut driver, &RunOptions::default(), &|| false).expect("run");
    assert!(!app.quit);
    assert_eq!(app.view, View::Stalls);
    assert_eq!(app.stalls_view.detail, Some(2), "second newest stall opened");
    let screen = text(terminal.backend().buffer());
    assert!(screen.contains("Stall #2"), "{screen}");

    let (tx, rx) = mpsc::channel();
    tx.send(Event::Key(key(KeyCode::Char('q')))).expect("send");
    tx.send(Event::Key(key(KeyCode::Char('1')))).expect("send");
    run(&mut terminal, &mut app, &rx, &mut driver, &RunOptions::default(), &|| false).expect("run");
    assert!(app.quit, "q quits");
    assert_eq!(app.view, View::Stalls, "nothing after q is handled");
}

/// A pid whose process is gone before the first connection ends the run loop with the reason
/// (the terminal is given back by the caller), where a lost probe would be retried.
#[test]
fn the_run_loop_ends_when_the_target_is_gone() {
    let mut app = App::new(Source::Live { target: "pid 4242".into() });
    let mut terminal = Terminal::new(TestBackend::new(80, 24)).expect("terminal");
    let (tx, rx) = mpsc::channel();
    let reason = "no process with pid 4242 is running on this machine (no probes running; looked in /x)";
    tx.send(Event::Feed(Box::new(Feed::Gone { reason: reason.into() }))).expect("send");
    let e = run(&mut terminal, &mut app, &rx, &mut Driver::None, &RunOptions::default(), &|| false)
        .expect_err("the run loop ends with the reason");
    assert_eq!(e.to_string(), reason);
}

/// A recording written through the real writer, read back and replayed on a timeline.
#[test]
fn replay_plays_seeks_and_rewinds() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = fixture_recording(dir.path());
    let mut rep = Replay::from_recording(RecordingReader::open(&path).expect("open").read_all());
    assert!(rep.damage.is_empty());
    let mut app = App::new(stallscope::ui::state::Source::Replay { path: path.display().to_string() });
    rep.start(&mut app);
    let t = app.timeline.expect("timeline");
    assert_eq!((t.start_unix_ms, t.end_unix_ms), (fixture::T0, fixture::T0 + 30_000));
    assert!(app.stalls().is_empty());
    // Ten seconds at 2x: 20 s of data, past the first stall (12.25 s) only.
    press(&mut app, &[KeyCode::Char('+')]);
    for _ in 0..10 {
        rep.advance(&mut app, 1000.0);
    }
    assert_eq!(app.timeline.map(|t| t.at_unix_ms), Some(fixture::T0 + 20_000));
    assert_eq!(app.stalls().keys().copied().collect::<Vec<_>>(), vec![1]);
    // Seek to the end, then back to the start: the data is rebuilt, the view state kept.
    app.view = View::Tasks;
    rep.seek(&mut app, fixture::T0 + 30_000);
    assert_eq!(app.stalls().len(), 3);
    rep.seek(&mut app, fixture::T0 + 5_000);
    assert!(app.stalls().is_empty(), "rewound before the first stall");
    assert_eq!(app.view, View::Tasks);
    let screen = draw(&mut app, 80, 24);
    assert!(screen.contains("replay") && screen.contains("5.0 s / 30.0 s"), "{screen}");
    // Played to the end, playback stops.
    for _ in 0..40 {
        rep.advance(&mut app, 1000.0);
    }
    assert_eq!(app.timeline.map(|t| t.playing), Some(false));
    assert_eq!(app.stalls().len(), 3);
}

/// A probe that answers one connection, sends one update and hangs up; then answers again.
#[test]
fn live_connection_reports_loss_and_reconnects() {
    let dir = tempfile::tempdir().expect("tempdir");
    let sock = dir.path().join("4242-fake.sock");
    let listener = UnixListener::bind(&sock).expect("bind");
    let server = std::thread::spawn(move || {
        for round in 0..2u64 {
            let (mut s, _) = listener.accept().expect("accept");
            stallscope_wire::proto::server_handshake(&mut s, &fixture::process()).expect("handshake");
            let mut enc = Encoder::new();
            let mut snap = fixture::snapshot(round, &[]);
            snap.seq = round;
            let update = stallscope_wire::Update::Tick {
                snapshot: Box::new(snap),
                interval: Box::new(stallscope_wire::Interval::default()),
            };
            let msg = enc.encode(&update).expect("encode");
            stallscope_wire::write_frame(&mut s, &msg.to_payload().expect("payload")).expect("write");
            s.flush().expect("flush");
            std::thread::sleep(Duration::from_millis(100));
            // Dropping the stream hangs up.
        }
    });
    let (tx, rx) = mpsc::channel();
    let live = Live::start(
        Some(stallscope::target::Target::Socket(sock)),
        dir.path().to_path_buf(),
        stallscope::conn::ConnectOptions::default(),
        tx,
        |f| Event::Feed(Box::new(f)),
    );
    let mut app = App::new(stallscope::ui::state::Source::Live { target: "fake".into() });
    let mut seen = Vec::new();
    while seen.iter().filter(|s: &&String| s.as_str() == "connected").count() < 2 {
        let Ok(Event::Feed(f)) = rx.recv_timeout(Duration::from_secs(10)) else { panic!("no feed; saw {seen:?}") };
        let f = *f;
        match &f {
            Feed::Connected(p) => {
                assert_eq!(p.pid, 4242);
                seen.push("connected".into());
            }
            Feed::Data(Received::Update(_)) => seen.push("update".into()),
            Feed::Lost { reason, .. } => seen.push(format!("lost: {reason}")),
            Feed::Gone { reason } => panic!("a socket target is retried, not given up: {reason}"),
            Feed::Data(other) => seen.push(format!("{other:?}")),
        }
        stallscope::ui::receive_feed(&mut app, f);
        if seen.len() == 3 {
            // Between the two connections the status line says so.
            let screen = draw(&mut app, 100, 24);
            assert!(screen.contains("disconnected"), "{screen}");
        }
    }
    assert_eq!(seen[0], "connected");
    assert_eq!(seen[1], "update");
    assert!(seen[2].starts_with("lost: "), "{seen:?}");
    assert_eq!(seen[3], "connected");
    assert!(app.snapshot().is_some());
    drop(live);
    server.join().expect("server");
}

fn probe_rows(probes: &[(u32, &str, u64)]) -> Vec<ProbeRow> {
    probes
        .iter()
        .map(|(pid, name, up)| ProbeRow {
            found: Found {
                pid: *pid,
                name: name.to_string(),
                path: format!("/run/user/1000/stallscope/{pid}-{name}.sock").into(),
                alive: true,
            },
            uptime: Some(Duration::from_secs(*up)),
        })
        .collect()
}

/// With several probes and no target, the picker lists them and returns the one chosen.
#[test]
fn the_picker_lists_probes_and_returns_the_choice() {
    let rows = probe_rows(&[(101, "api", 3600), (202, "worker", 65), (303, "cron", 9)]);
    let mut terminal = Terminal::new(TestBackend::new(100, 12)).expect("terminal");
    let (tx, rx) = mpsc::channel();
    for k in [KeyCode::Down, KeyCode::Char('j'), KeyCode::Up, KeyCode::Enter] {
        tx.send(Event::Key(key(k))).expect("send");
    }
    let mut picker = Picker::new(rows.clone());
    let list = || rows.clone();
    let chosen = stallscope::ui::pick_loop(&mut terminal, &mut picker, &rx, &list, &|| false).expect("picker");
    assert_eq!(chosen.map(|f| f.pid), Some(202), "down, down, up: the second probe");
    let screen = text(terminal.backend().buffer());
    assert!(screen.contains("3 probes are running on this machine"), "{screen}");
    assert!(screen.contains("202  worker") && screen.contains("303  cron"), "{screen}");
    assert!(screen.contains("j k ↑ ↓ choose · Enter attach · q Esc quit"), "keys from the table: {screen}");
    let (tx, rx) = mpsc::channel();
    tx.send(Event::Key(key(KeyCode::Char('q')))).expect("send");
    let mut picker = Picker::new(rows.clone());
    assert_eq!(stallscope::ui::pick_loop(&mut terminal, &mut picker, &rx, &list, &|| false).expect("picker"), None);
}

/// A probe whose process exits while the picker is open leaves the list, and is not the one
/// attached to: the picker lists the real socket directory again, as `stallscope list` does.
#[test]
fn the_picker_drops_a_probe_that_exits() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut doomed = std::process::Command::new("sleep").arg("30").spawn().expect("sleep");
    let mut other = std::process::Command::new("sleep").arg("30").spawn().expect("sleep");
    // Sockets as probes leave them; discovery goes by the name and the process.
    std::fs::write(dir.path().join(format!("{}-doomed.sock", doomed.id())), b"").expect("socket");
    std::fs::write(dir.path().join(format!("{}-other.sock", other.id())), b"").expect("socket");
    let mut picker = Picker::new(stallscope::list::probes(dir.path()));
    picker.selected = picker.probes.iter().position(|r| r.found.pid == doomed.id()).expect("listed");
    let mut terminal = Terminal::new(TestBackend::new(100, 12)).expect("terminal");
    let (tx, rx) = mpsc::channel();
    // Killed (SIGKILL: its socket stays behind) while the picker shows it; then Enter.
    doomed.kill().expect("kill");
    doomed.wait().expect("reap");
    tx.send(Event::Key(key(KeyCode::Enter))).expect("send");
    drop(tx);
    let list = || stallscope::list::probes(dir.path());
    let chosen = stallscope::ui::pick_loop(&mut terminal, &mut picker, &rx, &list, &|| false).expect("picker");
    assert_eq!(chosen, None, "neither the exited probe nor another one is attached to");
    let screen = text(terminal.backend().buffer());
    assert!(!screen.contains("doomed") && screen.contains("1 probe is running"), "{screen}");
    assert!(screen.contains(&format!("{}  other", other.id())), "{screen}");
    // Enter again: the one left, now selected.
    let (tx, rx) = mpsc::channel();
    tx.send(Event::Key(key(KeyCode::Enter))).expect("send");
    let chosen = stallscope::ui::pick_loop(&mut terminal, &mut picker, &rx, &list, &|| false).expect("picker");
    assert_eq!(chosen.map(|f| f.pid), Some(other.id()));
    let _ = other.kill();
    let _ = other.wait();
}

/// A task dump's answer reaches the Tasks view: its refusals by their documented prefix, other
/// errors not, and a dump filtered to the location asked about.
#[test]
fn task_dump_answers_reach_the_tasks_view() {
    use stallscope_wire::{TaskDump, TaskGroup};
    let mut app = fixture::app();
    app.view = View::Tasks;
    let loc = "src/watch.rs:88:5".to_string();
    app.tasks_view.detail = Some(loc.clone());
    app.tasks_view.dump = DumpState::Waiting { location: loc.clone() };
    stallscope::ui::receive(&mut app, Received::Error { message: "closing: bad request".into() });
    assert!(matches!(app.tasks_view.dump, DumpState::Waiting { .. }), "an unrelated error is not the answer");
    stallscope::ui::receive(&mut app, Received::Error { message: "task dump refused: a worker is stalled (…)".into() });
    assert!(matches!(&app.tasks_view.dump, DumpState::Failed { reason } if reason.contains("stalled")));
    app.tasks_view.dump = DumpState::Waiting { location: loc.clone() };
    let group = |count, trace: &str, at: Option<&str>| TaskGroup {
        count,
        trace: trace.into(),
        spawned_at: at.map(str::to_string),
        ..TaskGroup::default()
    };
    let dump = TaskDump {
        tasks: 60,
        groups: vec![
            group(50, "╼ watch", Some(&loc)),
            group(7, "╼ other", Some("src/x.rs:1:1")),
            group(3, "╼ ?", None),
        ],
        ..TaskDump::default()
    };
    stallscope::ui::receive(&mut app, Received::TaskDump(dump));
    match &app.tasks_view.dump {
        DumpState::Ready { groups, note, .. } => {
            assert_eq!(groups, &vec![(50, "╼ watch".to_string())]);
            assert!(note.contains("50 idle task(s)") && note.contains("3 task(s) of unknown location"), "{note}");
        }
        other => panic!("{other:?}"),
    }
}

/// The help scrolls to its last line and no further, however long the screen's width makes it
/// (it was capped at 80 lines, short of the end on a narrow screen).
#[test]
fn help_scrolls_to_its_end_and_stops_there() {
    let advice = stallscope_wire::AlertKind::ALL.last().expect("alert kinds").what_to_do();
    let last_word = advice.split_whitespace().last().expect("advice");
    for (w, h) in [(50u16, 16u16), (80, 24), (160, 48)] {
        let mut app = fixture::app();
        press(&mut app, &[KeyCode::Char('?')]);
        assert!(app.help, "? opens the help");
        let mut screen = draw(&mut app, w, h);
        for _ in 0..200 {
            press(&mut app, &[KeyCode::PageDown]);
            screen = draw(&mut app, w, h);
        }
        assert!(screen.contains(last_word), "{w}x{h}: the help's end is not reachable:\n{screen}");
        let bottom = app.help_scroll;
        press(&mut app, &[KeyCode::Down]);
        assert_eq!(app.help_scroll, bottom, "{w}x{h}: scrolled past the end");
        press(&mut app, &[KeyCode::Up]);
        let up = draw(&mut app, w, h);
        if bottom > 0 {
            assert_ne!(up, screen, "{w}x{h}: one line up moves the text at once");
        }
    }
}
