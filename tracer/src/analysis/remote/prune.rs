//! What to list and what to download, from the keys alone (pure): the
//! lake's date/hour (and node/pod) prefixes a time range and the filters
//! reach, and which listed objects may hold wanted calls.
//!
//! A file holds the calls from its opening (the time in its key) until the
//! next file of its session opens, so the last file a session opened
//! before `since` is kept too. For the lake, whose keys have only the
//! hour, that is the last object of each session in the hour before
//! `since`'s hour (a file rotated less often than hourly can start
//! earlier: widen `--since` for such traces).

use std::{
    collections::BTreeMap,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use super::keys::{LakeKey, SessionKey};
use crate::format::names::{self, partition_value};

const HOUR_SECS: u64 = 3600;
/// Beyond this many hours the lake is listed by day, not by hour.
pub const MAX_HOUR_PREFIXES: u64 = 72;

/// The range asked for, as instants (unbounded ends: `None`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Range {
    pub since: Option<SystemTime>,
    pub until: Option<SystemTime>,
}

fn hour_of(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs() / HOUR_SECS)
}

/// `date=YYYY-MM-DD/hour=HH` of the hour numbered `hour` since the epoch.
fn partition(hour: u64) -> (String, String) {
    let t = UNIX_EPOCH + Duration::from_secs(hour * HOUR_SECS);
    let text = humantime::format_rfc3339_seconds(t).to_string();
    (format!("{}={}", names::LAKE_DATE_KEY, &text[..10]), format!("{}={}", names::LAKE_HOUR_KEY, &text[11..13]))
}

/// The hours (since the epoch) whose lake objects may hold calls of the
/// range: from the hour before `since`'s to `until`'s (`now`'s when open).
fn hours(range: Range, now: SystemTime) -> Option<(u64, u64)> {
    let first = hour_of(range.since?).saturating_sub(1);
    let last = hour_of(range.until.unwrap_or(now).max(range.since?));
    Some((first, last))
}

/// The prefixes (below the lake's `parquet/`) to list: every hour of the
/// range, each narrowed to the wanted nodes and pods; by day past
/// [`MAX_HOUR_PREFIXES`] hours; the whole lake without `since`.
pub fn lake_prefixes(range: Range, nodes: &[String], pods: &[String], now: SystemTime) -> Vec<String> {
    let lake = format!("{}/", names::PARQUET_LAKE_DIR);
    let Some((first, last)) = hours(range, now) else { return vec![lake] };
    if last - first >= MAX_HOUR_PREFIXES {
        let mut days: Vec<String> = (first..=last).map(|h| format!("{lake}{}/", partition(h).0)).collect();
        days.dedup();
        return days;
    }
    let mut out = Vec::new();
    for h in first..=last {
        let (date, hour) = partition(h);
        let base = format!("{lake}{date}/{hour}/");
        if nodes.is_empty() {
            out.push(base);
            continue;
        }
        for node in nodes {
            let node = format!("{base}{}={}/", names::LAKE_NODE_KEY, partition_value(node));
            if pods.is_empty() {
                out.push(node);
            } else {
                out.extend(pods.iter().map(|p| format!("{node}{}={}/", names::LAKE_POD_KEY, partition_value(p))));
            }
        }
    }
    out
}

fn lake_hour(k: &LakeKey) -> Option<u64> {
    let t = super::keys::compact_utc(&format!("{}T{:02}0000Z", k.date.replace('-', ""), k.hour))?;
    Some(hour_of(t))
}

/// Whether a lake object of these partitions is wanted by node and pod.
pub fn lake_admits(k: &LakeKey, nodes: &[String], pods: &[String]) -> bool {
    let wanted = |list: &[String], v: Option<&str>| {
        list.is_empty() || v.is_some_and(|v| list.iter().any(|w| partition_value(w) == v))
    };
    wanted(nodes, Some(&k.node)) && wanted(pods, k.pod.as_deref())
}

/// Which lake objects may hold calls of the range: those of its hours, and
/// of the hour before it only each session's last.
pub fn select_lake(objects: &[LakeKey], range: Range, now: SystemTime) -> Vec<bool> {
    let Some((first, last)) = hours(range, now) else { return vec![true; objects.len()] };
    let hour: Vec<Option<u64>> = objects.iter().map(lake_hour).collect();
    let mut last_early: BTreeMap<(&str, Option<&str>, &str), (u32, usize)> = BTreeMap::new();
    for (i, k) in objects.iter().enumerate().filter(|(i, _)| hour[*i] == Some(first)) {
        let e = last_early.entry((&k.node, k.pod.as_deref(), &k.session)).or_insert((k.seq, i));
        if k.seq >= e.0 {
            *e = (k.seq, i);
        }
    }
    let early: Vec<usize> = last_early.values().map(|&(_, i)| i).collect();
    (0..objects.len())
        .map(|i| match hour[i] {
            Some(h) if h == first => early.contains(&i),
            Some(h) => h > first && h <= last,
            None => false,
        })
        .collect()
}

/// Which JSONL trace files may hold calls of the range: a file opened
/// after `until` is not, nor one whose session opened its next file at
/// or before `since` (times in names are whole seconds, rounded down).
pub fn select_traces(traces: &[SessionKey], range: Range) -> Vec<bool> {
    // Per (source, session): each file's (seq, opening, index).
    type Files = Vec<(u32, SystemTime, usize)>;
    let mut sessions: BTreeMap<(&str, &str), Files> = BTreeMap::new();
    for (i, k) in traces.iter().enumerate() {
        if let Some((seq, opened)) = k.trace {
            sessions.entry((&k.source, &k.session)).or_default().push((seq, opened, i));
        }
    }
    let mut keep = vec![false; traces.len()];
    for files in sessions.values_mut() {
        files.sort();
        for (n, &(_, opened, i)) in files.iter().enumerate() {
            let next = files.get(n + 1).map(|f| f.1 + Duration::from_secs(1));
            let ends_before = matches!((next, range.since), (Some(next), Some(since)) if next <= since);
            let starts_after = range.until.is_some_and(|until| opened > until);
            keep[i] = !ends_before && !starts_after;
        }
    }
    keep
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(rfc: &str) -> SystemTime {
        humantime::parse_rfc3339(rfc).unwrap()
    }

    fn range(since: &str, until: &str) -> Range {
        Range { since: Some(at(since)), until: Some(at(until)) }
    }

    #[test]
    fn a_range_lists_its_hours_and_the_one_before() {
        let now = at("2026-12-05T00:00:00Z");
        let r = range("2026-12-03T10:30:00Z", "2026-12-03T11:10:00Z");
        assert_eq!(
            lake_prefixes(r, &[], &[], now),
            [
                "parquet/date=2026-12-03/hour=09/",
                "parquet/date=2026-12-03/hour=10/",
                "parquet/date=2026-12-03/hour=11/"
            ]
        );
        let midnight = range("2026-12-03T00:10:00Z", "2026-12-03T00:20:00Z");
        let nodes = ["n/1".to_string()];
        let pods = ["a".to_string(), "b".to_string()];
        assert_eq!(
            lake_prefixes(midnight, &nodes, &pods, now),
            [
                "parquet/date=2026-12-02/hour=23/node=n_1/pod=a/",
                "parquet/date=2026-12-02/hour=23/node=n_1/pod=b/",
                "parquet/date=2026-12-03/hour=00/node=n_1/pod=a/",
                "parquet/date=2026-12-03/hour=00/node=n_1/pod=b/"
            ]
        );
        let open_end = Range { since: Some(at("2026-12-04T22:30:00Z")), until: None };
        assert_eq!(lake_prefixes(open_end, &[], &[], now).len(), 4, "the hour before since's to now's");
        let long = range("2026-11-01T00:00:00Z", "2026-11-30T00:00:00Z");
        let days = lake_prefixes(long, &nodes, &[], now);
        assert_eq!((days.len(), days[0].as_str()), (31, "parquet/date=2026-10-31/"));
        assert_eq!(lake_prefixes(Range::default(), &nodes, &[], now), ["parquet/"]);
    }

    fn lake(date: &str, hour: u8, node: &str, session: &str, seq: u32) -> LakeKey {
        LakeKey { date: date.into(), hour, node: node.into(), pod: None, session: session.into(), seq }
    }

    #[test]
    fn lake_objects_of_the_hour_before_are_each_sessions_last() {
        let now = at("2026-12-05T00:00:00Z");
        let objects = [
            lake("2026-12-03", 9, "n", "s", 1),
            lake("2026-12-03", 9, "n", "s", 2),
            lake("2026-12-03", 9, "m", "s", 7),
            lake("2026-12-03", 10, "n", "s", 3),
            lake("2026-12-03", 12, "n", "s", 4),
            lake("2026-12-03", 8, "n", "s", 0),
        ];
        let r = range("2026-12-03T10:30:00Z", "2026-12-03T11:10:00Z");
        assert_eq!(select_lake(&objects, r, now), [false, true, true, true, false, false]);
        assert!(select_lake(&objects, Range::default(), now).iter().all(|k| *k));
        assert!(lake_admits(&objects[0], &["n".into()], &[]) && !lake_admits(&objects[0], &["m".into()], &[]));
        assert!(!lake_admits(&objects[0], &[], &["p".into()]), "no pod matches no wanted pod");
    }

    #[test]
    fn trace_files_are_kept_from_the_last_opened_before_since() {
        let key = |session: &str, seq: u32, opened: &str| SessionKey {
            source: "pod".into(),
            session: session.into(),
            trace: Some((seq, at(opened))),
        };
        let traces = [
            key("s", 1, "2026-12-03T10:00:00Z"),
            key("s", 2, "2026-12-03T10:01:00Z"),
            key("s", 3, "2026-12-03T10:02:00Z"),
            key("s", 4, "2026-12-03T10:03:00Z"),
            key("t", 1, "2026-12-03T09:00:00Z"),
        ];
        let r = range("2026-12-03T10:01:30Z", "2026-12-03T10:02:00Z");
        assert_eq!(select_traces(&traces, r), [false, true, true, false, true], "t's only file may run on");
        let none = range("2026-12-03T11:00:00Z", "2026-12-03T12:00:00Z");
        assert_eq!(select_traces(&traces[..4], none), [false, false, false, true]);
        let before = range("2026-12-01T00:00:00Z", "2026-12-01T01:00:00Z");
        assert!(select_traces(&traces, before).iter().all(|k| !k));
    }
}
