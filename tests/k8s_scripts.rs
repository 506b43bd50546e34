//! The sidecar image and the deploy scripts: the Dockerfile builds with the
//! commands CI runs and copies files that exist; the shell scripts pass
//! shellcheck and `bash -n`; deploy.sh fails with a clear message without a
//! cluster and renders its settings into valid manifests.

use std::{
    path::{Path, PathBuf},
    process::{Command, Output},
};

use k8s_openapi::api::{apps::v1::Deployment, core::v1::ConfigMap};

use crate::k8s_support::*;

const DOCKERFILE: &str = "docker/ebpf-sidecar/Dockerfile";

/// Dockerfile instructions as (KEYWORD, arguments), continuation lines joined.
fn instructions(text: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut current = String::new();
    for line in text.lines() {
        let trimmed = line.trim();
        if current.is_empty() && (trimmed.is_empty() || trimmed.starts_with('#')) {
            continue;
        }
        if trimmed.starts_with('#') {
            continue; // a comment inside a continued instruction
        }
        if let Some(body) = trimmed.strip_suffix('\\') {
            current.push_str(body);
            current.push(' ');
            continue;
        }
        current.push_str(trimmed);
        let (keyword, args) = current.split_once(char::is_whitespace).unwrap_or((&current, ""));
        out.push((keyword.to_uppercase(), args.trim().to_string()));
        current.clear();
    }
    out
}

/// Words of `cmd` with `&&`-chains split into separate commands, without
/// the RUN instruction's own flags (`--mount=...`).
fn commands(run: &str) -> Vec<Vec<String>> {
    let words: Vec<&str> = run.split_whitespace().collect();
    let flags = words.iter().take_while(|w| w.starts_with("--")).count();
    let command = words[flags..].join(" ");
    command.split("&&").map(|c| c.split_whitespace().map(str::to_string).collect()).collect()
}

/// The FROM arguments with `${NAME}` replaced by the ARG defaults before them.
fn resolved_froms(steps: &[(String, String)]) -> Vec<String> {
    let mut defaults = std::collections::HashMap::new();
    let mut froms = Vec::new();
    for (keyword, args) in steps {
        match keyword.as_str() {
            "ARG" => {
                if let Some((name, value)) = args.split_once('=') {
                    defaults.insert(format!("${{{name}}}"), value.to_string());
                }
            }
            "FROM" => froms.push(defaults.iter().fold(args.clone(), |from, (var, value)| from.replace(var, value))),
            _ => {}
        }
    }
    froms
}

#[test]
fn dockerfile_builds_with_the_commands_ci_runs() {
    let text = std::fs::read_to_string(root().join(DOCKERFILE)).unwrap();
    let steps = instructions(&text);
    let runs: Vec<Vec<String>> =
        steps.iter().filter(|(k, _)| k == "RUN").flat_map(|(_, args)| commands(args)).collect();
    let has = |words: &[&str]| runs.iter().any(|c| c == words);

    // CI (.ci/run) runs `cargo xtask test`, which runs setup first.
    let ci = std::fs::read_to_string(root().join(".ci/run")).unwrap();
    assert!(ci.lines().any(|l| l.trim() == "cargo xtask test"), ".ci/run no longer runs `cargo xtask test`");
    let xtask = std::fs::read_to_string(root().join("xtask/src/main.rs")).unwrap();
    let test_fn = xtask.split("fn test(").nth(1).expect("xtask's test task");
    assert!(test_fn.contains("setup::run()"), "xtask test no longer starts with setup");
    // The image installs the BPF build chain with the setup code CI runs
    // (`setup` → `build_chain` → `tracer_chain`), and nothing else of setup
    // (fixtures, test packages, kube binaries).
    let setup = std::fs::read_to_string(root().join("xtask/src/setup.rs")).unwrap();
    let body = |name: &str| setup.split(&format!("fn {name}(")).nth(1).and_then(|b| b.split("\n}\n").next()).unwrap();
    assert!(body("run").contains("build_chain()?") && body("build_chain").contains("tracer_chain()?"));
    assert!(xtask.contains("Task::Setup { tracer_only: true } => setup::tracer_chain()"), "--tracer-only");
    assert!(
        has(&["cargo", "xtask", "setup", "--tracer-only"]),
        "the image must install the build chain like CI: {runs:?}"
    );
    assert!(!has(&["cargo", "xtask", "setup"]), "the image runs the whole test setup: {runs:?}");

    // CI's build of the binary (`cargo build -p cuda-tracer`), in release, from the lock file.
    assert!(test_fn.contains(r#".args(["build", "-p", "cuda-tracer"])"#), "CI's build command changed");
    assert!(
        has(&["cargo", "build", "--release", "-p", "cuda-tracer", "--locked"]),
        "the image's build differs from CI's: {runs:?}"
    );

    // Stages: a Rust toolchain on the same Debian release as the runtime
    // (glibc); by default public images, other bases by build argument.
    let froms = resolved_froms(&steps);
    let raw_froms: Vec<&String> = steps.iter().filter(|(k, _)| k == "FROM").map(|(_, a)| a).collect();
    assert!(
        raw_froms[0].starts_with("${BUILDER_IMAGE}") && raw_froms[1].starts_with("${RUNTIME_IMAGE}"),
        "{raw_froms:?}"
    );
    assert_eq!(froms.len(), 2, "toolchain and runtime stages: {froms:?}");
    let release =
        |from: &str| from.split([':', '-', ' ']).find(|w| ["bookworm", "trixie"].contains(w)).map(str::to_string);
    assert!(froms[0].starts_with("rust:"), "{}", froms[0]);
    assert_eq!(release(&froms[0]), release(&froms[1]), "build and runtime on one Debian release");
    assert!(release(&froms[0]).is_some(), "{froms:?}");
    let stage = froms[0].split_whitespace().last().unwrap();

    // Every COPY source exists (in the context, or as a stage name).
    for (_, args) in steps.iter().filter(|(k, _)| k == "COPY") {
        let words: Vec<&str> = args.split_whitespace().collect();
        let (flags, paths): (Vec<&str>, Vec<&str>) = words.iter().partition(|w| w.starts_with("--"));
        match flags.iter().find_map(|f| f.strip_prefix("--from=")) {
            Some(from) => assert_eq!(from, stage, "COPY --from names the build stage"),
            None => {
                for src in &paths[..paths.len() - 1] {
                    assert!(root().join(src).exists(), "COPY source {src} does not exist");
                }
            }
        }
    }
    let entry = steps.iter().find(|(k, _)| k == "ENTRYPOINT").map(|(_, a)| a.as_str());
    assert_eq!(entry, Some(r#"["cuda-tracer", "run"]"#));
    let tracer_pkg = std::fs::read_to_string(root().join("tracer/Cargo.toml")).unwrap();
    assert!(tracer_pkg.contains("name = \"cuda-tracer\""), "the binary is cuda-tracer");
    assert!(text.contains("ca-certificates"), "S3 over HTTPS needs CA certificates");
    // The seed's troubleshooting runs `ps aux` and a shell in the sidecar.
    let runtime_install = runs.iter().filter(|c| c.first().is_some_and(|w| w == "apt-get")).flatten();
    assert!(runtime_install.clone().any(|w| w == "procps"), "the image lacks `ps` (procps): {runs:?}");
    assert!(froms[1].contains("debian"), "the runtime image has a shell: {}", froms[1]);

    let ignore = std::fs::read_to_string(root().join(".dockerignore")).unwrap();
    for pattern in [".git", "target/"] {
        assert!(ignore.lines().any(|l| l.trim() == pattern), ".dockerignore lacks {pattern}");
    }
}

/// Every shell script in the repository (git's list: `*.sh` and shell
/// `#!` files, fixtures and CI included) parses, sets `-euo pipefail` and
/// passes shellcheck at its strictest severity.
#[test]
fn shell_scripts_pass_shellcheck_and_bash_n() {
    let scripts = cuda_tracer_tests::scripts::shell_scripts();
    assert!(scripts.iter().any(|p| p.ends_with("infrastructure/k3s-install.sh")), "{scripts:?}");
    for expected in ["deploy.sh", "fixtures/build.sh", ".ci/run", "k8s/webhook/install.sh"] {
        assert!(scripts.iter().any(|p| p.ends_with(expected)), "{expected} is not found: {scripts:?}");
    }
    for script in &scripts {
        run_ok(Command::new("bash").arg("-n").arg(script));
        let text = std::fs::read_to_string(script).unwrap();
        assert!(text.contains("set -euo pipefail"), "{} lacks `set -euo pipefail`", script.display());
    }
    run_ok(cuda_tracer_tests::scripts::shellcheck().arg("--severity=style").args(&scripts));
}

fn deploy(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new("bash");
    cmd.arg(root().join("deploy.sh")).args(args).env("PATH", tool_path()).env_remove("KUBECONFIG");
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().expect("bash")
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn deploy_sh_names_unknown_commands_and_prints_usage() {
    let out = deploy(&["frobnicate"], &[]);
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert!(err.contains("unknown command 'frobnicate'") && err.contains("Usage: ./deploy.sh"), "{err}");
    for verb in ["all", "build", "deploy", "test", "verify", "status", "logs", "destroy", "webhook", "teardown"] {
        assert!(err.contains(&format!("\n  {verb} ")), "usage lacks {verb}: {err}");
    }
    assert_eq!(deploy(&[], &[]).status.code(), Some(2));
    let help = deploy(&["help"], &[]);
    assert!(help.status.success() && String::from_utf8_lossy(&help.stdout).contains("S3_BUCKET"));
}

/// A kubeconfig whose API server is a closed port on this machine.
fn unreachable_kubeconfig(dir: &Path) -> PathBuf {
    let port = cuda_tracer_tests::free_port();
    let path = dir.join("kubeconfig");
    let config = format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster: {{server: 'https://127.0.0.1:{port}'}}\n\
         users:\n- name: u\n  user: {{token: t}}\ncontexts:\n- name: x\n  context: {{cluster: c, user: u}}\ncurrent-context: x\n"
    );
    std::fs::write(&path, config).unwrap();
    path
}

#[test]
fn deploy_sh_without_a_cluster_fails_with_the_fix() {
    let out = deploy(&["deploy"], &[("KUBECONFIG", "/nonexistent")]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(err.contains("KUBECONFIG=/nonexistent does not exist") && err.contains("fix:"), "{err}");

    let scratch = tempfile::tempdir().unwrap();
    let kubeconfig = unreachable_kubeconfig(scratch.path());
    for verb in ["deploy", "verify", "status", "logs", "destroy"] {
        let out = deploy(&[verb], &[("KUBECONFIG", kubeconfig.to_str().unwrap())]);
        assert_eq!(out.status.code(), Some(1), "{verb}");
        let err = stderr(&out);
        assert!(err.contains("cannot reach the Kubernetes API") && err.contains("k3s.yaml"), "{verb}: {err}");
        assert!(out.stdout.is_empty() || !String::from_utf8_lossy(&out.stdout).contains("applying"), "{verb}");
    }
    let out = deploy(&["status"], &[("KUBECTL", "no-such-kubectl")]);
    let err = stderr(&out);
    assert!(out.status.code() == Some(1) && err.contains("`no-such-kubectl` is missing"), "{err}");
    let out = deploy(&["build"], &[("CONTAINER_RUNTIME", "no-such-docker")]);
    assert!(stderr(&out).contains("`no-such-docker` is missing"), "{}", stderr(&out));
}

/// A `buildah` that records its argv (one line a call) and succeeds.
const FAKE_BUILDAH: &str = "#!/usr/bin/env bash\nprintf '%s\\n' \"$*\" >>\"$FAKE_LOG/buildah\"\n";

/// `deploy.sh build` with buildah: the base images, jobs and CA bundle from
/// the environment reach the build, RUN steps use the host's network (no
/// bridge or iptables rules), and a missing containerd socket or an unknown
/// CLUSTER_RUNTIME stops it before the long build.
#[test]
fn deploy_sh_build_with_buildah_passes_its_settings_and_checks_the_target_first() {
    let scratch = tempfile::tempdir().unwrap();
    let bin = scratch.path().join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    std::fs::write(bin.join("buildah"), FAKE_BUILDAH).unwrap();
    std::fs::set_permissions(bin.join("buildah"), std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let mut path = std::ffi::OsString::from(bin.as_os_str());
    path.push(":");
    path.push(tool_path());
    let log = scratch.path().join("buildah");
    let build = |env: &[(&str, &str)]| {
        let mut cmd = Command::new("bash");
        cmd.arg(root().join("deploy.sh")).arg("build").env("PATH", &path).env("FAKE_LOG", scratch.path());
        cmd.env("CONTAINER_RUNTIME", "buildah").envs(env.iter().copied()).output().unwrap()
    };
    let ca = scratch.path().join("ca.pem");
    std::fs::write(&ca, "").unwrap();
    let out = build(&[
        ("CLUSTER_RUNTIME", "none"),
        ("BUILDER_IMAGE", "localhost/builder:x"),
        ("RUNTIME_IMAGE", "localhost/runtime:x"),
        ("CARGO_BUILD_JOBS", "1"),
        ("BUILD_CA_CERTS", ca.to_str().unwrap()),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let argv = std::fs::read_to_string(&log).unwrap();
    let bud = argv.lines().find(|l| l.starts_with("bud ")).unwrap_or_else(|| panic!("no buildah bud: {argv}"));
    for expected in [
        "--network=host",
        "--build-arg BUILDER_IMAGE=localhost/builder:x",
        "--build-arg RUNTIME_IMAGE=localhost/runtime:x",
        "--build-arg CARGO_BUILD_JOBS=1",
        &format!("-v {}:/etc/ssl/certs/ca-certificates.crt:ro", ca.display()),
        "-t cuda-tracer:latest",
    ] {
        assert!(bud.contains(expected), "buildah bud lacks {expected}: {bud}");
    }
    assert!(!argv.contains("push"), "CLUSTER_RUNTIME=none exports nothing: {argv}");

    std::fs::remove_file(&log).unwrap();
    let out = build(&[("CLUSTER_RUNTIME", "containerd"), ("CONTAINERD_ADDRESS", "/nonexistent.sock")]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("no containerd socket at CONTAINERD_ADDRESS=/nonexistent.sock"), "{}", stderr(&out));
    let out = build(&[("CLUSTER_RUNTIME", "kind")]);
    assert!(out.status.code() == Some(1) && stderr(&out).contains("CLUSTER_RUNTIME=kind"), "{}", stderr(&out));
    assert!(!log.exists(), "buildah ran before the import target was checked");
}

#[test]
fn deploy_sh_delegates_the_webhook_verbs() {
    for (verb, script) in [("webhook", "install.sh"), ("teardown", "uninstall.sh")] {
        if root().join("k8s/webhook").join(script).exists() {
            continue; // the webhook's own tests cover its scripts
        }
        let out = deploy(&[verb], &[]);
        assert_eq!(out.status.code(), Some(1));
        assert!(stderr(&out).contains(&format!("k8s/webhook/{script} is missing")), "{}", stderr(&out));
    }
}

#[test]
fn deploy_sh_renders_its_settings_into_valid_manifests() {
    let env = [
        ("S3_BUCKET", "traces \"bucket\""),
        ("S3_PREFIX", "exp-1/"),
        ("S3_ENDPOINT", "http://minio:9000"),
        ("MODEL", "facebook/opt-125m"),
        ("IMAGE", "registry.example:5000/team/cuda-tracer:v1.2"),
        ("VLLM_IMAGE", "vllm/vllm-openai:v0.12.0"),
    ];
    let out = deploy(&["render"], &env);
    assert!(out.status.success(), "{}", stderr(&out));
    let rendered = String::from_utf8(out.stdout).unwrap();
    let docs = parse_docs("deploy.sh render", &rendered);
    for d in &docs {
        check_typed(d).unwrap_or_else(|e| panic!("{}/{}: {e}", d.kind, d.name));
    }
    let scratch = tempfile::tempdir().unwrap();
    let file = scratch.path().join("rendered.yaml");
    std::fs::write(&file, &rendered).unwrap();
    schema_validate(&[file]).unwrap();

    let config = |name: &str| -> std::collections::BTreeMap<String, String> {
        let d = docs.iter().find(|d| d.kind == "ConfigMap" && d.name == name).unwrap();
        d.typed::<ConfigMap>().data.unwrap()
    };
    let tracer = config("tracer-config");
    assert_eq!(tracer["S3_BUCKET"], "traces \"bucket\"");
    assert_eq!(tracer["S3_PREFIX"], "exp-1/");
    assert_eq!(tracer["S3_ENDPOINT"], "http://minio:9000");
    assert_eq!(tracer["UPLOAD_ENABLED"], "true");
    assert_eq!(tracer["PROFILE_STEPS"], "100..150", "the seed webhook's window by default");
    assert_eq!(config("vllm-config")["MODEL"], "facebook/opt-125m");
    let deployment: Deployment = docs.iter().find(|d| d.kind == "Deployment").unwrap().typed();
    let spec = deployment.spec.template.spec.unwrap();
    assert_eq!(container(&spec, "ebpf-tracer").image.as_deref(), Some("registry.example:5000/team/cuda-tracer:v1.2"));
    assert_eq!(container(&spec, "vllm").image.as_deref(), Some("vllm/vllm-openai:v0.12.0"));

    // Without a bucket, traces stay local and no empty endpoint is set.
    let out = deploy(&["render"], &[]);
    let docs = parse_docs("deploy.sh render", &String::from_utf8(out.stdout).unwrap());
    let d = docs.iter().find(|d| d.kind == "ConfigMap" && d.name == "tracer-config").unwrap();
    let data = d.typed::<ConfigMap>().data.unwrap();
    assert_eq!(data["UPLOAD_ENABLED"], "false");
    let out = deploy(&["render"], &[("PROFILE_STEPS", "")]);
    let docs = parse_docs("deploy.sh render", &String::from_utf8(out.stdout).unwrap());
    let d = docs.iter().find(|d| d.kind == "ConfigMap" && d.name == "tracer-config").unwrap();
    assert_eq!(d.typed::<ConfigMap>().data.unwrap()["PROFILE_STEPS"], "", "an empty window stays empty: off");
    assert!(!data.contains_key("S3_ENDPOINT"));
}

/// A `kubectl` that records its argv (one line a call) and everything it
/// reads from stdin or from `--from-file`/`--from-env-file` paths, and
/// succeeds; `create ... -o yaml` prints the files it read.
const FAKE_KUBECTL: &str = r#"#!/usr/bin/env bash
printf '%s\n' "$*" >>"$FAKE_LOG/argv"
for arg in "$@"; do
    case "$arg" in
    --from-file=*) cat "${arg#*=*=}" ;;
    --from-env-file=*) cat "${arg#*=}" ;;
    esac
done
if [[ " $* " == *" -f - "* ]]; then cat >>"$FAKE_LOG/stdin"; fi
exit 0
"#;

#[test]
fn deploy_sh_passes_secrets_through_pipes_never_on_a_command_line() {
    let scratch = tempfile::tempdir().unwrap();
    let (bin, log) = (scratch.path().join("bin"), scratch.path().join("log"));
    std::fs::create_dir_all(&bin).unwrap();
    std::fs::create_dir_all(&log).unwrap();
    let kubectl = bin.join("kubectl");
    std::fs::write(&kubectl, FAKE_KUBECTL).unwrap();
    std::fs::set_permissions(&kubectl, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let kubeconfig = scratch.path().join("kubeconfig");
    std::fs::write(&kubeconfig, "").unwrap();
    let secrets = [
        ("AWS_ACCESS_KEY_ID", "AKIAFAKEFAKEFAKE1234"),
        ("AWS_SECRET_ACCESS_KEY", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"),
        ("AWS_SESSION_TOKEN", "FwoGZXIvYXdzEFAKESESSIONTOKEN"),
        ("HF_TOKEN", "hf_FAKEFAKEFAKEFAKEFAKEFAKEFAKEFAKE"),
    ];
    let mut env: Vec<(&str, &str)> = secrets.to_vec();
    let (kubectl_path, kubeconfig_path, log_path) =
        (kubectl.to_str().unwrap(), kubeconfig.to_str().unwrap(), log.to_str().unwrap());
    env.extend([("KUBECTL", kubectl_path), ("KUBECONFIG", kubeconfig_path), ("FAKE_LOG", log_path)]);
    let out = deploy(&["deploy"], &env);
    assert!(out.status.success(), "deploy with a fake kubectl: {}", stderr(&out));

    let argv = std::fs::read_to_string(log.join("argv")).unwrap();
    let stdin = std::fs::read_to_string(log.join("stdin")).unwrap();
    assert!(argv.contains("create secret generic aws-credentials"), "{argv}");
    assert!(argv.contains("create secret generic hf-token"), "{argv}");
    for (name, value) in secrets {
        assert!(!argv.contains(value), "{name} is on a kubectl command line:\n{argv}");
        // It still reached kubectl, through a pipe, and the Secret went on stdin.
        assert!(stdin.contains(value), "{name} never reached kubectl apply:\n{stdin}");
    }
    // deploy.sh itself runs no other process with a secret in its argv.
    let text = std::fs::read_to_string(root().join("deploy.sh")).unwrap();
    assert!(!text.contains("--from-literal"), "deploy.sh puts a value on a command line");
}

#[test]
fn k3s_install_pins_what_it_runs_and_keeps_the_kubeconfig_private() {
    let script = root().join("infrastructure/k3s-install.sh");
    let text = std::fs::read_to_string(&script).unwrap();
    // Nothing downloaded is piped into a shell.
    let joined = text.replace("\\\n", " ");
    for line in joined.lines().filter(|l| !l.trim_start().starts_with('#')) {
        let piped_to_shell =
            line.contains("curl") && ["| sh", "|sh", "| bash", "|bash"].iter().any(|p| line.contains(p));
        assert!(!piped_to_shell, "curl piped into a shell: {line}");
    }
    assert!(!text.contains("0644"), "a world-readable kubeconfig mode is left");
    assert!(text.contains("KUBECONFIG_MODE=0600") && text.contains("--write-kubeconfig-mode \"$KUBECONFIG_MODE\""));
    assert!(text.contains("chmod \"$KUBECONFIG_MODE\" \"$KUBECONFIG_PATH\""), "an existing kubeconfig is not fixed");
    let version = text.lines().find_map(|l| l.strip_prefix("K3S_VERSION=\"${K3S_VERSION:-")).unwrap_or_default();
    assert!(version.starts_with("v1.") && version.contains("+k3s"), "K3s version not pinned: {version}");
    let verified = text.find("verify_sha256 \"$installer\"").expect("installer checked");
    let run = text.find("sh \"$installer\" server").expect("installer run");
    assert!(verified < run, "the installer runs before its checksum is checked");

    // verify_sha256 itself: right hash passes, a wrong or missing pin stops.
    let scratch = tempfile::tempdir().unwrap();
    let file = scratch.path().join("installer");
    std::fs::write(&file, "echo hi\n").unwrap();
    let wrong_pin = "0".repeat(64);
    let actual = {
        let out = Command::new("sha256sum").arg(&file).output().unwrap();
        String::from_utf8(out.stdout).unwrap().split_whitespace().next().unwrap().to_string()
    };
    let check = |expected: &str| {
        Command::new("bash")
            .arg("-c")
            .arg(format!("source '{}' && verify_sha256 '{}' '{expected}' installer", script.display(), file.display()))
            .output()
            .unwrap()
    };
    let right = check(&actual);
    assert!(right.status.success(), "{}", stderr(&right));
    let wrong = check(&wrong_pin);
    assert!(!wrong.status.success() && stderr(&wrong).contains("refusing to run it"), "{}", stderr(&wrong));
    let unpinned = check("");
    assert!(!unpinned.status.success(), "an unpinned installer ran");
    assert!(stderr(&unpinned).contains(&format!("K3S_INSTALLER_SHA256={actual}")), "{}", stderr(&unpinned));
}
