//! The session clock: `ts` in trace lines counts from a CLOCK_BOOTTIME
//! instant (the clock `bpf_ktime_get_boot_ns` reads), and the metadata pairs
//! that instant with wall-clock time.

use std::time::SystemTime;

/// Nanoseconds of CLOCK_BOOTTIME now.
pub fn boot_ns() -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: clock_gettime writes into the timespec we own.
    unsafe { libc::clock_gettime(libc::CLOCK_BOOTTIME, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// The start of a trace session on both clocks.
#[derive(Clone, Copy, Debug)]
pub struct SessionClock {
    pub start_boot_ns: u64,
    pub start_wall: SystemTime,
}

impl SessionClock {
    pub fn now() -> Self {
        Self { start_boot_ns: boot_ns(), start_wall: SystemTime::now() }
    }

    /// Milliseconds since the session start for a boot-time stamp.
    pub fn ms_since_start(&self, boot_ns: u64) -> f64 {
        (boot_ns as f64 - self.start_boot_ns as f64) / 1e6
    }
}

/// RFC 3339 UTC with nanoseconds.
pub fn rfc3339(t: SystemTime) -> String {
    humantime::format_rfc3339_nanos(t).to_string()
}

/// `20261122T160000Z`, for file and session names.
pub fn compact_utc(t: SystemTime) -> String {
    humantime::format_rfc3339_seconds(t).to_string().replace(['-', ':'], "")
}

pub fn compact_utc_now() -> String {
    compact_utc(SystemTime::now())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compact_names() {
        let t = SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_795_392_000);
        assert_eq!(compact_utc(t), "20261123T000000Z");
        assert!(rfc3339(t).starts_with("2026-11-23T00:00:00"));
    }

    #[test]
    fn boot_clock_advances() {
        let a = boot_ns();
        let b = boot_ns();
        assert!(b >= a && a > 0);
    }
}
