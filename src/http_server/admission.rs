//! Who gets a connection: at most `max_connections` open at once, and at
//! most `max_per_address` from one address, so one client (or one
//! attacker) cannot take every slot. Beyond either cap a new connection is
//! refused at once; an accepted one is never cut for a newcomer.

use super::metrics::{open_connections, CloseReason};
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

/// The caps, shared by the accept loop and every admitted connection.
#[derive(Debug)]
pub struct Admission {
    listener: &'static str,
    max_connections: Option<usize>,
    max_per_address: Option<usize>,
    open: AtomicUsize,
    /// Open connections by address; an address leaves the map with its
    /// last connection, so the map is bounded by the open connections.
    by_address: Mutex<HashMap<IpAddr, usize>>,
}

impl Admission {
    /// `None` switches a cap off.
    pub fn new(
        listener: &'static str,
        max_connections: Option<usize>,
        max_per_address: Option<usize>,
    ) -> Arc<Admission> {
        Arc::new(Admission {
            listener,
            max_connections,
            max_per_address,
            open: AtomicUsize::new(0),
            by_address: Mutex::new(HashMap::new()),
        })
    }

    #[cfg(test)]
    fn open(&self) -> usize {
        self.open.load(Ordering::Relaxed)
    }

    /// A slot for a connection from `address`, held until the slot drops;
    /// or why not.
    pub fn admit(self: &Arc<Self>, address: IpAddr) -> Result<Slot, CloseReason> {
        // Both counts change under the one lock, so the caps are exact.
        let mut by_address = self.by_address.lock().expect("admission lock");
        if self
            .max_connections
            .is_some_and(|max| self.open.load(Ordering::Relaxed) >= max)
        {
            return Err(CloseReason::MaxConnections);
        }
        let from_address = by_address.entry(address).or_insert(0);
        if self.max_per_address.is_some_and(|max| *from_address >= max) {
            return Err(CloseReason::MaxPerAddress);
        }
        *from_address += 1;
        let open = self.open.fetch_add(1, Ordering::Relaxed) + 1;
        open_connections(self.listener, open);
        Ok(Slot {
            admission: self.clone(),
            address,
        })
    }

    fn release(&self, address: IpAddr) {
        let mut by_address = self.by_address.lock().expect("admission lock");
        if let Some(count) = by_address.get_mut(&address) {
            *count -= 1;
            if *count == 0 {
                by_address.remove(&address);
            }
        }
        let open = self.open.fetch_sub(1, Ordering::Relaxed) - 1;
        open_connections(self.listener, open);
    }
}

/// One admitted connection's place; it travels with the socket (into a
/// WebSocket after an upgrade too) and frees the place when dropped.
#[derive(Debug)]
pub struct Slot {
    admission: Arc<Admission>,
    address: IpAddr,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.admission.release(self.address);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(last: u8) -> IpAddr {
        IpAddr::from([127, 0, 0, last])
    }

    #[test]
    fn caps_are_exact_and_places_come_back() {
        let admission = Admission::new("test", Some(3), Some(2));
        let a1 = admission.admit(ip(1)).unwrap();
        let _a2 = admission.admit(ip(1)).unwrap();
        assert_eq!(
            admission.admit(ip(1)).unwrap_err(),
            CloseReason::MaxPerAddress
        );
        let _b1 = admission.admit(ip(2)).unwrap();
        assert_eq!(
            admission.admit(ip(3)).unwrap_err(),
            CloseReason::MaxConnections
        );
        assert_eq!(admission.open(), 3);
        drop(a1);
        assert_eq!(admission.open(), 2);
        let _c1 = admission.admit(ip(3)).unwrap();
    }

    #[test]
    fn addresses_leave_the_map_with_their_last_connection() {
        let admission = Admission::new("test", None, None);
        let slots: Vec<_> = (0..50).map(|i| admission.admit(ip(i)).unwrap()).collect();
        assert_eq!(admission.by_address.lock().unwrap().len(), 50);
        drop(slots);
        assert!(admission.by_address.lock().unwrap().is_empty());
        assert_eq!(admission.open(), 0);
    }
}
