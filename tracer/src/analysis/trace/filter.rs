//! `--since`, `--until`, `--node` and `--pod`: which calls a report or an
//! export reads. A file's node and pod decide whether it is read at all
//! ([`super::identity`]); each call's wall-clock entry time (the session's
//! start plus its `ts`) decides whether it is kept.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::identity::Identity;

/// The calls asked for; the default keeps every call.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TraceFilter {
    /// Calls entered at or after this instant.
    pub since: Option<SystemTime>,
    /// Calls entered at or before this instant.
    pub until: Option<SystemTime>,
    /// Only these nodes (exact names); empty: every node.
    pub nodes: Vec<String>,
    /// Only these pods (exact names); empty: every pod.
    pub pods: Vec<String>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FilterError {
    #[error("{0:?} is not a time: give RFC 3339 UTC (2026-12-03T10:00:00Z), unix seconds (1796292000) or a time before now (-1h, -30m, -2d)")]
    Time(String),
    #[error("--since {since} is after --until {until}: nothing can match")]
    Empty { since: String, until: String },
}

/// A `--since`/`--until` value: RFC 3339 UTC, unix seconds, or `-<duration>`
/// before `now` (humantime units: `-90s`, `-30m`, `-1h`, `-2d`).
pub fn parse_time(text: &str, now: SystemTime) -> Result<SystemTime, FilterError> {
    let bad = || FilterError::Time(text.to_string());
    let text = text.trim();
    if let Some(ago) = text.strip_prefix('-') {
        let ago = humantime::parse_duration(ago).map_err(|_| bad())?;
        return now.checked_sub(ago).ok_or_else(bad);
    }
    if !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()) {
        let secs: u64 = text.parse().map_err(|_| bad())?;
        return UNIX_EPOCH.checked_add(Duration::from_secs(secs)).ok_or_else(bad);
    }
    humantime::parse_rfc3339(text).map_err(|_| bad())
}

/// Nanoseconds since the Unix epoch (0 before it).
pub fn unix_ns(t: SystemTime) -> i128 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos() as i128)
}

impl TraceFilter {
    /// Refuses a range that cannot match anything.
    pub fn check(&self) -> Result<(), FilterError> {
        match (self.since, self.until) {
            (Some(since), Some(until)) if since > until => Err(FilterError::Empty {
                since: humantime::format_rfc3339_seconds(since).to_string(),
                until: humantime::format_rfc3339_seconds(until).to_string(),
            }),
            _ => Ok(()),
        }
    }

    pub fn has_time(&self) -> bool {
        self.since.is_some() || self.until.is_some()
    }

    pub fn is_empty(&self) -> bool {
        !self.has_time() && self.nodes.is_empty() && self.pods.is_empty()
    }

    /// Whether a file of this node and pod may hold wanted calls.
    pub fn admits(&self, id: &Identity) -> bool {
        let node_ok = self.nodes.is_empty() || id.node.as_ref().is_some_and(|n| self.nodes.contains(n));
        let pod_ok = self.pods.is_empty() || id.pod.as_ref().is_some_and(|p| self.pods.contains(p));
        node_ok && pod_ok
    }

    /// The `ts` (ms since its session's start) a session that started at
    /// `start_unix_ns` keeps: `[lo, hi]`. `None`: nothing of it (a time
    /// filter and no known start: its calls cannot be placed in time).
    pub fn window_ms(&self, start_unix_ns: Option<u128>) -> Option<(f64, f64)> {
        if !self.has_time() {
            return Some((f64::NEG_INFINITY, f64::INFINITY));
        }
        let start = start_unix_ns? as i128;
        let ms = |t: Option<SystemTime>, open: f64| t.map_or(open, |t| (unix_ns(t) - start) as f64 / 1e6);
        Some((ms(self.since, f64::NEG_INFINITY), ms(self.until, f64::INFINITY)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(secs)
    }

    #[test]
    fn times_parse_in_three_forms_and_bad_ones_are_named() {
        let now = at(1_800_000_000);
        assert_eq!(parse_time("2026-12-03T10:00:00Z", now), Ok(at(1_796_292_000)));
        assert_eq!(parse_time("1796292000", now), Ok(at(1_796_292_000)));
        assert_eq!(parse_time("-1h", now), Ok(at(1_800_000_000 - 3600)));
        assert_eq!(parse_time("-2d", now), Ok(at(1_800_000_000 - 2 * 86_400)));
        let e = parse_time("yesterday", now).unwrap_err().to_string();
        assert!(e.contains("\"yesterday\"") && e.contains("RFC 3339"), "{e}");
        assert!(parse_time("-", now).is_err() && parse_time("", now).is_err());
    }

    #[test]
    fn windows_are_in_each_sessions_own_time() {
        let f = TraceFilter { since: Some(at(100)), until: Some(at(160)), ..Default::default() };
        let start = 90_000_000_000u128;
        assert_eq!(f.window_ms(Some(start)), Some((10_000.0, 70_000.0)));
        assert_eq!(f.window_ms(None), None, "no start: not placeable in time");
        assert_eq!(TraceFilter::default().window_ms(None), Some((f64::NEG_INFINITY, f64::INFINITY)));
        let backwards = TraceFilter { since: Some(at(2)), until: Some(at(1)), ..Default::default() };
        assert!(backwards.check().unwrap_err().to_string().contains("after --until"));
    }

    #[test]
    fn nodes_and_pods_match_exactly() {
        let f = TraceFilter { nodes: vec!["n1".into()], pods: vec!["p1".into(), "p2".into()], ..Default::default() };
        let id = |n: &str, p: Option<&str>| Identity { node: Some(n.into()), pod: p.map(Into::into) };
        assert!(f.admits(&id("n1", Some("p2"))));
        assert!(!f.admits(&id("n1", None)) && !f.admits(&id("n10", Some("p1"))) && !f.admits(&id("n1", Some("p"))));
        assert!(TraceFilter::default().admits(&Identity::default()));
    }
}
