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
    ("domain", &["telemetry"]),
    ("stream", &["telemetry", "retry", "domain"]),
    ("store", &["telemetry", "retry", "domain", "stream"]),
    (
        "worker",
        &["telemetry", "retry", "domain", "stream", "store"],
    ),
    (
        "gateway",
        &["telemetry", "retry", "domain", "stream", "store"],
    ),
    ("simulator", &["telemetry", "retry", "domain"]),
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
    let mut named = BTreeSet::new();
    let ident = |s: &str| -> String {
        s.chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect()
    };
    for (at, _) in source.match_indices("crate::") {
        // `streamstock::crate::` never occurs; skip `$crate::` in macros.
        if source[..at].ends_with('$') {
            continue;
        }
        let rest = &source[at + "crate::".len()..];
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
