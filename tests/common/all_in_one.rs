//! `streamstock all` on the embedded log as a process of its own, under
//! strace when a test injects or records system calls.

use super::process::{free_port, BIN};
use super::Api;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// `streamstock all` on the embedded log in `data_dir` (its read model in
/// `database`), under `strace` with `strace_args` when given.
pub struct AllInOne {
    child: Child,
    traced: bool,
    pub api: Api,
}

impl AllInOne {
    pub async fn start(
        data_dir: &Path,
        database: &Path,
        strace_args: Option<Vec<String>>,
    ) -> AllInOne {
        let port = free_port();
        let listen = format!("127.0.0.1:{port}");
        let database_url = format!("sqlite://{}", database.display());
        let streamstock = [
            "all",
            "--listen",
            &listen,
            "--profile",
            "none",
            "--partitions",
            "2",
        ];
        let traced = strace_args.is_some();
        let mut command = match strace_args {
            Some(args) => {
                let mut strace = Command::new("strace");
                strace.args(args).arg(BIN);
                strace
            }
            None => Command::new(BIN),
        };
        command
            .args(streamstock)
            .env("STREAMSTOCK_DATA_DIR", data_dir)
            .env("DATABASE_URL", database_url)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null());
        let child = command.spawn().expect("start streamstock (and strace)");
        let api = Api::new(&format!("http://{listen}"));
        api.wait_healthy().await;
        AllInOne { child, traced, api }
    }

    /// The streamstock process: strace's child when traced.
    pub fn pid(&self) -> u32 {
        if !self.traced {
            return self.child.id();
        }
        let children = format!("/proc/{0}/task/{0}/children", self.child.id());
        std::fs::read_to_string(children)
            .expect("strace's children")
            .split_whitespace()
            .next()
            .and_then(|pid| pid.parse().ok())
            .expect("strace runs streamstock")
    }

    /// SIGKILL to streamstock (a power cut, as far as it can tell); waits
    /// for it (and strace) to exit.
    pub fn kill_hard(mut self) {
        let pid = self.pid().to_string();
        Command::new("kill").args(["-KILL", &pid]).status().unwrap();
        let _ = self.child.wait();
    }

    /// SIGTERM to streamstock; waits for it (and strace) to exit.
    pub fn stop(mut self) {
        let pid = self.pid().to_string();
        Command::new("kill").args(["-TERM", &pid]).status().unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.child.try_wait().unwrap().is_none() {
            assert!(Instant::now() < deadline, "streamstock did not stop");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for AllInOne {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let pid = self.pid().to_string();
            let _ = Command::new("kill").args(["-KILL", &pid]).status();
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}
