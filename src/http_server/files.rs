//! The process's open-file limit: every connection is a file, so the
//! connection cap is chosen below it, after raising the soft limit to the
//! hard one (what the kernel allows an unprivileged process to do).

use std::sync::OnceLock;

/// The soft and hard `RLIMIT_NOFILE` after start-up raised the soft one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileLimit {
    pub before: u64,
    pub soft: u64,
    pub hard: u64,
}

/// Raises the soft limit to the hard one, once per process; later calls
/// give the same answer.
pub fn raise_open_file_limit() -> FileLimit {
    static LIMIT: OnceLock<FileLimit> = OnceLock::new();
    *LIMIT.get_or_init(|| {
        let mut limit = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: getrlimit writes into the struct it is given.
        if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
            // Unknown: assume the common default rather than no limit.
            return FileLimit {
                before: 1024,
                soft: 1024,
                hard: 1024,
            };
        }
        let before = limit.rlim_cur;
        if limit.rlim_cur < limit.rlim_max {
            let raised = libc::rlimit {
                rlim_cur: limit.rlim_max,
                rlim_max: limit.rlim_max,
            };
            // SAFETY: setrlimit reads the struct it is given.
            if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
                limit.rlim_cur = limit.rlim_max;
            }
        }
        FileLimit {
            before,
            soft: limit.rlim_cur,
            hard: limit.rlim_max,
        }
    })
}

/// Files kept for what is not a client connection: the log's and the
/// database's connections and files, and the process's own.
const RESERVED_FILES: u64 = 128;

/// The default connection cap for a file limit: three quarters of what is
/// left after the reserve, so connections run out before files do.
pub fn default_max_connections(soft_limit: u64) -> usize {
    let usable = soft_limit.saturating_sub(RESERVED_FILES);
    (usable * 3 / 4).clamp(16, 1 << 20) as usize
}

/// The default per-address cap: a quarter of all connections, so one
/// address cannot take every slot.
pub fn default_max_per_address(max_connections: usize) -> usize {
    (max_connections / 4).max(8)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caps_stay_below_the_file_limit() {
        assert_eq!(default_max_connections(1024), 672);
        assert_eq!(default_max_per_address(672), 168);
        assert!(default_max_connections(65_536) < 65_536);
        assert_eq!(default_max_connections(64), 16);
    }

    #[test]
    fn raising_is_idempotent() {
        let first = raise_open_file_limit();
        assert_eq!(first, raise_open_file_limit());
        assert!(first.soft >= first.before);
        assert!(first.soft <= first.hard);
    }
}
