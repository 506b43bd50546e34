//! Downloading one object into the private temp dir: streamed to a new
//! file (mode 0600, never an existing path), within a cap on the bytes of
//! one object and on the bytes of the whole report.

use std::{
    io::Write as _,
    os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _},
    path::Path,
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

/// Streams `key` into `dest` (its parent dirs made 0700); returns its bytes.
pub async fn download(
    client: &aws_sdk_s3::Client,
    bucket: &str,
    key: &str,
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
    fn the_caps_name_their_flags() {
        let caps = Caps { object: 100, total: 250, used: 200 };
        assert!(check("b", "k", 50, &caps).is_ok());
        let e = check("b", "k", 101, &caps).unwrap_err().to_string();
        assert!(e.contains("s3://b/k") && e.contains("raise --max-object-bytes"), "{e}");
        let e = check("b", "k", 51, &caps).unwrap_err().to_string();
        assert!(e.contains("raise --max-download-bytes") && e.contains("250 bytes"), "{e}");
    }
}
