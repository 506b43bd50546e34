//! Per-node and per-pod breakdowns: the calls, errors, call time, kernel
//! launches and bytes copied of each node and each pod, per layer, added up
//! from the per-file tallies the reader took ([`crate::analysis::trace::tally`])
//! and the node and pod each file was traced on
//! ([`crate::analysis::trace::identity`]).

use std::collections::BTreeMap;

use serde::Serialize;
use tracer_common::funcs::Layer;

use super::table::{self, fixed};
use crate::analysis::trace::{
    identity::Identity,
    tally::{LayerCounts, Tally},
};

/// One node's (or pod's) calls of one layer.
#[derive(Debug, Serialize, PartialEq)]
pub struct SourceRow {
    /// The node or pod; `None`: unknown (no metadata), or no pod (a
    /// tracer on a node).
    pub name: Option<String>,
    #[serde(rename = "type")]
    pub layer: &'static str,
    pub calls: u64,
    pub errors: u64,
    pub total_call_ms: f64,
    pub launches: u64,
    pub copies: u64,
    pub copy_bytes: u64,
}

/// The breakdowns, rows in name then layer order.
#[derive(Debug, Default, Serialize, PartialEq)]
pub struct Sources {
    pub nodes: Vec<SourceRow>,
    pub pods: Vec<SourceRow>,
}

impl Sources {
    /// Adds each file's tally to its node and its pod.
    pub fn of(identities: &[Identity], tallies: &[Tally]) -> Self {
        let mut nodes: BTreeMap<Option<String>, Tally> = BTreeMap::new();
        let mut pods: BTreeMap<Option<String>, Tally> = BTreeMap::new();
        for (id, tally) in identities.iter().zip(tallies) {
            nodes.entry(id.node.clone()).or_default().merge(tally);
            pods.entry(id.pod.clone()).or_default().merge(tally);
        }
        Self { nodes: rows(nodes), pods: rows(pods) }
    }

    pub fn nodes_csv(&self) -> String {
        table::csv(&header("node"), &self.nodes, SourceRow::cells)
    }

    pub fn pods_csv(&self) -> String {
        table::csv(&header("pod"), &self.pods, SourceRow::cells)
    }

    /// The text tables, when the calls come from more than one node or pod.
    pub fn text(&self) -> Option<String> {
        let distinct = |rows: &[SourceRow]| {
            let mut names: Vec<&Option<String>> = rows.iter().map(|r| &r.name).collect();
            names.dedup();
            names.len()
        };
        if distinct(&self.nodes) < 2 && distinct(&self.pods) < 2 {
            return None;
        }
        let mut out = String::from("== Calls by node\n");
        out += &table::text_of(&header("node"), &self.nodes, SourceRow::cells);
        out += "\n== Calls by pod\n";
        out += &table::text_of(&header("pod"), &self.pods, SourceRow::cells);
        Some(out)
    }
}

fn header(what: &str) -> [&str; 8] {
    [what, "type", "calls", "errors", "total_call_ms", "launches", "copies", "copy_bytes"]
}

fn rows(by_name: BTreeMap<Option<String>, Tally>) -> Vec<SourceRow> {
    let mut out = Vec::new();
    for (name, tally) in by_name {
        for (layer, counts) in Layer::ALL.iter().zip(tally.0) {
            if counts.calls > 0 {
                out.push(SourceRow::new(name.clone(), layer.type_name(), &counts));
            }
        }
    }
    out
}

impl SourceRow {
    fn new(name: Option<String>, layer: &'static str, c: &LayerCounts) -> Self {
        Self {
            name,
            layer,
            calls: c.calls,
            errors: c.errors,
            total_call_ms: c.call_ns as f64 / 1e6,
            launches: c.launches,
            copies: c.copies,
            copy_bytes: c.copy_bytes,
        }
    }

    fn cells(&self) -> Vec<String> {
        vec![
            self.name.clone().unwrap_or_default(),
            self.layer.into(),
            self.calls.to_string(),
            self.errors.to_string(),
            fixed(self.total_call_ms, 3),
            self.launches.to_string(),
            self.copies.to_string(),
            self.copy_bytes.to_string(),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tallies_add_up_per_node_and_per_pod() {
        let id = |n: &str, p: Option<&str>| Identity { node: Some(n.into()), pod: p.map(Into::into) };
        let tally = |calls: u64, bytes: u64| {
            let mut t = Tally::default();
            t.0[1] = LayerCounts { calls, call_ns: 2_000_000, copy_bytes: bytes, ..Default::default() };
            t
        };
        let ids = [id("n1", Some("a")), id("n1", Some("b")), id("n2", None)];
        let s = Sources::of(&ids, &[tally(1, 10), tally(2, 20), tally(4, 40)]);
        let got: Vec<(Option<&str>, &str, u64, u64)> =
            s.nodes.iter().map(|r| (r.name.as_deref(), r.layer, r.calls, r.copy_bytes)).collect();
        assert_eq!(got, [(Some("n1"), "cuda_runtime", 3, 30), (Some("n2"), "cuda_runtime", 4, 40)]);
        assert_eq!(
            s.pods.iter().map(|r| (r.name.as_deref(), r.calls)).collect::<Vec<_>>(),
            [(None, 4), (Some("a"), 1), (Some("b"), 2)]
        );
        assert_eq!(s.nodes[0].total_call_ms, 4.0);
        assert!(s.nodes_csv().starts_with("node,type,calls,errors,total_call_ms,launches,copies,copy_bytes\nn1,"));
        assert!(s.text().unwrap().contains("== Calls by pod"));
    }
}
