//! Real `streamstock` processes for tests that split roles or kill them.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_streamstock");

pub struct Role {
    pub name: &'static str,
    child: Child,
}

impl Role {
    pub fn start(name: &'static str, args: &[&str], env: &[(&str, &str)]) -> Role {
        let mut command = Command::new(BIN);
        command.args(args).stdout(Stdio::null()).stderr(Stdio::inherit()).env("RUST_LOG", "warn");
        for (k, v) in env {
            command.env(k, v);
        }
        Role {
            name,
            child: command.spawn().expect("spawn streamstock"),
        }
    }

    /// kill -9: no chance to flush, ack or say goodbye.
    pub fn kill_hard(mut self) {
        self.child.kill().expect("SIGKILL");
        self.child.wait().expect("reap");
    }

    /// SIGTERM, then the exit status within 30 s.
    pub fn terminate(mut self) -> std::process::ExitStatus {
        let pid = self.child.id().to_string();
        Command::new("kill").args(["-TERM", &pid]).status().expect("kill");
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(Instant::now() < deadline, "{} did not stop after SIGTERM", self.name);
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Role {
    fn drop(&mut self) {
        let _ = self.child.kill();
    }
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

