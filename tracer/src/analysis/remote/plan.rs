//! The order of a fetch: list the lake's prefixes the range reaches and the
//! session dirs the pods reach, check and sort every key, choose by the
//! keys ([`super::prune`]), then by each session's metadata.json where the
//! node decides, and download what is left.

use std::{collections::HashSet, path::Path, time::SystemTime};

use super::{
    download::{self, Caps},
    keys::{self, LakeKey, Object, SessionKey},
    list::{self, Listed},
    prune::{self, Range},
    RemoteError, S3Url, StoreCounts, StoreOptions,
};
use crate::analysis::trace::{filter::TraceFilter, identity::Identity};
use crate::format::names;

/// Bad keys named in the counts.
const BAD_KEYS_NAMED: usize = 10;

/// The listed objects, checked and sorted by layout.
#[derive(Default)]
struct Catalog {
    lake: Vec<(Listed, String, LakeKey)>,
    sessions: Vec<(Listed, String, SessionKey)>,
}

struct Fetch<'a> {
    client: &'a aws_sdk_s3::Client,
    url: &'a S3Url,
    root: &'a Path,
    caps: Caps,
    counts: StoreCounts,
    budget: usize,
    /// `--s3-timeout-secs`: what a body's deadline grows from.
    request_timeout: std::time::Duration,
}

/// Lists, chooses and downloads; the objects land under `root`.
pub async fn fetch_into(
    client: &aws_sdk_s3::Client,
    url: &S3Url,
    opts: &StoreOptions,
    filter: &TraceFilter,
    root: &Path,
) -> Result<StoreCounts, RemoteError> {
    let caps = Caps { object: opts.max_object_bytes, total: opts.max_total_bytes, used: 0 };
    let counts = StoreCounts { url: url.to_string(), ..Default::default() };
    let request_timeout = opts.client.timeout;
    let mut f = Fetch { client, url, root, caps, counts, budget: list::MAX_LISTED, request_timeout };
    let range = Range { since: filter.since, until: filter.until };
    let now = SystemTime::now();
    let mut catalog = Catalog::default();
    for prefix in prune::lake_prefixes(range, &filter.nodes, &filter.pods, now) {
        f.list_into(&prefix, &mut catalog).await?;
    }
    for root in f.session_roots(&filter.pods).await? {
        f.list_into(&root, &mut catalog).await?;
    }
    let lake = f.choose_lake(catalog.lake, filter, range, now);
    let twins: HashSet<(String, String, u32)> = lake.iter().map(|(_, _, k)| twin_of_lake(k)).collect();
    for (listed, rel, _) in &lake {
        f.get(listed, rel).await?;
    }
    f.fetch_sessions(catalog.sessions, &twins, filter, range).await?;
    Ok(f.counts)
}

/// The key a lake object and its JSONL twin share: (pod or node, session, seq).
fn twin_of_lake(k: &LakeKey) -> (String, String, u32) {
    (k.pod.clone().unwrap_or_else(|| k.node.clone()), k.session.clone(), k.seq)
}

impl Fetch<'_> {
    async fn list_into(&mut self, rel_prefix: &str, catalog: &mut Catalog) -> Result<(), RemoteError> {
        let prefix = format!("{}{rel_prefix}", self.url.prefix);
        let listing = list::list(self.client, &self.url.bucket, &prefix, None, &mut self.budget).await?;
        for listed in listing.objects {
            self.counts.listed += 1;
            let rel = match keys::relative(&listed.key, &self.url.prefix) {
                Ok(rel) => rel,
                Err(why) => {
                    self.counts.bad_keys += 1;
                    if self.counts.bad_key_examples.len() < BAD_KEYS_NAMED {
                        self.counts.bad_key_examples.push(format!("{:?}: {why}", listed.key));
                    }
                    continue;
                }
            };
            match keys::classify(&rel) {
                Object::Lake(k) => catalog.lake.push((listed, rel, k)),
                Object::Session(k) => catalog.sessions.push((listed, rel, k)),
                Object::Other => self.counts.not_traces += 1,
            }
        }
        Ok(())
    }

    /// The session dirs' first components to list: the wanted pods, else
    /// every one under the prefix but the lake's.
    async fn session_roots(&mut self, pods: &[String]) -> Result<Vec<String>, RemoteError> {
        let unsafe_name = |p: &String| p.is_empty() || p.contains('/') || p == "." || p == "..";
        if !pods.is_empty() {
            return Ok(pods.iter().filter(|p| !unsafe_name(p)).map(|p| format!("{p}/")).collect());
        }
        let (bucket, prefix) = (&self.url.bucket, &self.url.prefix);
        let top = list::list(self.client, bucket, prefix, Some("/"), &mut self.budget).await?;
        let lake = format!("{prefix}{}/", names::PARQUET_LAKE_DIR);
        Ok(top
            .prefixes
            .into_iter()
            .filter(|p| *p != lake)
            .filter_map(|p| p.strip_prefix(prefix.as_str()).map(str::to_string))
            .collect())
    }

    fn choose_lake(
        &mut self,
        lake: Vec<(Listed, String, LakeKey)>,
        filter: &TraceFilter,
        range: Range,
        now: SystemTime,
    ) -> Vec<(Listed, String, LakeKey)> {
        let wanted = |(_, _, k): &(Listed, String, LakeKey)| prune::lake_admits(k, &filter.nodes, &filter.pods);
        let (admitted, excluded): (Vec<_>, Vec<_>) = lake.into_iter().partition(wanted);
        self.counts.skipped_by_filters += excluded.len() as u64;
        let keys: Vec<LakeKey> = admitted.iter().map(|(_, _, k)| k.clone()).collect();
        let keep = prune::select_lake(&keys, range, now);
        let mut out = Vec::new();
        for (object, keep) in admitted.into_iter().zip(keep) {
            if keep {
                out.push(object);
            } else {
                self.counts.skipped_by_filters += 1;
            }
        }
        out
    }

    /// The JSONL sessions: trace files chosen by time and twin, then each
    /// session with a file left gets its metadata.json, which decides its
    /// node and pod; the trace files of a wanted session come last.
    async fn fetch_sessions(
        &mut self,
        objects: Vec<(Listed, String, SessionKey)>,
        twins: &HashSet<(String, String, u32)>,
        filter: &TraceFilter,
        range: Range,
    ) -> Result<(), RemoteError> {
        let keys: Vec<SessionKey> = objects.iter().map(|(_, _, k)| k.clone()).collect();
        let by_time = prune::select_traces(&keys, range);
        let mut traces = Vec::new();
        let mut metadata = Vec::new();
        for ((listed, rel, k), keep) in objects.into_iter().zip(by_time) {
            match k.trace {
                None => metadata.push((listed, rel, k)),
                Some((seq, _)) if keep && !twins.contains(&(k.source.clone(), k.session.clone(), seq)) => {
                    traces.push((listed, rel, k))
                }
                Some(_) => self.counts.skipped_by_filters += 1,
            }
        }
        let mut wanted: HashSet<(String, String)> = HashSet::new();
        for (listed, rel, k) in metadata {
            let session = (k.source.clone(), k.session.clone());
            if !traces.iter().any(|(_, _, t)| t.source == session.0 && t.session == session.1) {
                self.counts.skipped_by_filters += 1;
                continue;
            }
            self.get(&listed, &rel).await?;
            let file = self.root.join(&rel).with_file_name("trace_00000_x.jsonl");
            if filter.admits(&Identity::of_trace_file(&file)) {
                wanted.insert(session);
            }
        }
        for (listed, rel, k) in traces {
            // A session without metadata.json has no known node or pod:
            // read only when no node or pod is asked for.
            let known = self.root.join(&rel).with_file_name(names::METADATA).exists();
            let unknown_ok = !known && filter.nodes.is_empty() && filter.pods.is_empty();
            if wanted.contains(&(k.source.clone(), k.session.clone())) || unknown_ok {
                self.get(&listed, &rel).await?;
            } else {
                self.counts.skipped_by_filters += 1;
            }
        }
        Ok(())
    }

    async fn get(&mut self, listed: &Listed, rel: &str) -> Result<(), RemoteError> {
        download::check(&self.url.bucket, &listed.key, listed.size, &self.caps)?;
        let dest = self.root.join(rel);
        let deadline = download::body_deadline(self.request_timeout, listed.size);
        let object = download::Object { bucket: &self.url.bucket, key: &listed.key, size: listed.size };
        let bytes = download::download(self.client, object, &dest, &mut self.caps, deadline).await?;
        self.counts.downloaded += 1;
        self.counts.downloaded_bytes += bytes;
        Ok(())
    }
}
