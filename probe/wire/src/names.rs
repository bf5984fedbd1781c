//! Short names for frames: what alerts, tables and the Stalls view print, derived from the full
//! name that [`Frame::function`](crate::Frame::function) keeps.
//!
//! Full names are demangled Rust paths in which the probe has already replaced the compiler's
//! anonymous items by fixed forms (see `docs/guide.md`, "How frames are named"):
//!
//! | full name | short name |
//! |---|---|
//! | `svc::handlers::handle_login::{async fn body}` | `handle_login (async fn)` |
//! | `svc::serve::{async block}` | `serve::{async block}` |
//! | `svc::main::{closure}` | `main::{closure}` |
//! | `<svc::flush::Flusher as core::ops::drop::Drop>::drop` | `<Flusher as Drop>::drop` |
//! | `svc::load (tail call)` | `load (tail call)` |
//! | `svc::process<alloc::vec::Vec<u8>>` | `process<Vec<u8>>` |
//! | `svc::Server::handle` | `Server::handle` |
//!
//! Names symbolized by older probes (`{{closure}}`, `{async_fn#0}`, `{closure#0}`) are read the
//! same way.

/// Marks a frame recovered from a tail call (the caller jumped to the callee, so the callee's
/// frame is not on the stack): appended to [`Frame::function`](crate::Frame::function).
pub const TAIL_CALL_SUFFIX: &str = " (tail call)";

/// The segment that names an async fn's body (the state machine's `poll`).
pub const ASYNC_FN_BODY: &str = "{async fn body}";
/// The segment that names an `async { .. }` block's body.
pub const ASYNC_BLOCK: &str = "{async block}";
/// The segment that names a closure's body.
pub const CLOSURE: &str = "{closure}";

/// The last two components of a path, as alerts, reports and tables print a source file or a
/// spawn location: `/home/me/svc/src/main.rs` → `src/main.rs`.
///
/// ```
/// assert_eq!(stallscope_wire::names::short_path("/home/me/svc/src/main.rs"), "src/main.rs");
/// assert_eq!(stallscope_wire::names::short_path("main.rs"), "main.rs");
/// ```
pub fn short_path(p: &str) -> String {
    let parts: Vec<&str> = p.rsplit('/').take(2).collect();
    parts.into_iter().rev().collect::<Vec<_>>().join("/")
}

/// The short name of a full frame name. See the module docs for the forms.
pub fn short_name(full: &str) -> String {
    let (name, tail) = match full.strip_suffix(TAIL_CALL_SUFFIX) {
        Some(n) => (n, true),
        None => (full, false),
    };
    let segs = split_path(name);
    // Normalise anonymous segments, then keep the last named one (with its type, for a method)
    // and the anonymous ones after it.
    let segs: Vec<String> = segs.iter().map(|s| normalise(s)).collect();
    let last_named = segs.iter().rposition(|s| !is_anonymous(s));
    let mut out = String::new();
    match last_named {
        // An async fn whose name the binary does not hold (see `docs/guide.md`).
        None if segs.len() == 1 && segs[0] == ASYNC_FN_BODY => out.push_str("{async fn}"),
        None => out.push_str(&segs.join("::")),
        Some(i) => {
            let named = short_generics(&segs[i]);
            let rest = &segs[i + 1..];
            // A method: keep its type (`Server::handle`); a free function: just its name.
            // A trait method: keep `<Type as Trait>`.
            let ty = (i > 0 && segs[i - 1].chars().next().is_some_and(|c| c.is_ascii_uppercase() || c == '<'))
                .then(|| short_generics(&segs[i - 1]));
            let head = match ty {
                Some(t) => format!("{t}::{named}"),
                None => named,
            };
            if rest.len() == 1 && rest[0] == ASYNC_FN_BODY {
                out.push_str(&head);
                out.push_str(" (async fn)");
            } else {
                out.push_str(&head);
                for r in rest {
                    out.push_str("::");
                    out.push_str(if r == ASYNC_FN_BODY { "{async fn}" } else { r });
                }
            }
        }
    }
    if tail {
        out.push_str(TAIL_CALL_SUFFIX);
    }
    out
}

/// Whether a segment is one of the compiler's anonymous items (`{closure}`, `{async block}`…).
fn is_anonymous(seg: &str) -> bool {
    seg.starts_with('{')
}

/// `{{closure}}`, `{closure#0}` -> `{closure}`; `{async_block#1}` -> `{async block}`;
/// `{async_fn#0}` -> `{async fn body}`. Other segments unchanged.
fn normalise(seg: &str) -> String {
    let inner = seg.trim_start_matches('{').trim_end_matches('}');
    if !seg.starts_with('{') {
        return seg.to_string();
    }
    let kind = inner.split('#').next().unwrap_or(inner);
    match kind {
        "closure" => CLOSURE.to_string(),
        "async_block" | "async block" => ASYNC_BLOCK.to_string(),
        "async_fn" | "async fn body" => ASYNC_FN_BODY.to_string(),
        _ => seg.to_string(),
    }
}

/// Splits a path at the `::` that are not inside `<..>`, `(..)` or `[..]`.
pub fn split_path(s: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let (mut depth, mut start) = (0i32, 0usize);
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'<' | b'(' | b'[' => depth += 1,
            // `->` is not a closing bracket.
            b'>' if i > 0 && b[i - 1] == b'-' => {}
            b'>' | b')' | b']' => depth -= 1,
            b':' if depth == 0 && b.get(i + 1) == Some(&b':') => {
                out.push(&s[start..i]);
                start = i + 2;
                i += 1;
            }
            _ => {}
        }
        i += 1;
    }
    out.push(&s[start..]);
    out
}

/// Shortens every path inside a segment to its last component: `process<alloc::vec::Vec<u8>>`
/// -> `process<Vec<u8>>`, `<svc::Flusher as core::ops::drop::Drop>` -> `<Flusher as Drop>`.
fn short_generics(seg: &str) -> String {
    let mut out = String::with_capacity(seg.len());
    let mut word = String::new();
    let flush = |word: &mut String, out: &mut String| {
        // `a::b::C` -> `C`.
        if let Some(i) = word.rfind("::") {
            out.push_str(&word[i + 2..]);
        } else {
            out.push_str(word);
        }
        word.clear();
    };
    for c in seg.chars() {
        if c.is_alphanumeric() || c == '_' || c == ':' || c == '#' || (c == '{' || c == '}') {
            word.push(c);
        } else {
            flush(&mut word, &mut out);
            out.push(c);
        }
    }
    flush(&mut word, &mut out);
    // DWARF spells out the default allocator (`Vec<u8, alloc::alloc::Global>`).
    out.replace(", Global>", ">")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_names_of_each_shape() {
        let cases = [
            ("svc::handlers::handle_login::{async fn body}", "handle_login (async fn)"),
            ("svc::serve::{async block}", "serve::{async block}"),
            ("svc::main::{closure}", "main::{closure}"),
            ("<svc::flush::Flusher as core::ops::drop::Drop>::drop", "<Flusher as Drop>::drop"),
            ("svc::load (tail call)", "load (tail call)"),
            ("svc::process<alloc::vec::Vec<u8>>", "process<Vec<u8>>"),
            ("svc::process<alloc::vec::Vec<u8, alloc::alloc::Global>>", "process<Vec<u8>>"),
            ("svc::Server::handle", "Server::handle"),
            ("svc::Server::handle::{async fn body}", "Server::handle (async fn)"),
            ("svc::handler::{{closure}}", "handler::{closure}"),
            ("svc::serve::{async block}::{closure}", "serve::{async block}::{closure}"),
            ("{async_fn#0}", "{async fn}"),
            ("{async fn body}", "{async fn}"),
            ("clock_nanosleep", "clock_nanosleep"),
            ("std::thread::sleep", "sleep"),
            ("<&mut F as core::future::future::Future>::poll", "<&mut F as Future>::poll"),
            ("svc::run<fn() -> u64>", "run<fn() -> u64>"),
        ];
        for (full, short) in cases {
            assert_eq!(short_name(full), short, "{full}");
        }
    }

    #[test]
    fn odd_names_do_not_panic() {
        for s in ["", "::", "<", ">>", "{", "}", "a::", "::b", "<a as", " (tail call)", "é::ü<ß>", "->"] {
            let _ = short_name(s);
        }
    }

    #[test]
    fn paths_split_outside_brackets() {
        assert_eq!(split_path("a::b<c::d>::e"), ["a", "b<c::d>", "e"]);
        assert_eq!(split_path("<a::B as c::D>::f"), ["<a::B as c::D>", "f"]);
    }
}
