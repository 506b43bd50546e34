//! Containers: two processes whose mount namespaces show different library
//! files at the same path. Each file is attached separately (uprobes bind to
//! inodes) and each process's calls are traced through its own file.

use std::time::Duration;

use cuda_tracer_tests::*;

#[test]
fn same_path_different_files_in_two_mount_namespaces() {
    let (tmp, mnt) = scratch_with_dir("mnt-container-libs");
    let traces = tmp.path().join("traces");
    let pattern = mnt.display().to_string().replace('.', "\\.");
    let mut cmd = tracer_cmd();
    cmd.args(["run", "--no-upload", "--target-process", &pattern, "--scan-interval-ms", "100", "--trace-dir"])
        .arg(&traces);
    let (mut daemon, log) = spawn_with_log(cmd);

    let lib = mnt.join("libcudart.so.12");
    let mut clients = Vec::new();
    for name in ["a", "b"] {
        // Each "container" image has its own copy of the runtime and driver.
        let image = tmp.path().join(name);
        std::fs::create_dir_all(&image).unwrap();
        for f in ["libcudart.so.12", "libcuda.so.1"] {
            std::fs::copy(fixtures().join(f), image.join(f)).unwrap();
        }
        let truth = tmp.path().join(format!("truth-{name}"));
        std::fs::create_dir_all(&truth).unwrap();
        let go = tmp.path().join(format!("go-{name}"));
        let script = format!(
            "mount --bind {} {} && exec {} {} {}",
            image.display(),
            mnt.display(),
            fixtures().join("real-runtime-client").display(),
            lib.display(),
            truth.join("truth.client.jsonl").display()
        );
        let child = std::process::Command::new("unshare")
            .args(["-m", "--propagation", "private", "sh", "-c", &script])
            .env("REAL_CLIENT_WAIT_FILE", &go)
            .env_remove("LD_LIBRARY_PATH")
            .spawn()
            .unwrap();
        clients.push((child, truth, go));
    }
    // Both copies are found in the processes' maps and attached, each once.
    wait_for("both libraries attached", Duration::from_secs(90), || {
        log.lock().unwrap().matches("attached a library the process had already mapped").count() >= 2
    });
    for (child, _, go) in &mut clients {
        std::fs::write(go, b"").unwrap();
        assert!(wait_with_deadline(child, Duration::from_secs(60)).success());
    }
    signal(&daemon.0, libc::SIGTERM);
    assert!(wait_with_deadline(&mut daemon.0, Duration::from_secs(90)).success());

    let trace = load_trace(&session_dir(&traces).unwrap());
    let runtime: Vec<_> = trace.lines.iter().filter(|l| l["type"] == "cuda_runtime").cloned().collect();
    let mut truth = Vec::new();
    for (_, dir, _) in &clients {
        truth.extend(load_truth(dir));
    }
    assert_eq!(truth.len(), 10);
    assert_matches_truth(&runtime, &truth, false);
    let same_path: Vec<_> = trace.metadata["libraries"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|l| l["path"] == lib.display().to_string())
        .map(|l| l["inode"].as_u64().unwrap())
        .collect();
    assert_eq!(same_path.len(), 2, "one attach per file: {:?}", trace.metadata["libraries"]);
    assert_ne!(same_path[0], same_path[1]);
}
