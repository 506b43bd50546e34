//! For the webhook tests: certificates from k8s/webhook/gen-certs.sh, a
//! `cuda-tracer webhook` on 127.0.0.1, and a small HTTPS client that checks
//! the server's certificate against the generated CA (IP SAN 127.0.0.1).

use std::{
    io::Read,
    path::{Path, PathBuf},
    process::Command,
    sync::{Arc, Mutex},
    time::Duration,
};

use cuda_tracer_tests::{spawn_with_log, tracer, wait_for, KillOnDrop};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_rustls::rustls::{self, pki_types::ServerName, RootCertStore};

/// Runs gen-certs.sh into `dir` with an IP SAN for 127.0.0.1.
pub fn gen_certs(dir: &Path, extra: &[&str]) {
    let script = cuda_tracer_tests::root().join("k8s/webhook/gen-certs.sh");
    let out = Command::new("bash")
        .arg(script)
        .arg("--out")
        .arg(dir)
        .args(["--ip", "127.0.0.1"])
        .args(extra)
        .output()
        .expect("run gen-certs.sh");
    assert!(out.status.success(), "gen-certs.sh failed: {}", String::from_utf8_lossy(&out.stderr));
}

/// A running webhook, killed when dropped.
pub struct Webhook {
    pub child: KillOnDrop,
    pub log: Arc<Mutex<String>>,
    pub port: u16,
    pub certs: PathBuf,
    _dir: tempfile::TempDir,
}

impl Webhook {
    /// Generates certificates and starts `cuda-tracer webhook --addr 127.0.0.1:0 <extra>`.
    pub fn start(extra: &[&str]) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let certs = dir.path().join("certs");
        gen_certs(&certs, &[]);
        let mut cmd = Command::new(tracer());
        cmd.arg("webhook")
            .args(["--addr", "127.0.0.1:0", "--tls-cert"])
            .arg(certs.join("tls.crt"))
            .arg("--tls-key")
            .arg(certs.join("tls.key"))
            .args(extra)
            .env("RUST_LOG", "info");
        for var in [
            "TARGET_NAMESPACE",
            "TARGET_LABEL_KEY",
            "TARGET_LABEL_VALUE",
            "TRACER_IMAGE",
            "S3_BUCKET",
            "SIDECAR_ENV",
            "SIDECAR_SECRET_ENV",
            "CLIENT_TIMEOUT_SECS",
            "MAX_CONCURRENT_REVIEWS",
        ] {
            cmd.env_remove(var);
        }
        let (child, log) = spawn_with_log(cmd);
        let mut port = 0;
        wait_for("the webhook to listen", Duration::from_secs(60), || {
            let text = log.lock().expect("log lock").clone();
            port = text
                .split("serving https://127.0.0.1:")
                .nth(1)
                .and_then(|rest| rest.split('/').next())
                .and_then(|p| p.parse().ok())
                .unwrap_or(0);
            port != 0
        });
        Self { child, log, port, certs, _dir: dir }
    }

    /// `method path` with `body` over HTTPS, trusting only `ca`: (status, body).
    pub fn request_with_ca(&self, ca: &Path, method: &str, path: &str, body: &[u8]) -> Result<(u16, String), String> {
        https(self.port, ca, method, path, body)
    }

    /// `method path` trusting the generated CA; panics on transport errors.
    pub fn request(&self, method: &str, path: &str, body: &[u8]) -> (u16, String) {
        self.request_with_ca(&self.certs.join("ca.crt"), method, path, body)
            .unwrap_or_else(|e| panic!("{method} {path}: {e}\nwebhook log:\n{}", self.log()))
    }

    pub fn log(&self) -> String {
        self.log.lock().expect("log lock").clone()
    }

    /// The log once a line holds every one of `parts`. The webhook writes
    /// before it answers, but the thread that collects its stderr may lag.
    pub fn log_line(&self, parts: &[&str]) -> String {
        let start = std::time::Instant::now();
        loop {
            let log = self.log();
            if let Some(line) = log.lines().find(|l| parts.iter().all(|p| l.contains(p))) {
                return line.to_string();
            }
            assert!(start.elapsed() < Duration::from_secs(30), "no log line with {parts:?} in:\n{log}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

fn https(port: u16, ca: &Path, method: &str, path: &str, body: &[u8]) -> Result<(u16, String), String> {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(|e| e.to_string())?;
    runtime.block_on(async {
        tokio::time::timeout(Duration::from_secs(30), https_async(port, ca, method, path, body))
            .await
            .map_err(|_| "no answer within 30 s".to_string())?
    })
}

/// A TLS connection to the webhook on 127.0.0.1:`port`, trusting only `ca`.
pub async fn tls_connect(
    port: u16,
    ca: &Path,
) -> Result<tokio_rustls::client::TlsStream<tokio::net::TcpStream>, String> {
    let mut pem = Vec::new();
    std::fs::File::open(ca).and_then(|mut f| f.read_to_end(&mut pem)).map_err(|e| e.to_string())?;
    let mut roots = RootCertStore::empty();
    for cert in rustls_pemfile::certs(&mut &pem[..]) {
        roots.add(cert.map_err(|e| e.to_string())?).map_err(|e| e.to_string())?;
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.map_err(|e| e.to_string())?;
    let name = ServerName::try_from("127.0.0.1").map_err(|e| e.to_string())?;
    tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await
        .map_err(|e| format!("TLS handshake: {e}"))
}

async fn https_async(port: u16, ca: &Path, method: &str, path: &str, body: &[u8]) -> Result<(u16, String), String> {
    let mut tls = tls_connect(port, ca).await?;
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    tls.write_all(head.as_bytes()).await.map_err(|e| e.to_string())?;
    tls.write_all(body).await.map_err(|e| e.to_string())?;
    tls.flush().await.map_err(|e| e.to_string())?;
    let mut response = Vec::new();
    if let Err(e) = tls.read_to_end(&mut response).await {
        // A peer that closes without close_notify still sent a whole answer.
        if e.kind() != std::io::ErrorKind::UnexpectedEof || response.is_empty() {
            return Err(format!("reading the answer: {e}"));
        }
    }
    let text = String::from_utf8_lossy(&response).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").ok_or_else(|| format!("not an HTTP answer: {text:?}"))?;
    let status = head.split_whitespace().nth(1).and_then(|s| s.parse().ok()).ok_or("no status line")?;
    Ok((status, body.to_string()))
}
