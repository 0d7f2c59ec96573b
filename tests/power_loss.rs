//! Power loss on the embedded log, ALICE style: a run of `streamstock all`
//! is recorded with strace (every write, fsync, rename and unlink of the
//! log's files, and every answer the gateway sends), then replayed in a
//! model of the disk that keeps only what was fsynced. At every fsync
//! boundary the test builds the files a power cut at that moment would
//! leave, opens the log on them, and checks that every order acknowledged
//! before the cut is there, and that each partition holds a prefix of what
//! the run wrote, in order.
//!
//! The model: a file's data is durable up to its last fsync (fdatasync);
//! a name (a file created, renamed or removed) is durable once its folder
//! is fsynced. Folders themselves, and the log as it was when the recorded
//! run started (after a clean stop), are durable.
//!
//! The negative control replays the same run as if the log skipped the
//! journal's fsync: the same check must then find acknowledged orders
//! missing, or it could not see a log that loses them.

use crate::common;

use common::all_in_one::AllInOne;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::time::Duration;
use streamstock::stream::embedded::EmbeddedLog;
use streamstock::stream::{EventLog, Partition};

const PARTITIONS: u32 = 2;

/// One system call of the trace, as far as the model needs it.
#[derive(Debug)]
struct Call {
    name: String,
    args: Vec<String>,
    ret: String,
}

/// The call on one line of `strace -f -y -x` (its pid already stripped),
/// or None for what is not a finished call.
fn parse_call(line: &str) -> Option<Call> {
    let open = line.find('(')?;
    let name = line[..open].trim().to_string();
    if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
        return None;
    }
    // The arguments, split at top-level commas, and the return value.
    let bytes = line.as_bytes();
    let (mut depth, mut quoted, mut escaped) = (0i32, false, false);
    let mut args = Vec::new();
    let mut start = open + 1;
    let mut end = None;
    for (i, &b) in bytes.iter().enumerate().skip(open + 1) {
        if quoted {
            match (escaped, b) {
                (true, _) => escaped = false,
                (false, b'\\') => escaped = true,
                (false, b'"') => quoted = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => quoted = true,
            b'(' | b'[' | b'{' | b'<' => depth += 1,
            b']' | b'}' | b'>' => depth -= 1,
            b')' if depth == 0 => {
                args.push(line[start..i].trim().to_string());
                end = Some(i);
                break;
            }
            b')' => depth -= 1,
            b',' if depth == 0 => {
                args.push(line[start..i].trim().to_string());
                start = i + 1;
            }
            _ => {}
        }
    }
    let ret = line[end? + 1..]
        .trim()
        .strip_prefix('=')?
        .trim()
        .to_string();
    Some(Call { name, args, ret })
}

/// The bytes of a strace string argument (`"..."` with `-x` escapes).
fn unquote(text: &str) -> Vec<u8> {
    let text = text.trim();
    let inner = text
        .strip_prefix('"')
        .and_then(|t| t.rsplit_once('"').map(|(body, _)| body))
        .unwrap_or("");
    let mut out = Vec::with_capacity(inner.len());
    let mut chars = inner.bytes();
    while let Some(b) = chars.next() {
        if b != b'\\' {
            out.push(b);
            continue;
        }
        match chars.next() {
            Some(b'n') => out.push(b'\n'),
            Some(b'r') => out.push(b'\r'),
            Some(b't') => out.push(b'\t'),
            Some(b'v') => out.push(0x0b),
            Some(b'f') => out.push(0x0c),
            Some(b'x') => {
                let hex = [chars.next().unwrap_or(b'0'), chars.next().unwrap_or(b'0')];
                out.push(u8::from_str_radix(std::str::from_utf8(&hex).unwrap(), 16).unwrap());
            }
            Some(other) => out.push(other),
            None => {}
        }
    }
    out
}

/// The descriptor and the path `-y` prints for it: `7</data/log/x.wal>`.
fn fd_path(arg: &str) -> Option<(i32, PathBuf)> {
    let (fd, rest) = arg.split_once('<')?;
    Some((
        fd.trim().parse().ok()?,
        PathBuf::from(rest.strip_suffix('>')?),
    ))
}

/// The data of a write-like call: `write`'s string, `writev`'s iovecs.
fn written(call: &Call) -> Vec<u8> {
    if call.name == "writev" {
        let mut data = Vec::new();
        let iovecs = &call.args[1];
        for (at, _) in iovecs.match_indices("iov_base=") {
            data.extend(unquote(&iovecs[at + "iov_base=".len()..]));
        }
        return data;
    }
    unquote(&call.args[1])
}

#[derive(Debug, Clone, Default)]
struct Inode {
    data: Vec<u8>,
    durable: Vec<u8>,
}

/// A descriptor open on one of the log's files.
#[derive(Clone)]
struct Open {
    inode: usize,
    pos: usize,
    append: bool,
}

/// The disk as the recorded run left it, and as a power cut would.
#[derive(Clone)]
struct Disk {
    root: PathBuf,
    inodes: Vec<Inode>,
    names: BTreeMap<PathBuf, usize>,
    durable_names: BTreeMap<PathBuf, usize>,
    open: HashMap<i32, Open>,
    /// The files whose fsync the replay skips (the negative control).
    skip_fsync: fn(&Path) -> bool,
}

impl Disk {
    /// The log under `root` as it is now: all of it durable.
    fn from(root: &Path, skip_fsync: fn(&Path) -> bool) -> Disk {
        let mut disk = Disk {
            root: root.to_path_buf(),
            inodes: Vec::new(),
            names: BTreeMap::new(),
            durable_names: BTreeMap::new(),
            open: HashMap::new(),
            skip_fsync,
        };
        let mut folders = vec![root.to_path_buf()];
        while let Some(folder) = folders.pop() {
            for entry in std::fs::read_dir(&folder).unwrap() {
                let path = entry.unwrap().path();
                if path.is_dir() {
                    folders.push(path);
                } else {
                    let data = std::fs::read(&path).unwrap();
                    disk.inodes.push(Inode {
                        durable: data.clone(),
                        data,
                    });
                    disk.names.insert(path, disk.inodes.len() - 1);
                }
            }
        }
        disk.durable_names = disk.names.clone();
        disk
    }

    fn ours(&self, path: &Path) -> bool {
        path.starts_with(&self.root)
    }

    /// Applies one call; true when it was an fsync of the log's (a
    /// boundary: the durable state may have changed).
    fn apply(&mut self, call: &Call) -> bool {
        let fd_of = |arg: &str| fd_path(arg).map(|(fd, _)| fd);
        match call.name.as_str() {
            "openat" => {
                let path =
                    PathBuf::from(String::from_utf8_lossy(&unquote(&call.args[1])).into_owned());
                let Some((fd, _)) = fd_path(&call.ret) else {
                    return false;
                };
                if !self.ours(&path) {
                    return false;
                }
                if path.is_dir() {
                    return false;
                }
                let flags = &call.args[2];
                let inode = match self.names.get(&path) {
                    Some(&inode) => inode,
                    None => {
                        self.inodes.push(Inode::default());
                        self.names.insert(path, self.inodes.len() - 1);
                        self.inodes.len() - 1
                    }
                };
                if flags.contains("O_TRUNC") {
                    self.inodes[inode].data.clear();
                }
                let append = flags.contains("O_APPEND");
                self.open.insert(
                    fd,
                    Open {
                        inode,
                        pos: 0,
                        append,
                    },
                );
            }
            "close" => {
                // Only a close of one of the log's files: with `-y` every
                // descriptor names what it is open on, and the number of a
                // socket being closed may already belong to a file another
                // thread just opened (the kernel frees it as close begins).
                if let Some((fd, path)) = fd_path(&call.args[0]) {
                    if self.ours(&path) {
                        self.open.remove(&fd);
                    }
                }
            }
            "write" | "writev" | "pwrite64" => {
                let Some(fd) = fd_of(&call.args[0]) else {
                    return false;
                };
                let Some(Open { inode, pos, append }) = self.open.get_mut(&fd) else {
                    return false;
                };
                let Ok(count) = call.ret.parse::<usize>() else {
                    return false;
                };
                let data = &written(call)[..count];
                let file = &mut self.inodes[*inode].data;
                let at = match (call.name.as_str(), *append) {
                    ("pwrite64", _) => call.args[3].parse().unwrap(),
                    (_, true) => file.len(),
                    _ => *pos,
                };
                if file.len() < at + count {
                    file.resize(at + count, 0);
                }
                file[at..at + count].copy_from_slice(data);
                if call.name != "pwrite64" {
                    *pos = at + count;
                }
            }
            "lseek" => {
                let Some(fd) = fd_of(&call.args[0]) else {
                    return false;
                };
                if let (Some(Open { pos, .. }), Ok(to)) = (self.open.get_mut(&fd), call.ret.parse())
                {
                    *pos = to;
                }
            }
            "ftruncate" => {
                let Some(fd) = fd_of(&call.args[0]) else {
                    return false;
                };
                if let Some(Open { inode, .. }) = self.open.get(&fd) {
                    self.inodes[*inode]
                        .data
                        .resize(call.args[1].parse().unwrap(), 0);
                }
            }
            "fsync" | "fdatasync" if call.ret == "0" => {
                // By the path `-y` gives, not the descriptor: the log syncs
                // segments through duplicates (`try_clone`, an fcntl the
                // trace does not show).
                let Some((_, path)) = fd_path(&call.args[0]) else {
                    return false;
                };
                if !self.ours(&path) {
                    return false;
                }
                if path.is_dir() {
                    self.durable_names
                        .retain(|name, _| name.parent() != Some(&path));
                    for (name, inode) in &self.names {
                        if name.parent() == Some(&path) {
                            self.durable_names.insert(name.clone(), *inode);
                        }
                    }
                } else if let Some(&inode) = self.names.get(&path) {
                    if !(self.skip_fsync)(&path) {
                        let inode = &mut self.inodes[inode];
                        inode.durable = inode.data.clone();
                    }
                }
                return true;
            }
            "rename" | "renameat" | "renameat2" => {
                let (from, to) = if call.name == "rename" {
                    (&call.args[0], &call.args[1])
                } else {
                    (&call.args[1], &call.args[3])
                };
                let from = PathBuf::from(String::from_utf8_lossy(&unquote(from)).into_owned());
                let to = PathBuf::from(String::from_utf8_lossy(&unquote(to)).into_owned());
                if call.ret == "0" && self.ours(&from) {
                    if let Some(inode) = self.names.remove(&from) {
                        self.names.insert(to, inode);
                    }
                }
            }
            "unlink" | "unlinkat" => {
                let arg = if call.name == "unlink" {
                    &call.args[0]
                } else {
                    &call.args[1]
                };
                let path = PathBuf::from(String::from_utf8_lossy(&unquote(arg)).into_owned());
                if call.ret == "0" {
                    self.names.remove(&path);
                }
            }
            _ => {}
        }
        false
    }

    /// Writes what a power cut now would leave into `to` (the log's folder
    /// there), folders included.
    fn materialise(&self, to: &Path) {
        for folder in ["groups", "dead-letters"]
            .into_iter()
            .map(String::from)
            .chain((0..PARTITIONS).map(|p| format!("partition-{p}")))
        {
            std::fs::create_dir_all(to.join(folder)).unwrap();
        }
        for (name, inode) in &self.durable_names {
            let path = to.join(name.strip_prefix(&self.root).unwrap());
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, &self.inodes[*inode].durable).unwrap();
        }
    }
}

/// Every entry of the log in `dir`, by partition: (event id, type, key).
async fn entries(dir: &Path) -> Vec<Vec<(uuid::Uuid, String, String)>> {
    let log = EmbeddedLog::open(dir, PARTITIONS).expect("the log opens after the power cut");
    let all: Vec<Partition> = (0..PARTITIONS).map(Partition).collect();
    let mut by_partition = vec![Vec::new(); PARTITIONS as usize];
    loop {
        let read = log
            .read_group("power-loss-check", "checker", &all, 10_000, Duration::ZERO)
            .await
            .expect("the log reads after the power cut");
        if read.is_empty() {
            break;
        }
        for delivery in read {
            let envelope = delivery.envelope.expect("an entry that decodes");
            by_partition[delivery.partition.0 as usize].push((
                envelope.event_id,
                envelope.event_type.as_str().to_string(),
                envelope.key,
            ));
        }
    }
    by_partition
}

/// What the replay found: crash states checked, the most orders any of
/// them had acknowledged, and the faults (empty when none).
struct Replay {
    states: usize,
    most_acknowledged: usize,
    /// The most acknowledged orders any one cut lost.
    most_lost: usize,
    /// Cuts after which a partition was not a prefix of the run's.
    not_prefix: usize,
    faults: Vec<String>,
}

impl Replay {
    /// The replay as a line of the chaos table (`scripts/chaos.sh`).
    fn report(&self, scenario: &str, control: bool) {
        let scenario = format!("{scenario} ({} cuts)", self.states);
        let mut verdict = common::history::Verdict::counted(&scenario, control);
        verdict.orders = self.most_acknowledged;
        verdict.acknowledged = self.most_acknowledged;
        verdict.lost = self.most_lost;
        verdict.out_of_order = self.not_prefix;
        verdict.report();
    }
}

/// Replays `trace` over the log as it was in `base`, checking the state a
/// power cut would leave at every fsync boundary against `final_entries`.
async fn replay(
    trace: &str,
    base: &Disk,
    skip_fsync: fn(&Path) -> bool,
    final_entries: &[Vec<(uuid::Uuid, String, String)>],
) -> Replay {
    let mut disk = Disk {
        skip_fsync,
        ..base.clone()
    };
    let mut acknowledged: Vec<String> = Vec::new();
    let mut seen: HashSet<String> = HashSet::new();
    let mut unfinished: HashMap<String, String> = HashMap::new();
    let mut result = Replay {
        states: 0,
        most_acknowledged: 0,
        most_lost: 0,
        not_prefix: 0,
        faults: Vec::new(),
    };
    let mut lines: Vec<String> = trace.lines().map(str::to_string).collect();
    // A final boundary: the state once the run's last call is in.
    lines.push("0 fsync(-1<end>) = 0".to_string());
    for line in lines {
        // `PID   call(...)`: strace pads the pid with spaces.
        let Some((pid, rest)) = line.split_once(' ') else {
            continue;
        };
        let rest = rest.trim_start();
        // Answers on the gateway's sockets: the orders acknowledged, from
        // the moment the answer is handed to the kernel.
        if rest.contains("<socket:[") && (rest.starts_with("write") || rest.starts_with("sendto")) {
            for id in order_ids(rest) {
                if seen.insert(id.clone()) {
                    acknowledged.push(id);
                }
            }
        }
        let text = if let Some(head) = rest.strip_suffix(" <unfinished ...>") {
            if head.starts_with("close(") {
                // A close takes effect as it begins: its number can be
                // handed to another thread's open before its line ends.
                if let Some(call) = parse_call(&format!("{head}) = 0")) {
                    disk.apply(&call);
                }
                continue;
            }
            unfinished.insert(pid.to_string(), head.to_string());
            continue;
        } else if rest.starts_with("<... ") {
            let Some(head) = unfinished.remove(pid) else {
                continue;
            };
            let tail = rest.split_once("resumed>").map_or("", |(_, tail)| tail);
            format!("{head}{tail}")
        } else {
            rest.to_string()
        };
        let Some(call) = parse_call(&text) else {
            continue;
        };
        let is_end = call.args.first().is_some_and(|a| a == "-1<end>");
        if (call.name == "fsync" || call.name == "fdatasync") && call.ret == "0" {
            // The state a cut just before this fsync leaves, against the
            // orders acknowledged so far (each acknowledged only after the
            // fsync that covered it).
            let covered =
                is_end || fd_path(&call.args[0]).is_some_and(|(_, path)| disk.ours(&path));
            if covered {
                let dir = tempfile::tempdir().unwrap();
                disk.materialise(dir.path());
                let found = entries(dir.path()).await;
                result.states += 1;
                result.most_acknowledged = result.most_acknowledged.max(acknowledged.len());
                let placed: HashSet<&str> = found
                    .iter()
                    .flatten()
                    .filter(|(_, kind, _)| kind == "order.placed")
                    .map(|(_, _, key)| key.as_str())
                    .collect();
                let lost: Vec<&String> = acknowledged
                    .iter()
                    .filter(|id| !placed.contains(id.as_str()))
                    .collect();
                result.most_lost = result.most_lost.max(lost.len());
                if !lost.is_empty() {
                    result.faults.push(format!(
                        "state {}: {} of {} acknowledged orders missing (first {})",
                        result.states,
                        lost.len(),
                        acknowledged.len(),
                        lost[0]
                    ));
                }
                for (p, entries) in found.iter().enumerate() {
                    let prefix = final_entries[p].iter().take(entries.len());
                    if !entries.iter().map(|e| e.0).eq(prefix.map(|e| e.0)) {
                        result.not_prefix += 1;
                        result.faults.push(format!(
                            "state {}: partition {p} is not a prefix of what the run wrote",
                            result.states
                        ));
                    }
                }
            }
            if is_end {
                break;
            }
        }
        disk.apply(&call);
    }
    result
}

/// The order ids of the 202 answers in a traced socket write (strace
/// escapes their quotes; an order's `msg_id` says it was appended).
fn order_ids(traced: &str) -> Vec<String> {
    let text = traced.replace("\\\"", "\"");
    if !text.contains("\"msg_id\"") {
        return Vec::new();
    }
    text.match_indices("\"order_id\":\"")
        .filter_map(|(at, key)| text.get(at + key.len()..at + key.len() + 36))
        .map(str::to_string)
        .collect()
}

fn no_file(_: &Path) -> bool {
    false
}

fn journal_files(path: &Path) -> bool {
    path.file_name()
        .is_some_and(|name| name.to_string_lossy().starts_with("journal-"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_acknowledged_order_survives_a_power_cut_at_every_fsync() {
    let dir = tempfile::tempdir().unwrap();
    let (data_dir, database) = (dir.path().join("data"), dir.path().join("read-model.db"));
    let log_dir = data_dir.join("log");

    // A log with products in it, stopped cleanly: the recorded run's start.
    let app = AllInOne::start(&data_dir, &database, None).await;
    let product = app.api.create_product("POWER-1", 1.00, 100_000).await;
    app.stop();
    let base = Disk::from(&log_dir, no_file);

    // The recorded run: orders from four clients at once, so that fsyncs
    // cover several appends; then a cut (SIGKILL: nothing is flushed).
    let trace_path = dir.path().join("trace.txt");
    let strace = [
        "-f",
        "-qq",
        "-y",
        "-x",
        "-s",
        "1048576",
        "-e",
        "signal=none",
        "-e",
        "trace=openat,close,write,writev,pwrite64,lseek,ftruncate,fsync,fdatasync,rename,renameat,renameat2,unlink,unlinkat,sendto",
        "-o",
        trace_path.to_str().unwrap(),
    ]
    .map(String::from)
    .to_vec();
    let app = AllInOne::start(&data_dir, &database, Some(strace)).await;
    let api = std::sync::Arc::new(common::Api::new(&app.api.base));
    let clients: Vec<_> = (0..4)
        .map(|client| {
            let api = api.clone();
            tokio::spawn(async move {
                let mut acknowledged = 0;
                for n in 0..25 {
                    let body = serde_json::json!({
                        "customer_email": format!("cut{client}-{n}@example.com"),
                        "items": [{ "product_id": product, "quantity": 1 }],
                    });
                    if api.place_order(&body).await.status == 202 {
                        acknowledged += 1;
                    }
                }
                acknowledged
            })
        })
        .collect();
    let mut acknowledged = 0;
    for client in clients {
        acknowledged += client.await.unwrap();
    }
    app.kill_hard();
    assert_eq!(
        acknowledged, 100,
        "every order of the recorded run was acknowledged"
    );

    let final_entries = entries(&log_dir).await;
    let trace = std::fs::read_to_string(&trace_path).unwrap();
    // Kept where a failure can be read again (`target/tmp`): a cut whose
    // log does not open is a fault of the log or of this model, and the
    // trace is what tells which.
    let kept = Path::new(env!("CARGO_TARGET_TMPDIR")).join("power_loss.strace");
    std::fs::write(&kept, &trace).unwrap();
    eprintln!("the recorded trace: {}", kept.display());
    let checked = replay(&trace, &base, no_file, &final_entries).await;
    checked.report("power loss, embedded log", false);
    eprintln!(
        "power cuts replayed at {} fsync boundaries; up to {} acknowledged orders each; faults: {:?}",
        checked.states, checked.most_acknowledged, checked.faults
    );
    assert_eq!(
        checked.most_acknowledged, 100,
        "the trace did not show every acknowledgement"
    );
    assert!(
        checked.states >= 20,
        "only {} fsync boundaries",
        checked.states
    );
    assert!(checked.faults.is_empty(), "{:#?}", checked.faults);

    // The negative control: the same run, as if the journal were never
    // fsynced, loses acknowledged orders, and the same check says so.
    let unsynced = replay(&trace, &base, journal_files, &final_entries).await;
    unsynced.report("power loss, embedded log without the journal's fsync", true);
    eprintln!(
        "without the journal's fsyncs: {:?}",
        unsynced.faults.first()
    );
    assert!(
        unsynced
            .faults
            .iter()
            .any(|f| f.contains("acknowledged orders missing")),
        "a log that skips its fsyncs lost nothing here: the check cannot see a loss"
    );
}
