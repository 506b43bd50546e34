//! Object keys from the store, which are untrusted: checked to be a safe
//! relative path (bounded, no `..`, `.` or empty component, no absolute
//! path, no NUL or backslash) before any becomes a local file name, then
//! read as one of the two layouts the upload writes (docs/FLEET.md): a lake
//! object `parquet/date=…/hour=…/node=…/pod=…/<session>-<seq>.parquet` or a
//! session file `<pod-or-node>/<session>/trace_<seq>_<utc>.jsonl` /
//! `metadata.json`. Pure functions.

use std::time::SystemTime;

use crate::format::names;

/// S3's own bound on a key.
pub const MAX_KEY_BYTES: usize = 1024;
/// The bound of one path component on Linux.
const MAX_COMPONENT_BYTES: usize = 255;

/// Why a key is not turned into a local path.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum BadKey {
    #[error("longer than {MAX_KEY_BYTES} bytes")]
    TooLong,
    #[error("not under the prefix")]
    OutsidePrefix,
    #[error("an empty, `.` or `..` path component, or one over 255 bytes")]
    Component,
    #[error("a NUL, backslash or control character")]
    Character,
}

/// `key` less `prefix`, if it is a safe relative path.
pub fn relative(key: &str, prefix: &str) -> Result<String, BadKey> {
    if key.len() > MAX_KEY_BYTES {
        return Err(BadKey::TooLong);
    }
    let rel = key.strip_prefix(prefix).ok_or(BadKey::OutsidePrefix)?;
    if rel.chars().any(|c| c == '\\' || c.is_control()) {
        return Err(BadKey::Character);
    }
    let bad = |c: &str| c.is_empty() || c == "." || c == ".." || c.len() > MAX_COMPONENT_BYTES;
    if rel.split('/').any(bad) {
        return Err(BadKey::Component);
    }
    Ok(rel.to_string())
}

/// A Parquet lake object's partitions and name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LakeKey {
    /// `YYYY-MM-DD`.
    pub date: String,
    pub hour: u8,
    pub node: String,
    /// `None` for Hive's null (a tracer not in a pod).
    pub pod: Option<String>,
    pub session: String,
    pub seq: u32,
}

/// A JSONL session file: a trace file or the session's metadata.json.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SessionKey {
    /// The first component: the pod, else the node.
    pub source: String,
    pub session: String,
    /// `Some((seq, opened))` for a trace file, `None` for metadata.json.
    pub trace: Option<(u32, SystemTime)>,
}

/// What a (relative, checked) key is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Object {
    Lake(LakeKey),
    Session(SessionKey),
    /// Anything else (KV-cache CSVs, exports, other tools' objects): not read.
    Other,
}

/// The value of component `key=value`.
fn value<'a>(component: &'a str, key: &str) -> Option<&'a str> {
    component.strip_prefix(key)?.strip_prefix('=')
}

/// A compact UTC time (`20260102T030405Z`, from a trace file's name).
pub fn compact_utc(text: &str) -> Option<SystemTime> {
    let b = text.as_bytes();
    if b.len() != 16 || b[8] != b'T' || b[15] != b'Z' {
        return None;
    }
    let (d, t) = (&text[..8], &text[9..15]);
    let rfc = format!("{}-{}-{}T{}:{}:{}Z", &d[..4], &d[4..6], &d[6..], &t[..2], &t[2..4], &t[4..]);
    humantime::parse_rfc3339(&rfc).ok()
}

fn lake(parts: &[&str]) -> Option<LakeKey> {
    let [dir, date, hour, node, pod, file] = parts else { return None };
    if *dir != names::PARQUET_LAKE_DIR {
        return None;
    }
    let date = value(date, names::LAKE_DATE_KEY)?;
    // Checked as a date: it becomes part of a listing range.
    compact_utc(&format!("{}T000000Z", date.replace('-', ""))).filter(|_| date.len() == 10)?;
    let hour: u8 = value(hour, names::LAKE_HOUR_KEY).filter(|h| h.len() == 2)?.parse().ok().filter(|h| *h < 24)?;
    let (node, pod) = (value(node, names::LAKE_NODE_KEY)?, value(pod, names::LAKE_POD_KEY)?);
    let (session, seq) = file.strip_suffix(".parquet")?.rsplit_once('-')?;
    Some(LakeKey {
        date: date.to_string(),
        hour,
        node: node.to_string(),
        pod: Some(pod).filter(|p| *p != names::HIVE_NULL).map(str::to_string),
        session: session.to_string(),
        seq: seq.parse().ok()?,
    })
}

fn session_file(parts: &[&str]) -> Option<SessionKey> {
    let [source, session, file] = parts else { return None };
    let trace = if *file == names::METADATA {
        None
    } else {
        let (seq, utc) = names::trace_seq_and_utc(file).filter(|_| names::is_trace_file(file))?;
        Some((seq.parse().ok()?, compact_utc(utc)?))
    };
    Some(SessionKey { source: source.to_string(), session: session.to_string(), trace })
}

/// What the checked relative key `rel` names.
pub fn classify(rel: &str) -> Object {
    let parts: Vec<&str> = rel.split('/').collect();
    if let Some(k) = lake(&parts) {
        return Object::Lake(k);
    }
    if parts.first() == Some(&names::PARQUET_LAKE_DIR) {
        return Object::Other;
    }
    session_file(&parts).map_or(Object::Other, Object::Session)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(rfc: &str) -> SystemTime {
        humantime::parse_rfc3339(rfc).unwrap()
    }

    #[test]
    fn unsafe_keys_are_refused() {
        assert_eq!(relative("p/a/b.jsonl", "p/"), Ok("a/b.jsonl".into()));
        assert_eq!(relative("q/a", "p/"), Err(BadKey::OutsidePrefix));
        for bad in ["p/../etc/passwd", "p//x", "p/a/./b", "p/a/", "p/", "p/a/.."] {
            assert_eq!(relative(bad, "p/"), Err(BadKey::Component), "{bad}");
        }
        assert_eq!(relative("/etc/passwd", ""), Err(BadKey::Component), "an absolute path has an empty component");
        assert_eq!(relative("p/a\\..\\b", "p/"), Err(BadKey::Character));
        assert_eq!(relative("p/a\0b", "p/"), Err(BadKey::Character));
        assert_eq!(relative(&format!("p/{}", "a".repeat(1100)), "p/"), Err(BadKey::TooLong));
        assert_eq!(relative(&format!("p/{}", "a".repeat(256)), "p/"), Err(BadKey::Component));
    }

    #[test]
    fn lake_keys_give_their_partitions() {
        let k = classify("parquet/date=2026-12-03/hour=09/node=n1/pod=p1/20261203T090000Z-77-00003.parquet");
        let want = LakeKey {
            date: "2026-12-03".into(),
            hour: 9,
            node: "n1".into(),
            pod: Some("p1".into()),
            session: "20261203T090000Z-77".into(),
            seq: 3,
        };
        assert_eq!(k, Object::Lake(want));
        let Object::Lake(k) =
            classify("parquet/date=2026-12-03/hour=23/node=n/pod=__HIVE_DEFAULT_PARTITION__/s-1.parquet")
        else {
            panic!()
        };
        assert_eq!(k.pod, None);
        for other in [
            "parquet/date=2026-12-03/hour=24/node=n/pod=p/s-1.parquet",
            "parquet/date=2026-13-03/hour=01/node=n/pod=p/s-1.parquet",
            "parquet/date=2026-12-03/hour=1/node=n/pod=p/s-1.parquet",
            "parquet/date=2026-12-03/hour=01/node=n/s-1.parquet",
            "parquet/date=2026-12-03/hour=01/node=n/pod=p/s-x.parquet",
        ] {
            assert_eq!(classify(other), Object::Other, "{other}");
        }
    }

    #[test]
    fn session_keys_give_the_source_and_the_opening_time() {
        let k = classify("pod-a/s1/trace_00002_20261203T095959Z.jsonl");
        let want =
            SessionKey { source: "pod-a".into(), session: "s1".into(), trace: Some((2, at("2026-12-03T09:59:59Z"))) };
        assert_eq!(k, Object::Session(want));
        let meta = SessionKey { source: "pod-a".into(), session: "s1".into(), trace: None };
        assert_eq!(classify("pod-a/s1/metadata.json"), Object::Session(meta));
        for other in ["pod-a/s1/kv_cache_usage_00001.csv", "pod-a/s1/trace_00002_bad.jsonl", "pod-a/metadata.json"] {
            assert_eq!(classify(other), Object::Other, "{other}");
        }
    }
}
