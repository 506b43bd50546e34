//! The few facts about a pod that the admission decision needs, read from
//! its JSON without building the pod: a client controls that JSON, and a
//! 3 MiB pod of tiny labels or containers would take ten times that as a
//! `serde_json::Value` or a k8s-openapi `Pod`. Every list is scanned and
//! dropped element by element, so memory stays constant.

use std::{borrow::Cow, fmt};

use serde::{
    de::{DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor},
    Deserialize,
};
use serde_json::value::RawValue;

use super::sidecar::{SIDECAR_NAME, TRACES_VOLUME};

/// What the decision reads from a pod.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct PodView {
    pub name: Option<String>,
    pub generate_name: Option<String>,
    pub namespace: Option<String>,
    /// The value of the label that [`PodView::parse`] was asked about.
    pub target_label: Option<String>,
    pub has_annotations: bool,
    pub spec: Option<SpecView>,
}

/// What the decision reads from a pod's spec.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct SpecView {
    /// The first container (init or not) that already runs the tracer.
    pub tracer: Option<String>,
    pub has_volumes: bool,
    /// The pod defines a volume named [`TRACES_VOLUME`] itself.
    pub has_traces_volume: bool,
    pub host_pid: Option<bool>,
}

impl PodView {
    /// Reads a pod from JSON, keeping the value of label `label_key`.
    pub fn parse(json: &str, label_key: &str) -> Result<Self, serde_json::Error> {
        let raw: RawPod<'_> = serde_json::from_str(json)?;
        let meta = raw.metadata.unwrap_or_default();
        let target_label = match meta.labels {
            Some(labels) => {
                LabelLookup(label_key).deserialize(&mut serde_json::Deserializer::from_str(labels.get()))?
            }
            None => None,
        };
        Ok(Self {
            name: meta.name,
            generate_name: meta.generate_name,
            namespace: meta.namespace,
            target_label,
            has_annotations: meta.annotations.is_some(),
            spec: raw.spec.map(|s| SpecView {
                tracer: s.containers.0.or(s.init_containers.and_then(|c| c.0)),
                has_volumes: s.volumes.is_some(),
                has_traces_volume: s.volumes.is_some_and(|v| v.0),
                host_pid: s.host_pid,
            }),
        })
    }
}

#[derive(Deserialize)]
struct RawPod<'a> {
    #[serde(default, borrow)]
    metadata: Option<RawMeta<'a>>,
    #[serde(default)]
    spec: Option<RawSpec>,
}

#[derive(Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawMeta<'a> {
    name: Option<String>,
    generate_name: Option<String>,
    namespace: Option<String>,
    #[serde(default, borrow)]
    labels: Option<&'a RawValue>,
    annotations: Option<IgnoredAny>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawSpec {
    containers: TracerScan,
    init_containers: Option<TracerScan>,
    volumes: Option<TracesVolumeScan>,
    #[serde(rename = "hostPID")]
    host_pid: Option<bool>,
}

#[derive(Deserialize)]
struct ContainerHead {
    name: String,
    #[serde(default)]
    command: Option<FirstWord>,
}

impl ContainerHead {
    /// Named like the sidecar, or running `cuda-tracer` (a hand-written
    /// sidecar from the manifests).
    fn is_tracer(&self) -> bool {
        let program = self.command.as_ref().and_then(|c| c.0.as_deref());
        self.name == SIDECAR_NAME || program.is_some_and(|p| p.rsplit('/').next() == Some("cuda-tracer"))
    }
}

#[derive(Deserialize)]
struct VolumeHead<'a> {
    #[serde(borrow)]
    name: Cow<'a, str>,
}

/// A list read one element at a time: `keep` folds each into the result.
fn scan_seq<'de, D, T, R>(d: D, what: &'static str, keep: impl FnMut(&mut R, T)) -> Result<R, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
    R: Default,
{
    struct Scan<F, T, R>(&'static str, F, std::marker::PhantomData<(T, R)>);
    impl<'de, F: FnMut(&mut R, T), T: Deserialize<'de>, R: Default> Visitor<'de> for Scan<F, T, R> {
        type Value = R;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str(self.0)
        }
        fn visit_seq<A: SeqAccess<'de>>(mut self, mut seq: A) -> Result<R, A::Error> {
            let mut acc = R::default();
            while let Some(item) = seq.next_element::<T>()? {
                (self.1)(&mut acc, item);
            }
            Ok(acc)
        }
    }
    d.deserialize_seq(Scan(what, keep, std::marker::PhantomData))
}

/// The name of the first container that runs the tracer.
struct TracerScan(Option<String>);

impl<'de> Deserialize<'de> for TracerScan {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let found = scan_seq(d, "a list of containers", |found: &mut Option<String>, c: ContainerHead| {
            if found.is_none() && c.is_tracer() {
                *found = Some(c.name);
            }
        })?;
        Ok(Self(found))
    }
}

/// Whether a volume list has one named [`TRACES_VOLUME`].
struct TracesVolumeScan(bool);

impl<'de> Deserialize<'de> for TracesVolumeScan {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let clash = scan_seq(d, "a list of volumes", |clash: &mut bool, v: VolumeHead<'de>| {
            *clash |= v.name == TRACES_VOLUME;
        })?;
        Ok(Self(clash))
    }
}

/// The first word of a command.
struct FirstWord(Option<String>);

impl<'de> Deserialize<'de> for FirstWord {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct First;
        impl<'de> Visitor<'de> for First {
            type Value = Option<String>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a command (a list of strings)")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Option<String>, A::Error> {
                let first = seq.next_element::<String>()?;
                while seq.next_element::<IgnoredAny>()?.is_some() {}
                Ok(first)
            }
        }
        Ok(Self(d.deserialize_seq(First)?))
    }
}

/// The value of one label; the others are read and dropped.
struct LabelLookup<'k>(&'k str);

impl<'de> DeserializeSeed<'de> for LabelLookup<'_> {
    type Value = Option<String>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_option(self)
    }
}

impl<'de> Visitor<'de> for LabelLookup<'_> {
    type Value = Option<String>;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("labels (a map of strings)")
    }
    fn visit_none<E>(self) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_unit<E>(self) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_map(self)
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut found = None;
        while let Some(key) = map.next_key::<Cow<'de, str>>()? {
            if key == self.0 {
                found = Some(map.next_value::<String>()?);
            } else {
                map.next_value::<IgnoredAny>()?;
            }
        }
        Ok(found)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parse(v: serde_json::Value) -> Result<PodView, String> {
        PodView::parse(&v.to_string(), "sel").map_err(|e| e.to_string())
    }

    #[test]
    fn reads_what_the_decision_needs() {
        let v = parse(json!({
            "metadata": {"name": "p", "namespace": "n", "labels": {"a": "1", "sel": "yes"}, "annotations": {}},
            "spec": {
                "hostPID": true,
                "containers": [{"name": "vllm", "command": ["python3", "-m"]}, {"name": "t", "command": ["/bin/cuda-tracer"]}],
                "volumes": [{"name": "shm"}, {"name": TRACES_VOLUME, "hostPath": {"path": "/"}}]
            }
        }))
        .unwrap();
        assert_eq!(
            (v.name.as_deref(), v.namespace.as_deref(), v.target_label.as_deref()),
            (Some("p"), Some("n"), Some("yes"))
        );
        assert!(v.has_annotations);
        let spec = v.spec.unwrap();
        assert_eq!(
            spec,
            SpecView { tracer: Some("t".into()), has_volumes: true, has_traces_volume: true, host_pid: Some(true) }
        );

        let v = parse(json!({"metadata": {"labels": null}, "spec": {"containers": [], "initContainers": [{"name": SIDECAR_NAME}]}})).unwrap();
        assert_eq!(v.target_label, None);
        assert!(!v.has_annotations);
        assert_eq!(v.spec.unwrap().tracer.as_deref(), Some(SIDECAR_NAME));
        assert_eq!(parse(json!({})).unwrap(), PodView::default());
    }

    #[test]
    fn malformed_pods_are_errors() {
        assert!(parse(json!({"spec": {"containers": "vllm"}})).unwrap_err().contains("a list of containers"));
        assert!(parse(json!({"spec": {}})).unwrap_err().contains("missing field `containers`"));
        assert!(parse(json!({"metadata": {"labels": {"sel": 1}}})).is_err());
        assert!(parse(json!({"spec": {"containers": [{"name": "a", "command": "x"}]}})).is_err());
    }
}
