//! The flame graph of stalled time: the one place that builds folded stacks and hands them to
//! inferno.
//!
//! Every sampled stack of every stall becomes one folded line, `outer;…;inner count`
//! (outermost frame first, as inferno expects), weighted by its sample count; identical stacks
//! are summed. A frame's label is its function name; user frames also carry their source line
//! (`app::handler (src/main.rs:42)`), since the line that blocks is what the graph is for.
//!
//! Colours say what kind of code a frame is (its [`FrameKind`]): user code in reds and oranges,
//! Tokio in purples, the standard library in blues, other libraries in greens, unsymbolized
//! addresses in grey. The colour of each label is chosen here, deterministically (a hash of the
//! label varies the shade within its kind's hue), and passed to inferno as a pre-filled
//! [`PaletteMap`], so the output is byte-for-byte reproducible.
//!
//! ```
//! use stallscope::flame::Flame;
//! use stallscope_wire::{Frame, FrameKind, StackCount, Stall};
//! let f = |name: &str, kind| Frame { function: name.into(), file: None, line: None, inlined: false, kind };
//! let stall = Stall {
//!     id: 1, start_unix_ms: 0, duration_ns: Some(50_000_000), elapsed_ns: 50_000_000, worker: 0, tid: 1,
//!     task: Some(7), spawned_at: "src/main.rs:3:5".into(), in_block_in_place: false, samples_lost: 0, anatomy: None, unobserved: false,
//!     stacks: vec![StackCount { frames: vec![f("std::thread::sleep", FrameKind::Std), f("app::work", FrameKind::User)], count: 4 }],
//! };
//! let flame = Flame::from_stalls([&stall]);
//! assert_eq!(flame.folded(), "app::work;std::thread::sleep 4\n");
//! ```

use std::collections::BTreeMap;
use std::io::{self, Write};

use inferno::flamegraph::color::{BackgroundColor, Color, PaletteMap};
use inferno::flamegraph::{self, Options};
use stallscope_wire::{is_off_cpu_label, Frame, FrameKind, Stall};

use stallscope_wire::names::short_path;

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

/// The label of a frame in the graph (no `;`, which separates frames).
///
/// ```
/// use stallscope::flame::frame_label;
/// use stallscope_wire::{Frame, FrameKind};
/// let user = Frame { function: "app::f".into(), file: Some("/src/app/src/main.rs".into()), line: Some(42), inlined: false, kind: FrameKind::User };
/// assert_eq!(frame_label(&user), "app::f (src/main.rs:42)");
/// let lib = Frame { function: "<[u8; 4] as x::Y>::z".into(), file: None, line: None, inlined: false, kind: FrameKind::Library };
/// assert_eq!(frame_label(&lib), "<[u8, 4] as x::Y>::z");
/// ```
pub fn frame_label(f: &Frame) -> String {
    let function = if f.function.trim().is_empty() { "[unknown]" } else { f.function.trim() };
    let mut label: String = function
        .chars()
        .map(|c| {
            if c == ';' {
                ','
            } else if c.is_control() {
                ' '
            } else {
                c
            }
        })
        .collect();
    if f.kind == FrameKind::User {
        match (&f.file, f.line) {
            (Some(file), Some(line)) => label.push_str(&format!(" ({}:{line})", short_path(file).replace(';', ","))),
            (Some(file), None) => label.push_str(&format!(" ({})", short_path(file).replace(';', ","))),
            _ => {}
        }
    }
    label
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

/// Folded stacks of stalled time, ready for inferno.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Flame {
    /// Folded stack (outermost first, `;`-separated) → samples, sorted by stack.
    stacks: BTreeMap<String, u64>,
    /// Label → kind of the first frame seen with that label.
    kinds: BTreeMap<String, FrameKind>,
    stalls: usize,
    stalls_with_samples: usize,
}

impl Flame {
    /// Folds the sampled stacks of `stalls`.
    pub fn from_stalls<'a>(stalls: impl IntoIterator<Item = &'a Stall>) -> Flame {
        let mut flame = Flame::default();
        for stall in stalls {
            flame.stalls += 1;
            let mut sampled = false;
            for stack in stall.stacks.iter().filter(|s| s.count > 0 && !s.frames.is_empty()) {
                sampled = true;
                let mut key = String::new();
                for f in stack.frames.iter().rev() {
                    let label = frame_label(f);
                    if !key.is_empty() {
                        key.push(';');
                    }
                    key.push_str(&label);
                    flame.kinds.entry(label).or_insert(f.kind);
                }
                *flame.stacks.entry(key).or_insert(0) += stack.count;
            }
            if sampled {
                flame.stalls_with_samples += 1;
            }
        }
        flame
    }

    /// Only the stacks through the frame at `path` (labels as [`frame_label`] gives them,
    /// outermost first), kept whole: as when zooming in inferno's SVG, the frames above it stay,
    /// as a full-width chain. An empty path keeps everything; a path that is not in the graph
    /// leaves it empty. [`stalls`](Self::stalls) and
    /// [`stalls_with_samples`](Self::stalls_with_samples) are left as they were (they count the
    /// stalls folded, not those under the path).
    ///
    /// ```
    /// use stallscope::flame::Flame;
    /// use stallscope_wire::{Frame, FrameKind, StackCount, Stall};
    /// let f = |name: &str| Frame { function: name.into(), file: None, line: None, inlined: false, kind: FrameKind::Std };
    /// let stack = |frames: [&str; 2], count| StackCount { frames: frames.iter().rev().map(|&n| f(n)).collect(), count };
    /// let stall = Stall {
    ///     id: 1, start_unix_ms: 0, duration_ns: Some(50_000_000), elapsed_ns: 50_000_000, worker: 0, tid: 1,
    ///     task: Some(7), spawned_at: "src/main.rs:3:5".into(), in_block_in_place: false, samples_lost: 0, anatomy: None, unobserved: false,
    ///     stacks: vec![stack(["main", "read"], 3), stack(["main", "read_all"], 1), stack(["other", "read"], 2)],
    /// };
    /// let flame = Flame::from_stalls([&stall]);
    /// assert_eq!(flame.zoomed(&["main".into(), "read".into()]).folded(), "main;read 3\n");
    /// assert_eq!(flame.zoomed(&["main".into()]).samples(), 4);
    /// assert!(flame.zoomed(&["read".into()]).is_empty());
    /// ```
    pub fn zoomed(&self, path: &[String]) -> Flame {
        if path.is_empty() {
            return self.clone();
        }
        let prefix = path.join(";");
        // Keys starting with `prefix` are contiguous in sorted order; of those, keep the ones that
        // continue with a frame boundary.
        let stacks: BTreeMap<String, u64> = self
            .stacks
            .range::<str, _>((std::ops::Bound::Included(prefix.as_str()), std::ops::Bound::Unbounded))
            .take_while(|(k, _)| k.starts_with(&prefix))
            .filter(|(k, _)| k.len() == prefix.len() || k.as_bytes().get(prefix.len()) == Some(&b';'))
            .map(|(k, n)| (k.clone(), *n))
            .collect();
        let mut kinds = BTreeMap::new();
        for label in stacks.keys().flat_map(|k| k.split(';')) {
            if !kinds.contains_key(label) {
                if let Some(kind) = self.kinds.get(label) {
                    kinds.insert(label.to_string(), *kind);
                }
            }
        }
        Flame { stacks, kinds, stalls: self.stalls, stalls_with_samples: self.stalls_with_samples }
    }

    /// Stalls folded.
    pub fn stalls(&self) -> usize {
        self.stalls
    }

    /// Stalls that had at least one stack sample.
    pub fn stalls_with_samples(&self) -> usize {
        self.stalls_with_samples
    }

    /// Total samples.
    pub fn samples(&self) -> u64 {
        self.stacks.values().sum()
    }

    /// Whether there is nothing to draw.
    pub fn is_empty(&self) -> bool {
        self.stacks.is_empty()
    }

    /// The folded lines (`frame;frame;frame count`, outermost first), sorted.
    pub fn lines(&self) -> Vec<String> {
        self.stacks.iter().map(|(k, n)| format!("{k} {n}")).collect()
    }

    /// The folded lines as one text, one per line.
    pub fn folded(&self) -> String {
        let mut s = String::new();
        for line in self.lines() {
            s.push_str(&line);
            s.push('\n');
        }
        s
    }

    /// The colour of every label, as inferno's palette map.
    pub fn palette(&self) -> PaletteMap {
        let mut map = PaletteMap::default();
        // inferno's root frame ("all") has an empty name.
        map.insert("", Color { r: 200, g: 200, b: 200 });
        for (label, kind) in &self.kinds {
            map.insert(label, kind_color(*kind, label));
        }
        map
    }

    /// Renders the SVG. Fails with `InvalidData` when there is no sample to draw.
    pub fn write_svg<W: Write>(&self, options: &FlameOptions, w: W) -> io::Result<()> {
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
