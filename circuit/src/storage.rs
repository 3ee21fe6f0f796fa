//! Where a miner's artifacts live: an S3 or R2 bucket, addressed as `<sha256>/<file>`.
//!
//! Only the miner holds credentials. It signs URLs locally (SigV4 query signing with rusty-s3,
//! no request leaves the machine to make one): PUT URLs for its own uploads, GET URLs with a
//! short expiry for validators. Keys come from the configuration file or, better, the
//! environment, and never appear in `Debug` output, logs or errors.

use std::borrow::Cow;
use std::fmt;
use std::time::Duration;

use rusty_s3::{Bucket, Credentials, S3Action, UrlStyle};
use serde::{Deserialize, Serialize};
use url::Url;

use crate::ArtifactHash;

/// The longest presigned URL validity S3 accepts (7 days).
pub const MAX_URL_EXPIRY: Duration = Duration::from_secs(7 * 24 * 3600);

/// A credential: printed as `***` by `Debug`, never serialized.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret value.
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// The object store flavour, deciding the default endpoint, region and URL style.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Provider {
    /// AWS S3 (or any S3-compatible server with `endpoint` set).
    #[default]
    S3,
    /// Cloudflare R2.
    R2,
}

impl std::str::FromStr for Provider {
    type Err = StorageError;
    fn from_str(s: &str) -> Result<Self, StorageError> {
        match s.to_ascii_lowercase().as_str() {
            "s3" => Ok(Self::S3),
            "r2" => Ok(Self::R2),
            other => Err(StorageError::Config(format!("unknown provider {other:?} (s3 or r2)"))),
        }
    }
}

/// The miner's bucket (`[storage]` of the circuit configuration; `VERIBENCH_STORAGE_*`
/// environment variables override it, see [`StorageConfig::apply_env`]).
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StorageConfig {
    /// `s3` or `r2`.
    pub provider: Provider,
    /// Endpoint URL, overriding the provider's (`https://s3.<region>.amazonaws.com`,
    /// `https://<account_id>.r2.cloudflarestorage.com`).
    pub endpoint: Option<String>,
    /// Bucket name.
    pub bucket: String,
    /// Region (default `us-east-1` for S3, `auto` for R2).
    pub region: Option<String>,
    /// Cloudflare account id (R2 without an explicit endpoint).
    pub account_id: Option<String>,
    /// Access key id.
    pub access_key_id: Option<Secret>,
    /// Secret access key.
    pub secret_access_key: Option<Secret>,
    /// Path-style URLs (`endpoint/bucket/key`); default: virtual-host style for AWS S3,
    /// path style for R2 and custom endpoints.
    pub path_style: Option<bool>,
}

/// A storage configuration or request that cannot work.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StorageError {
    /// Something is missing or malformed in the configuration.
    #[error("storage configuration: {0}")]
    Config(String),
}

impl StorageConfig {
    /// Applies environment overrides through `get` (`std::env::var` in production):
    /// `VERIBENCH_STORAGE_PROVIDER`, `VERIBENCH_STORAGE_ENDPOINT`, `VERIBENCH_STORAGE_BUCKET`,
    /// `VERIBENCH_STORAGE_REGION`, `VERIBENCH_STORAGE_ACCOUNT_ID`,
    /// `VERIBENCH_STORAGE_ACCESS_KEY_ID` (else `AWS_ACCESS_KEY_ID`),
    /// `VERIBENCH_STORAGE_SECRET_ACCESS_KEY` (else `AWS_SECRET_ACCESS_KEY`).
    pub fn apply_env(&mut self, get: impl Fn(&str) -> Option<String>) -> Result<(), StorageError> {
        let get = |k: &str| get(k).filter(|v| !v.is_empty());
        if let Some(p) = get("VERIBENCH_STORAGE_PROVIDER") {
            self.provider = p.parse()?;
        }
        if let Some(v) = get("VERIBENCH_STORAGE_ENDPOINT") {
            self.endpoint = Some(v);
        }
        if let Some(v) = get("VERIBENCH_STORAGE_BUCKET") {
            self.bucket = v;
        }
        if let Some(v) = get("VERIBENCH_STORAGE_REGION") {
            self.region = Some(v);
        }
        if let Some(v) = get("VERIBENCH_STORAGE_ACCOUNT_ID") {
            self.account_id = Some(v);
        }
        if let Some(v) = get("VERIBENCH_STORAGE_ACCESS_KEY_ID").or_else(|| get("AWS_ACCESS_KEY_ID"))
        {
            self.access_key_id = Some(Secret(v));
        }
        if let Some(v) =
            get("VERIBENCH_STORAGE_SECRET_ACCESS_KEY").or_else(|| get("AWS_SECRET_ACCESS_KEY"))
        {
            self.secret_access_key = Some(Secret(v));
        }
        Ok(())
    }

    /// Resolves the endpoint, region and style, and checks that credentials are present.
    pub fn open(&self) -> Result<Storage, StorageError> {
        let cfg = |m: &str| StorageError::Config(m.to_owned());
        if self.bucket.is_empty() {
            return Err(cfg("bucket is not set (storage.bucket or VERIBENCH_STORAGE_BUCKET)"));
        }
        let region = self.region.clone().unwrap_or_else(|| match self.provider {
            Provider::S3 => "us-east-1".to_owned(),
            Provider::R2 => "auto".to_owned(),
        });
        let (endpoint, default_path_style) = match (&self.endpoint, self.provider) {
            (Some(e), _) => (e.clone(), true),
            (None, Provider::S3) => (format!("https://s3.{region}.amazonaws.com"), false),
            (None, Provider::R2) => {
                let account =
                    self.account_id.as_deref().filter(|a| !a.is_empty()).ok_or_else(|| {
                        cfg("R2 needs storage.account_id (or VERIBENCH_STORAGE_ACCOUNT_ID)")
                    })?;
                if !account.bytes().all(|b| b.is_ascii_alphanumeric()) {
                    return Err(cfg("storage.account_id must be alphanumeric"));
                }
                (format!("https://{account}.r2.cloudflarestorage.com"), true)
            }
        };
        let endpoint = Url::parse(&endpoint)
            .map_err(|e| StorageError::Config(format!("endpoint {endpoint:?}: {e}")))?;
        let style = if self.path_style.unwrap_or(default_path_style) {
            UrlStyle::Path
        } else {
            UrlStyle::VirtualHost
        };
        let bucket = Bucket::new(endpoint, style, Cow::Owned(self.bucket.clone()), region)
            .map_err(|e| StorageError::Config(format!("bucket: {e}")))?;
        let (Some(key), Some(secret)) = (&self.access_key_id, &self.secret_access_key) else {
            return Err(cfg("credentials are not set (VERIBENCH_STORAGE_ACCESS_KEY_ID and \
                 VERIBENCH_STORAGE_SECRET_ACCESS_KEY, or AWS_ACCESS_KEY_ID and \
                 AWS_SECRET_ACCESS_KEY)"));
        };
        let credentials = Credentials::new(key.expose(), secret.expose());
        Ok(Storage { bucket, credentials })
    }
}

/// An opened bucket with credentials: signs URLs for `<hash>/<file>` objects.
#[derive(Clone)]
pub struct Storage {
    bucket: Bucket,
    credentials: Credentials,
}

impl fmt::Debug for Storage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Storage")
            .field("endpoint", &self.bucket.base_url().as_str())
            .field("bucket", &self.bucket.name())
            .field("credentials", &"***")
            .finish()
    }
}

/// The object key of one artifact file.
pub fn object_key(hash: &ArtifactHash, file: &str) -> String {
    format!("{hash}/{file}")
}

impl Storage {
    /// The bucket's base URL (no credentials in it).
    pub fn base_url(&self) -> &Url {
        self.bucket.base_url()
    }

    /// A presigned PUT URL for `<hash>/<file>`, valid for `expiry`.
    pub fn presign_put(&self, hash: &ArtifactHash, file: &str, expiry: Duration) -> Url {
        let key = object_key(hash, file);
        self.bucket.put_object(Some(&self.credentials), &key).sign(clamp(expiry))
    }

    /// A presigned GET URL for `<hash>/<file>`, valid for `expiry`.
    pub fn presign_get(&self, hash: &ArtifactHash, file: &str, expiry: Duration) -> Url {
        let key = object_key(hash, file);
        self.bucket.get_object(Some(&self.credentials), &key).sign(clamp(expiry))
    }

    /// A presigned GET URL signed as of `signed_at` (tests: URLs that have already expired).
    #[doc(hidden)]
    pub fn presign_get_at(
        &self,
        hash: &ArtifactHash,
        file: &str,
        expiry: Duration,
        signed_at_unix_secs: i64,
    ) -> Option<Url> {
        let time = jiff_timestamp(signed_at_unix_secs)?;
        let key = object_key(hash, file);
        Some(
            self.bucket
                .get_object(Some(&self.credentials), &key)
                .sign_with_time(clamp(expiry), &time),
        )
    }
}

fn jiff_timestamp(secs: i64) -> Option<jiff::Timestamp> {
    jiff::Timestamp::from_second(secs).ok()
}

/// Presigned URLs are valid 1 s to 7 days.
fn clamp(expiry: Duration) -> Duration {
    expiry.clamp(Duration::from_secs(1), MAX_URL_EXPIRY)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: std::collections::HashMap<String, String> =
            pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
        move |k| map.get(k).cloned()
    }

    #[test]
    fn r2_endpoint_and_env_overrides_and_redaction() {
        let mut c =
            StorageConfig { provider: Provider::R2, bucket: "b".into(), ..Default::default() };
        assert!(c.open().is_err(), "no account id");
        c.apply_env(env(&[
            ("VERIBENCH_STORAGE_ACCOUNT_ID", "acc1"),
            ("AWS_ACCESS_KEY_ID", "AKIDEXAMPLE"),
            ("VERIBENCH_STORAGE_SECRET_ACCESS_KEY", "topsecretvalue"),
        ]))
        .expect("env");
        let s = c.open().expect("open");
        assert_eq!(s.base_url().as_str(), "https://acc1.r2.cloudflarestorage.com/b/");
        let dbg = format!("{c:?} {s:?}");
        assert!(!dbg.contains("topsecretvalue") && !dbg.contains("AKIDEXAMPLE"), "{dbg}");
        let h = ArtifactHash::of_bytes(b"x");
        let url = s.presign_get(&h, "vk.key", Duration::from_secs(60));
        assert!(url.path().ends_with(&format!("/b/{h}/vk.key")), "{url}");
        assert!(url.query().is_some_and(|q| q.contains("X-Amz-Signature")));
        assert!(!url.as_str().contains("topsecretvalue"));
    }

    #[test]
    fn s3_default_is_virtual_host() {
        let c = StorageConfig {
            bucket: "bkt".into(),
            access_key_id: Some(Secret::new("k")),
            secret_access_key: Some(Secret::new("s")),
            region: Some("eu-west-1".into()),
            ..Default::default()
        };
        let s = c.open().expect("open");
        assert_eq!(s.base_url().as_str(), "https://bkt.s3.eu-west-1.amazonaws.com/");
        assert!(matches!("gcs".parse::<Provider>(), Err(StorageError::Config(_))));
    }
}
