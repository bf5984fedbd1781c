//! The flame graph of stalled time as an SVG: the model's folded stacks
//! ([`stallscope_wire::model::folded`], the one stack fold, `outer;…;inner count`) handed to
//! inferno.
//!
//! Colours say what kind of code a frame is (its [`FrameKind`]): user code in reds and oranges,
//! Tokio in purples, the standard library in blues, other libraries in greens, unsymbolized
//! addresses in grey. The colour of each label is chosen here, deterministically (a hash of the
//! label varies the shade within its kind's hue), and passed to inferno as a pre-filled
//! [`PaletteMap`], so the output is byte-for-byte reproducible.
//!
//! ```
//! use stallscope::flame::{Flame, FlameSvg, FlameOptions};
//! use stallscope_wire::{Frame, FrameKind, StackCount, Stall};
//! let f = |name: &str, kind| Frame { function: name.into(), file: None, line: None, inlined: false, kind };
//! let stall = Stall {
//!     id: 1, start_unix_ms: 0, duration_ns: Some(50_000_000), elapsed_ns: 50_000_000, worker: 0, tid: 1,
//!     task: Some(7), spawned_at: "src/main.rs:3:5".into(), in_block_in_place: false, samples_lost: 0, anatomy: None, unobserved: false,
//!     stacks: vec![StackCount { frames: vec![f("std::thread::sleep", FrameKind::Std), f("app::work", FrameKind::User)], count: 4 }],
//! };
//! let flame = Flame::from_stalls([&stall]);
//! assert_eq!(flame.folded(), "app::work;std::thread::sleep 4\n");
//! let mut svg = Vec::new();
//! flame.write_svg(&FlameOptions::default(), &mut svg).unwrap();
//! assert!(String::from_utf8(svg).unwrap().contains("app::work"));
//! ```

use std::io::{self, Write};

use inferno::flamegraph::color::{BackgroundColor, Color, PaletteMap};
use inferno::flamegraph::{self, Options};
pub use stallscope_wire::model::folded::{frame_label, Folded};
use stallscope_wire::{is_off_cpu_label, FrameKind};

/// Options of the SVG.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct FlameOptions {
    /// Title at the top.
    pub title: String,
    /// Line under the title (the colour legend by default).
    pub subtitle: Option<String>,
    /// Indent the XML (for diffs and golden files).
    pub pretty_xml: bool,
    /// Leave out inferno's interactive JavaScript (golden files only: the graph is static then).
    pub no_javascript: bool,
    /// Image width in pixels (inferno's default when `None`).
    pub width: Option<usize>,
}

/// The colour legend used as the default subtitle.
pub const LEGEND: &str =
    "width: stack samples taken during stalls · red/orange: your code · purple: Tokio · blue: std · green: other libraries · grey: unknown · cyan: [off CPU] blocked in a system call";

impl Default for FlameOptions {
    fn default() -> Self {
        FlameOptions {
            title: "stalled time".to_string(),
            subtitle: Some(LEGEND.to_string()),
            pretty_xml: false,
            no_javascript: false,
            width: None,
        }
    }
}

impl FlameOptions {
    /// Default options with this title.
    pub fn titled(title: impl Into<String>) -> Self {
        FlameOptions { title: title.into(), ..FlameOptions::default() }
    }

    /// Sets [`pretty_xml`](Self::pretty_xml) and [`no_javascript`](Self::no_javascript), as
    /// golden-file tests want.
    pub fn for_golden_files(mut self) -> Self {
        self.pretty_xml = true;
        self.no_javascript = true;
        self
    }
}

/// The colour of a label of this kind: a fixed hue per kind, the shade picked by an FNV-1a hash
/// of the label.
pub fn kind_color(kind: FrameKind, label: &str) -> Color {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in label.bytes() {
        h ^= b as u64;
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    let v = |shift: u32| ((h >> shift) & 0xff) as f32 / 255.0;
    let t = |base: u8, span: f32, x: f32| (base as f32 + span * x) as u8;
    let (a, b) = (v(8), v(24));
    match kind {
        // Warm: the service's own code is what the reader looks for.
        FrameKind::User => Color { r: t(225, 30.0, a), g: t(70, 90.0, b), b: t(40, 30.0, a) },
        FrameKind::Tokio => Color { r: t(160, 40.0, a), g: t(110, 35.0, b), b: t(215, 40.0, a) },
        FrameKind::Std => Color { r: t(90, 50.0, b), g: t(160, 40.0, a), b: t(220, 35.0, b) },
        FrameKind::Library => Color { r: t(120, 50.0, a), g: t(190, 40.0, b), b: t(90, 40.0, a) },
        FrameKind::Unknown if is_off_cpu_label(kind, label) => {
            // Cool and bright: time the thread spent off CPU, asleep in the kernel
            // (`Frame::off_cpu`), against the warm colours of code that ran.
            Color { r: t(40, 30.0, a), g: t(190, 40.0, b), b: t(215, 30.0, a) }
        }
        FrameKind::Unknown => {
            let g = t(175, 40.0, a);
            Color { r: g, g, b: g }
        }
    }
}

/// The model's folded stacks ([`Folded`]), the seam every flame graph is drawn from.
pub type Flame = Folded;

/// Draws folded stacks with inferno.
pub trait FlameSvg {
    /// The colour of every label, as inferno's palette map.
    fn palette(&self) -> PaletteMap;

    /// Renders the SVG. Fails with `InvalidData` when there is no sample to draw.
    fn write_svg<W: Write>(&self, options: &FlameOptions, w: W) -> io::Result<()>;
}

impl FlameSvg for Folded {
    fn palette(&self) -> PaletteMap {
        let mut map = PaletteMap::default();
        // inferno's root frame ("all") has an empty name.
        map.insert("", Color { r: 200, g: 200, b: 200 });
        for (label, kind) in self.kinds() {
            map.insert(label, kind_color(kind, label));
        }
        map
    }

    fn write_svg<W: Write>(&self, options: &FlameOptions, w: W) -> io::Result<()> {
        if self.is_empty() {
            return Err(io::Error::new(io::ErrorKind::InvalidData, "no stack samples to draw"));
        }
        let mut palette = self.palette();
        let mut opt = Options::default();
        opt.title = options.title.clone();
        opt.subtitle = options.subtitle.clone();
        opt.pretty_xml = options.pretty_xml;
        opt.no_javascript = options.no_javascript;
        opt.image_width = options.width;
        opt.deterministic = true;
        opt.palette_map = Some(&mut palette);
        opt.bgcolors = Some(BackgroundColor::Grey);
        opt.count_name = "samples".to_string();
        opt.name_type = "Frame:".to_string();
        let lines = self.lines();
        flamegraph::from_lines(&mut opt, lines.iter().map(String::as_str), w)
    }
}
