//! Putting sessions on one time axis. `ts` counts from each session's own
//! CLOCK_BOOTTIME start, and a boot clock belongs to one machine (one boot):
//! sessions of one boot are aligned exactly by `start_boot_ns`, sessions of
//! different machines by their wall-clock start (`start_unix_ns`), which is
//! only as good as those machines' clock synchronization; [`Alignment`] says
//! how good, from the NTP error bound each session recorded.

use std::{collections::BTreeMap, path::Path};

use serde::Serialize;

use super::metadata::{self, Metadata};

/// What one input's `metadata.json` says about when its session started.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct SessionStart {
    /// The session (its dir), shown in the report.
    pub session: String,
    pub boot_id: Option<String>,
    pub start_boot_ns: Option<u64>,
    /// `None` when the metadata lacks it (0).
    pub start_unix_ns: Option<u128>,
    /// The wall clock's error bound at the start, microseconds; `None`:
    /// not synchronized, or not recorded.
    pub max_error_us: Option<u64>,
}

/// The start a Parquet trace file records; `None` for any other file.
fn parquet_start(file: &Path) -> Option<u128> {
    let name = file.file_name()?.to_str()?;
    if !super::names::is_parquet_file(name) {
        return None;
    }
    super::parquet::read::start_unix_ns(super::open::open_session_file(file).ok()?)
}

impl SessionStart {
    pub fn of(meta: &Metadata, session: String) -> Self {
        Self {
            session,
            boot_id: meta.boot_id.clone(),
            start_boot_ns: meta.start_boot_ns,
            start_unix_ns: Some(meta.start_unix_ns).filter(|&ns| ns > 0),
            max_error_us: meta.start_wall_max_error_us,
        }
    }

    /// The start of the session a trace file belongs to; all `None` for a
    /// file without readable metadata beside it, except a Parquet file's
    /// wall-clock start, which the file records itself (a lake object).
    pub fn of_trace_file(file: &Path) -> Self {
        let session = file.parent().map(|d| d.display().to_string()).unwrap_or_default();
        match Metadata::of_trace_file(file) {
            Some(meta) => Self::of(&meta, session),
            None => Self { session, start_unix_ns: parquet_start(file), ..Self::default() },
        }
    }

    fn known(&self) -> bool {
        self.start_boot_ns.is_some() || self.start_unix_ns.is_some()
    }

    /// The clock `ts` of this session counts on: its boot, else (an older
    /// writer) its own session.
    fn clock(&self) -> String {
        match &self.boot_id {
            Some(id) => format!("boot {id}"),
            None => format!("session {}", self.session),
        }
    }
}

/// How the inputs were put on one axis, for the report.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Alignment {
    /// Each input's shift in milliseconds (added to its `ts`).
    #[serde(skip)]
    pub shifts_ms: Vec<f64>,
    /// Sessions with a start in their metadata.
    pub sessions: usize,
    /// Distinct clocks among them (machine boots).
    pub clocks: usize,
    /// `boot_time` (one clock), `wall_clock` (several) or `none` (no metadata).
    pub aligned_by: &'static str,
    /// How far apart the clocks of the merged sessions can be, in ms: the
    /// sum of the two largest NTP error bounds; 0 with one clock; `None`
    /// when a session's bound is unknown (listed in `unbounded`).
    pub max_clock_offset_ms: Option<f64>,
    /// Sessions whose wall clock was not synchronized or not recorded.
    pub unbounded: Vec<String>,
}

impl Alignment {
    /// One line for the text report when sessions of several clocks were
    /// merged; `None` otherwise.
    pub fn text(&self) -> Option<String> {
        if self.clocks < 2 {
            return None;
        }
        let bound = match self.max_clock_offset_ms {
            Some(ms) => format!("can be up to {ms:.3} ms apart (their NTP error bounds)"),
            None => format!(
                "can be apart by an unknown amount: no synchronized wall clock recorded for {}",
                self.unbounded.join(", ")
            ),
        };
        Some(format!(
            "{} sessions from {} machines (boot clocks), aligned by their wall-clock start; their clocks {bound}\n",
            self.sessions, self.clocks
        ))
    }
}

/// The shift of each input (`starts`, one per input, several inputs may be
/// one session) and what the alignment can promise.
pub fn align(starts: &[SessionStart]) -> Alignment {
    let known: Vec<&SessionStart> = starts.iter().filter(|s| s.known()).collect();
    let mut clocks: BTreeMap<String, Vec<&SessionStart>> = BTreeMap::new();
    for s in &known {
        clocks.entry(s.clock()).or_default().push(s);
    }
    let mut sessions: Vec<&str> = known.iter().map(|s| s.session.as_str()).collect();
    sessions.sort_unstable();
    sessions.dedup();
    let mut out = Alignment { sessions: sessions.len(), clocks: clocks.len(), ..Alignment::default() };
    if clocks.len() < 2 {
        out.aligned_by = if clocks.is_empty() { "none" } else { "boot_time" };
        out.max_clock_offset_ms = (!clocks.is_empty()).then_some(0.0);
        out.shifts_ms = metadata::shifts_ms(&starts.iter().map(|s| s.start_boot_ns).collect::<Vec<_>>());
        return out;
    }
    out.aligned_by = "wall_clock";
    // Each session's start on the wall clock: one boot's sessions through
    // their boot-time distance to the boot's earliest session.
    let wall_start = |s: &SessionStart| -> Option<i128> {
        let anchor = clocks[&s.clock()].iter().filter(|a| a.start_unix_ns.is_some()).min_by_key(|a| a.start_boot_ns)?;
        let anchor_ns = anchor.start_unix_ns? as i128;
        match (s.start_boot_ns, anchor.start_boot_ns) {
            (Some(own), Some(base)) => Some(anchor_ns + own as i128 - base as i128),
            _ => s.start_unix_ns.map(|ns| ns as i128),
        }
    };
    let walls: Vec<Option<i128>> = starts.iter().map(|s| s.known().then(|| wall_start(s)).flatten()).collect();
    let origin = walls.iter().flatten().min().copied().unwrap_or(0);
    out.shifts_ms = walls.iter().map(|w| w.map_or(0.0, |ns| (ns - origin) as f64 / 1e6)).collect();
    let mut bounds = Vec::new();
    for members in clocks.values() {
        match members.iter().map(|s| s.max_error_us).collect::<Option<Vec<u64>>>() {
            Some(errors) => bounds.push(errors.into_iter().max().unwrap_or(0)),
            None => {
                out.unbounded.extend(members.iter().filter(|s| s.max_error_us.is_none()).map(|s| s.session.clone()))
            }
        }
    }
    out.unbounded.sort();
    out.unbounded.dedup();
    bounds.sort_unstable_by(|a, b| b.cmp(a));
    out.max_clock_offset_ms = out.unbounded.is_empty().then(|| bounds.iter().take(2).sum::<u64>() as f64 / 1000.0);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn start(session: &str, boot: &str, boot_ns: u64, unix_ns: u128, err: Option<u64>) -> SessionStart {
        SessionStart {
            session: session.into(),
            boot_id: Some(boot.into()),
            start_boot_ns: Some(boot_ns),
            start_unix_ns: Some(unix_ns),
            max_error_us: err,
        }
    }

    #[test]
    fn one_machine_is_aligned_by_boot_time_exactly() {
        // The wall clock was stepped between the two starts: boot time decides.
        let a = start("a", "b1", 1_000_000, 5_000_000_000, Some(10));
        let b = start("b", "b1", 4_000_000, 1_000_000_000, None);
        let al = align(&[b.clone(), a.clone(), a]);
        assert_eq!(al.shifts_ms, [3.0, 0.0, 0.0]);
        assert_eq!((al.sessions, al.clocks, al.aligned_by, al.max_clock_offset_ms), (2, 1, "boot_time", Some(0.0)));
        assert_eq!(al.text(), None);
    }

    #[test]
    fn machines_are_aligned_by_wall_clock_with_the_sum_of_their_bounds() {
        // Machine 2 booted long after machine 1: its boot times are smaller,
        // yet its session started 2 ms of wall time later.
        let m1 = start("m1/s", "b1", 900_000_000_000, 10_000_000_000, Some(1500));
        let m1_later = start("m1/t", "b1", 900_005_000_000, 99, Some(1500));
        let m2 = start("m2/s", "b2", 7_000_000, 10_002_000_000, Some(250));
        let al = align(&[m1, m1_later, m2, SessionStart::default()]);
        assert_eq!(al.shifts_ms, [0.0, 5.0, 2.0, 0.0]);
        assert_eq!((al.sessions, al.clocks, al.aligned_by), (3, 2, "wall_clock"));
        assert_eq!(al.max_clock_offset_ms, Some(1.75));
        assert!(al.text().unwrap().contains("up to 1.750 ms apart"), "{:?}", al.text());
    }

    #[test]
    fn an_unsynchronized_clock_makes_the_offset_unknown_and_named() {
        let m1 = start("m1/s", "b1", 5, 10_000_000_000, Some(100));
        let m2 = start("m2/s", "b2", 5, 10_000_000_000, None);
        let old = SessionStart { session: "old".into(), start_boot_ns: Some(1), ..SessionStart::default() };
        let al = align(&[m1, m2, old]);
        assert_eq!(al.max_clock_offset_ms, None);
        assert_eq!(al.unbounded, ["m2/s", "old"]);
        assert_eq!(al.shifts_ms, [0.0, 0.0, 0.0], "a session without a wall-clock start is not shifted");
        assert!(al.text().unwrap().contains("unknown amount"), "{:?}", al.text());
    }
}
