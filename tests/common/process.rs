//! Real `streamstock` processes for tests that split roles or kill them.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_streamstock");

pub struct Role {
    pub name: &'static str,
    child: Child,
}

impl Role {
    pub fn start(name: &'static str, args: &[&str], env: &[(String, String)]) -> Role {
        Role::start_with_log(name, args, env, Stdio::inherit())
    }

    /// `start`, its log (stderr) going to `log` (e.g. a file to read).
    pub fn start_with_log(
        name: &'static str,
        args: &[&str],
        env: &[(String, String)],
        log: impl Into<Stdio>,
    ) -> Role {
        let mut command = role_command(args, env, log);
        Role {
            name,
            child: command.spawn().expect("spawn streamstock"),
        }
    }

    /// `start`, inside the network namespace `namespace`: on a host of its
    /// own (`common::network::Island`).
    #[allow(dead_code)] // not every test binary uses it
    pub fn start_in_namespace(
        namespace: &str,
        name: &'static str,
        args: &[&str],
        env: &[(String, String)],
    ) -> Role {
        let mut command = role_command_in(Some(namespace), args, env, Stdio::inherit());
        Role {
            name,
            child: command.spawn().expect("spawn streamstock"),
        }
    }

    /// `start`, seeing `hosts` as its `/etc/hosts`: the process gets a
    /// mount namespace of its own with the file bound over the real one, so
    /// a test changes what a name resolves to (the system resolver reads
    /// the file at each lookup) by rewriting `hosts` in place.
    #[allow(dead_code)] // not every test binary uses it
    pub fn start_with_hosts_file(
        name: &'static str,
        args: &[&str],
        env: &[(String, String)],
        hosts: &Path,
    ) -> Role {
        use std::ffi::CString;
        use std::os::unix::ffi::OsStrExt;
        use std::os::unix::process::CommandExt;
        let mut command = role_command(args, env, Stdio::inherit());
        let source = CString::new(hosts.as_os_str().as_bytes()).unwrap();
        let (target, root) = (c"/etc/hosts", c"/");
        // SAFETY: between fork and exec only unshare(2) and mount(2) run,
        // plain system calls, on strings made before the fork.
        unsafe {
            command.pre_exec(move || {
                let none = std::ptr::null();
                if libc::unshare(libc::CLONE_NEWNS) != 0
                    // Private first: the bind must not reach the host's
                    // namespace through shared propagation.
                    || libc::mount(none, root.as_ptr(), none, libc::MS_REC | libc::MS_PRIVATE, std::ptr::null())
                        != 0
                    || libc::mount(source.as_ptr(), target.as_ptr(), none, libc::MS_BIND, std::ptr::null())
                        != 0
                {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        Role {
            name,
            child: command.spawn().expect("spawn streamstock"),
        }
    }

    /// `start`, with the open-file limit (soft and hard) at `files`, as
    /// from a shell where `ulimit -n` set it: the role cannot raise it.
    #[allow(dead_code)] // not every test binary uses it
    pub fn start_with_file_limit(
        name: &'static str,
        args: &[&str],
        env: &[(String, String)],
        files: u64,
    ) -> Role {
        use std::os::unix::process::CommandExt;
        let mut command = role_command(args, env, Stdio::inherit());
        // SAFETY: between fork and exec only setrlimit runs, which is
        // async-signal-safe, on a struct built before the fork.
        unsafe {
            let limit = libc::rlimit {
                rlim_cur: files,
                rlim_max: files,
            };
            command.pre_exec(move || {
                if libc::setrlimit(libc::RLIMIT_NOFILE, &limit) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
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

    /// SIGSTOP: the process freezes (a long pause, a stalled host) while
    /// its sockets stay open.
    pub fn pause(&self) {
        let pid = self.child.id().to_string();
        let status = Command::new("kill").args(["-STOP", &pid]).status();
        assert!(status.expect("kill").success(), "SIGSTOP {}", self.name);
    }

    /// SIGCONT: a paused process carries on where it stopped.
    pub fn resume(&self) {
        let pid = self.child.id().to_string();
        let status = Command::new("kill").args(["-CONT", &pid]).status();
        assert!(status.expect("kill").success(), "SIGCONT {}", self.name);
    }

    /// `kill -<name>` (HUP, USR1...): a signal the role handles.
    #[allow(dead_code)] // not every test binary uses it
    pub fn signal(&self, name: &str) {
        let pid = self.child.id().to_string();
        let status = Command::new("kill")
            .args([format!("-{name}"), pid])
            .status();
        assert!(status.expect("kill").success(), "SIG{name} {}", self.name);
    }

    /// SIGTERM, then the exit status within 30 s.
    pub fn terminate(mut self) -> std::process::ExitStatus {
        let pid = self.child.id().to_string();
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .expect("kill");
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "{} did not stop after SIGTERM",
                self.name
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Role {
    fn drop(&mut self) {
        let _ = self.child.kill();
    }
}

/// `streamstock all` with no simulator, on the embedded backends in
/// `data_dir`, on a free loopback port, with `extra` flags; gives the role
/// and its address. With `file_limit`, its open-file limit (soft and hard).
#[allow(dead_code)] // not every test binary uses it
pub fn embedded_all(
    data_dir: &Path,
    extra: &[&str],
    file_limit: Option<u64>,
) -> (Role, std::net::SocketAddr) {
    let listen = std::net::SocketAddr::from(([127, 0, 0, 1], free_port()));
    let (listen_text, data_dir_text) = (listen.to_string(), data_dir.display().to_string());
    let mut args = vec![
        "all",
        "--profile",
        "none",
        "--listen",
        &listen_text,
        "--data-dir",
        &data_dir_text,
    ];
    args.extend_from_slice(extra);
    let role = match file_limit {
        Some(files) => Role::start_with_file_limit("all", &args, &[], files),
        None => Role::start("all", &args, &[]),
    };
    (role, listen)
}

fn role_command(args: &[&str], env: &[(String, String)], log: impl Into<Stdio>) -> Command {
    role_command_in(None, args, env, log)
}

/// The command of a role, run inside the network namespace `namespace` if
/// given.
fn role_command_in(
    namespace: Option<&str>,
    args: &[&str],
    env: &[(String, String)],
    log: impl Into<Stdio>,
) -> Command {
    let mut command = match namespace {
        Some(namespace) => {
            let mut command = Command::new("ip");
            command.args(["netns", "exec", namespace, BIN]);
            command
        }
        None => Command::new(BIN),
    };
    command
        .args(args)
        .stdout(Stdio::null())
        .stderr(log)
        .env("RUST_LOG", "warn");
    command.envs(env.iter().map(|(k, v)| (k, v)));
    command
}

/// Runs the binary with `args` and `env` to its end; returns its exit
/// code, its stderr and the seconds it took.
pub fn run_to_end<K: AsRef<std::ffi::OsStr>, V: AsRef<std::ffi::OsStr>>(
    args: &[&str],
    env: &[(K, V)],
) -> (Option<i32>, String, f64) {
    let started = Instant::now();
    let out = Command::new(BIN)
        .args(args)
        .envs(env.iter().map(|(k, v)| (k, v)))
        .env("RUST_LOG", "warn")
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
        started.elapsed().as_secs_f64(),
    )
}

/// `streamstock status --json` on the deployment of `env`.
/// The workers holding partitions in a `status --json` report.
#[allow(dead_code)] // not every test binary uses it
pub fn owners(report: &serde_json::Value) -> std::collections::BTreeSet<String> {
    report["partitions"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|p| p["owner"].as_str().map(str::to_string))
        .collect()
}

pub fn status_report(env: &[(String, String)]) -> serde_json::Value {
    let out = Command::new(BIN)
        .args(["status", "--json"])
        .envs(env.iter().map(|(k, v)| (k, v)))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// A loopback port nothing listens on, taken below the kernel's ephemeral
/// range (`ip_local_port_range`). A port from that range can be handed to
/// some outgoing connection meanwhile (even a role's own connection to
/// that very port, which then connects to itself), so a server started
/// on it later finds it taken.
pub fn free_port() -> u16 {
    use rand::Rng;
    let range =
        std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range").unwrap_or_default();
    let ephemeral_low: u16 = range
        .split_whitespace()
        .next()
        .and_then(|low| low.parse().ok())
        .unwrap_or(32768);
    let below = 10_000..ephemeral_low.max(10_001);
    let mut rng = rand::rng();
    for _ in 0..1_000 {
        let port = rng.random_range(below.clone());
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free loopback port in {below:?}");
}

/// Whether a server on `host`:`port` answers a RESP PING with PONG.
fn answers_ping(host: &str, port: u16) -> bool {
    use std::io::{Read, Write};
    let Ok(mut stream) = std::net::TcpStream::connect((host, port)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(1)));
    let mut reply = [0u8; 7];
    stream.write_all(b"PING\r\n").is_ok()
        && stream.read_exact(&mut reply).is_ok()
        && &reply == b"+PONG\r\n"
}

/// A valkey-server of this test's own, with AOF fsynced on every write.
pub struct OwnValkey {
    dir: tempfile::TempDir,
    /// The address it listens on (127.0.0.1 unless started `on_host`).
    pub host: String,
    pub port: u16,
    /// The network namespace it runs in, if not this one.
    namespace: Option<String>,
    child: Option<Child>,
    /// Server settings beyond AOF and fsync always (`--replicaof`, ...).
    extra: Vec<String>,
}

impl OwnValkey {
    pub fn start() -> OwnValkey {
        OwnValkey::start_on(free_port())
    }

    /// On `port`, which a test may have handed to a role before the
    /// server is up.
    pub fn start_on(port: u16) -> OwnValkey {
        OwnValkey::start_with(port, &[])
    }

    /// A replica of `primary`, with AOF fsynced on every write too.
    pub fn replica_of(primary: &OwnValkey) -> OwnValkey {
        let port = primary.port.to_string();
        OwnValkey::start_with(free_port(), &["--replicaof", "127.0.0.1", &port])
    }

    /// On `port`, with `extra` settings.
    pub fn start_with(port: u16, extra: &[&str]) -> OwnValkey {
        OwnValkey::on_host("127.0.0.1", None, port, extra)
    }

    /// Listening on `host`:`port`, inside the network namespace
    /// `namespace` if given (a host of its own), with `extra` settings.
    #[allow(dead_code)] // not every test binary uses it
    pub fn on_host(host: &str, namespace: Option<&str>, port: u16, extra: &[&str]) -> OwnValkey {
        OwnValkey::try_on_host(host, namespace, port, extra).unwrap_or_else(|why| panic!("{why}"))
    }

    /// `on_host`, or why the server exited at once (its port taken: a
    /// caller free to choose another can try again).
    pub fn try_on_host(
        host: &str,
        namespace: Option<&str>,
        port: u16,
        extra: &[&str],
    ) -> Result<OwnValkey, String> {
        let mut valkey = OwnValkey {
            dir: tempfile::tempdir().unwrap(),
            host: host.to_string(),
            port,
            namespace: namespace.map(str::to_string),
            child: None,
            extra: extra.iter().map(|s| s.to_string()).collect(),
        };
        valkey.try_restart()?;
        Ok(valkey)
    }

    /// Kills the server and deletes its data: the host died with its disk.
    pub fn destroy(&mut self) {
        self.kill_hard();
        for entry in std::fs::read_dir(self.dir.path()).unwrap().flatten() {
            let path = entry.path();
            if path.is_dir() {
                std::fs::remove_dir_all(path).unwrap();
            } else {
                std::fs::remove_file(path).unwrap();
            }
        }
    }

    pub fn restart(&mut self) {
        self.try_restart().unwrap_or_else(|why| panic!("{why}"));
    }

    /// Starts the server; Err when it exits at once (its port taken).
    pub fn try_restart(&mut self) -> Result<(), String> {
        let bin = std::env::var("STREAMSTOCK_TEST_VALKEY_SERVER").expect(
            "STREAMSTOCK_TEST_VALKEY_SERVER is not set: run the suite with ./scripts/test.sh",
        );
        let mut command = match &self.namespace {
            Some(namespace) => {
                let mut command = Command::new("ip");
                command.args(["netns", "exec", namespace, &bin]);
                command
            }
            None => Command::new(&bin),
        };
        let child = command
            .args([
                "--bind",
                &self.host,
                "--port",
                &self.port.to_string(),
                "--dir",
                self.dir.path().to_str().unwrap(),
            ])
            // Clients on other hosts (network namespaces) are the tests'
            // own: no password to ask of them.
            .args(["--protected-mode", "no"])
            .args([
                "--appendonly",
                "yes",
                "--appendfsync",
                "always",
                "--save",
                "",
            ])
            .args(&self.extra)
            .stdout(Stdio::null())
            .spawn()
            .expect("start valkey-server");
        self.child = Some(child);
        // Up means this server answers PING: not merely that something
        // accepts connections on the port (another process could), and not
        // a server that exited at once because the port was taken.
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                self.child = None;
                return Err(format!(
                    "valkey-server on port {} exited at start: {status}",
                    self.port
                ));
            }
            if answers_ping(&self.host, self.port) {
                return Ok(());
            }
            assert!(Instant::now() < deadline, "valkey-server did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn kill_hard(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().unwrap();
            child.wait().unwrap();
        }
    }

    /// SIGSTOP or SIGCONT: the server freezes with its connections open.
    pub fn signal(&self, signal: &str) {
        let pid = self.child.as_ref().expect("running").id().to_string();
        let status = Command::new("kill").args([signal, &pid]).status();
        assert!(
            status.expect("kill").success(),
            "kill {signal} valkey-server"
        );
    }

    pub fn url(&self) -> String {
        format!("redis://{}:{}", self.host, self.port)
    }
}

impl Drop for OwnValkey {
    fn drop(&mut self) {
        self.kill_hard();
    }
}

/// A PostgreSQL server of a test's own (tests that stop it, or configure it).
pub struct OwnPostgres {
    dir: tempfile::TempDir,
    bin: PathBuf,
    pub port: u16,
    /// Server settings beyond the test defaults (`-c ssl=on`, ...).
    options: String,
}

impl OwnPostgres {
    pub fn start() -> OwnPostgres {
        OwnPostgres::start_with(|_| Vec::new())
    }

    /// Starts one whose `setup` may write files into its folder (before
    /// they are handed to the postgres user) and returns extra settings.
    pub fn start_with(setup: impl FnOnce(&Path) -> Vec<String>) -> OwnPostgres {
        let bin = std::env::var("STREAMSTOCK_TEST_PG_BIN").map(PathBuf::from).unwrap_or_else(|_| {
            let mut found: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
                .expect("PostgreSQL server binaries in /usr/lib/postgresql (apt-get install postgresql)")
                .flatten()
                .map(|e| e.path().join("bin"))
                .collect();
            found.sort();
            found.pop().expect("a PostgreSQL version under /usr/lib/postgresql")
        });
        let dir = tempfile::tempdir().unwrap();
        let options = setup(dir.path())
            .iter()
            .map(|o| format!(" -c {o}"))
            .collect();
        hand_to_postgres(dir.path());
        let pg = OwnPostgres {
            dir,
            bin,
            port: free_port(),
            options,
        };
        let data = pg.data();
        pg.run(
            "initdb",
            &["-D", &data, "-A", "trust", "-U", "postgres", "--no-sync"],
        );
        pg.restart();
        pg
    }

    pub fn data(&self) -> String {
        self.dir.path().join("data").display().to_string()
    }

    pub fn run(&self, tool: &str, args: &[&str]) {
        let program = self.bin.join(tool);
        let mut command = if is_root() {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(&program);
            c
        } else {
            Command::new(&program)
        };
        let out = command
            .args(args)
            .output()
            .unwrap_or_else(|e| panic!("{tool}: {e}"));
        assert!(
            out.status.success(),
            "{tool} {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    pub fn restart(&self) {
        let options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off{}",
            self.port,
            self.dir.path().display(),
            self.options
        );
        let log = self.dir.path().join("postgres.log").display().to_string();
        self.run(
            "pg_ctl",
            &[
                "-D",
                &self.data(),
                "-l",
                &log,
                "-w",
                "-t",
                "60",
                "-o",
                &options,
                "start",
            ],
        );
    }

    pub fn stop_hard(&self) {
        self.run("pg_ctl", &["-D", &self.data(), "-m", "immediate", "stop"]);
    }

    /// A standby of `primary`, streaming from it as `application_name`
    /// `standby` (a copy by pg_basebackup, then started), through the port
    /// `stream_via` (the primary's, or a proxy's in front of it).
    pub fn standby_of(primary: &OwnPostgres, stream_via: u16) -> OwnPostgres {
        let dir = tempfile::tempdir().unwrap();
        hand_to_postgres(dir.path());
        let standby = OwnPostgres {
            dir,
            bin: primary.bin.clone(),
            port: free_port(),
            options: String::new(),
        };
        let port = primary.port.to_string();
        let data = standby.data();
        standby.run(
            "pg_basebackup",
            &[
                "-h",
                "127.0.0.1",
                "-p",
                &port,
                "-U",
                "postgres",
                "-D",
                &data,
                "-R",
                "--no-sync",
            ],
        );
        // A later line wins: name the standby for synchronous_standby_names.
        let conninfo = format!(
            "\nprimary_conninfo = 'host=127.0.0.1 port={stream_via} user=postgres application_name=standby'\n"
        );
        let auto = Path::new(&data).join("postgresql.auto.conf");
        let mut settings = std::fs::read_to_string(&auto).unwrap();
        settings.push_str(&conninfo);
        std::fs::write(&auto, settings).unwrap();
        standby.restart();
        standby
    }

    /// `pg_ctl promote`: a standby becomes a primary.
    pub fn promote(&self) {
        self.run("pg_ctl", &["-D", &self.data(), "-w", "promote"]);
    }

    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }
}

impl Drop for OwnPostgres {
    fn drop(&mut self) {
        // A server the test stopped already has no PID file.
        if !Path::new(&self.data()).join("postmaster.pid").exists() {
            return;
        }
        let this: &OwnPostgres = self;
        let _ = std::panic::catch_unwind(|| OwnPostgres::stop_hard(this));
    }
}

/// As root, makes `dir` the postgres user's: initdb and the server refuse
/// to run as root, so they run as postgres.
fn hand_to_postgres(dir: &Path) {
    if is_root() {
        Command::new("chown")
            .args(["-R", "postgres"])
            .arg(dir)
            .status()
            .unwrap();
    }
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| o.stdout.starts_with(b"0\n"))
        .unwrap_or(false)
}

/// One deployment shared by several processes: a fresh PostgreSQL database,
/// a fresh Valkey namespace, and the environment that points roles at them.
pub struct SharedDeployment {
    pub database: String,
    pub env: Vec<(String, String)>,
    _data_dir: tempfile::TempDir,
}

impl SharedDeployment {
    pub async fn new() -> SharedDeployment {
        let dir = tempfile::tempdir().unwrap();
        let database = super::fresh_postgres_database().await;
        let env = [
            ("STREAMSTOCK_VALKEY_URL", super::valkey_url()),
            ("DATABASE_URL", database.clone()),
            (
                "STREAMSTOCK_VALKEY_NAMESPACE",
                format!("procs-{}", uuid::Uuid::new_v4().simple()),
            ),
            ("STREAMSTOCK_PARTITIONS", "4".to_string()),
            ("STREAMSTOCK_DATA_DIR", dir.path().display().to_string()),
            ("STREAMSTOCK_BATCH_WAIT_MS", "20".to_string()),
        ];
        SharedDeployment {
            database,
            env: env.into_iter().map(|(k, v)| (k.to_string(), v)).collect(),
            _data_dir: dir,
        }
    }

    /// Sets `key` for every role, replacing what `new` set.
    pub fn with(mut self, key: &str, value: &str) -> SharedDeployment {
        self.env.retain(|(k, _)| k != key);
        self.env.push((key.to_string(), value.to_string()));
        self
    }
}

/// A `serve` and a long-lived `worker` on one shared deployment, with
/// products created through the gateway: the stage of the tests that kill
/// other workers under load.
pub struct ServeAndWorker {
    pub gateway: Role,
    pub worker: Role,
    pub api: std::sync::Arc<super::Api>,
    /// Each product's id and the units it was stocked with.
    pub stock: Vec<(uuid::Uuid, i64)>,
}

impl ServeAndWorker {
    /// Starts both roles and creates `products` (sku, price, stock).
    pub async fn start(env: &[(String, String)], products: &[(&str, f64, i64)]) -> ServeAndWorker {
        let listen = format!("127.0.0.1:{}", free_port());
        let gateway = Role::start("serve", &["serve", "--listen", &listen], env);
        let worker = Role::start("worker", &["worker", "--listen", "127.0.0.1:0"], env);
        let api = std::sync::Arc::new(super::Api::new(&format!("http://{listen}")));
        api.wait_healthy().await;
        let mut stock = Vec::new();
        for &(sku, price, units) in products {
            stock.push((api.create_product(sku, price, units).await, units));
        }
        ServeAndWorker {
            gateway,
            worker,
            api,
            stock,
        }
    }

    pub fn product_ids(&self) -> Vec<uuid::Uuid> {
        self.stock.iter().map(|s| s.0).collect()
    }

    /// SIGTERM to both; each must exit 0.
    pub fn stop(self) {
        assert!(self.worker.terminate().success());
        assert!(self.gateway.terminate().success());
    }
}

/// The flags that point an operator command at the deployment of `common`.
pub fn deployment_args(common: &streamstock::cli::config::CommonArgs) -> Vec<String> {
    let mut args = vec![
        "--data-dir".to_string(),
        common.data_dir.display().to_string(),
        "--partitions".to_string(),
        common.partitions.to_string(),
        "--valkey-namespace".to_string(),
        common.valkey_namespace.clone(),
        "--per-second-retention".to_string(),
        common.retention.per_second_retention.to_string(),
        "--per-minute-retention".to_string(),
        common.retention.per_minute_retention.to_string(),
    ];
    if let Some(url) = &common.valkey_url {
        args.extend(["--valkey-url".to_string(), url.clone()]);
    }
    if let Some(url) = &common.database_url {
        args.extend(["--database-url".to_string(), url.clone()]);
    }
    args
}

/// Runs `streamstock <args>` against the deployment of `common` (the
/// operator's commands: rebuild, dlq, status) and returns its output.
pub fn run_cli(
    common: &streamstock::cli::config::CommonArgs,
    args: &[&str],
) -> std::process::Output {
    Command::new(BIN)
        .args(args)
        .args(deployment_args(common))
        .env("RUST_LOG", "warn")
        .output()
        .expect("run streamstock")
}

/// As `run_cli`, for a command that must succeed: its standard output.
pub fn run_cli_ok(common: &streamstock::cli::config::CommonArgs, args: &[&str]) -> String {
    let out = run_cli(common, args);
    assert!(
        out.status.success(),
        "streamstock {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).to_string()
}

/// `assert_rebuild_identical` for the (stopped) deployment of `common`.
pub fn assert_rebuild_identical_for(common: &streamstock::cli::config::CommonArgs) {
    let args = deployment_args(common);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    assert_rebuild_identical(&args, &[]);
}

/// Runs `streamstock rebuild --json` with `args` and `env` (the deployment
/// must be stopped) and asserts the rebuilt read model is identical to the
/// live one, table by table.
pub fn assert_rebuild_identical(args: &[&str], env: &[(String, String)]) {
    let out = Command::new(BIN)
        .args(["rebuild", "--json"])
        .args(args)
        .envs(env.iter().map(|(k, v)| (k, v)))
        .env("RUST_LOG", "warn")
        .output()
        .expect("run streamstock rebuild");
    assert!(
        out.status.success(),
        "rebuild failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("a JSON report");
    assert_eq!(
        report["identical"], true,
        "rebuild changed the read model: {report:#}"
    );
    assert!(report["replayed"].as_u64().unwrap() > 0, "{report:#}");
}
