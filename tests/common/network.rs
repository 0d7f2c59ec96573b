//! A second host on this machine, for tests that cut hosts apart: a network
//! namespace (the island) joined to this one (the mainland) by a veth pair,
//! on a /24 of its own (10.77.N.0/24, N the first number free):
//! - `.1`, the mainland: servers on this side listen on it, and their
//!   connections to the island leave from it (it is the link's first
//!   address, so the kernel picks it);
//! - `.2`, the island: servers inside the namespace;
//! - `.3`, the clients' side: this side's clients of the island's servers,
//!   and servers that both sides reach (a third host). A partition spares
//!   it, as it spares a cut-off gateway's own clients in the field.
//!
//! `cut` drops every packet between `.1` and `.2`, both ways, silently:
//! each side routes the other through `.254`, a neighbour with an address
//! nobody on the link has, so the other end drops the frames (on the
//! mainland by a rule for what leaves from `.1`, with a table of its own). Nothing fails
//! at once, as a blackhole route's sends would (EINVAL): connections hang
//! as across a cut cable, and clients wait out their own timeouts. `heal`
//! lifts both. Needs root and iproute2 (`ip`); dropping the island
//! removes it.

use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};

pub struct Island {
    namespace: String,
    link: String,
    subnet: u8,
    cut: AtomicBool,
}

fn ip(args: &[&str]) -> Result<(), String> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| format!("ip {args:?}: {e} (install iproute2)"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "ip {args:?}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

fn must(args: &[&str]) {
    ip(args).unwrap_or_else(|e| panic!("{e}"))
}

impl Island {
    /// Makes the namespace and its link on the first free subnet (tests
    /// in other processes may hold some).
    pub fn create() -> Island {
        for subnet in 1..=250u8 {
            let namespace = format!("streamstock-island-{subnet}");
            if ip(&["netns", "add", &namespace]).is_err() {
                continue;
            }
            let link = format!("ssmain{subnet}");
            let peer = format!("ssisle{subnet}");
            if ip(&[
                "link", "add", &link, "type", "veth", "peer", "name", &peer, "netns", &namespace,
            ])
            .is_err()
            {
                let _ = ip(&["netns", "del", &namespace]);
                continue;
            }
            let island = Island {
                namespace,
                link,
                subnet,
                cut: AtomicBool::new(false),
            };
            // `.1` first: it is the address the mainland's connections to
            // the island leave from.
            must(&[
                "addr",
                "add",
                &format!("{}/24", island.mainland()),
                "dev",
                &island.link,
            ]);
            must(&[
                "addr",
                "add",
                &format!("{}/24", island.clients()),
                "dev",
                &island.link,
            ]);
            must(&["link", "set", &island.link, "up"]);
            let ns = island.namespace.as_str();
            must(&[
                "-n",
                ns,
                "addr",
                "add",
                &format!("{}/24", island.address()),
                "dev",
                &peer,
            ]);
            must(&["-n", ns, "link", "set", &peer, "up"]);
            must(&["-n", ns, "link", "set", "lo", "up"]);
            // `.254` has an address nobody on the link answers to: frames
            // sent to it are dropped by the other end, silently (without
            // the entry, the failed lookup would report "unreachable").
            for (namespace, dev) in [(None, island.link.as_str()), (Some(ns), peer.as_str())] {
                let mut args = Vec::new();
                if let Some(namespace) = namespace {
                    args.extend(["-n", namespace]);
                }
                let nowhere = island.nowhere();
                args.extend([
                    "neigh",
                    "replace",
                    &nowhere,
                    "lladdr",
                    "02:00:00:00:00:fe",
                    "dev",
                    dev,
                    "nud",
                    "permanent",
                ]);
                must(&args);
            }
            return island;
        }
        panic!("no free subnet 10.77.N.0/24 for a network namespace");
    }

    /// The mainland's servers' address.
    pub fn mainland(&self) -> String {
        format!("10.77.{}.1", self.subnet)
    }

    /// The island's address.
    pub fn address(&self) -> String {
        format!("10.77.{}.2", self.subnet)
    }

    /// The clients' side: the address clients of the island connect from,
    /// and a third host's that both sides reach.
    pub fn clients(&self) -> String {
        format!("10.77.{}.3", self.subnet)
    }

    /// An HTTP client of the island's servers, connecting from the
    /// clients' side (which the cut spares).
    pub fn client(&self) -> reqwest::Client {
        reqwest::Client::builder()
            .local_address(self.clients().parse::<std::net::IpAddr>().unwrap())
            .build()
            .unwrap()
    }

    /// The namespace's name, for `ip netns exec` (`Role::start_in_namespace`,
    /// `OwnValkey::on_host`).
    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    /// A neighbour on the link that never answers.
    fn nowhere(&self) -> String {
        format!("10.77.{}.254", self.subnet)
    }

    /// The mainland's routing table for what leaves `.1` during a cut.
    fn table(&self) -> String {
        (1000 + u32::from(self.subnet)).to_string()
    }

    /// The partition: nothing passes between the mainland and the island.
    pub fn cut(&self) {
        let (mainland, island) = (self.mainland(), self.address());
        let (nowhere, table) = (self.nowhere(), self.table());
        must(&[
            "route", "add", &island, "via", &nowhere, "dev", &self.link, "table", &table,
        ]);
        must(&[
            "rule", "add", "from", &mainland, "to", &island, "table", &table,
        ]);
        must(&[
            "-n",
            &self.namespace,
            "route",
            "add",
            &format!("{mainland}/32"),
            "via",
            &nowhere,
        ]);
        self.cut.store(true, Ordering::SeqCst);
    }

    /// The network heals.
    pub fn heal(&self) {
        if self.cut.swap(false, Ordering::SeqCst) {
            self.lift();
        }
    }

    fn lift(&self) {
        let (mainland, island) = (self.mainland(), self.address());
        let table = self.table();
        let _ = ip(&[
            "rule", "del", "from", &mainland, "to", &island, "table", &table,
        ]);
        let _ = ip(&["route", "flush", "table", &table]);
        let _ = ip(&[
            "-n",
            &self.namespace,
            "route",
            "del",
            &format!("{mainland}/32"),
        ]);
    }
}

impl Drop for Island {
    /// Heals and removes the island; its processes must be gone first
    /// (declare the island before them, so it is dropped after).
    fn drop(&mut self) {
        if self.cut.swap(false, Ordering::SeqCst) {
            self.lift();
        }
        let _ = ip(&["netns", "del", &self.namespace]);
        let _ = ip(&["link", "del", &self.link]);
    }
}
