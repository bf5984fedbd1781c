//! Golden files for the flame graph: folded lines and the SVG (pretty XML, no JavaScript,
//! deterministic colours). `BLESS=1 cargo test -p stallscope --test flame` rewrites them.

mod support;

use stallscope::flame::{kind_color, Flame, FlameOptions, FlameSvg};
use stallscope_wire::FrameKind;

fn flame() -> Flame {
    let stalls = support::stalls();
    Flame::from_stalls(&stalls)
}

#[test]
fn folded_lines_golden() {
    let f = flame();
    assert_eq!(f.stalls(), 6);
    assert_eq!(f.stalls_with_samples(), 5);
    assert_eq!(f.samples(), 200 + 45 + 88 + 3 + 55);
    let folded = f.folded();
    for line in folded.lines() {
        let (stack, count) = line.rsplit_once(' ').unwrap();
        assert!(count.parse::<u64>().is_ok(), "{line}");
        assert!(
            stack.starts_with("tokio::runtime::scheduler::multi_thread::worker::Context::run;"),
            "outermost first: {line}"
        );
    }
    // Identical stacks of different stalls are summed: 180 + 55 samples of the sleep.
    assert!(folded.contains("shopd::checkout::load_cart (src/checkout.rs:41);std::thread::sleep;std::sys::pal::unix::thread::Thread::sleep;__GI___clock_nanosleep 235\n"), "{folded}");
    // A `;` inside a type does not split the frame.
    assert!(folded.contains(";<[u8, 32] as digest::Digest>::update;sha2::sha256::compress256 30\n"), "{folded}");
    support::golden("flame.folded", &folded);
}

#[test]
fn svg_golden() {
    let mut svg = Vec::new();
    let options = FlameOptions::titled("shopd (pid 4242): stalled time, 2025-11-21 04:40:00 – 04:40:02 UTC, 6 stalls")
        .for_golden_files();
    flame().write_svg(&options, &mut svg).unwrap();
    let svg = String::from_utf8(svg).unwrap();
    assert!(svg.contains("shopd (pid 4242): stalled time"), "title");
    assert!(!svg.contains("function init("), "no JavaScript in golden files");
    // User frames get their kind's colour.
    let c = kind_color(FrameKind::User, "shopd::checkout::load_cart (src/checkout.rs:41)");
    assert!(svg.contains(&format!("fill=\"rgb({},{},{})\"", c.r, c.g, c.b)), "user colour {c:?}");
    support::golden("flame.svg", &svg);
}

#[test]
fn the_svg_is_reproducible() {
    let options = FlameOptions::titled("t");
    let (mut a, mut b) = (Vec::new(), Vec::new());
    flame().write_svg(&options, &mut a).unwrap();
    flame().write_svg(&options, &mut b).unwrap();
    assert_eq!(a, b);
    assert!(String::from_utf8(a).unwrap().contains("function init("), "the real export is interactive");
}

#[test]
fn kinds_have_their_own_hues() {
    for label in ["a", "shopd::x", "tokio::runtime::x", "std::thread::sleep", "some long name"] {
        let u = kind_color(FrameKind::User, label);
        let t = kind_color(FrameKind::Tokio, label);
        let s = kind_color(FrameKind::Std, label);
        let l = kind_color(FrameKind::Library, label);
        let x = kind_color(FrameKind::Unknown, label);
        assert!(u.r > u.b && u.r > u.g, "user is warm: {u:?}");
        assert!(t.b > t.g && t.r > t.g, "tokio is purple: {t:?}");
        assert!(s.b > s.r && s.b > s.g, "std is blue: {s:?}");
        assert!(l.g > l.r && l.g > l.b, "libraries are green: {l:?}");
        assert!(x.r == x.g && x.g == x.b, "unknown is grey: {x:?}");
    }
}

#[test]
fn no_samples_is_an_error_not_an_empty_picture() {
    let stalls: Vec<_> = support::stalls().into_iter().filter(|s| s.stacks.is_empty()).collect();
    let f = Flame::from_stalls(&stalls);
    assert!(f.is_empty());
    let e = f.write_svg(&FlameOptions::default(), Vec::new()).unwrap_err();
    assert_eq!(e.kind(), std::io::ErrorKind::InvalidData);
}
