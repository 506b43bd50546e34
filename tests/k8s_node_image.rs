//! The sidecar image as users build it: `./deploy.sh build` with buildah,
//! from the Debian base images `cargo xtask setup` makes (no registry), and
//! imported into the test node's containerd (`CLUSTER_RUNTIME=containerd`).
//! The shipped sidecar Deployment then runs THAT image (the node's image
//! has the built image's layers) and traces the vLLM stand-in call for call.

use std::path::Path;

use cuda_tracer_tests::{
    image_build::{buildah, deploy_build, require_base_images},
    node::KubeNode,
    node_images,
    node_sidecar::assert_sidecar_traces_the_standin,
};
use serde_json::Value;

/// How containerd names the image deploy.sh imports (`cuda-tracer:latest`).
const NODE_IMAGE: &str = "docker.io/library/cuda-tracer:latest";

/// The layers (diff IDs) of the image deploy.sh built, in buildah's storage.
fn built_layers() -> Vec<String> {
    let format = "{{range .OCIv1.RootFS.DiffIDs}}{{.}} {{end}}";
    let out = buildah(&["inspect", "--type", "image", "--format", format, "cuda-tracer:latest"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).split_whitespace().map(str::to_string).collect()
}

/// The layers of the node's `cuda-tracer:latest`, from containerd's content store.
fn node_layers(node: &KubeNode) -> Vec<String> {
    let listed = String::from_utf8_lossy(&node.ctr(&["images", "ls"]).stdout).into_owned();
    let digest = listed
        .lines()
        .find_map(|l| {
            let cols: Vec<&str> = l.split_whitespace().collect();
            (cols.first() == Some(&NODE_IMAGE)).then(|| cols.get(2).map(|d| d.to_string()))?
        })
        .unwrap_or_else(|| panic!("{NODE_IMAGE} is not in the node's containerd:\n{listed}"));
    let content = |digest: &str| -> Value {
        let out = node.ctr(&["content", "get", digest]);
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("ctr content get {digest}: {e}"))
    };
    let manifest = content(&digest);
    let config = content(manifest["config"]["digest"].as_str().expect("a config digest"));
    serde_json::from_value(config["rootfs"]["diff_ids"].clone()).expect("diff IDs")
}

#[test]
fn deploy_sh_builds_the_image_offline_and_the_shipped_sidecar_runs_it() {
    require_base_images();
    // The long part first, before the node takes the machine-wide lock: a
    // cold build compiles the tracer in release; a warm one reuses buildah's
    // layers (same sources) or the cargo cache mounts (changed sources).
    let build = deploy_build(&[("CLUSTER_RUNTIME", Path::new("none"))]);
    eprintln!("image test: deploy.sh build (no import) took {build:.1?}");

    let node = KubeNode::start();
    let socket = node.socket();
    let import = deploy_build(&[("CLUSTER_RUNTIME", Path::new("containerd")), ("CONTAINERD_ADDRESS", &socket)]);
    eprintln!("image test: deploy.sh build with the import into the node's containerd took {import:.1?}");
    // Earlier builds' images and this one's layer cache (images only; the
    // cargo cache mounts stay): the next run re-runs its RUN steps (seconds
    // with unchanged sources), and the storage does not grow run after run.
    let pruned = buildah(&["rmi", "--prune"]);
    assert!(pruned.status.success(), "buildah rmi --prune: {}", String::from_utf8_lossy(&pruned.stderr));
    let layers = built_layers();
    assert!(layers.len() >= 2, "a Debian base layer and the tracer's: {layers:?}");
    assert_eq!(node_layers(&node), layers, "the node's {NODE_IMAGE} is not the image deploy.sh built");

    node.import_image(&node_images::standin_image(&node.dir().join("images")));
    assert_sidecar_traces_the_standin(&node);
}
