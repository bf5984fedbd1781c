//! The flame graph of stalled time as a tree, and the cursor that walks it: pure data, no
//! terminal code.
//!
//! [`FlameTree::from_folded`] is built from the one stack fold, the model's [`Folded`] map (the
//! same one the SVG and `--folded` exports write, so every label matches them), kept as a tree: node 0 is the root (`all`, every sample), each other node is one
//! frame on one path, with the samples that passed through it (`total`) and those that ended in
//! it (`self_count`). Children are ordered by label, so the same samples always give the same
//! tree, and nodes are numbered in that order, depth first: a node's subtree is the contiguous
//! range of indices [`FlameTree::subtree`], and left-to-right on screen is ascending index.
//!
//! [`FlameCursor`] is what the user changes: the zoomed node (drawn full width), the selected
//! node and the search text. [`layout`] turns a zoom and a width in columns into the spans that
//! the widget paints: the icicle is drawn top-down, the zoomed node on the first row, children
//! left-aligned under their parent (a gap at a parent's right end is its self time).
//!
//! ```
//! use stallscope::ui::state::flame_tree::{layout, FlameCursor, FlameTree};
//! use stallscope_wire::{Frame, FrameKind, StackCount, Stall};
//! let f = |name: &str| Frame { function: name.into(), file: None, line: None, inlined: false, kind: FrameKind::Std };
//! let stack = |frames: &[&str], count| StackCount { frames: frames.iter().rev().map(|&n| f(n)).collect(), count };
//! let stall = Stall {
//!     id: 1, start_unix_ms: 0, duration_ns: Some(50_000_000), elapsed_ns: 50_000_000, worker: 0, tid: 1,
//!     task: Some(7), spawned_at: "src/main.rs:3:5".into(), in_block_in_place: false, samples_lost: 0, anatomy: None, unobserved: false,
//!     stacks: vec![stack(&["main", "read"], 3), stack(&["main", "sleep"], 1)],
//! };
//! let tree = FlameTree::from_stalls([&stall]);
//! assert_eq!(tree.root().total, 4);
//! let mut cursor = FlameCursor::default();
//! cursor.down(&tree); // main
//! cursor.down(&tree); // read, the larger child
//! assert_eq!(tree.path_labels(cursor.selected), ["main", "read"]);
//! let spans = layout(&tree, cursor.zoom, 8);
//! assert_eq!(spans.last().map(|s| (s.x0, s.x1)), Some((6, 8))); // sleep: 1/4 of 8 columns
//! ```

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::ops::Range;

use stallscope_wire::model::folded::Folded;
use stallscope_wire::{FrameKind, Stall};

/// The label of the root node.
pub const ROOT_LABEL: &str = "all";

/// One frame on one path of the flame graph.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FlameNode {
    /// The frame's label, as in the SVG
    /// ([`frame_label`](stallscope_wire::model::folded::frame_label)); [`ROOT_LABEL`] for the root.
    pub label: String,
    /// What kind of code the frame is (the kind the folded map keeps for its label: that of
    /// the first frame folded with it, as in the SVG; `Unknown` for the root).
    pub kind: FrameKind,
    /// Samples whose stack passes through this node.
    pub total: u64,
    /// Samples whose stack ends at this node (it was the innermost frame).
    pub self_count: u64,
    /// The caller; `None` for the root.
    pub parent: Option<usize>,
    /// The callees, ordered by label.
    pub children: Vec<usize>,
    /// Distance from the root (the root is 0).
    pub depth: usize,
}

/// The flame graph as a tree. Node 0 is the root; nodes are numbered depth first, children in
/// label order. Two trees are equal when their nodes are.
#[derive(Debug, Clone)]
pub struct FlameTree {
    nodes: Vec<FlameNode>,
    /// Exclusive end of each node's subtree range.
    ends: Vec<usize>,
    /// Nodes of each depth, ascending (that is, left to right).
    by_depth: Vec<Vec<usize>>,
    /// Index into `lower_labels` of each node's label.
    label_ids: Vec<usize>,
    /// Every distinct label, lowercased, for search.
    lower_labels: Vec<String>,
}

/// The result of [`FlameTree::search`].
#[derive(Debug, Clone, PartialEq)]
pub struct Search {
    /// Whether each node matched, by index.
    matched: Vec<bool>,
    /// Number of matching nodes.
    pub count: usize,
    /// Samples through matching frames, a match nested under another match counted once.
    pub samples: u64,
    /// `samples` over all samples (0 when there are none).
    pub share: f64,
}

impl Search {
    /// Whether node `i` matched.
    pub fn is_match(&self, i: usize) -> bool {
        self.matched.get(i).copied().unwrap_or(false)
    }

    /// The matching nodes, ascending.
    pub fn matches(&self) -> impl Iterator<Item = usize> + '_ {
        self.matched.iter().enumerate().filter(|(_, m)| **m).map(|(i, _)| i)
    }
}

// === impl FlameTree ===

impl PartialEq for FlameTree {
    fn eq(&self, other: &Self) -> bool {
        // Everything else is derived from the nodes (label interning order may differ).
        self.nodes == other.nodes
    }
}

impl Eq for FlameTree {}

impl Default for FlameTree {
    /// A tree with no sample: the bare root.
    fn default() -> Self {
        FlameTree::from_folded(&Folded::default())
    }
}

/// A node while the tree is being built, before it is renumbered.
struct Building {
    label: usize,
    kind: FrameKind,
    parent: usize,
    children: Vec<usize>,
}

/// The maps used while building.
struct Builder {
    nodes: Vec<Building>,
    /// Samples through each node, by index (apart from `nodes`: the hot loop touches only this).
    totals: Vec<u64>,
    /// Samples ending at each node.
    self_counts: Vec<u64>,
    /// Distinct labels, by id (0 is the root's).
    labels: Vec<String>,
    /// Label → id (different frames can share a label).
    label_ids: FastMap<String, usize>,
    /// (parent node, label id) → node.
    child_of: FastMap<(usize, usize), usize>,
}

impl Builder {
    fn new() -> Self {
        Builder {
            nodes: vec![Building { label: 0, kind: FrameKind::Unknown, parent: 0, children: Vec::new() }],
            totals: vec![0],
            self_counts: vec![0],
            labels: vec![ROOT_LABEL.to_string()],
            label_ids: FastMap::default(),
            child_of: FastMap::default(),
        }
    }

    /// The node for `label` (of this kind) under node `at`, made if needed.
    fn child(&mut self, at: usize, text: &str, kind: FrameKind) -> usize {
        let label = match self.label_ids.get(text) {
            Some(&id) => id,
            None => {
                let id = self.labels.len();
                self.labels.push(text.to_string());
                self.label_ids.insert(text.to_string(), id);
                id
            }
        };
        let (nodes, totals, self_counts) = (&mut self.nodes, &mut self.totals, &mut self.self_counts);
        *self.child_of.entry((at, label)).or_insert_with(|| {
            let id = nodes.len();
            nodes.push(Building { label, kind, parent: at, children: Vec::new() });
            totals.push(0);
            self_counts.push(0);
            nodes[at].children.push(id);
            id
        })
    }
}

impl FlameTree {
    /// The tree of the sampled stacks of `stalls`, through their [`Folded`] map.
    pub fn from_stalls<'a>(stalls: impl IntoIterator<Item = &'a Stall>) -> FlameTree {
        FlameTree::from_folded(&Folded::from_stalls(stalls))
    }

    /// The tree of folded stacks: each line is a path from the root, its count the samples
    /// that ended there. A node's kind is the kind [`Folded`] kept for its label.
    pub fn from_folded(folded: &Folded) -> FlameTree {
        let mut b = Builder::new();
        // The previous stack's labels and nodes, outermost first: folded lines are sorted, so
        // neighbours share their outer frames, which then cost a comparison, not a lookup.
        let mut prev: Vec<(&str, usize)> = Vec::new();
        for (stack, count) in folded.stacks() {
            b.totals[0] = b.totals[0].saturating_add(count);
            let mut at = 0;
            let mut shared = true;
            let mut depth = 0;
            for label in stack.split(';') {
                let next = match prev.get(depth) {
                    Some(&(l, node)) if shared && l == label => node,
                    _ => {
                        shared = false;
                        b.child(at, label, folded.kind(label).unwrap_or(FrameKind::Unknown))
                    }
                };
                match prev.get_mut(depth) {
                    Some(slot) => *slot = (label, next),
                    None => prev.push((label, next)),
                }
                b.totals[next] = b.totals[next].saturating_add(count);
                at = next;
                depth += 1;
            }
            prev.truncate(depth);
            b.self_counts[at] = b.self_counts[at].saturating_add(count);
        }
        let label_of: Vec<usize> = b.nodes.iter().map(|n| n.label).collect();
        for node in &mut b.nodes {
            node.children.sort_unstable_by(|&x, &y| b.labels[label_of[x]].cmp(&b.labels[label_of[y]]));
        }
        Self::renumber(b)
    }

    /// Numbers the built nodes depth first (children in the order given) and fills the indexes.
    fn renumber(b: Builder) -> FlameTree {
        let Builder { nodes: mut built, totals, self_counts, labels, .. } = b;
        // Depth-first order, by old index.
        let mut order = Vec::with_capacity(built.len());
        let mut stack = vec![0usize];
        while let Some(i) = stack.pop() {
            order.push(i);
            stack.extend(built[i].children.iter().rev());
        }
        let mut new_index = vec![0usize; built.len()];
        for (new, &old) in order.iter().enumerate() {
            new_index[old] = new;
        }
        let mut nodes: Vec<FlameNode> = Vec::with_capacity(order.len());
        let mut label_ids = Vec::with_capacity(order.len());
        for &old in &order {
            let b = &mut built[old];
            let parent = if old == 0 { None } else { Some(new_index[b.parent]) };
            let depth = parent.map_or(0, |p| nodes[p].depth + 1);
            nodes.push(FlameNode {
                label: labels[b.label].clone(),
                kind: b.kind,
                total: totals[old],
                self_count: self_counts[old],
                parent,
                children: std::mem::take(&mut b.children).into_iter().map(|c| new_index[c]).collect(),
                depth,
            });
            label_ids.push(b.label);
        }
        // Subtree sizes: children come after their parent, so one backward pass suffices.
        let mut sizes = vec![1usize; nodes.len()];
        for i in (1..nodes.len()).rev() {
            if let Some(p) = nodes[i].parent {
                sizes[p] += sizes[i];
            }
        }
        let ends = sizes.iter().enumerate().map(|(i, s)| i + s).collect();
        let mut by_depth: Vec<Vec<usize>> = Vec::new();
        for (i, node) in nodes.iter().enumerate() {
            if by_depth.len() <= node.depth {
                by_depth.resize_with(node.depth + 1, Vec::new);
            }
            by_depth[node.depth].push(i);
        }
        let lower_labels = labels.iter().map(|l| l.to_lowercase()).collect();
        FlameTree { nodes, ends, by_depth, label_ids, lower_labels }
    }

    /// Number of nodes, the root included (so at least 1).
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// Whether the tree has no frame (only the root, with no sample).
    pub fn is_empty(&self) -> bool {
        self.nodes.len() <= 1
    }

    /// Node `i`, if there is one.
    pub fn node(&self, i: usize) -> Option<&FlameNode> {
        self.nodes.get(i)
    }

    /// The root (`all`): its total is every sample.
    pub fn root(&self) -> &FlameNode {
        &self.nodes[0]
    }

    /// All nodes, by index.
    pub fn nodes(&self) -> &[FlameNode] {
        &self.nodes
    }

    /// The indices of node `i` and everything under it (empty for an index out of range).
    pub fn subtree(&self, i: usize) -> Range<usize> {
        match self.ends.get(i) {
            Some(&end) => i..end,
            None => 0..0,
        }
    }

    /// Whether `descendant` is `ancestor` or lies under it.
    pub fn contains(&self, ancestor: usize, descendant: usize) -> bool {
        self.subtree(ancestor).contains(&descendant)
    }

    /// Number of levels (the root's alone is 1).
    pub fn height(&self) -> usize {
        self.by_depth.len()
    }

    /// Labels from the root's child down to node `i` (empty for the root or an index out of
    /// range). With [`find_path`](Self::find_path), this finds "the same frame" in a tree built
    /// from newer data.
    pub fn path_labels(&self, i: usize) -> Vec<String> {
        let mut path = Vec::new();
        let mut at = if i < self.nodes.len() { Some(i) } else { None };
        while let Some(n) = at.filter(|&n| n != 0) {
            path.push(self.nodes[n].label.clone());
            at = self.nodes[n].parent;
        }
        path.reverse();
        path
    }

    /// The node at the end of this path of labels (from the root's child); `Some(0)` for an
    /// empty path.
    pub fn find_path(&self, path: &[String]) -> Option<usize> {
        let (found, matched) = self.find_prefix(path);
        (matched == path.len()).then_some(found)
    }

    /// The deepest node along `path`, and how many labels of it were found.
    pub fn find_prefix(&self, path: &[String]) -> (usize, usize) {
        let mut at = 0;
        for (n, label) in path.iter().enumerate() {
            let children = &self.nodes[at].children;
            match children.binary_search_by(|&c| self.nodes[c].label.as_str().cmp(label)) {
                Ok(k) => at = children[k],
                Err(_) => return (at, n),
            }
        }
        (at, path.len())
    }

    /// Frames whose label contains `needle`, ignoring case. The root is not a frame and never
    /// matches; an empty needle matches nothing.
    pub fn search(&self, needle: &str) -> Search {
        let mut matched = vec![false; self.nodes.len()];
        let mut count = 0;
        let mut samples = 0u64;
        if !needle.is_empty() {
            let needle = needle.to_lowercase();
            let label_matches: Vec<bool> = self.lower_labels.iter().map(|l| l.contains(&needle)).collect();
            for (i, slot) in matched.iter_mut().enumerate().skip(1) {
                *slot = label_matches[self.label_ids[i]];
                count += usize::from(*slot);
            }
            // Outermost matches only: skip the subtree of each match.
            let mut i = 1;
            while i < self.nodes.len() {
                if matched[i] {
                    samples = samples.saturating_add(self.nodes[i].total);
                    i = self.ends[i];
                } else {
                    i += 1;
                }
            }
        }
        let total = self.root().total;
        let share = if total == 0 { 0.0 } else { samples as f64 / total as f64 };
        Search { matched, count, samples, share }
    }

    /// `part` as a share of all samples (0 when there are none).
    pub fn share(&self, part: u64) -> f64 {
        let total = self.root().total;
        if total == 0 {
            0.0
        } else {
            part as f64 / total as f64
        }
    }

    /// The node before (`forward == false`) or after `i` on the same row, within `within`'s
    /// subtree.
    fn neighbour(&self, i: usize, within: usize, forward: bool) -> Option<usize> {
        let row = self.by_depth.get(self.nodes.get(i)?.depth)?;
        let k = row.binary_search(&i).ok()?;
        let next = if forward { row.get(k + 1) } else { k.checked_sub(1).and_then(|k| row.get(k)) };
        next.copied().filter(|&n| self.contains(within, n))
    }
}

/// A hash map with [`FxHasher`]: building the tree is mostly hashing.
type FastMap<K, V> = HashMap<K, V, BuildHasherDefault<FxHasher>>;

/// The Fx hash (as in rustc): a multiply and a rotate per word, several times faster than the
/// default SipHash on short keys. Not resistant to chosen collisions, which do not matter here: the
/// keys are the symbol names of the profiled service.
#[derive(Debug, Default, Clone, Copy)]
struct FxHasher {
    hash: u64,
}

impl FxHasher {
    fn add(&mut self, word: u64) {
        self.hash = (self.hash.rotate_left(5) ^ word).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }
}

impl Hasher for FxHasher {
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for chunk in &mut chunks {
            let mut word = [0u8; 8];
            word.copy_from_slice(chunk);
            self.add(u64::from_le_bytes(word));
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            let mut word = [0u8; 8];
            word[..rest.len()].copy_from_slice(rest);
            self.add(u64::from_le_bytes(word));
        }
    }

    fn write_u8(&mut self, n: u8) {
        self.add(n as u64);
    }

    fn write_u32(&mut self, n: u32) {
        self.add(n as u64);
    }

    fn write_u64(&mut self, n: u64) {
        self.add(n);
    }

    fn write_usize(&mut self, n: usize) {
        self.add(n as u64);
    }

    fn finish(&self) -> u64 {
        // The multiply leaves the low bits, which pick the bucket, the poorest: bring high bits
        // down (as rustc-hash 2 does).
        self.hash.rotate_left(26)
    }
}

// === Cursor ===

/// What the user is looking at in the flame graph: the zoomed node, the selected node and the
/// search. Indices refer to one [`FlameTree`]; after rebuilding the tree, call
/// [`rebase`](Self::rebase). Every method tolerates indices that do not fit the tree (they are
/// brought back to the root first).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FlameCursor {
    /// The node drawn at full width on the top row.
    pub zoom: usize,
    /// The selected node (always `zoom` or under it).
    pub selected: usize,
    /// The search text, when searching.
    pub search: Option<String>,
}

impl FlameCursor {
    /// The search text when there is one that can match (not empty).
    pub fn active_search(&self) -> Option<&str> {
        self.search.as_deref().filter(|s| !s.is_empty())
    }

    /// Brings the indices back into `tree`: a zoom out of range goes to the root, a selection
    /// outside the zoomed subtree goes to the zoomed node.
    pub fn clamp(&mut self, tree: &FlameTree) {
        if self.zoom >= tree.len() {
            self.zoom = 0;
        }
        if !tree.contains(self.zoom, self.selected) {
            self.selected = self.zoom;
        }
    }

    /// Selects the caller of the selected node, but not above the zoomed node.
    pub fn up(&mut self, tree: &FlameTree) {
        self.clamp(tree);
        if self.selected != self.zoom {
            if let Some(p) = tree.node(self.selected).and_then(|n| n.parent) {
                self.selected = p;
            }
        }
    }

    /// Selects the child of the selected node with the most samples (the first on a tie).
    pub fn down(&mut self, tree: &FlameTree) {
        self.clamp(tree);
        let Some(node) = tree.node(self.selected) else { return };
        let mut best: Option<(usize, u64)> = None;
        for &c in &node.children {
            let total = tree.node(c).map_or(0, |n| n.total);
            if best.is_none_or(|(_, t)| total > t) {
                best = Some((c, total));
            }
        }
        if let Some((c, _)) = best {
            self.selected = c;
        }
    }

    /// Selects the node to the left on the same row (possibly under another parent), within the
    /// zoomed subtree.
    pub fn left(&mut self, tree: &FlameTree) {
        self.clamp(tree);
        if let Some(n) = tree.neighbour(self.selected, self.zoom, false) {
            self.selected = n;
        }
    }

    /// Selects the node to the right on the same row (possibly under another parent), within
    /// the zoomed subtree.
    pub fn right(&mut self, tree: &FlameTree) {
        self.clamp(tree);
        if let Some(n) = tree.neighbour(self.selected, self.zoom, true) {
            self.selected = n;
        }
    }

    /// Zooms to the selected node: it becomes the full width.
    pub fn zoom_in(&mut self, tree: &FlameTree) {
        self.clamp(tree);
        self.zoom = self.selected;
    }

    /// Zooms out one level, to the zoomed node's caller; the selection stays.
    pub fn zoom_out(&mut self, tree: &FlameTree) {
        self.clamp(tree);
        if let Some(p) = tree.node(self.zoom).and_then(|n| n.parent) {
            self.zoom = p;
        }
    }

    /// Back to the whole graph with the root selected. The search stays.
    pub fn reset(&mut self) {
        self.zoom = 0;
        self.selected = 0;
    }

    /// This cursor moved from `old` to the same frames (by label path) in `new`, a tree built
    /// from newer data. A frame that is gone is replaced by its deepest ancestor still present (at
    /// worst the root); a selection that would fall outside the zoom becomes the zoomed node. The
    /// search stays.
    pub fn rebase(&self, old: &FlameTree, new: &FlameTree) -> FlameCursor {
        let mut from = self.clone();
        from.clamp(old);
        let mut to = FlameCursor {
            zoom: new.find_prefix(&old.path_labels(from.zoom)).0,
            selected: new.find_prefix(&old.path_labels(from.selected)).0,
            search: from.search,
        };
        to.clamp(new);
        to
    }
}

// === Layout ===

/// One node's place in the icicle: row `depth` (0 is the zoomed node) and columns `x0..x1`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FlameSpan {
    /// The node.
    pub node: usize,
    /// Row, counted from the zoomed node (0).
    pub depth: usize,
    /// First column.
    pub x0: usize,
    /// Column after the last (`x1 > x0`).
    pub x1: usize,
}

impl FlameSpan {
    /// Columns covered.
    pub fn width(&self) -> usize {
        self.x1.saturating_sub(self.x0)
    }
}

/// The spans of `zoom`'s subtree in `width` columns, ascending by node (so each row is left to
/// right).
///
/// A node's columns are its samples mapped onto the zoomed node's samples and rounded down at
/// both ends: widths are proportional to `total / zoom.total`, siblings never overlap, a child
/// lies within its parent, and children start at their parent's left edge (self time is the gap
/// on the right). Nodes narrower than one column are left out, with their subtrees. An empty
/// zoomed node (or an index out of range) gives no span.
pub fn layout(tree: &FlameTree, zoom: usize, width: usize) -> Vec<FlameSpan> {
    let mut spans = Vec::new();
    let Some(z) = tree.node(zoom) else { return spans };
    if z.total == 0 || width == 0 {
        return spans;
    }
    let (width_u, total_u) = (width as u128, z.total as u128);
    let scale = |samples: u64| (samples as u128 * width_u / total_u) as usize;
    // (node, first sample, depth from zoom), depth first.
    let mut stack = vec![(zoom, 0u64, 0usize)];
    while let Some((i, start, depth)) = stack.pop() {
        let Some(node) = tree.node(i) else { continue };
        // Narrower than a column: left out with everything under it.
        if (node.total as u128) * width_u < total_u {
            continue;
        }
        let (x0, x1) = (scale(start), scale(start.saturating_add(node.total)));
        if x1 <= x0 {
            continue;
        }
        spans.push(FlameSpan { node: i, depth, x0, x1 });
        // Children's first samples, pushed in reverse so they pop left to right.
        let mut offset = start;
        let mut starts: Vec<(usize, u64)> = Vec::with_capacity(node.children.len());
        for &c in &node.children {
            starts.push((c, offset));
            offset = offset.saturating_add(tree.node(c).map_or(0, |n| n.total));
        }
        stack.extend(starts.into_iter().rev().map(|(c, s)| (c, s, depth + 1)));
    }
    spans
}

/// The first row (depth from the zoomed node) to draw in `height` rows so that the selected
/// node is visible: 0 while it fits, otherwise the selected row is the last one drawn.
pub fn scroll_top(tree: &FlameTree, cursor: &FlameCursor, height: usize) -> usize {
    let depth = |i: usize| tree.node(i).map_or(0, |n| n.depth);
    let row = depth(cursor.selected).saturating_sub(depth(cursor.zoom));
    if height == 0 || row < height {
        0
    } else {
        row + 1 - height
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use stallscope_wire::model::folded::frame_label;
    use stallscope_wire::{Frame, StackCount};

    fn frame(name: &str) -> Frame {
        let kind = if name.starts_with("app::") { FrameKind::User } else { FrameKind::Std };
        Frame { function: name.into(), file: None, line: None, inlined: false, kind }
    }

    /// A stall whose stacks are given outermost first, as `"a;b;c"`.
    fn stall(stacks: &[(&str, u64)]) -> Stall {
        crate::ui::fixture::folded_stall(stacks, |name| frame(name).kind)
    }

    fn labels(tree: &FlameTree, ids: &[usize]) -> Vec<String> {
        ids.iter().map(|&i| tree.nodes()[i].label.clone()).collect()
    }

    fn by_path(tree: &FlameTree, path: &str) -> usize {
        let path: Vec<String> = path.split(';').map(String::from).collect();
        tree.find_path(&path).unwrap_or_else(|| panic!("no node {path:?}"))
    }

    /// main ─┬─ serve ─┬─ fetch 6
    ///       │         └─ parse 2
    ///       └─ tick 2
    fn fixture() -> FlameTree {
        let a = stall(&[("main;serve;fetch", 4), ("main;tick", 2)]);
        let b = stall(&[("main;serve;parse", 2), ("main;serve;fetch", 2), ("main;serve;empty", 0)]);
        FlameTree::from_stalls([&a, &b])
    }

    #[test]
    fn totals_self_counts_and_depths() {
        let tree = fixture();
        assert_eq!(tree.len(), 6);
        assert_eq!(tree.root().label, "all");
        assert_eq!(tree.root().total, 10);
        let main = by_path(&tree, "main");
        let serve = by_path(&tree, "main;serve");
        let fetch = by_path(&tree, "main;serve;fetch");
        let n = |i: usize| &tree.nodes()[i];
        assert_eq!((n(main).total, n(main).self_count, n(main).depth), (10, 0, 1));
        assert_eq!((n(serve).total, n(serve).self_count, n(serve).depth), (8, 0, 2));
        assert_eq!((n(fetch).total, n(fetch).self_count, n(fetch).depth), (6, 6, 3));
        assert_eq!(n(fetch).parent, Some(serve));
        assert_eq!(n(serve).parent, Some(main));
        assert_eq!(tree.root().parent, None);
        assert_eq!(tree.height(), 4);
        // Zero-count stacks add no node.
        assert_eq!(tree.find_path(&["main".into(), "serve".into(), "empty".into()]), None);
    }

    #[test]
    fn self_count_where_a_stack_ends_inside_another() {
        let tree = FlameTree::from_stalls([&stall(&[("main", 3), ("main;work", 1)])]);
        let main = by_path(&tree, "main");
        assert_eq!((tree.nodes()[main].total, tree.nodes()[main].self_count), (4, 3));
    }

    #[test]
    fn children_are_ordered_by_label_and_numbered_depth_first() {
        let tree = FlameTree::from_stalls([&stall(&[("m;zeta", 1), ("m;alpha;x", 1), ("m;beta", 5), ("m;alpha", 1)])]);
        let m = by_path(&tree, "m");
        assert_eq!(labels(&tree, &tree.nodes()[m].children), ["alpha", "beta", "zeta"]);
        let order: Vec<&str> = tree.nodes().iter().map(|n| n.label.as_str()).collect();
        assert_eq!(order, ["all", "m", "alpha", "x", "beta", "zeta"]);
        assert_eq!(tree.subtree(by_path(&tree, "m;alpha")), 2..4);
        // Input order does not matter.
        let again = FlameTree::from_stalls([&stall(&[("m;alpha", 1), ("m;beta", 5), ("m;alpha;x", 1), ("m;zeta", 1)])]);
        assert_eq!(tree, again);
    }

    #[test]
    fn labels_match_the_svg_export() {
        let user = Frame {
            function: "app::handler".into(),
            file: Some("/src/app/src/main.rs".into()),
            line: Some(42),
            inlined: false,
            kind: FrameKind::User,
        };
        let mut s = stall(&[]);
        s.stacks = vec![StackCount { frames: vec![frame("std::thread::sleep"), user.clone()], count: 2 }];
        let tree = FlameTree::from_stalls([&s]);
        assert_eq!(tree.path_labels(2), [frame_label(&user), "std::thread::sleep".to_string()]);
        assert_eq!(tree.nodes()[1].kind, FrameKind::User);
        let folded = Folded::from_stalls([&s]).folded();
        assert_eq!(folded, format!("{} 2\n", tree.path_labels(2).join(";")));
    }

    #[test]
    fn every_node_total_matches_the_zoomed_svg_export() {
        let s = stall(&[("m;a;x", 3), ("m;a", 1), ("m;ab;x", 2), ("m;a;x;y", 4), ("n", 5)]);
        let tree = FlameTree::from_stalls([&s]);
        let flame = Folded::from_stalls([&s]);
        for (i, node) in tree.nodes().iter().enumerate() {
            let zoomed = flame.zoomed(&tree.path_labels(i));
            assert_eq!(zoomed.samples(), node.total, "{:?}", tree.path_labels(i));
        }
        // "m;a" must not take in "m;ab".
        assert_eq!(flame.zoomed(&["m".into(), "a".into()]).folded(), "m;a 1\nm;a;x 3\nm;a;x;y 4\n");
    }

    #[test]
    fn empty_input_gives_a_bare_root() {
        let tree = FlameTree::from_stalls(std::iter::empty());
        assert_eq!(tree, FlameTree::default());
        assert!(tree.is_empty());
        assert_eq!((tree.len(), tree.root().total), (1, 0));
        assert!(layout(&tree, 0, 20).is_empty());
        let search = tree.search("x");
        assert_eq!((search.count, search.samples, search.share), (0, 0, 0.0));
        let mut cursor = FlameCursor::default();
        cursor.down(&tree);
        cursor.right(&tree);
        cursor.zoom_out(&tree);
        assert_eq!((cursor.zoom, cursor.selected), (0, 0));
    }

    #[test]
    fn search_is_case_insensitive_and_counts_nested_matches_once() {
        let tree = FlameTree::from_stalls([&stall(&[
            ("main;Mutex::lock;mutex_wait", 3),
            ("main;Mutex::lock", 1),
            ("main;other;mutex_wait", 2),
            ("main;other", 4),
        ])]);
        let search = tree.search("MUTEX");
        assert_eq!(search.count, 3);
        let matched: Vec<Vec<String>> = search.matches().map(|i| tree.path_labels(i)).collect();
        assert_eq!(
            matched,
            [
                vec!["main", "Mutex::lock"],
                vec!["main", "Mutex::lock", "mutex_wait"],
                vec!["main", "other", "mutex_wait"]
            ]
        );
        // 4 under Mutex::lock (its nested mutex_wait not counted again) + 2.
        assert_eq!(search.samples, 6);
        assert!((search.share - 0.6).abs() < 1e-9);
        assert!(!search.is_match(0) && !search.is_match(99));
        assert_eq!(tree.search("all").count, 0, "the root is not a frame");
        assert_eq!(tree.search("").count, 0);
    }

    #[test]
    fn find_path_and_rebase_follow_labels_into_a_new_tree() {
        let old = fixture();
        let mut cursor = FlameCursor {
            zoom: by_path(&old, "main;serve"),
            selected: by_path(&old, "main;serve;parse"),
            ..FlameCursor::default()
        };
        // New data: a frame that sorts first shifts every index.
        let new = FlameTree::from_stalls([&stall(&[("aaa", 5), ("main;serve;parse", 1), ("main;serve;fetch", 1)])]);
        cursor.search = Some("x".into());
        let cursor = cursor.rebase(&old, &new);
        assert_eq!(cursor.search.as_deref(), Some("x"));
        assert_eq!(new.path_labels(cursor.zoom), ["main", "serve"]);
        assert_eq!(new.path_labels(cursor.selected), ["main", "serve", "parse"]);
        assert_ne!(cursor.selected, by_path(&old, "main;serve;parse"));
        // A frame that disappeared falls back to its deepest surviving ancestor.
        let gone = FlameTree::from_stalls([&stall(&[("main;serve;fetch", 1)])]);
        let cursor = cursor.rebase(&new, &gone);
        assert_eq!(gone.path_labels(cursor.zoom), ["main", "serve"]);
        assert_eq!(cursor.selected, cursor.zoom);
        let empty = FlameTree::from_stalls(std::iter::empty());
        let cursor = cursor.rebase(&gone, &empty);
        assert_eq!((cursor.zoom, cursor.selected), (0, 0));
        assert_eq!(old.find_path(&[]), Some(0));
        assert_eq!(old.find_path(&["main".into(), "nope".into()]), None);
    }

    #[test]
    fn up_down_stay_within_the_zoom() {
        let tree = fixture();
        let mut cursor = FlameCursor::default();
        cursor.up(&tree);
        assert_eq!(cursor.selected, 0);
        cursor.down(&tree);
        cursor.down(&tree);
        assert_eq!(tree.path_labels(cursor.selected), ["main", "serve"], "largest child");
        cursor.down(&tree);
        assert_eq!(tree.path_labels(cursor.selected), ["main", "serve", "fetch"]);
        cursor.down(&tree);
        assert_eq!(tree.path_labels(cursor.selected), ["main", "serve", "fetch"], "a leaf stays");
        cursor.up(&tree);
        cursor.zoom_in(&tree);
        assert_eq!(cursor.zoom, by_path(&tree, "main;serve"));
        cursor.up(&tree);
        assert_eq!(cursor.selected, cursor.zoom, "not above the zoom");
        cursor.down(&tree);
        cursor.zoom_out(&tree);
        assert_eq!(cursor.zoom, by_path(&tree, "main"));
        assert_eq!(tree.path_labels(cursor.selected), ["main", "serve", "fetch"], "zoom out keeps the selection");
        cursor.reset();
        assert_eq!((cursor.zoom, cursor.selected), (0, 0));
    }

    #[test]
    fn down_breaks_ties_on_the_first_child() {
        let tree = FlameTree::from_stalls([&stall(&[("m;b", 2), ("m;a", 2)])]);
        let mut cursor = FlameCursor::default();
        cursor.down(&tree);
        cursor.down(&tree);
        assert_eq!(tree.path_labels(cursor.selected), ["m", "a"]);
    }

    #[test]
    fn left_right_cross_parents_but_not_the_zoom() {
        // Row 3: m/a/x, m/a/y, m/b/z, n/o/w.
        let tree = FlameTree::from_stalls([&stall(&[("m;a;x", 1), ("m;a;y", 1), ("m;b;z", 1), ("n;o;w", 1)])]);
        let mut cursor = FlameCursor { selected: by_path(&tree, "m;a;y"), ..FlameCursor::default() };
        cursor.right(&tree);
        assert_eq!(tree.path_labels(cursor.selected), ["m", "b", "z"]);
        cursor.right(&tree);
        assert_eq!(tree.path_labels(cursor.selected), ["n", "o", "w"], "unzoomed: the whole row");
        cursor.left(&tree);
        cursor.left(&tree);
        cursor.left(&tree);
        assert_eq!(tree.path_labels(cursor.selected), ["m", "a", "x"]);
        cursor.left(&tree);
        assert_eq!(tree.path_labels(cursor.selected), ["m", "a", "x"], "left end");
        // Zoomed on m: n/o/w is out of reach.
        cursor.zoom = by_path(&tree, "m");
        cursor.selected = by_path(&tree, "m;b;z");
        cursor.right(&tree);
        assert_eq!(tree.path_labels(cursor.selected), ["m", "b", "z"]);
        cursor.selected = cursor.zoom;
        cursor.right(&tree);
        assert_eq!(cursor.selected, cursor.zoom, "the zoomed node has no neighbour");
    }

    #[test]
    fn cursor_out_of_range_is_clamped() {
        let tree = fixture();
        let mut cursor = FlameCursor { zoom: 99, selected: 42, search: None };
        cursor.down(&tree);
        assert_eq!((cursor.zoom, cursor.selected), (0, 1));
        let mut cursor = FlameCursor { zoom: by_path(&tree, "main;tick"), selected: 2, search: None };
        cursor.clamp(&tree);
        assert_eq!(cursor.selected, cursor.zoom, "selection outside the zoom");
    }

    #[test]
    fn layout_is_proportional_and_nested() {
        let tree = fixture();
        let spans: Vec<(String, usize, usize, usize)> =
            layout(&tree, 0, 20).iter().map(|s| (tree.nodes()[s.node].label.clone(), s.depth, s.x0, s.x1)).collect();
        let expect = [
            ("all", 0, 0, 20),
            ("main", 1, 0, 20),
            ("serve", 2, 0, 16),
            ("fetch", 3, 0, 12),
            ("parse", 3, 12, 16),
            ("tick", 2, 16, 20),
        ];
        let expect: Vec<(String, usize, usize, usize)> =
            expect.iter().map(|(l, d, a, b)| (l.to_string(), *d, *a, *b)).collect();
        assert_eq!(spans, expect);
        // Zoomed on serve: it is the full width, rows counted from it.
        let serve = by_path(&tree, "main;serve");
        let spans: Vec<(usize, usize, usize)> =
            layout(&tree, serve, 20).iter().map(|s| (s.depth, s.x0, s.x1)).collect();
        assert_eq!(spans, [(0, 0, 20), (1, 0, 15), (1, 15, 20)]);
    }

    #[test]
    fn layout_drops_narrow_nodes_and_keeps_children_inside_parents() {
        // 1 sample of 1000 is narrower than a column of 20.
        let tree = FlameTree::from_stalls([&stall(&[("m;big;leaf", 999), ("m;tiny;leaf", 1)])]);
        let spans = layout(&tree, 0, 20);
        assert!(spans.iter().all(|s| tree.nodes()[s.node].label != "tiny"));
        assert_eq!(spans.len(), 4);
        // Random-ish shapes: every child within its parent, siblings disjoint.
        let stacks: Vec<(String, u64)> =
            (0..60u64).map(|i| (format!("r;a{};b{};c{}", i % 3, i % 7, i % 11), (i * 37) % 13 + 1)).collect();
        let stacks: Vec<(&str, u64)> = stacks.iter().map(|(s, n)| (s.as_str(), *n)).collect();
        let tree = FlameTree::from_stalls([&stall(&stacks)]);
        for width in [1, 7, 33, 80, 211] {
            let spans = layout(&tree, 0, width);
            let at: HashMap<usize, FlameSpan> = spans.iter().map(|s| (s.node, *s)).collect();
            for s in &spans {
                assert!(s.x0 < s.x1 && s.x1 <= width);
                if let Some(p) = tree.nodes()[s.node].parent.filter(|_| s.node != 0) {
                    let p = at[&p];
                    assert!(p.x0 <= s.x0 && s.x1 <= p.x1 && p.depth + 1 == s.depth);
                }
            }
            for pair in spans.windows(2) {
                if pair[0].depth == pair[1].depth {
                    assert!(pair[0].x1 <= pair[1].x0, "siblings overlap at width {width}");
                }
            }
        }
    }

    #[test]
    fn scroll_keeps_the_selected_row_visible() {
        let tree = fixture();
        let fetch = by_path(&tree, "main;serve;fetch");
        let cursor = FlameCursor { selected: fetch, ..FlameCursor::default() };
        assert_eq!(scroll_top(&tree, &cursor, 4), 0);
        assert_eq!(scroll_top(&tree, &cursor, 2), 2);
        let zoomed = FlameCursor { zoom: by_path(&tree, "main"), selected: fetch, search: None };
        assert_eq!(scroll_top(&tree, &zoomed, 2), 1);
    }

    #[test]
    fn builds_a_large_tree_quickly() {
        // 2,000 stalls × 5 stacks of depth 8, 100 samples each, cycling through 2,500 distinct
        // stacks that branch by 5 over the outer frames: ~10,600 nodes, 1,000,000 samples.
        let names: Vec<String> = (0..40).map(|i| format!("crate{}::module::function_{i}", i % 5)).collect();
        let divisors = [625, 125, 25, 5, 1];
        let stack_of = |k: usize| {
            let outer = divisors.iter().map(|d| (k / d) % 40);
            let inner = (5..8).map(|d| (k * 7 + d) % 40);
            // Innermost first.
            let mut frames: Vec<Frame> = outer.chain(inner).map(|i| frame(&names[i])).collect();
            frames.reverse();
            StackCount { frames, count: 100 }
        };
        let stalls: Vec<Stall> = (0..2000usize)
            .map(|s| {
                let mut st = stall(&[]);
                st.stacks = (0..5).map(|k| stack_of((s * 5 + k) % 2500)).collect();
                st
            })
            .collect();
        // The best of a few runs, so that a busy machine does not fail the test.
        let mut took = std::time::Duration::MAX;
        let mut tree = FlameTree::default();
        for _ in 0..5 {
            let start = std::time::Instant::now();
            tree = FlameTree::from_stalls(&stalls);
            took = took.min(start.elapsed());
        }
        assert_eq!(tree.root().total, 1_000_000);
        assert!((10_000..11_000).contains(&tree.len()), "{} nodes", tree.len());
        let leaves: u64 = tree.nodes().iter().map(|n| n.self_count).sum();
        assert_eq!(leaves, 1_000_000);
        eprintln!("{} nodes, 1,000,000 samples: {took:?}", tree.len());
        // Generous, to catch accidental quadratic work without being flaky.
        if !cfg!(debug_assertions) {
            assert!(took < std::time::Duration::from_millis(200), "{took:?}");
        }
    }
}
