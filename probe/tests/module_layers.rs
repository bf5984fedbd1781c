//! The probe's modules import each other in layers, never in a loop (docs/architecture.md,
//! "Layers"). This reads every `crate::` and `super::` path in `src/` (test modules left out),
//! resolves each to the module it names, and fails on any cycle between modules, naming it.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// Module path (`aggregator::join`) → source text, for every file under `src/` but `lib.rs`.
fn modules() -> BTreeMap<String, String> {
    fn walk(dir: &Path, root: &Path, out: &mut BTreeMap<String, String>) {
        for entry in std::fs::read_dir(dir).expect("read src dir") {
            let path = entry.expect("dir entry").path();
            if path.is_dir() {
                walk(&path, root, out);
                continue;
            }
            if path.extension().is_none_or(|e| e != "rs") {
                continue;
            }
            let rel = path.strip_prefix(root).expect("under src").with_extension("");
            let mut parts: Vec<String> = rel.iter().map(|p| p.to_string_lossy().into_owned()).collect();
            if parts.last().is_some_and(|l| l == "mod") {
                parts.pop();
            }
            if parts == ["lib"] {
                continue;
            }
            let text = std::fs::read_to_string(&path).expect("read source");
            // Unit tests may reach anywhere; only the modules' own code counts.
            let text = match text.find("#[cfg(test)]\nmod tests") {
                Some(i) => text[..i].to_string(),
                None => text,
            };
            out.insert(parts.join("::"), text);
        }
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut out = BTreeMap::new();
    walk(&root, &root, &mut out);
    out
}

/// The paths a source text names, as segments, starting at `crate::` or `super::` (resolved
/// against `module`). `use crate::a::{b, c::d}` names `a::b` and `a::c::d`.
fn paths(module: &str, text: &str) -> Vec<Vec<String>> {
    let mut out = Vec::new();
    let code: String = text.lines().filter(|l| !l.trim_start().starts_with("//")).collect::<Vec<_>>().join("\n");
    for (anchor, start) in [("crate::", 0usize), ("super::", 1)] {
        let mut from = 0;
        while let Some(i) = code[from..].find(anchor) {
            let at = from + i;
            from = at + anchor.len();
            if at > 0 && code[..at].ends_with(|c: char| c.is_alphanumeric() || c == '_') {
                continue;
            }
            let mut base: Vec<String> = Vec::new();
            if start == 1 {
                base = module.split("::").map(String::from).collect();
                base.pop();
                let mut rest = &code[from..];
                while let Some(r) = rest.strip_prefix("super::") {
                    base.pop();
                    rest = r;
                }
            }
            let rest = &code[from..];
            let seg_end = rest.find(|c: char| !(c.is_alphanumeric() || c == '_' || c == ':')).unwrap_or(rest.len());
            let mut segs: Vec<String> = base.clone();
            segs.extend(rest[..seg_end].split("::").filter(|s| !s.is_empty() && *s != "super").map(String::from));
            if rest[seg_end..].starts_with('{') {
                // A group: each member extends the prefix.
                let close = rest[seg_end..].find('}').map_or(rest.len(), |c| seg_end + c);
                for member in rest[seg_end + 1..close].split(',') {
                    let mut m = segs.clone();
                    m.extend(member.trim().split("::").map(|s| s.trim().to_string()).filter(|s| !s.is_empty()));
                    out.push(m);
                }
            } else {
                out.push(segs);
            }
        }
    }
    out
}

/// What `lib.rs` re-exports at the crate root (`pub use probe::{Probe, ...}`), as the paths
/// they stand for: `crate::Probe` is a path into `probe`.
fn root_exports() -> BTreeMap<String, Vec<String>> {
    let lib = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("src/lib.rs")).expect("read lib.rs");
    let mut out = BTreeMap::new();
    for path in paths("", &lib.replace("pub use ", "use crate::")) {
        if let Some(last) = path.last() {
            let name = last.split(" as ").last().unwrap_or(last).trim().to_string();
            out.insert(name, path.clone());
        }
    }
    out
}

#[test]
fn no_module_imports_itself_through_others() {
    let mods = modules();
    let exports = root_exports();
    let mut edges: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    for (name, text) in &mods {
        for mut path in paths(name, text) {
            if let Some(full) = path.first().and_then(|first| exports.get(first)) {
                path = full.clone();
            }
            // The longest prefix that is a module.
            let target = (1..=path.len()).rev().map(|n| path[..n].join("::")).find(|p| mods.contains_key(p));
            if let Some(t) = target {
                let (t, _) = mods.get_key_value(&t).expect("known module");
                if t != name {
                    edges.entry(name).or_default().insert(t);
                }
            }
        }
    }
    // Tarjan's strongly connected components.
    struct Tarjan<'a> {
        edges: &'a BTreeMap<&'a str, BTreeSet<&'a str>>,
        index: BTreeMap<&'a str, (usize, usize)>,
        stack: Vec<&'a str>,
        on_stack: BTreeSet<&'a str>,
        next: usize,
        cycles: Vec<Vec<&'a str>>,
    }
    impl<'a> Tarjan<'a> {
        fn visit(&mut self, v: &'a str) {
            self.index.insert(v, (self.next, self.next));
            self.next += 1;
            self.stack.push(v);
            self.on_stack.insert(v);
            for &w in self.edges.get(v).into_iter().flatten() {
                if !self.index.contains_key(w) {
                    self.visit(w);
                    let low = self.index[v].1.min(self.index[w].1);
                    self.index.get_mut(v).expect("visited").1 = low;
                } else if self.on_stack.contains(w) {
                    let low = self.index[v].1.min(self.index[w].0);
                    self.index.get_mut(v).expect("visited").1 = low;
                }
            }
            if self.index[v].0 == self.index[v].1 {
                let mut scc = Vec::new();
                while let Some(w) = self.stack.pop() {
                    self.on_stack.remove(w);
                    scc.push(w);
                    if w == v {
                        break;
                    }
                }
                if scc.len() > 1 {
                    scc.sort_unstable();
                    self.cycles.push(scc);
                }
            }
        }
    }
    let mut t = Tarjan {
        edges: &edges,
        index: BTreeMap::new(),
        stack: Vec::new(),
        on_stack: BTreeSet::new(),
        next: 0,
        cycles: Vec::new(),
    };
    for name in mods.keys() {
        if !t.index.contains_key(name.as_str()) {
            t.visit(name);
        }
    }
    let listing: String = edges.iter().map(|(m, ts)| format!("  {m} -> {ts:?}\n")).collect();
    assert!(t.cycles.is_empty(), "modules that import each other in a loop: {:?}\nimports:\n{listing}", t.cycles);
    // The check sees the imports at all (a parser that found none would pass vacuously).
    assert!(edges.get("aggregator").is_some_and(|t| !t.is_empty()), "no imports found:\n{listing}");
    assert!(exports.get("Probe").is_some_and(|p| p[0] == "probe"), "root re-exports not read: {exports:?}");
}
