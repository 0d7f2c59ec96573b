//! The layers point one way: each top-level module of `src/` imports only
//! the modules docs/architecture.md allows it. Read from the source, so a
//! new import that runs back up fails here, with the file that made it.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// Each module and what it may import (besides itself). Keep in step with
/// docs/architecture.md and the list in src/lib.rs.
const ALLOWED: &[(&str, &[&str])] = &[
    ("telemetry", &[]),
    ("retry", &[]),
    ("shutdown", &[]),
    ("memory", &[]),
    ("faults", &[]),
    ("domain", &["telemetry"]),
    ("stream", &["telemetry", "retry", "domain"]),
    (
        "store",
        &["telemetry", "retry", "domain", "stream", "faults"],
    ),
    (
        "worker",
        &["telemetry", "retry", "domain", "stream", "store", "faults"],
    ),
    (
        "gateway",
        &["telemetry", "retry", "domain", "stream", "store"],
    ),
    ("simulator", &["telemetry", "retry", "domain"]),
    ("http_server", &["telemetry"]),
    (
        "cli",
        &[
            "telemetry",
            "retry",
            "domain",
            "stream",
            "store",
            "worker",
            "gateway",
            "simulator",
            "http_server",
        ],
    ),
];

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The top-level modules a file names through `crate::` paths, including
/// grouped imports (`use crate::{a::X, b}`).
fn crate_modules_named(source: &str) -> BTreeSet<String> {
    names_after(source, "crate::")
}

/// The first path segment after each `prefix` in `source` (each item of a
/// group, `prefix{a::X, b}`). An occurrence right after `$` (`$crate::` in
/// macros) or after another `::` (`super::super::` seen from `super::`) is
/// not one.
fn names_after(source: &str, prefix: &str) -> BTreeSet<String> {
    let mut named = BTreeSet::new();
    let ident = |s: &str| -> String {
        s.chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect()
    };
    for (at, _) in source.match_indices(prefix) {
        let before = &source[..at];
        if before.ends_with('$')
            || before.ends_with("::")
            || before.ends_with(|c: char| c.is_ascii_alphanumeric() || c == '_')
        {
            continue;
        }
        let rest = &source[at + prefix.len()..];
        if rest.starts_with("super::") {
            continue;
        }
        if let Some(group) = rest.strip_prefix('{') {
            let end = group.find('}').unwrap_or(group.len());
            for item in group[..end].split(',') {
                let name = ident(item.trim());
                if !name.is_empty() {
                    named.insert(name);
                }
            }
        } else {
            named.insert(ident(rest));
        }
    }
    named
}

/// The import graph among the files and folders of one folder of `src/`
/// (its `mod.rs` aside: a parent and its children share names by design):
/// each node and the siblings it names through `super::` (from a file) or
/// `super::super::` (from a file of a sub-folder), or a `crate::` path to
/// the folder.
fn sibling_imports(src: &Path, dir: &Path) -> Vec<(String, BTreeSet<String>)> {
    let module_path: Vec<String> = dir
        .strip_prefix(src)
        .unwrap()
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    let crate_prefix = format!("crate::{}::", module_path.join("::"));
    let mut nodes: Vec<(String, Vec<(PathBuf, &str)>)> = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_stem().unwrap().to_string_lossy().into_owned();
        if path.is_dir() {
            let mut files = Vec::new();
            rust_files(&path, &mut files);
            nodes.push((
                name,
                files.into_iter().map(|f| (f, "super::super::")).collect(),
            ));
        } else if path.extension().is_some_and(|e| e == "rs") && name != "mod" {
            nodes.push((name, vec![(path, "super::")]));
        }
    }
    let names: BTreeSet<String> = nodes.iter().map(|(n, _)| n.clone()).collect();
    nodes
        .into_iter()
        .map(|(name, files)| {
            let mut named = BTreeSet::new();
            for (file, up) in files {
                let source = std::fs::read_to_string(&file).unwrap();
                named.extend(names_after(&source, up));
                if !module_path.is_empty() {
                    named.extend(names_after(&source, &crate_prefix));
                }
            }
            named.retain(|n| n != &name && names.contains(n));
            (name, named)
        })
        .collect()
}

/// A circle in `graph`, as the path that closes it, if there is one.
fn find_circle(graph: &[(String, BTreeSet<String>)]) -> Option<Vec<String>> {
    fn visit(
        node: &str,
        graph: &[(String, BTreeSet<String>)],
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(at) = path.iter().position(|n| n == node) {
            let mut circle = path[at..].to_vec();
            circle.push(node.to_string());
            return Some(circle);
        }
        if done.contains(node) {
            return None;
        }
        path.push(node.to_string());
        let edges = graph.iter().find(|(n, _)| n == node).map(|(_, e)| e);
        for next in edges.into_iter().flatten() {
            if let Some(circle) = visit(next, graph, path, done) {
                return Some(circle);
            }
        }
        path.pop();
        done.insert(node.to_string());
        None
    }
    let mut done = BTreeSet::new();
    graph
        .iter()
        .find_map(|(node, _)| visit(node, graph, &mut Vec::new(), &mut done))
}

#[test]
fn every_module_imports_only_the_layers_below_it() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut violations = Vec::new();
    let mut checked = 0;
    for (module, allowed) in ALLOWED {
        let mut files = Vec::new();
        let dir = src.join(module);
        if dir.is_dir() {
            rust_files(&dir, &mut files);
        }
        let file = src.join(format!("{module}.rs"));
        if file.is_file() {
            files.push(file);
        }
        assert!(!files.is_empty(), "src/{module} has no source");
        for file in files {
            let source = std::fs::read_to_string(&file).unwrap();
            for named in crate_modules_named(&source) {
                checked += 1;
                if named != *module && !allowed.contains(&named.as_str()) {
                    violations.push(format!(
                        "{} imports crate::{named}, which `{module}` may not",
                        file.strip_prefix(&src).unwrap().display()
                    ));
                }
            }
        }
    }
    assert!(
        checked > 50,
        "only {checked} imports found: is the scan broken?"
    );
    assert!(
        violations.is_empty(),
        "imports that run back up the layers:\n{}",
        violations.join("\n")
    );
}

/// Inside a module too, the files point one way: no file imports a
/// sibling that (through others, maybe) imports it back.
#[test]
fn no_folder_has_an_import_circle() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut folders = vec![src.clone()];
    let mut circles = Vec::new();
    let mut edges = 0;
    while let Some(dir) = folders.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                folders.push(path);
            }
        }
        let graph = sibling_imports(&src, &dir);
        edges += graph.iter().map(|(_, e)| e.len()).sum::<usize>();
        if let Some(circle) = find_circle(&graph) {
            circles.push(format!(
                "{}: {}",
                dir.strip_prefix(&src).unwrap().display(),
                circle.join(" -> ")
            ));
        }
    }
    assert!(
        edges > 20,
        "only {edges} imports between siblings: is the scan broken?"
    );
    assert!(
        circles.is_empty(),
        "import circles:\n{}",
        circles.join("\n")
    );
}

#[test]
fn a_circle_is_found_and_a_chain_is_not() {
    let graph = |edges: &[(&str, &[&str])]| -> Vec<(String, BTreeSet<String>)> {
        edges
            .iter()
            .map(|(n, e)| (n.to_string(), e.iter().map(|s| s.to_string()).collect()))
            .collect()
    };
    assert_eq!(
        find_circle(&graph(&[("a", &["b"]), ("b", &["c"]), ("c", &["a"])])),
        Some(vec!["a".into(), "b".into(), "c".into(), "a".into()])
    );
    assert_eq!(
        find_circle(&graph(&[("a", &["b", "c"]), ("b", &["c"]), ("c", &[])])),
        None
    );
    assert_eq!(
        names_after(
            "use super::{sql::Tx, writes};\nsuper::super::x; crate::stream::y",
            "super::"
        ),
        ["sql", "writes"].iter().map(|s| s.to_string()).collect()
    );
}

/// anyhow is for the command line's edge: below it, each layer says what
/// went wrong in a type of its own (thiserror).
#[test]
fn only_the_command_line_uses_anyhow() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let below_cli: Vec<String> = files
        .iter()
        .filter(|f| !f.starts_with(src.join("cli")) && !f.ends_with("main.rs"))
        .filter(|f| std::fs::read_to_string(f).unwrap().contains("anyhow"))
        .map(|f| f.strip_prefix(&src).unwrap().display().to_string())
        .collect();
    assert!(files.len() > 50, "only {} files read", files.len());
    assert!(below_cli.is_empty(), "anyhow below src/cli: {below_cli:?}");
}

#[test]
fn every_module_has_a_layer() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let lib = std::fs::read_to_string(src.join("lib.rs")).unwrap();
    let declared: BTreeSet<&str> = lib
        .lines()
        .filter_map(|l| l.strip_prefix("pub mod "))
        .map(|l| l.trim_end_matches(';'))
        .collect();
    let layered: BTreeSet<&str> = ALLOWED.iter().map(|(m, _)| *m).collect();
    assert_eq!(declared, layered, "src/lib.rs and the layer table differ");
}

#[test]
fn the_scan_sees_grouped_and_nested_imports() {
    let named = crate_modules_named(
        "use crate::{domain::Money, stream};\nlet x = crate::store::Store::new();\nmacro $crate::x",
    );
    let expected: BTreeSet<String> = ["domain", "stream", "store"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    assert_eq!(named, expected);
}
