//! `S3Uploader`: puts one closed trace file into S3 (or an S3-compatible
//! store) with a CRC32 checksum the store verifies, then confirms the stored
//! size before the caller may delete the local copy. The store is not
//! trusted to answer: every request has connect, read and attempt timeouts.

use std::{path::Path, time::Duration};

use aws_sdk_s3::{
    error::ProvideErrorMetadata,
    primitives::ByteStream,
    types::{ChecksumAlgorithm, CompletedMultipartUpload, CompletedPart},
};

/// Where traces go.
#[derive(Clone, Debug)]
pub struct S3Config {
    pub bucket: String,
    /// Key prefix, e.g. `k3s-vllm/` (the seed's default).
    pub prefix: String,
    /// For S3-compatible stores (MinIO, Ceph, R2, SeaweedFS).
    pub endpoint: Option<String>,
    /// Region; otherwise the standard chain (env, profile, IMDS).
    pub region: Option<String>,
    /// Path-style addressing (`endpoint/bucket/key`), needed by most
    /// S3-compatible stores.
    pub path_style: bool,
    /// The node or pod this tracer runs for: the second key component.
    pub source: String,
    /// The node and the pod (if any) of the Parquet lake's partitions.
    pub node: String,
    pub pod: Option<String>,
    /// Files larger than this go up in parts of this size.
    pub multipart_bytes: u64,
    /// The longest one request may wait for the store's answer, its body
    /// sent included (`--s3-timeout-secs`).
    pub timeout: Duration,
}

/// See [`S3Uploader::key`].
fn object_key(cfg: &S3Config, session: &str, file: &str) -> String {
    // A partition value may hold neither `/` nor `=`; no pod is Hive's null.
    let value = crate::format::names::partition_value;
    let pod = cfg.pod.as_deref().map_or_else(|| crate::format::names::HIVE_NULL.to_string(), value);
    match crate::format::names::parquet_lake_key(file, &value(session), &value(&cfg.node), &pod) {
        Some(lake) => format!("{}{lake}", cfg.prefix),
        None => format!("{}{}/{}/{}", cfg.prefix, cfg.source, session, file),
    }
}

/// Default part size and multipart threshold: 64 MiB.
pub const MULTIPART_BYTES: u64 = 64 << 20;

/// Why an upload failed, classified so logs and counters can say what to do.
#[derive(Debug, thiserror::Error)]
pub enum UploadError {
    #[error("reading {path}: {source}")]
    Read { path: String, source: std::io::Error },
    #[error("the store rejected the credentials for s3://{bucket}/{key} ({code}): check AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, the IRSA role or the instance profile")]
    Credentials { bucket: String, key: String, code: String },
    #[error("bucket {bucket} does not exist: create it or fix --s3-bucket / S3_BUCKET")]
    NoBucket { bucket: String },
    #[error("the store is unreachable for s3://{bucket}/{key}: {message} (check --s3-endpoint and the network)")]
    Unreachable { bucket: String, key: String, message: String },
    #[error("storing s3://{bucket}/{key} failed: {message}")]
    Store { bucket: String, key: String, message: String },
    #[error("s3://{bucket}/{key} holds {remote} bytes, the local file {local}: not confirmed")]
    Mismatch { bucket: String, key: String, local: u64, remote: i64 },
}

impl UploadError {
    /// A short label for counters and rate-limited logs.
    pub fn kind(&self) -> &'static str {
        match self {
            UploadError::Read { .. } => "read",
            UploadError::Credentials { .. } => "credentials",
            UploadError::NoBucket { .. } => "no_bucket",
            UploadError::Unreachable { .. } => "unreachable",
            UploadError::Store { .. } => "store",
            UploadError::Mismatch { .. } => "mismatch",
        }
    }
}

/// Uploads files under `<prefix><source>/<session>/<file>`.
#[derive(Clone)]
pub struct S3Uploader {
    client: aws_sdk_s3::Client,
    cfg: S3Config,
}

impl S3Uploader {
    /// Builds a client from the standard credential chain (env variables,
    /// web identity / IRSA, shared config files, instance profile).
    pub async fn new(cfg: S3Config) -> Self {
        let settings = crate::s3::ClientSettings {
            endpoint: cfg.endpoint.clone(),
            region: cfg.region.clone(),
            path_style: cfg.path_style,
            timeout: cfg.timeout,
        };
        Self { client: crate::s3::client(&settings).await, cfg }
    }

    /// The object key of `file` in `session`: a Parquet trace file goes
    /// into the lake's Hive-style partitions (docs/FLEET.md), the others
    /// under `<prefix><source>/<session>/`.
    pub fn key(&self, session: &str, file: &str) -> String {
        object_key(&self.cfg, session, file)
    }

    pub fn bucket(&self) -> &str {
        &self.cfg.bucket
    }

    /// Puts `path` at `key`; Ok only once the store has the whole file.
    /// Keys are idempotent: a repeat after a crash overwrites.
    pub async fn put(&self, path: &Path, key: &str) -> Result<u64, UploadError> {
        let bucket = &self.cfg.bucket;
        let read = |source| UploadError::Read { path: path.display().to_string(), source };
        // Opened once, without following a symlink, and checked to be a
        // regular file; everything uploaded is read through this descriptor.
        let mut file = crate::format::safe_fs::open_regular(path, false).map_err(|e| read(e.into_io()))?;
        let len = file.metadata().map_err(read)?.len();
        if len > self.cfg.multipart_bytes {
            self.put_multipart(tokio::fs::File::from_std(file), path, key, len).await?;
        } else {
            let mut bytes = Vec::with_capacity(len as usize);
            std::io::Read::read_to_end(&mut file, &mut bytes).map_err(read)?;
            let body = ByteStream::from(bytes);
            self.client
                .put_object()
                .bucket(bucket)
                .key(key)
                .body(body)
                .content_length(len as i64)
                .checksum_algorithm(ChecksumAlgorithm::Crc32)
                .send()
                .await
                .map_err(|e| self.classify(key, e))?;
        }
        let head = self.client.head_object().bucket(bucket).key(key).send().await.map_err(|e| self.classify(key, e))?;
        let remote = head.content_length().unwrap_or(-1);
        if remote != len as i64 {
            return Err(UploadError::Mismatch { bucket: bucket.clone(), key: key.to_string(), local: len, remote });
        }
        Ok(len)
    }

    /// Large files: CRC32-checked parts; an unfinished upload is aborted so
    /// the store keeps no orphaned parts.
    async fn put_multipart(&self, file: tokio::fs::File, path: &Path, key: &str, len: u64) -> Result<(), UploadError> {
        let bucket = &self.cfg.bucket;
        let created = self
            .client
            .create_multipart_upload()
            .bucket(bucket)
            .key(key)
            .checksum_algorithm(ChecksumAlgorithm::Crc32)
            .send()
            .await
            .map_err(|e| self.classify(key, e))?;
        let upload_id = created.upload_id().unwrap_or_default().to_string();
        let result = self.put_parts(file, path, key, len, &upload_id).await;
        if result.is_err() {
            let _ = self.client.abort_multipart_upload().bucket(bucket).key(key).upload_id(&upload_id).send().await;
        }
        result
    }

    async fn put_parts(
        &self,
        mut file: tokio::fs::File,
        path: &Path,
        key: &str,
        len: u64,
        upload_id: &str,
    ) -> Result<(), UploadError> {
        use tokio::io::{AsyncReadExt, AsyncSeekExt};
        let bucket = &self.cfg.bucket;
        let read = |source| UploadError::Read { path: path.display().to_string(), source };
        let part_size = self.cfg.multipart_bytes.max(5 << 20);
        let mut parts = Vec::new();
        let mut offset = 0u64;
        while offset < len {
            let size = part_size.min(len - offset);
            let mut chunk = vec![0u8; size as usize];
            file.seek(std::io::SeekFrom::Start(offset)).await.map_err(read)?;
            file.read_exact(&mut chunk).await.map_err(read)?;
            let number = parts.len() as i32 + 1;
            let done = self
                .client
                .upload_part()
                .bucket(bucket)
                .key(key)
                .upload_id(upload_id)
                .part_number(number)
                .body(ByteStream::from(chunk))
                .checksum_algorithm(ChecksumAlgorithm::Crc32)
                .send()
                .await
                .map_err(|e| self.classify(key, e))?;
            parts.push(
                CompletedPart::builder()
                    .part_number(number)
                    .set_e_tag(done.e_tag().map(str::to_string))
                    .set_checksum_crc32(done.checksum_crc32().map(str::to_string))
                    .build(),
            );
            offset += size;
        }
        self.client
            .complete_multipart_upload()
            .bucket(bucket)
            .key(key)
            .upload_id(upload_id)
            .multipart_upload(CompletedMultipartUpload::builder().set_parts(Some(parts)).build())
            .send()
            .await
            .map_err(|e| self.classify(key, e))?;
        Ok(())
    }

    /// Puts a small object under this tracer's key prefix and deletes it
    /// again: proves the bucket is reachable and writable with the
    /// configured credentials (`cuda-tracer check --s3`). Returns its key.
    pub async fn probe(&self) -> Result<String, UploadError> {
        let bucket = &self.cfg.bucket;
        let key =
            format!("{}{}/{}", self.cfg.prefix, self.cfg.source, crate::format::names::s3_probe(std::process::id()));
        // Some stores (SeaweedFS) create a missing bucket on the first put:
        // a check must find it missing instead. A HEAD answer has no body,
        // so its status says it; a refused HEAD proves nothing (a writer
        // may lack s3:ListBucket): the put decides.
        if let Err(e) = self.client.head_bucket().bucket(bucket).send().await {
            match e.raw_response().map(|r| r.status().as_u16()) {
                Some(404) => return Err(UploadError::NoBucket { bucket: bucket.clone() }),
                Some(_) => {}
                None => return Err(self.classify(&key, e)),
            }
        }
        let body = ByteStream::from_static(b"written by `cuda-tracer check --s3`; safe to delete\n");
        self.client
            .put_object()
            .bucket(bucket)
            .key(&key)
            .body(body)
            .send()
            .await
            .map_err(|e| self.classify(&key, e))?;
        self.client.delete_object().bucket(bucket).key(&key).send().await.map_err(|e| self.classify(&key, e))?;
        Ok(key)
    }

    fn classify<E, R>(&self, key: &str, err: aws_sdk_s3::error::SdkError<E, R>) -> UploadError
    where
        E: ProvideErrorMetadata + std::error::Error + 'static,
        R: std::fmt::Debug,
    {
        let (bucket, key) = (self.cfg.bucket.clone(), key.to_string());
        match crate::s3::classify(&err) {
            crate::s3::Failure::Unreachable(message) => UploadError::Unreachable { bucket, key, message },
            crate::s3::Failure::Credentials(code) => UploadError::Credentials { bucket, key, code },
            crate::s3::Failure::NoBucket => UploadError::NoBucket { bucket },
            crate::s3::Failure::Other(message) => UploadError::Store { bucket, key, message },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::names::{parquet_trace_file, trace_file};

    #[test]
    fn parquet_files_go_into_the_lake_and_the_rest_where_they_were() {
        let mut cfg = S3Config {
            bucket: "b".into(),
            prefix: "k3s-vllm/".into(),
            endpoint: None,
            region: None,
            path_style: false,
            source: "pod-a".into(),
            node: "node/1".into(),
            pod: Some("pod-a".into()),
            multipart_bytes: MULTIPART_BYTES,
            timeout: Duration::from_secs(1),
        };
        assert_eq!(
            object_key(&cfg, "s1", &trace_file(3, "20260102T030405Z")),
            "k3s-vllm/pod-a/s1/trace_00003_20260102T030405Z.jsonl"
        );
        assert_eq!(
            object_key(&cfg, "s1", &parquet_trace_file(3, "20260102T030405Z")),
            "k3s-vllm/parquet/date=2026-01-02/hour=03/node=node_1/pod=pod-a/s1-00003.parquet"
        );
        cfg.pod = None;
        assert!(object_key(&cfg, "s1", &parquet_trace_file(3, "20260102T030405Z"))
            .contains("/pod=__HIVE_DEFAULT_PARTITION__/"));
        assert_eq!(object_key(&cfg, "s1", "metadata.json"), "k3s-vllm/pod-a/s1/metadata.json");
    }
}
