//! The one stack fold: stalls' sampled stacks as folded lines, `outer;…;inner count`.
//!
//! As in inferno, the folded map is the only seam between the stalls and every flame graph:
//! `stallscope export --folded` writes it, the SVG is drawn from it (through inferno, in the
//! `stallscope` crate), and the terminal UI builds its flame trees (the Flame view and each
//! stall's detail) from it. Every sampled stack of every stall becomes one folded line
//! (outermost frame first), weighted by its sample count; identical stacks are summed. A
//! frame's label is its function name; user frames also carry their source line
//! (`app::handler (src/main.rs:42)`), since the line that blocks is what the graph is for.
//!
//! ```
//! use stallscope_wire::model::folded::Folded;
//! use stallscope_wire::{Frame, FrameKind, StackCount, Stall};
//! let f = |name: &str, kind| Frame { function: name.into(), file: None, line: None, inlined: false, kind };
//! let stall = Stall {
//!     id: 1, start_unix_ms: 0, duration_ns: Some(50_000_000), elapsed_ns: 50_000_000, worker: 0, tid: 1,
//!     task: Some(7), spawned_at: "src/main.rs:3:5".into(), in_block_in_place: false, samples_lost: 0, anatomy: None, unobserved: false,
//!     stacks: vec![StackCount { frames: vec![f("std::thread::sleep", FrameKind::Std), f("app::work", FrameKind::User)], count: 4 }],
//! };
//! let folded = Folded::from_stalls([&stall]);
//! assert_eq!(folded.folded(), "app::work;std::thread::sleep 4\n");
//! ```

use std::collections::{BTreeMap, HashMap};

use crate::names::short_path;
use crate::{Frame, FrameKind, Stall};

/// The label of a frame in the graph (no `;`, which separates frames).
///
/// ```
/// use stallscope_wire::model::folded::frame_label;
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

/// Folded stacks of stalled time: the one stack fold every flame graph derives from.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Folded {
    /// Folded stack (outermost first, `;`-separated) → samples, sorted by stack.
    stacks: BTreeMap<String, u64>,
    /// Label → kind of the first frame seen with that label.
    kinds: BTreeMap<String, FrameKind>,
    stalls: usize,
    stalls_with_samples: usize,
}

impl Folded {
    /// Folds the sampled stacks of `stalls`.
    pub fn from_stalls<'a>(stalls: impl IntoIterator<Item = &'a Stall>) -> Folded {
        let mut flame = Folded::default();
        let mut labels: HashMap<&Frame, String> = HashMap::new();
        for stall in stalls {
            flame.stalls += 1;
            let mut sampled = false;
            for stack in stall.stacks.iter().filter(|s| s.count > 0 && !s.frames.is_empty()) {
                sampled = true;
                let mut key = String::new();
                for f in stack.frames.iter().rev() {
                    // A frame seen again costs a hash, not a `frame_label`.
                    let label = labels.entry(f).or_insert_with(|| frame_label(f));
                    if !key.is_empty() {
                        key.push(';');
                    }
                    key.push_str(label);
                    if !flame.kinds.contains_key(label.as_str()) {
                        flame.kinds.insert(label.clone(), f.kind);
                    }
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
    /// use stallscope_wire::model::folded::Folded;
    /// use stallscope_wire::{Frame, FrameKind, StackCount, Stall};
    /// let f = |name: &str| Frame { function: name.into(), file: None, line: None, inlined: false, kind: FrameKind::Std };
    /// let stack = |frames: [&str; 2], count| StackCount { frames: frames.iter().rev().map(|&n| f(n)).collect(), count };
    /// let stall = Stall {
    ///     id: 1, start_unix_ms: 0, duration_ns: Some(50_000_000), elapsed_ns: 50_000_000, worker: 0, tid: 1,
    ///     task: Some(7), spawned_at: "src/main.rs:3:5".into(), in_block_in_place: false, samples_lost: 0, anatomy: None, unobserved: false,
    ///     stacks: vec![stack(["main", "read"], 3), stack(["main", "read_all"], 1), stack(["other", "read"], 2)],
    /// };
    /// let flame = Folded::from_stalls([&stall]);
    /// assert_eq!(flame.zoomed(&["main".into(), "read".into()]).folded(), "main;read 3\n");
    /// assert_eq!(flame.zoomed(&["main".into()]).samples(), 4);
    /// assert!(flame.zoomed(&["read".into()]).is_empty());
    /// ```
    pub fn zoomed(&self, path: &[String]) -> Folded {
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
        Folded { stacks, kinds, stalls: self.stalls, stalls_with_samples: self.stalls_with_samples }
    }

    /// Stalls folded.
    pub fn stalls(&self) -> usize {
        self.stalls
    }

    /// Stalls that had at least one stack sample.
    pub fn stalls_with_samples(&self) -> usize {
        self.stalls_with_samples
    }

    /// The folded stacks (outermost frame first, labels `;`-separated) and their samples, in
    /// order.
    pub fn stacks(&self) -> impl Iterator<Item = (&str, u64)> {
        self.stacks.iter().map(|(k, n)| (k.as_str(), *n))
    }

    /// The kind of the first frame folded with this label.
    pub fn kind(&self, label: &str) -> Option<FrameKind> {
        self.kinds.get(label).copied()
    }

    /// Every label with its kind, in label order.
    pub fn kinds(&self) -> impl Iterator<Item = (&str, FrameKind)> {
        self.kinds.iter().map(|(k, v)| (k.as_str(), *v))
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
}
