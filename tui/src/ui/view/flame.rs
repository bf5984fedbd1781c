//! The flame graph widget: an icicle of stalled time in the terminal.
//!
//! The zoomed node fills the top row; each row below holds the callees of the row above, with
//! widths proportional to their samples ([`layout`] does the arithmetic, this module only
//! paints). Each span shows its label, cut with `…` when it does not fit, and ends with a blank
//! column so that neighbours stay apart even without colours.
//!
//! Colours follow the SVG export ([`crate::flame::kind_color`]) in terminal colours: your code
//! bright red and bold, Tokio magenta, the standard library blue, other libraries green,
//! unsymbolized frames dark grey, the root light grey. The selected span is reversed and bold.
//! While searching, matching spans turn yellow and the others are dimmed to coloured text. With
//! `color: false` (`NO_COLOR`) only modifiers are used: reversed for the selection, bold and
//! underlined for matches.

use ratatui::buffer::Buffer;
use ratatui::layout::Rect;
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::Span;
use ratatui::widgets::{Clear, Widget};
use stallscope_wire::FrameKind;

use crate::ui::state::flame_tree::{layout, scroll_top, FlameCursor, FlameNode, FlameTree, Search};

/// Shown instead of the graph when there is no sample.
pub const EMPTY_TEXT: &str = "no stack samples yet";

/// Background of a search match.
const MATCH_BG: Color = Color::Yellow;

/// The flame graph of `tree` as `cursor` sees it (zoom, selection, search).
#[derive(Debug, Clone, Copy)]
pub struct FlameWidget<'a> {
    /// The folded stacks.
    pub tree: &'a FlameTree,
    /// Zoom, selection and search.
    pub cursor: &'a FlameCursor,
    /// Draw with colours (`false` under `NO_COLOR`).
    pub color: bool,
}

impl Widget for FlameWidget<'_> {
    fn render(self, area: Rect, buf: &mut Buffer) {
        let area = area.intersection(*buf.area());
        Clear.render(area, buf);
        if area.is_empty() {
            return;
        }
        if self.tree.root().total == 0 {
            buf.set_stringn(area.x, area.y, EMPTY_TEXT, area.width as usize, Style::default());
            return;
        }
        let mut cursor = self.cursor.clone();
        cursor.clamp(self.tree);
        let search = cursor.active_search().map(|needle| self.tree.search(needle));
        let height = area.height as usize;
        let top = scroll_top(self.tree, &cursor, height);
        for span in layout(self.tree, cursor.zoom, area.width as usize) {
            let Some(row) = span.depth.checked_sub(top).filter(|r| *r < height) else { continue };
            let Some(node) = self.tree.node(span.node) else { continue };
            // The last column is a gap, unless the span is a single column.
            let body = if span.width() >= 2 { span.width() - 1 } else { 1 };
            let (x, y) = (area.x + span.x0 as u16, area.y + row as u16);
            put_label(buf, x, y, &node.label, body);
            let style = self.style(span.node, node, &cursor, search.as_ref());
            buf.set_style(Rect::new(x, y, body as u16, 1), style);
        }
    }
}

impl FlameWidget<'_> {
    /// The style of node `i`'s span.
    fn style(&self, i: usize, node: &FlameNode, cursor: &FlameCursor, search: Option<&Search>) -> Style {
        let matched = search.map(|s| s.is_match(i));
        let style = match (self.color, matched) {
            (false, Some(true)) => Style::new().add_modifier(Modifier::BOLD | Modifier::UNDERLINED),
            (false, _) => Style::new(),
            (true, Some(true)) => Style::new().fg(Color::Black).bg(MATCH_BG).add_modifier(Modifier::BOLD),
            (true, Some(false)) => Style::new().fg(node_colors(i, node).0).add_modifier(Modifier::DIM),
            (true, None) => {
                let (bg, fg) = node_colors(i, node);
                let style = Style::new().fg(fg).bg(bg);
                if i != 0 && node.kind == FrameKind::User {
                    style.add_modifier(Modifier::BOLD)
                } else {
                    style
                }
            }
        };
        if i != cursor.selected {
            style
        } else if self.color {
            style.add_modifier(Modifier::REVERSED | Modifier::BOLD)
        } else {
            style.add_modifier(Modifier::REVERSED)
        }
    }
}

/// Background and text colour of node `i` (the root, 0, is grey whatever its kind).
fn node_colors(i: usize, node: &FlameNode) -> (Color, Color) {
    if i == 0 {
        return (Color::Gray, Color::Black);
    }
    match node.kind {
        // Off CPU (`Frame::off_cpu`): the thread was asleep in the kernel there.
        kind if stallscope_wire::is_off_cpu_label(kind, &node.label) => (Color::Cyan, Color::Black),
        FrameKind::User => (Color::LightRed, Color::Black),
        FrameKind::Tokio => (Color::Magenta, Color::White),
        FrameKind::Std => (Color::Blue, Color::White),
        FrameKind::Library => (Color::Green, Color::Black),
        FrameKind::Unknown => (Color::DarkGray, Color::White),
    }
}

/// Writes `label` at `(x, y)` in at most `width` columns, ending with `…` when it is cut.
fn put_label(buf: &mut Buffer, x: u16, y: u16, label: &str, width: usize) {
    if width == 0 {
        return;
    }
    if Span::raw(label).width() <= width {
        buf.set_stringn(x, y, label, width, Style::default());
        return;
    }
    let (end, _) = buf.set_stringn(x, y, label, width - 1, Style::default());
    if let Some(cell) = buf.cell_mut((end, y)) {
        cell.set_symbol("…");
    }
}

/// One line about the selection for the status line: its label, samples and share of all
/// samples, then the search's share when searching.
///
/// For example `fetch_rates_blocking  412 samples  63.2%  search "mutex": 38.0% of samples`.
pub fn flame_status(tree: &FlameTree, cursor: &FlameCursor) -> String {
    let mut cursor = cursor.clone();
    cursor.clamp(tree);
    let node = tree.node(cursor.selected).unwrap_or_else(|| tree.root());
    let unit = if node.total == 1 { "sample" } else { "samples" };
    let mut line = format!("{}  {} {unit}  {:.1}%", node.label, node.total, 100.0 * tree.share(node.total));
    if let Some(needle) = cursor.active_search() {
        let search = tree.search(needle);
        if search.count == 0 {
            line.push_str(&format!("  search \"{needle}\": no match"));
        } else {
            line.push_str(&format!("  search \"{needle}\": {:.1}% of samples", 100.0 * search.share));
        }
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;
    use stallscope_wire::Stall;

    fn kind_of(name: &str) -> FrameKind {
        match name {
            "main" => FrameKind::Std,
            "serve" => FrameKind::Tokio,
            "fetch_rates_blocking" => FrameKind::User,
            "parse" => FrameKind::Library,
            _ => FrameKind::Unknown,
        }
    }

    /// A stall whose stacks are given outermost first, as `"a;b;c"`.
    fn stall(stacks: &[(&str, u64)]) -> Stall {
        crate::ui::fixture::folded_stall(stacks, kind_of)
    }

    /// all ─ main ─┬─ serve ─┬─ fetch_rates_blocking 6
    ///             │         └─ parse 2
    ///             └─ tick 2
    fn fixture() -> FlameTree {
        FlameTree::from_stalls([&stall(&[
            ("main;serve;fetch_rates_blocking", 6),
            ("main;serve;parse", 2),
            ("main;tick", 2),
        ])])
    }

    fn render(tree: &FlameTree, cursor: &FlameCursor, color: bool, width: u16, height: u16) -> Buffer {
        let mut buf = Buffer::empty(Rect::new(0, 0, width, height));
        FlameWidget { tree, cursor, color }.render(buf.area, &mut buf);
        buf
    }

    /// Styles `width` cells of row `y` from column `x`.
    fn paint(buf: &mut Buffer, x: u16, y: u16, width: u16, style: Style) {
        buf.set_style(Rect::new(x, y, width, 1), style);
    }

    fn colors(fg: Color, bg: Color) -> Style {
        Style::new().fg(fg).bg(bg)
    }

    const SELECTED: Modifier = Modifier::REVERSED.union(Modifier::BOLD);

    #[test]
    fn renders_the_whole_tree() {
        let tree = fixture();
        let buf = render(&tree, &FlameCursor::default(), true, 20, 4);
        let mut expected = Buffer::with_lines([
            "all                 ",
            "main                ",
            "serve           ti… ",
            "fetch_rate… pa…     ",
        ]);
        paint(&mut expected, 0, 0, 19, colors(Color::Black, Color::Gray).add_modifier(SELECTED));
        paint(&mut expected, 0, 1, 19, colors(Color::White, Color::Blue));
        paint(&mut expected, 0, 2, 15, colors(Color::White, Color::Magenta));
        paint(&mut expected, 16, 2, 3, colors(Color::White, Color::DarkGray));
        paint(&mut expected, 0, 3, 11, colors(Color::Black, Color::LightRed).add_modifier(Modifier::BOLD));
        paint(&mut expected, 12, 3, 3, colors(Color::Black, Color::Green));
        assert_eq!(buf, expected);
    }

    #[test]
    fn zoomed_child_spans_the_full_width() {
        let tree = fixture();
        let mut cursor = FlameCursor::default();
        cursor.down(&tree);
        cursor.down(&tree);
        cursor.zoom_in(&tree);
        let buf = render(&tree, &cursor, true, 20, 4);
        let mut expected = Buffer::with_lines([
            "serve               ",
            "fetch_rates_b… par… ",
            "                    ",
            "                    ",
        ]);
        paint(&mut expected, 0, 0, 19, colors(Color::White, Color::Magenta).add_modifier(SELECTED));
        paint(&mut expected, 0, 1, 14, colors(Color::Black, Color::LightRed).add_modifier(Modifier::BOLD));
        paint(&mut expected, 15, 1, 4, colors(Color::Black, Color::Green));
        assert_eq!(buf, expected);
    }

    #[test]
    fn search_highlights_matches_and_dims_the_rest() {
        let tree = fixture();
        let cursor = FlameCursor { search: Some("SE".into()), ..FlameCursor::default() };
        let buf = render(&tree, &cursor, true, 20, 4);
        // serve and parse match; fetch_rates_blocking is dimmed to red text.
        let cell = |x: u16, y: u16| (buf[(x, y)].fg, buf[(x, y)].bg, buf[(x, y)].modifier);
        assert_eq!(cell(0, 2), (Color::Black, MATCH_BG, Modifier::BOLD));
        assert_eq!(cell(14, 2), (Color::Black, MATCH_BG, Modifier::BOLD));
        assert_eq!(cell(12, 3), (Color::Black, MATCH_BG, Modifier::BOLD));
        assert_eq!(cell(0, 3), (Color::LightRed, Color::Reset, Modifier::DIM));
        assert_eq!(cell(15, 2), (Color::Reset, Color::Reset, Modifier::empty()), "gaps stay plain");
        let matched = colors(Color::Black, MATCH_BG).add_modifier(Modifier::BOLD);
        let mut expected = Buffer::with_lines([
            "all                 ",
            "main                ",
            "serve           ti… ",
            "fetch_rate… pa…     ",
        ]);
        let dim = |c: Color| Style::new().fg(c).add_modifier(Modifier::DIM);
        paint(&mut expected, 0, 0, 19, dim(Color::Gray).add_modifier(SELECTED));
        paint(&mut expected, 0, 1, 19, dim(Color::Blue));
        paint(&mut expected, 0, 2, 15, matched);
        paint(&mut expected, 16, 2, 3, dim(Color::DarkGray));
        paint(&mut expected, 0, 3, 11, dim(Color::LightRed));
        paint(&mut expected, 12, 3, 3, matched);
        assert_eq!(buf, expected);
    }

    #[test]
    fn labels_are_truncated_with_an_ellipsis() {
        let tree = FlameTree::from_stalls([&stall(&[("long_function_name", 2), ("日本語", 2)])]);
        let buf = render(&tree, &FlameCursor::default(), false, 10, 2);
        let mut expected = Buffer::with_lines(["all       ", "lon… 日…  "]);
        paint(&mut expected, 0, 0, 9, Style::new().add_modifier(Modifier::REVERSED));
        assert_eq!(buf, expected);
        // One-column spans: the label if it fits, else `…`; no gap.
        let tree = FlameTree::from_stalls([&stall(&[("a", 1), ("bb", 1), ("c", 1)])]);
        let buf = render(&tree, &FlameCursor::default(), false, 3, 2);
        let mut expected = Buffer::with_lines(["a… ", "a…c"]);
        paint(&mut expected, 0, 0, 2, Style::new().add_modifier(Modifier::REVERSED));
        assert_eq!(buf, expected);
    }

    #[test]
    fn no_color_uses_modifiers_only() {
        let tree = fixture();
        let mut cursor = FlameCursor { search: Some("se".into()), ..FlameCursor::default() };
        cursor.down(&tree);
        cursor.down(&tree);
        let buf = render(&tree, &cursor, false, 20, 4);
        let mut expected = Buffer::with_lines([
            "all                 ",
            "main                ",
            "serve           ti… ",
            "fetch_rate… pa…     ",
        ]);
        let matched = Modifier::BOLD | Modifier::UNDERLINED;
        paint(&mut expected, 0, 2, 15, Style::new().add_modifier(matched | Modifier::REVERSED));
        paint(&mut expected, 12, 3, 3, Style::new().add_modifier(matched));
        assert_eq!(buf, expected);
        assert!(buf.content().iter().all(|c| c.fg == Color::Reset && c.bg == Color::Reset));
    }

    #[test]
    fn deep_selection_scrolls_into_view_inside_the_area() {
        let tree = fixture();
        let mut cursor = FlameCursor::default();
        for _ in 0..3 {
            cursor.down(&tree);
        }
        // Two rows at (1, 1) in a larger, dirty buffer: rows 2 and 3 of the graph.
        let mut buf = Buffer::with_lines(["xxxxxxxxxxxx"; 4]);
        FlameWidget { tree: &tree, cursor: &cursor, color: false }.render(Rect::new(1, 1, 10, 2), &mut buf);
        let mut expected = Buffer::with_lines(["xxxxxxxxxxxx", "xserve   … x", "xfetc… …   x", "xxxxxxxxxxxx"]);
        paint(&mut expected, 1, 2, 5, Style::new().add_modifier(Modifier::REVERSED));
        assert_eq!(buf, expected);
    }

    #[test]
    fn empty_tree_says_so() {
        let tree = FlameTree::default();
        let buf = render(&tree, &FlameCursor::default(), true, 24, 2);
        assert_eq!(buf, Buffer::with_lines(["no stack samples yet    ", "                        "]));
    }

    #[test]
    fn status_line_names_the_selection_and_the_search() {
        let tree = fixture();
        let mut cursor = FlameCursor::default();
        assert_eq!(flame_status(&tree, &cursor), "all  10 samples  100.0%");
        for _ in 0..3 {
            cursor.down(&tree);
        }
        assert_eq!(flame_status(&tree, &cursor), "fetch_rates_blocking  6 samples  60.0%");
        cursor.search = Some("se".into());
        // serve (8) contains parse: counted once.
        assert_eq!(
            flame_status(&tree, &cursor),
            "fetch_rates_blocking  6 samples  60.0%  search \"se\": 80.0% of samples"
        );
        cursor.search = Some("mutex".into());
        assert_eq!(flame_status(&tree, &cursor), "fetch_rates_blocking  6 samples  60.0%  search \"mutex\": no match");
        let one = FlameTree::from_stalls([&stall(&[("a", 1), ("b", 2)])]);
        let cursor = FlameCursor { selected: 1, ..FlameCursor::default() };
        assert_eq!(flame_status(&one, &cursor), "a  1 sample  33.3%");
    }
}
