//! The daemon's file-descriptor budget: the soft `RLIMIT_NOFILE` is raised
//! to the hard limit at start, and network clients get a fixed fraction of
//! it, so connections can never take the descriptors that trace files,
//! probes and `/proc` reads need.

/// The metrics server's connection cap: an eighth of the descriptors, at
/// most 64 (Prometheus and the kubelet's probes use a few), at least 4.
pub fn connection_cap(nofile: u64) -> usize {
    usize::try_from((nofile / 8).clamp(4, 64)).unwrap_or(4)
}

/// What is assumed when the limit cannot be read: Linux's usual soft limit.
const ASSUMED_SOFT_LIMIT: u64 = 1024;

fn nofile() -> Option<libc::rlimit> {
    let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: `lim` is a valid out-pointer for getrlimit.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        tracing::warn!("cannot read RLIMIT_NOFILE: {}", std::io::Error::last_os_error());
        return None;
    }
    Some(lim)
}

/// The soft limit in force.
pub fn soft_limit() -> u64 {
    nofile().map_or(ASSUMED_SOFT_LIMIT, |lim| lim.rlim_cur)
}

/// Raises the soft limit to the hard one; returns the soft limit in force.
/// A failure keeps the old limit (logged): the caps follow what is in force.
pub fn raise_to_hard() -> u64 {
    let Some(lim) = nofile() else { return ASSUMED_SOFT_LIMIT };
    if lim.rlim_cur < lim.rlim_max {
        let raised = libc::rlimit { rlim_cur: lim.rlim_max, rlim_max: lim.rlim_max };
        // SAFETY: `raised` is a valid rlimit; raising the soft limit up to
        // the hard one needs no privilege and touches no memory of ours.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
            tracing::debug!(from = lim.rlim_cur, to = lim.rlim_max, "raised the open-file limit");
            return lim.rlim_max;
        }
        tracing::warn!(soft = lim.rlim_cur, "cannot raise RLIMIT_NOFILE: {}", std::io::Error::last_os_error());
    }
    lim.rlim_cur
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cap_is_a_small_fraction_of_the_limit() {
        assert_eq!(connection_cap(256), 32);
        assert_eq!(connection_cap(1 << 20), 64);
        assert_eq!(connection_cap(10), 4);
    }

    #[test]
    fn raising_leaves_the_soft_limit_at_the_hard_one() {
        let raised = raise_to_hard();
        assert_eq!(raised, soft_limit());
        assert_eq!(Some(raised), nofile().map(|lim| lim.rlim_max));
    }
}
