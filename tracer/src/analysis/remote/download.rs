//! Downloading one object into the private temp dir: streamed to a new
//! file (mode 0600, never an existing path), within a cap on the bytes of
//! one object and on the bytes of the whole report, and within a deadline
//! for its body (the SDK's timeouts end at the first byte: a store that
//! trickles a byte at a time would hold a report forever).

use std::{
    io::Write as _,
    os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _},
    path::Path,
    time::Duration,
};

use super::RemoteError;

/// The caps (`--max-object-bytes`, `--max-download-bytes`).
#[derive(Clone, Copy, Debug)]
pub struct Caps {
    pub object: u64,
    pub total: u64,
    /// Downloaded so far.
    pub used: u64,
}

/// The slowest transfer a body's deadline allows for (bytes per second):
/// far below any working store, far above a byte-at-a-time trickle.
const MIN_BODY_RATE: u64 = 256 << 10;

/// How long the body of an object of `size` bytes (as listed) may take:
/// the request timeout, plus the time its bytes take at [`MIN_BODY_RATE`].
pub fn body_deadline(request_timeout: Duration, size: u64) -> Duration {
    request_timeout + Duration::from_secs(size / MIN_BODY_RATE)
}

/// One object to fetch, with its listed size.
#[derive(Clone, Copy, Debug)]
pub struct Object<'a> {
    pub bucket: &'a str,
    pub key: &'a str,
    pub size: u64,
}

/// Streams `object` into `dest` (its parent dirs made 0700) within
/// `deadline` from the request; returns its bytes.
pub async fn download(
    client: &aws_sdk_s3::Client,
    object: Object<'_>,
    dest: &Path,
    caps: &mut Caps,
    deadline: Duration,
) -> Result<u64, RemoteError> {
    let late = || RemoteError::BodyDeadline {
        bucket: object.bucket.to_string(),
        key: object.key.to_string(),
        size: object.size,
        secs: deadline.as_secs(),
    };
    tokio::time::timeout(deadline, stream_into(client, object, dest, caps)).await.map_err(|_| late())?
}

async fn stream_into(
    client: &aws_sdk_s3::Client,
    Object { bucket, key, .. }: Object<'_>,
    dest: &Path,
    caps: &mut Caps,
) -> Result<u64, RemoteError> {
    let io = |source| RemoteError::Local { path: dest.to_path_buf(), source };
    if let Some(dir) = dest.parent() {
        std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir).map_err(io)?;
    }
    let mut got =
        client.get_object().bucket(bucket).key(key).send().await.map_err(|e| RemoteError::store(bucket, key, &e))?;
    let mut file = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(dest).map_err(io)?;
    let mut written = 0u64;
    while let Some(chunk) = got.body.next().await {
        let chunk = chunk.map_err(|e| RemoteError::Body {
            bucket: bucket.to_string(),
            key: key.to_string(),
            message: e.to_string(),
        })?;
        written += chunk.len() as u64;
        check(bucket, key, written, caps)?;
        file.write_all(&chunk).map_err(io)?;
    }
    caps.used += written;
    Ok(written)
}

/// Refuses an object past the caps, naming the flag that raises it.
pub fn check(bucket: &str, key: &str, bytes: u64, caps: &Caps) -> Result<(), RemoteError> {
    let object = || format!("s3://{bucket}/{key}");
    if bytes > caps.object {
        return Err(RemoteError::Cap { object: object(), flag: "--max-object-bytes", max: caps.object });
    }
    if caps.used.saturating_add(bytes) > caps.total {
        return Err(RemoteError::Cap { object: object(), flag: "--max-download-bytes", max: caps.total });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_body_may_take_the_request_timeout_plus_its_bytes_at_the_floor_rate() {
        assert_eq!(body_deadline(Duration::from_secs(30), 0), Duration::from_secs(30));
        assert_eq!(body_deadline(Duration::from_secs(30), 1 << 30), Duration::from_secs(30 + 4096));
    }

    #[test]
    fn the_caps_name_their_flags() {
        let caps = Caps { object: 100, total: 250, used: 200 };
        assert!(check("b", "k", 50, &caps).is_ok());
        let e = check("b", "k", 101, &caps).unwrap_err().to_string();
        assert!(e.contains("s3://b/k") && e.contains("raise --max-object-bytes"), "{e}");
        let e = check("b", "k", 51, &caps).unwrap_err().to_string();
        assert!(e.contains("raise --max-download-bytes") && e.contains("250 bytes"), "{e}");
    }
}
