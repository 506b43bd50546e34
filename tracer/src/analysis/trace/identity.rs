//! Which node and pod a trace file's calls were traced on: the lake's
//! `node=`/`pod=` partitions when the file sits under them (a lake synced
//! or read from S3), else its session's `metadata.json` (the downward-API
//! names, the host name for the node).

use std::path::Path;

use crate::format::{metadata::Metadata, names};

/// A file's node and pod (`None`: unknown, or a tracer not in a pod).
#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Identity {
    pub node: Option<String>,
    pub pod: Option<String>,
}

/// The value of a `key=value` directory named `key` among `path`'s parents.
fn partition<'a>(path: &'a Path, key: &str) -> Option<&'a str> {
    path.ancestors().skip(1).find_map(|dir| {
        let name = dir.file_name()?.to_str()?;
        name.strip_prefix(key)?.strip_prefix('=')
    })
}

impl Identity {
    /// The node and pod of the calls in `file`.
    pub fn of_trace_file(file: &Path) -> Self {
        if let Some(node) = partition(file, names::LAKE_NODE_KEY) {
            let pod = partition(file, names::LAKE_POD_KEY).filter(|p| *p != names::HIVE_NULL);
            return Self { node: Some(node.to_string()), pod: pod.map(str::to_string) };
        }
        match Metadata::of_trace_file(file) {
            Some(meta) => {
                let host = Some(meta.hostname).filter(|h| !h.is_empty());
                Self { node: meta.kubernetes.node.or(host), pod: meta.kubernetes.pod }
            }
            None => Self::default(),
        }
    }
}

/// The identity of each file, read once per directory (a session's files
/// share one metadata.json, a lake directory one partition).
pub fn of_files(files: &[std::path::PathBuf]) -> Vec<Identity> {
    let mut by_dir: std::collections::HashMap<&Path, Identity> = std::collections::HashMap::new();
    files
        .iter()
        .map(|f| match f.parent() {
            Some(dir) => by_dir.entry(dir).or_insert_with(|| Identity::of_trace_file(f)).clone(),
            None => Identity::of_trace_file(f),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lake_partitions_name_the_node_and_pod() {
        let lake = Path::new("/l/parquet/date=2026-01-01/hour=03/node=n1/pod=p1/s-00001.parquet");
        assert_eq!(Identity::of_trace_file(lake), Identity { node: Some("n1".into()), pod: Some("p1".into()) });
        let no_pod = Path::new("/l/parquet/date=2026-01-01/hour=03/node=n1/pod=__HIVE_DEFAULT_PARTITION__/s-1.parquet");
        assert_eq!(Identity::of_trace_file(no_pod), Identity { node: Some("n1".into()), pod: None });
        assert_eq!(Identity::of_trace_file(Path::new("/nowhere/trace_00001_x.jsonl")), Identity::default());
    }

    #[test]
    fn metadata_names_the_node_and_pod_else_the_host() {
        let dir = tempfile::tempdir().unwrap();
        let mut meta = Metadata { hostname: "host-a".into(), ..Default::default() };
        meta.write(dir.path()).unwrap();
        let file = dir.path().join("trace_00001_x.jsonl");
        assert_eq!(Identity::of_trace_file(&file), Identity { node: Some("host-a".into()), pod: None });
        meta.kubernetes.node = Some("n2".into());
        meta.kubernetes.pod = Some("p2".into());
        meta.write(dir.path()).unwrap();
        assert_eq!(Identity::of_trace_file(&file), Identity { node: Some("n2".into()), pod: Some("p2".into()) });
    }
}
