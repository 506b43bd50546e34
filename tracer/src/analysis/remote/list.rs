//! Listing a prefix of the store, page by page, with a bound on the keys
//! one report lists (a store may answer with endless pages).

use super::RemoteError;

/// Keys listed per report, at most: a day of one-minute rotations of 256
/// pods is under 400 000 objects.
pub const MAX_LISTED: usize = 4_000_000;

/// One listed object.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Listed {
    pub key: String,
    /// The size the store states (negative or absent: 0).
    pub size: u64,
}

/// A listing: objects, and the common prefixes when `delimiter` was given.
#[derive(Debug, Default)]
pub struct Listing {
    pub objects: Vec<Listed>,
    pub prefixes: Vec<String>,
}

/// Every object under `prefix` (and with a delimiter its sub-prefixes);
/// `budget` is what is left of [`MAX_LISTED`].
pub async fn list(
    client: &aws_sdk_s3::Client,
    bucket: &str,
    prefix: &str,
    delimiter: Option<&str>,
    budget: &mut usize,
) -> Result<Listing, RemoteError> {
    let mut out = Listing::default();
    let mut token: Option<String> = None;
    loop {
        let page = client
            .list_objects_v2()
            .bucket(bucket)
            .prefix(prefix)
            .set_delimiter(delimiter.map(str::to_string))
            .set_continuation_token(token.take())
            .send()
            .await
            .map_err(|e| RemoteError::store(bucket, prefix, &e))?;
        for o in page.contents() {
            *budget = budget.checked_sub(1).ok_or(RemoteError::TooManyObjects { max: MAX_LISTED })?;
            let size = o.size().and_then(|s| u64::try_from(s).ok()).unwrap_or(0);
            out.objects.push(Listed { key: o.key().unwrap_or_default().to_string(), size });
        }
        out.prefixes.extend(page.common_prefixes().iter().filter_map(|p| p.prefix().map(str::to_string)));
        match page.next_continuation_token() {
            Some(next) if page.is_truncated() == Some(true) => token = Some(next.to_string()),
            _ => return Ok(out),
        }
    }
}
