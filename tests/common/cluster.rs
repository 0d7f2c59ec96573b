//! Valkey Clusters of a test's own: nodes started as `OwnValkey`s (on
//! loopback, or on the hosts of `common::network`), joined with
//! `valkey-cli --cluster create`, and read back with `CLUSTER NODES`.

use super::process::{free_port, OwnValkey};
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// valkey-cli beside the test's valkey-server, else redis-cli.
pub fn valkey_cli() -> PathBuf {
    let server = PathBuf::from(
        std::env::var("STREAMSTOCK_TEST_VALKEY_SERVER")
            .expect("STREAMSTOCK_TEST_VALKEY_SERVER: run the suite with ./scripts/test.sh"),
    );
    let beside = server.with_file_name("valkey-cli");
    if beside.exists() {
        beside
    } else {
        PathBuf::from("redis-cli")
    }
}

/// A command to `node`; its reply as text.
pub fn cli(node: &OwnValkey, args: &[&str]) -> String {
    cli_at(&node.host, node.port, args)
}

/// A command to the server on `host`:`port`; its reply as text.
pub fn cli_at(host: &str, port: u16, args: &[&str]) -> String {
    let output = std::process::Command::new(valkey_cli())
        .args(["-h", host, "-p", &port.to_string()])
        .args(args)
        .output()
        .expect("valkey-cli");
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// A cluster node on `host`:`port` (in `namespace` if given), with a
/// node timeout of 2 s: a primary that does not answer for 2 s is
/// replaced by a replica.
pub fn node(host: &str, namespace: Option<&str>) -> OwnValkey {
    // A port found free can be taken by a test running beside this one
    // before the node binds it: then try two others.
    let mut tries = 0;
    loop {
        match try_node(host, namespace) {
            Ok(node) => return node,
            Err(why) if tries < 5 => {
                tries += 1;
                eprintln!("{why}; trying other ports");
            }
            Err(why) => panic!("{why}"),
        }
    }
}

fn try_node(host: &str, namespace: Option<&str>) -> Result<OwnValkey, String> {
    let bus = free_port().to_string();
    OwnValkey::try_on_host(
        host,
        namespace,
        free_port(),
        &[
            "--cluster-enabled",
            "yes",
            "--cluster-config-file",
            "nodes.conf",
            "--cluster-node-timeout",
            "2000",
            "--cluster-port",
            &bus,
            "--cluster-announce-ip",
            host,
            // A replica's first sync starts at once, not after the 5 s
            // Valkey waits by default for more replicas to share it.
            "--repl-diskless-sync-delay",
            "0",
        ],
    )
}

/// Joins `nodes` into a cluster with `replicas` replicas per primary, and
/// waits until every node sees it whole and every primary has its
/// replicas connected (replicated durability waits for that at start-up,
/// but a test's load should not).
pub fn create(nodes: &[OwnValkey], replicas: usize) {
    let addresses: Vec<String> = nodes
        .iter()
        .map(|n| format!("{}:{}", n.host, n.port))
        .collect();
    let replicas = replicas.to_string();
    let mut create = vec!["--cluster", "create"];
    create.extend(addresses.iter().map(String::as_str));
    create.extend(["--cluster-replicas", &replicas, "--cluster-yes"]);
    let output = std::process::Command::new(valkey_cli())
        .args(&create)
        .output()
        .expect("valkey-cli --cluster create");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stdout)
    );
    wait_whole(nodes, &replicas);
}

/// Waits until every node says the cluster is ok, every primary has
/// `replicas` replicas connected, and every replica has finished its
/// first sync (until then it could not take over).
pub fn wait_whole(nodes: &[OwnValkey], replicas: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    for node in nodes {
        while !cli(node, &["cluster", "info"]).contains("cluster_state:ok") {
            assert!(Instant::now() < deadline, "the cluster never became ready");
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    let connected = format!("connected_slaves:{replicas}");
    for node in nodes {
        if cli(node, &["info", "replication"]).contains("role:slave") {
            wait_first_sync(node);
        }
        if cli(node, &["info", "replication"]).contains("role:master") {
            while !cli(node, &["info", "replication"]).contains(&connected) {
                assert!(
                    Instant::now() < deadline,
                    "a primary never got its replicas"
                );
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }
}

/// The port of the primary serving `key`, as `asked` sees the cluster.
pub fn primary_of(asked: &OwnValkey, key: &str) -> u16 {
    let slot: u32 = cli(asked, &["cluster", "keyslot", key])
        .trim()
        .parse()
        .unwrap();
    let table = cli(asked, &["cluster", "nodes"]);
    for line in table.lines() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        if !fields.get(2).is_some_and(|flags| flags.contains("master")) {
            continue;
        }
        let port: u16 = fields[1].split(['@', ':']).nth(1).unwrap().parse().unwrap();
        for range in &fields[8..] {
            let (low, high) = match range.split_once('-') {
                Some((low, high)) => (low.parse().unwrap(), high.parse().unwrap()),
                None => match range.parse::<u32>() {
                    Ok(slot) => (slot, slot),
                    Err(_) => continue,
                },
            };
            if (low..=high).contains(&slot) {
                return port;
            }
        }
    }
    panic!("no primary serves slot {slot}: {table}");
}

/// The ports of the replicas of the primary on `primary`, as `asked` sees
/// the cluster.
pub fn replicas_of(asked: &OwnValkey, primary: u16) -> Vec<u16> {
    let table = cli(asked, &["cluster", "nodes"]);
    let port_of =
        |fields: &[&str]| -> u16 { fields[1].split(['@', ':']).nth(1).unwrap().parse().unwrap() };
    let rows: Vec<Vec<&str>> = table
        .lines()
        .map(|line| line.split_whitespace().collect())
        .filter(|fields: &Vec<&str>| fields.len() > 3)
        .collect();
    let primary_id = rows
        .iter()
        .find(|fields| port_of(fields) == primary)
        .map(|fields| fields[0])
        .unwrap_or_else(|| panic!("no node on port {primary}: {table}"));
    rows.iter()
        .filter(|fields| fields[3] == primary_id)
        .map(|fields| port_of(fields))
        .collect()
}

/// What the stream `key` holds, read from its primary as `asked` sees the
/// cluster: its entry ids, and the highest id it ever deleted (trimmed).
pub fn stream_ids(
    asked: &OwnValkey,
    key: &str,
) -> (std::collections::HashSet<(u64, u64)>, (u64, u64)) {
    stream_ids_at(&asked.host, primary_of(asked, key), key)
}

/// What the stream `key` on the server at `host`:`port` holds: its entry
/// ids, and the highest id it ever deleted (trimmed).
pub fn stream_ids_at(
    host: &str,
    port: u16,
    key: &str,
) -> (std::collections::HashSet<(u64, u64)>, (u64, u64)) {
    use super::history::entry_id;
    let deleted_through = stream_info(host, port, key, "max-deleted-entry-id")
        .and_then(|id| entry_id(&id))
        .unwrap_or((0, 0));
    // Entry ids alone: each entry's field and value come as lines of
    // their own, and no JSON value is ever `digits-digits`.
    let held = cli_at(host, port, &["xrange", key, "-", "+"])
        .lines()
        .filter_map(|line| entry_id(line.trim()))
        .collect();
    (held, deleted_through)
}

/// One field of `XINFO STREAM key` on the server at `host`:`port` (None
/// when the stream does not exist).
pub fn stream_info(host: &str, port: u16, key: &str, field: &str) -> Option<String> {
    let info = cli_at(host, port, &["xinfo", "stream", key]);
    let lines: Vec<&str> = info.lines().collect();
    let at = lines.iter().position(|line| line.trim() == field)?;
    Some(lines.get(at + 1)?.trim().to_string())
}

/// Waits until the replica `node` has finished its first sync with its
/// primary (until then it could not take over).
pub fn wait_first_sync(node: &OwnValkey) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !cli(node, &["info", "replication"]).contains("master_link_status:up") {
        assert!(
            Instant::now() < deadline,
            "a replica never finished its first sync"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}
