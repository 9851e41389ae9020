//! The engine's module layering, checked from its sources (docs/design.md, "Map"):
//! no import cycle among modules, a pipeline stage imports only earlier stages, and only the
//! doors import a stage: nothing below them imports a stage or a door.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::Path;

/// The pipeline's stages, in order.
const STAGES: [&str; 6] = ["check", "plan", "fetch", "assemble", "verify", "apply"];
/// The doors, the only units above the pipeline's stages: the front door (`engine` and its
/// children), the runner (`pipeline.rs` itself, without its stages) and the door around the
/// checks (`dangerous`).
const DOORS: [&[&str]; 3] = [&["engine"], &["pipeline"], &["dangerous"]];

type Module = Vec<String>;

#[test]
fn no_module_imports_in_a_loop_and_stages_import_only_earlier_stages() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut sources = BTreeMap::new();
    read_tree(&src, &mut Vec::new(), &mut sources);
    assert!(sources.len() > 20, "found only {} modules", sources.len());
    let graph = unit_graph(&sources);
    let stages: Vec<Module> = STAGES
        .iter()
        .map(|s| unit_of(&path(&["pipeline", s])))
        .collect();
    for s in &stages {
        assert!(graph.contains_key(s), "no stage module {}", s.join("::"));
    }
    let doors: Vec<Module> = DOORS.iter().map(|d| path(d)).collect();
    for d in &doors {
        assert!(graph.contains_key(d), "no door module {}", d.join("::"));
    }

    let mut problems = Vec::new();
    if let Some(cycle) = find_cycle(&graph) {
        problems.push(format!("import cycle: {}", show(&cycle)));
    }
    for (from, deps) in &graph {
        let rank = stages.iter().position(|s| s == from);
        for to in deps {
            let Some(to_rank) = stages.iter().position(|s| s == to) else {
                continue;
            };
            match rank {
                Some(r) if to_rank >= r => problems.push(format!(
                    "stage {} imports the later stage {}",
                    from.join("::"),
                    to.join("::")
                )),
                None if !doors.contains(from) => problems.push(format!(
                    "support module {} imports the stage {}",
                    from.join("::"),
                    to.join("::")
                )),
                _ => {}
            }
        }
        for to in deps.iter().filter(|to| doors.contains(to)) {
            if !doors.contains(from) {
                problems.push(format!(
                    "{} {} imports the door {}",
                    if stages.contains(from) {
                        "stage"
                    } else {
                        "support module"
                    },
                    from.join("::"),
                    to.join("::")
                ));
            }
        }
    }
    // The runner is the pipeline's only non-stage unit that imports stages, and it sits below
    // the front door: it must not import it.
    let runner = path(&["pipeline"]);
    let front = path(&["engine"]);
    if graph.get(&runner).is_some_and(|deps| deps.contains(&front)) {
        problems.push("the runner pipeline imports the front door engine".into());
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn the_import_reader_sees_grouped_nested_and_relative_paths() {
    let src = "use crate::{a::{b, c::D}, e};\n// use crate::commented;\nfn f() { crate::g::h(); }\nuse super::{X, y::Z};\n";
    let mut found = imports(src, &path(&["m", "n"]));
    found.sort();
    let want = [
        &["a", "b"][..],
        &["a", "c", "D"],
        &["e"],
        &["g", "h"],
        &["m", "X"],
        &["m", "y", "Z"],
    ];
    assert_eq!(found, want.map(path));
    let graph = BTreeMap::from([
        (path(&["a"]), BTreeSet::from([path(&["b"])])),
        (path(&["b"]), BTreeSet::from([path(&["a"])])),
    ]);
    assert!(find_cycle(&graph).is_some(), "a two-module loop is a cycle");
}

fn path(parts: &[&str]) -> Module {
    parts.iter().map(|p| p.to_string()).collect()
}

fn show(modules: &[Module]) -> String {
    let names: Vec<String> = modules.iter().map(|m| m.join("::")).collect();
    names.join(" -> ")
}

/// Every module's non-test source, by module path (`lib.rs` is the empty path); `tests.rs`
/// files and inline `mod tests` are left out.
fn read_tree(dir: &Path, prefix: &mut Module, out: &mut BTreeMap<Module, String>) {
    let mut entries: Vec<_> = fs::read_dir(dir)
        .expect("read src")
        .map(|e| e.expect("entry").path())
        .collect();
    entries.sort();
    for entry in entries {
        let name = entry
            .file_stem()
            .and_then(|s| s.to_str())
            .expect("utf-8 name")
            .to_owned();
        if entry.is_dir() {
            prefix.push(name);
            read_tree(&entry, prefix, out);
            prefix.pop();
        } else if entry.extension().is_some_and(|e| e == "rs") {
            if name == "tests" {
                // An out-of-line `#[cfg(test)] mod tests;`: test code, like the inline ones
                // cut below.
                continue;
            }
            let text = fs::read_to_string(&entry).expect("read source");
            let code = text
                .split("#[cfg(test)]\nmod tests")
                .next()
                .unwrap_or_default();
            let mut module = prefix.clone();
            if !(prefix.is_empty() && name == "lib") {
                module.push(name);
            }
            out.insert(module, code.to_owned());
        }
    }
}

/// The paths a module's code names through `crate::` and `super::`, made absolute.
fn imports(code: &str, module: &Module) -> Vec<Module> {
    let code: String = code
        .lines()
        .filter(|l| !l.trim_start().starts_with("//"))
        .collect::<Vec<_>>()
        .join("\n");
    let parent = &module[..module.len().saturating_sub(1)];
    let mut found = Vec::new();
    for (anchor, base) in [("crate::", &[][..]), ("super::", parent)] {
        let mut rest = code.as_str();
        while let Some(at) = rest.find(anchor) {
            let before = rest[..at].chars().last();
            rest = &rest[at + anchor.len()..];
            if before.is_some_and(|c| c.is_alphanumeric() || c == '_') {
                continue;
            }
            let end = use_tree_end(rest);
            for tail in expand(&rest[..end]) {
                let mut full: Module = base.to_vec();
                full.extend(tail);
                found.push(full);
            }
        }
    }
    found
}

/// Where the path or use tree at the start of `s` ends.
fn use_tree_end(s: &str) -> usize {
    let mut depth = 0;
    for (i, c) in s.char_indices() {
        match c {
            '{' => depth += 1,
            '}' if depth == 0 => return i,
            '}' => depth -= 1,
            c if depth == 0 && !(c.is_alphanumeric() || c == '_' || c == ':') => return i,
            _ => {}
        }
    }
    s.len()
}

/// The paths of a use tree: `a::{b, c::{d, e}}` is `a::b`, `a::c::d`, `a::c::e`.
fn expand(tree: &str) -> Vec<Module> {
    let tree = tree.trim();
    let Some(open) = tree.find('{') else {
        let head = tree.split(" as ").next().unwrap_or_default();
        return vec![
            head.split("::")
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
                .collect(),
        ];
    };
    let prefix: Module = tree[..open]
        .split("::")
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect();
    let inner = &tree[open + 1..tree.rfind('}').unwrap_or(tree.len())];
    let (mut items, mut depth, mut start) = (Vec::new(), 0, 0);
    for (i, c) in inner.char_indices() {
        match c {
            '{' => depth += 1,
            '}' => depth -= 1,
            ',' if depth == 0 => {
                items.push(&inner[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    items.push(&inner[start..]);
    let mut out = Vec::new();
    for item in items.into_iter().filter(|i| !i.trim().is_empty()) {
        for tail in expand(item) {
            let mut full = prefix.clone();
            full.extend(tail);
            out.push(full);
        }
    }
    out
}

/// The unit a module belongs to: a stage or an `install` part with everything under it, or a
/// top-level module with its children.
fn unit_of(module: &Module) -> Module {
    let depth = match module.first().map(String::as_str) {
        Some("pipeline" | "install") => 2,
        _ => 1,
    };
    module[..module.len().min(depth)].to_vec()
}

/// Which units import which: each path resolves to the longest module that prefixes it, or,
/// for a name `lib.rs` re-exports, to the module it comes from.
fn unit_graph(sources: &BTreeMap<Module, String>) -> BTreeMap<Module, BTreeSet<Module>> {
    let reexports = reexports(&sources[&Vec::new()]);
    let mut graph: BTreeMap<Module, BTreeSet<Module>> = BTreeMap::new();
    for (module, code) in sources.iter().filter(|(m, _)| !m.is_empty()) {
        let from = unit_of(module);
        let deps = graph.entry(from.clone()).or_default();
        for p in imports(code, module) {
            let target = (1..=p.len())
                .rev()
                .map(|k| p[..k].to_vec())
                .find(|m| sources.contains_key(m))
                .or_else(|| p.first().and_then(|n| reexports.get(n)).cloned());
            if let Some(target) = target.filter(|t| !t.is_empty() && sources.contains_key(t)) {
                let to = unit_of(&target);
                if to != from {
                    deps.insert(to);
                }
            }
        }
    }
    graph
}

/// `pub use module::{A, B};` in lib.rs: each name and the module it comes from.
fn reexports(lib: &str) -> BTreeMap<String, Module> {
    let mut out = BTreeMap::new();
    for stmt in lib.split(';') {
        let Some(tree) = stmt.trim().strip_prefix("pub use ") else {
            continue;
        };
        for p in expand(tree) {
            if let Some((name, module)) = p.split_last() {
                out.insert(name.clone(), module.to_vec());
            }
        }
    }
    out
}

/// A cycle in `graph`, if there is one.
fn find_cycle(graph: &BTreeMap<Module, BTreeSet<Module>>) -> Option<Vec<Module>> {
    fn visit(
        node: &Module,
        graph: &BTreeMap<Module, BTreeSet<Module>>,
        done: &mut BTreeSet<Module>,
        stack: &mut Vec<Module>,
    ) -> Option<Vec<Module>> {
        if let Some(at) = stack.iter().position(|m| m == node) {
            let mut cycle = stack[at..].to_vec();
            cycle.push(node.clone());
            return Some(cycle);
        }
        if done.contains(node) {
            return None;
        }
        stack.push(node.clone());
        for next in graph.get(node).into_iter().flatten() {
            if let Some(cycle) = visit(next, graph, done, stack) {
                return Some(cycle);
            }
        }
        stack.pop();
        done.insert(node.clone());
        None
    }
    let mut done = BTreeSet::new();
    graph
        .keys()
        .find_map(|node| visit(node, graph, &mut done, &mut Vec::new()))
}
