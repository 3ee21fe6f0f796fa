//! The open-file limit of processes that hold a socket per worker: the common default soft
//! limit (1024) would cap a coordinator at about a thousand workers.

/// The soft and hard open-file limits after [`raise_fd_limit`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FdLimit {
    /// The limit in force: what this process (and every child it starts) may open.
    pub soft: u64,
    /// The ceiling an unprivileged process may raise the soft limit to.
    pub hard: u64,
}

/// Lifts the soft `RLIMIT_NOFILE` to the hard limit (to `/proc/sys/fs/nr_open` when the hard
/// limit is unlimited, which Linux does not accept as a soft limit) and returns the limits now
/// in force. Children inherit them. A limit that cannot be raised is left as it was: the caller
/// decides whether what it got is enough.
#[cfg(unix)]
pub fn raise_fd_limit() -> std::io::Result<FdLimit> {
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit only writes the struct passed by reference.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    if limit.rlim_cur < limit.rlim_max {
        let target = if limit.rlim_max == libc::RLIM_INFINITY {
            std::fs::read_to_string("/proc/sys/fs/nr_open")
                .ok()
                .and_then(|s| s.trim().parse::<libc::rlim_t>().ok())
                .unwrap_or(1 << 20)
        } else {
            limit.rlim_max
        };
        let wanted = libc::rlimit { rlim_cur: target, rlim_max: limit.rlim_max };
        // SAFETY: setrlimit only reads the struct passed by reference.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &wanted) } == 0 {
            limit.rlim_cur = target;
        }
    }
    Ok(FdLimit { soft: limit.rlim_cur, hard: limit.rlim_max })
}

/// Elsewhere there is no such limit to raise.
#[cfg(not(unix))]
pub fn raise_fd_limit() -> std::io::Result<FdLimit> {
    Ok(FdLimit { soft: u64::MAX, hard: u64::MAX })
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;

    #[test]
    fn the_soft_limit_ends_at_the_hard_one_and_is_in_force() {
        let limit = raise_fd_limit().expect("getrlimit works");
        assert!(limit.soft <= limit.hard);
        let mut now = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
        // SAFETY: getrlimit only writes the struct passed by reference.
        assert_eq!(unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut now) }, 0);
        assert_eq!(now.rlim_cur, limit.soft, "what is returned is what the process has");
        if now.rlim_max != libc::RLIM_INFINITY {
            assert_eq!(limit.soft, limit.hard, "an unprivileged raise reaches the hard limit");
        }
        assert_eq!(raise_fd_limit().expect("again"), limit, "raising twice changes nothing");
    }
}
