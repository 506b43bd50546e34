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
    /// The kernel's bound on how far `start_wall` is from true time.
    pub wall_max_error_us: Option<u64>,
}

impl SessionClock {
    pub fn now() -> Self {
        Self { start_boot_ns: boot_ns(), start_wall: SystemTime::now(), wall_max_error_us: wall_clock_max_error_us() }
    }

    /// Milliseconds since the session start for a boot-time stamp.
    pub fn ms_since_start(&self, boot_ns: u64) -> f64 {
        (boot_ns as f64 - self.start_boot_ns as f64) / 1e6
    }
}

/// The kernel's maximum error of the wall clock, in microseconds, as NTP
/// (chrony, ntpd, systemd-timesyncd) keeps it (`adjtimex`, read only);
/// `None` when the clock is not synchronized, so no bound is known.
pub fn wall_clock_max_error_us() -> Option<u64> {
    // SAFETY: timex is plain data; all-zero is a valid value, and modes = 0
    // asks adjtimex only to read.
    let mut tx: libc::timex = unsafe { std::mem::zeroed() };
    // SAFETY: adjtimex writes into the timex we own and changes nothing with modes = 0.
    let state = unsafe { libc::adjtimex(&mut tx) };
    let unsynced = state < 0 || state == libc::TIME_ERROR || tx.status & libc::STA_UNSYNC != 0;
    (!unsynced).then(|| u64::try_from(tx.maxerror).unwrap_or(0))
}

/// This boot's id (`/proc/sys/kernel/random/boot_id`): sessions with the
/// same id share one CLOCK_BOOTTIME.
pub fn boot_id() -> Option<String> {
    let id = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").ok()?;
    Some(id.trim().to_string()).filter(|id| !id.is_empty())
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
    fn boot_id_is_stable_and_the_clock_bound_reads() {
        assert_eq!(boot_id(), boot_id());
        assert!(boot_id().is_some_and(|id| id.len() == 36), "{:?}", boot_id());
        // Synchronized or not depends on the machine; reading must not fail.
        let _ = wall_clock_max_error_us();
    }

    #[test]
    fn boot_clock_advances() {
        let a = boot_ns();
        let b = boot_ns();
        assert!(b >= a && a > 0);
    }
}
