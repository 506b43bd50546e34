//! The sidecar image as users build it: `./deploy.sh build` with buildah,
//! from the Debian base images `cargo xtask setup` makes (no registry), and
//! imported into the test node's containerd (`CLUSTER_RUNTIME=containerd`).
//! The shipped sidecar Deployment then runs THAT image (the node's image
//! has the built image's layers) and traces the vLLM stand-in call for call.
//! The same with a plain `docker build` of the Dockerfile (deploy.sh's
//! default builder) on Debian's Docker engine, from the Dockerfile's default
//! base image names.

use std::path::Path;

use cuda_tracer_tests::{
    docker_engine::DockerEngine,
    image_build::{
        buildah, deploy_build, deploy_build_with, require_base_images, BUILDER_BASE, HOST_CA_CERTS, RUNTIME_BASE,
    },
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

/// The flow both builders share: `build` (deploy.sh build with the given
/// cluster settings) without a node first, since a cold build is long and the
/// node takes the machine-wide lock; then again importing into the node's
/// containerd; `prune_and_list` drops earlier images and layer records
/// (not the cargo cache mounts, so the storage does not grow run after run)
/// and lists the built image's layers, which the node's image must have;
/// the shipped sidecar then runs it and traces the stand-in call for call.
fn built_image_runs_as_the_shipped_sidecar(
    builder: &str,
    build: impl Fn(&[(&str, &Path)]) -> std::time::Duration,
    prune_and_list: impl FnOnce() -> Vec<String>,
) {
    let cold = build(&[("CLUSTER_RUNTIME", Path::new("none"))]);
    eprintln!("image test ({builder}): deploy.sh build (no import) took {cold:.1?}");

    let node = KubeNode::start();
    let socket = node.socket();
    let import = build(&[("CLUSTER_RUNTIME", Path::new("containerd")), ("CONTAINERD_ADDRESS", &socket)]);
    eprintln!("image test ({builder}): deploy.sh build with the import into the node's containerd took {import:.1?}");
    let layers = prune_and_list();
    assert!(layers.len() >= 2, "a Debian base layer and the tracer's: {layers:?}");
    assert_eq!(node_layers(&node), layers, "the node's {NODE_IMAGE} is not the image {builder} built");

    node.import_image(&node_images::standin_image(&node.dir().join("images")));
    assert_sidecar_traces_the_standin(&node);
}

#[test]
fn deploy_sh_builds_the_image_offline_and_the_shipped_sidecar_runs_it() {
    require_base_images();
    // A warm build reuses buildah's layers (same sources) or the cargo
    // cache mounts (changed sources).
    built_image_runs_as_the_shipped_sidecar("buildah", deploy_build, || {
        let pruned = buildah(&["rmi", "--prune"]);
        assert!(pruned.status.success(), "buildah rmi --prune: {}", String::from_utf8_lossy(&pruned.stderr));
        built_layers()
    });
}

#[test]
fn a_plain_docker_build_of_the_dockerfile_runs_as_the_shipped_sidecar() {
    require_base_images();
    let engine = DockerEngine::start();
    // Docker Hub is out of reach here: the Dockerfile's default bases
    // (`rust:1.95-bookworm`, `debian:bookworm-slim`) are setup's Debian
    // images under those names, the builder with this machine's CA bundle
    // (crates.io is reached through a TLS-inspecting egress here; a
    // company's own base image carries its CA the same way).
    let ca = Path::new(HOST_CA_CERTS);
    let builder_extra: Vec<(&Path, &str)> = if ca.exists() { vec![(ca, HOST_CA_CERTS)] } else { Vec::new() };
    let started = std::time::Instant::now();
    engine.stand_in("rust:1.95-bookworm", BUILDER_BASE, &builder_extra);
    engine.stand_in("debian:bookworm-slim", RUNTIME_BASE, &[]);
    eprintln!("image test (docker): the stand-in base images took {:.1?}", started.elapsed());
    let settings = engine.deploy_settings();
    built_image_runs_as_the_shipped_sidecar(
        "docker",
        |cluster| deploy_build_with(&settings, cluster),
        || {
            engine.docker_ok(&["image", "prune", "--force"]);
            engine.docker_ok(&["builder", "prune", "--force", "--filter", "type=regular"]);
            let format = "{{range .RootFS.Layers}}{{.}} {{end}}";
            let built = engine.docker_ok(&["image", "inspect", "--format", format, "cuda-tracer:latest"]);
            built.split_whitespace().map(str::to_string).collect()
        },
    );
}
