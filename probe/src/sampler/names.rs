//! Full names for the frames of one address's inline chain, from what the binary holds under
//! `debug = "line-tables-only"` (runs on the symbolizer thread).
//!
//! What rustc 1.95 emits there (checked with `llvm-dwarfdump` on a test binary): each
//! `DW_TAG_subprogram` of the user's crate has a bare `DW_AT_name` and nothing else: no
//! namespace, no linkage name, no `decl_file`/`decl_line`. So an async fn body is
//! `{async_fn#0}`, an async block `{async_block#0}`, a closure `{closure#0}`, a `Drop` impl
//! `drop`. Two things still name them:
//! - the ELF symbol of the out-of-line function (`svc::serve::{{closure}}`,
//!   `<svc::Flusher as core::ops::drop::Drop>::drop`), for the outermost frame of the chain;
//! - the generic arguments of the frames around an inlined one: a future or closure is a type,
//!   and the functions that poll, call or drop it are instantiated with its full path
//!   (`poll<svc::handlers::handle_login::{async_fn_env#0}>`, `drop_in_place<svc::Flusher>`).
//!
//! An async fn awaited from another async body and inlined into it appears in no name at all
//! (its name is not in the binary): it stays `{async fn body}`.

use stallscope_wire::names::{split_path, ASYNC_BLOCK, ASYNC_FN_BODY, CLOSURE};

/// Resolves the names of one inline chain, outermost first (`raw[0]` is the out-of-line
/// function, named by DWARF when it can; `elf` is its symbol-table name).
pub(crate) fn resolve(raw: &[&str], elf: Option<&str>) -> Vec<String> {
    let mut out: Vec<String> = Vec::with_capacity(raw.len());
    for (i, name) in raw.iter().enumerate() {
        let resolved = if i == 0 {
            outer(name, elf)
        } else if let Some((kind, n)) = anonymous(name) {
            // The nearest frame around it whose generic arguments carry its type, up to the
            // first anonymous body around it (beyond that, the types are that body's futures
            // and closures: an async fn awaited by another and inlined into it matches its
            // awaiter's `{async_fn_env#0}` there, which would misname it).
            let around = &raw[..i];
            let stop = around.iter().rposition(|f| anonymous(f).is_some()).unwrap_or(0);
            around[stop..]
                .iter()
                .rev()
                .find_map(|outer| env_path(outer, kind, n))
                .map(|path| format!("{path}::{}", kind.segment()))
                .unwrap_or_else(|| match out.last() {
                    // A closure or async block run straight from a function or body is that
                    // one's own, or captured from its function (one passed in from elsewhere
                    // would make the runner generic over the closure's or future's type). An
                    // awaited async fn is not: it is defined elsewhere.
                    Some(p) if kind != Kind::AsyncFn && !raw[i - 1].contains("_env#") && !p.starts_with('{') => {
                        format!("{}::{}", p, kind.segment())
                    }
                    _ => kind.segment().to_string(),
                })
        } else if let Some(ty) = out
            .last()
            .filter(|_| !name.contains("::"))
            .and_then(|p| p.strip_prefix("drop_in_place<"))
            .and_then(|p| p.strip_suffix('>'))
        {
            // `drop` inlined straight into `drop_in_place<T>` is `T`'s `Drop` impl.
            format!("<{ty} as core::ops::drop::Drop>::{name}")
        } else {
            name.to_string()
        };
        out.push(normalise_path(&resolved));
    }
    out
}

/// Whether DWARF's name for an outer function needs the symbol table's path: a bare name
/// (`process<u32>`, `drop`) or an anonymous body (`{async_block#0}`).
pub(crate) fn incomplete(dwarf: &str) -> bool {
    split_path(dwarf).len() < 2
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Kind {
    AsyncFn,
    AsyncBlock,
    Closure,
}

impl Kind {
    fn segment(self) -> &'static str {
        match self {
            Kind::AsyncFn => ASYNC_FN_BODY,
            Kind::AsyncBlock => ASYNC_BLOCK,
            Kind::Closure => CLOSURE,
        }
    }

    fn env(self) -> &'static str {
        match self {
            Kind::AsyncFn => "{async_fn_env#",
            Kind::AsyncBlock => "{async_block_env#",
            Kind::Closure => "{closure_env#",
        }
    }
}

/// `{async_fn#0}` -> (AsyncFn, "0"); also with generic arguments (`{closure#0}<()>`).
fn anonymous(name: &str) -> Option<(Kind, &str)> {
    let rest = name.strip_prefix('{')?;
    let (kind, rest) = if let Some(r) = rest.strip_prefix("async_fn#") {
        (Kind::AsyncFn, r)
    } else if let Some(r) = rest.strip_prefix("async_block#") {
        (Kind::AsyncBlock, r)
    } else if let Some(r) = rest.strip_prefix("closure#") {
        (Kind::Closure, r)
    } else {
        return None;
    };
    let n = &rest[..rest.find('}')?];
    Some((kind, n))
}

/// The path of the type `..::{kind_env#n}` named in a frame's generic arguments:
/// `poll<svc::h::login::{async_fn_env#0}, S>` -> `svc::h::login`.
fn env_path<'a>(frame: &'a str, kind: Kind, n: &str) -> Option<&'a str> {
    let needle = format!("::{}{n}}}", kind.env());
    let at = frame.find(&needle)?;
    let before = &frame[..at];
    let start = before.rfind(['<', ',', ' ', '(', '&', '*', '[']).map_or(0, |i| i + 1);
    let path = &before[start..];
    (!path.is_empty()).then_some(path)
}

/// The outermost frame: the DWARF name, completed by the symbol table's path.
fn outer(dwarf: &str, elf: Option<&str>) -> String {
    let Some(elf) = elf.filter(|e| !e.is_empty()) else {
        return dwarf.to_string();
    };
    if dwarf.is_empty() {
        return elf.to_string();
    }
    if let Some((kind, _)) = anonymous(dwarf) {
        // `svc::serve::{{closure}}` + `{async_block#0}` -> `svc::serve::{async block}`.
        let mut segs = split_path(elf);
        if segs.last().is_some_and(|s| s.starts_with('{')) {
            segs.pop();
        }
        if segs.is_empty() {
            return dwarf.to_string();
        }
        return format!("{}::{}", segs.join("::"), kind.segment());
    }
    if split_path(dwarf).len() > 1 {
        return dwarf.to_string();
    }
    // `process<u32>` + `svc::process` -> `svc::process<u32>`; `drop` +
    // `<svc::Flusher as core::ops::drop::Drop>::drop` -> the latter.
    let base = dwarf.split('<').next().unwrap_or(dwarf);
    let segs = split_path(elf);
    match segs.last() {
        Some(last) if *last == base || last.split('<').next() == Some(base) => {
            let prefix = &segs[..segs.len() - 1];
            if prefix.is_empty() {
                dwarf.to_string()
            } else {
                format!("{}::{dwarf}", prefix.join("::"))
            }
        }
        _ => dwarf.to_string(),
    }
}

/// `{{closure}}`, `{closure#0}` -> `{closure}`, `{async_block#1}` -> `{async block}`,
/// `{async_fn#0}` -> `{async fn body}` in every top-level segment of a path.
fn normalise_path(name: &str) -> String {
    if !name.contains('{') {
        return name.to_string();
    }
    let segs = split_path(name);
    let mut out = String::with_capacity(name.len());
    for (i, s) in segs.iter().enumerate() {
        if i > 0 {
            out.push_str("::");
        }
        match anonymous(s) {
            Some((kind, _)) => out.push_str(kind.segment()),
            None if s == &"{{closure}}" => out.push_str(CLOSURE),
            None => out.push_str(s),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_async_fn_body_inlined_into_the_task_poll_is_named_by_its_future_type() {
        let chain = [
            "poll<names::handlers::handle_login::{async_fn_env#0}, alloc::sync::Arc<S>>",
            "{closure#0}<names::handlers::handle_login::{async_fn_env#0}, S>",
            "{async_fn#0}",
        ];
        let out = resolve(&chain, Some("tokio::runtime::task::raw::poll"));
        assert_eq!(out[2], "names::handlers::handle_login::{async fn body}");
    }

    #[test]
    fn an_out_of_line_async_block_takes_its_symbol_path() {
        assert_eq!(resolve(&["{async_block#0}"], Some("svc::serve::{{closure}}")), ["svc::serve::{async block}"]);
        assert_eq!(resolve(&["{async_fn#0}"], Some("svc::h::login::{{closure}}")), ["svc::h::login::{async fn body}"]);
    }

    #[test]
    fn a_drop_impl_is_named_by_its_drop_in_place() {
        let out = resolve(&["{async_block#0}", "drop<svc::Flusher>", "drop_in_place<svc::Flusher>", "drop"], None);
        assert_eq!(out[3], "<svc::Flusher as core::ops::drop::Drop>::drop");
        let out = resolve(&["drop"], Some("<svc::Flusher as core::ops::drop::Drop>::drop"));
        assert_eq!(out[0], "<svc::Flusher as core::ops::drop::Drop>::drop");
    }

    #[test]
    fn a_closure_is_named_by_its_env_type_or_the_function_that_runs_it() {
        let out = resolve(&["main", "map<I, svc::main::{closure_env#1}>", "{closure#1}"], Some("svc::main"));
        assert_eq!(out[2], "svc::main::{closure}");
        let out = resolve(&["svc::main", "run_closure", "{closure#0}"], None);
        assert_eq!(out[2], "run_closure::{closure}");
        let out = resolve(&["{async_block#0}", "{closure#0}"], Some("svc::serve::{{closure}}"));
        assert_eq!(out[1], "svc::serve::{async block}::{closure}");
        let out = resolve(&["svc::main", "{async_fn#0}", "{closure#0}"], None);
        assert_eq!(out[2], "{closure}");
        // A closure with another number in the arguments is not this one.
        let out = resolve(&["x", "call<svc::main::{closure_env#1}>", "{closure#0}"], None);
        assert_eq!(out[2], "{closure}");
    }

    #[test]
    fn a_generic_function_keeps_its_arguments_and_gains_its_path() {
        assert_eq!(resolve(&["process<u32>"], Some("svc::process")), ["svc::process<u32>"]);
        assert_eq!(resolve(&["other"], Some("svc::process")), ["other"]);
        assert_eq!(
            resolve(&["process<alloc::vec::Vec<u8>>"], Some("svc::process")),
            ["svc::process<alloc::vec::Vec<u8>>"]
        );
    }

    #[test]
    fn an_async_fn_awaited_inline_has_no_name_in_the_binary() {
        let out = resolve(&["{async_block#0}", "{async_fn#0}"], Some("svc::serve::{{closure}}"));
        assert_eq!(out, ["svc::serve::{async block}", "{async fn body}"]);
        // The awaiter's type in the task's poll is not the awaited fn's.
        let chain = ["poll<svc::outer::{async_fn_env#0}>", "{async_fn#0}", "{async_fn#0}"];
        assert_eq!(
            resolve(&chain, None),
            ["poll<svc::outer::{async_fn_env#0}>", "svc::outer::{async fn body}", "{async fn body}"]
        );
    }

    #[test]
    fn odd_names_do_not_panic() {
        let odd = ["", "::", "<", ">>", "drop_in_place<", "{async_fn#", "{closure#0", "{", "}", "a::{b", "<a as"];
        for a in odd {
            for b in odd {
                let _ = resolve(&[a, b, "drop", "{closure#0}"], Some(b));
                let _ = resolve(&[a], None);
            }
        }
    }

    #[test]
    fn a_closure_of_the_runtime_carries_the_task_type_in_its_arguments() {
        let chain = ["poll<T>", "{closure#0}<svc::h::login::{async_fn_env#0}, S>", "{async_fn#0}"];
        assert_eq!(resolve(&chain, None)[2], "svc::h::login::{async fn body}");
    }
}
