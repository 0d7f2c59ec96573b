//! Builds the React dashboard in `web/` into `web/dist`, which rust-embed
//! then embeds in the binary. Runs npm only when the dashboard's sources are
//! newer than the last build, so ordinary Rust rebuilds stay fast.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::SystemTime;

const SOURCES: &[&str] = &[
    "web/src",
    "web/index.html",
    "web/package.json",
    "web/package-lock.json",
    "web/vite.config.ts",
    "web/tsconfig.json",
];

fn main() {
    for source in SOURCES {
        println!("cargo:rerun-if-changed={source}");
    }
    println!("cargo:rerun-if-env-changed=STREAMSTOCK_SKIP_WEB_BUILD");
    // sqlx::migrate! embeds the migrations: a new one must rebuild the crate.
    println!("cargo:rerun-if-changed=migrations");

    let web = Path::new("web");
    let built = web.join("dist/index.html");
    if std::env::var_os("STREAMSTOCK_SKIP_WEB_BUILD").is_some() && built.exists() {
        return;
    }
    let newest_source = SOURCES
        .iter()
        .filter_map(|s| newest_mtime(Path::new(s)))
        .max();
    let last_build = modified(&built);
    let stale = match (newest_source, last_build) {
        (_, None) => true,
        (Some(src), Some(out)) => src > out,
        (None, Some(_)) => false,
    };
    if !stale {
        return;
    }

    let installed = web.join("node_modules/.package-lock.json");
    if modified(&installed) < modified(&web.join("package-lock.json")) {
        npm(web, &["ci", "--no-audit", "--no-fund"]);
    }
    npm(web, &["run", "build"]);
}

fn npm(dir: &Path, args: &[&str]) {
    let status = Command::new("npm").args(args).current_dir(dir).status();
    match status {
        Ok(s) if s.success() => {}
        Ok(s) => panic!(
            "`npm {}` in web/ failed with {s}; see its output above",
            args.join(" ")
        ),
        Err(e) => panic!(
            "could not run npm ({e}). The dashboard is built with Node.js 20+ and npm; \
             install them (e.g. `apt-get install nodejs npm`) and build again"
        ),
    }
}

fn modified(path: &Path) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

fn newest_mtime(path: &Path) -> Option<SystemTime> {
    let meta = std::fs::metadata(path).ok()?;
    if !meta.is_dir() {
        return meta.modified().ok();
    }
    let mut newest = meta.modified().ok();
    let mut stack: Vec<PathBuf> = vec![path.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            let p = entry.path();
            if p.is_dir() {
                stack.push(p);
            } else if let Some(m) = modified(&p) {
                newest = newest.max(Some(m));
            }
        }
    }
    newest
}
