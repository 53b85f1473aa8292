//! Object storage (S3 or an S3-compatible store such as MinIO) for job artifacts.

use std::fmt;
use std::time::Duration;

use aws_sdk_s3::config::{
    BehaviorVersion, Credentials, Region, RequestChecksumCalculation, ResponseChecksumValidation,
    timeout::TimeoutConfig,
};
use aws_sdk_s3::error::{DisplayErrorContext, SdkError};
use secrecy::{ExposeSecret, SecretString};
use url::Url;
use uuid::Uuid;

use crate::env::{self, ConfigError, Source};

/// S3 or an S3-compatible store such as MinIO.
#[derive(Clone)]
pub struct StorageConfig {
    /// `S3_ENDPOINT_URL`; unset means AWS S3 itself.
    pub endpoint: Option<Url>,
    /// `S3_PUBLIC_ENDPOINT_URL`: the host put into presigned URLs handed to users, when the
    /// store is reachable under another name from outside (MinIO inside a cluster).
    pub public_endpoint: Option<Url>,
    pub region: String,
    pub bucket: String,
    pub access_key: String,
    pub secret_key: SecretString,
    /// Path-style addressing (`host/bucket/key`); the default whenever an endpoint is set.
    pub force_path_style: bool,
    /// `S3_CREATE_BUCKET`: create the bucket at start if it does not exist.
    pub create_bucket: bool,
}

impl StorageConfig {
    pub fn from_source(src: &impl Source) -> Result<Self, ConfigError> {
        let endpoint = env::optional_http_url(src, "S3_ENDPOINT_URL")?;
        let public_endpoint = env::optional_http_url(src, "S3_PUBLIC_ENDPOINT_URL")?;
        let bucket = src.get("S3_BUCKET").unwrap_or_else(|| "deployguard".into());
        validate_bucket_name(&bucket).map_err(|why| ConfigError::malformed("S3_BUCKET", why))?;
        let access_key = src
            .get("S3_ACCESS_KEY")
            .ok_or_else(|| ConfigError::missing("S3_ACCESS_KEY", "minioadmin"))?;
        let secret_key = src
            .get("S3_SECRET_KEY")
            .ok_or_else(|| ConfigError::missing("S3_SECRET_KEY", "a secret from your store"))?;
        let force_path_style = env::parse_bool(src, "S3_FORCE_PATH_STYLE", endpoint.is_some())?;
        Ok(Self {
            endpoint,
            public_endpoint,
            region: src.get("S3_REGION").unwrap_or_else(|| "us-east-1".into()),
            bucket,
            access_key,
            secret_key: SecretString::from(secret_key),
            force_path_style,
            create_bucket: env::parse_bool(src, "S3_CREATE_BUCKET", false)?,
        })
    }
}

impl std::fmt::Debug for StorageConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StorageConfig")
            .field("endpoint", &self.endpoint.as_ref().map(Url::as_str))
            .field(
                "public_endpoint",
                &self.public_endpoint.as_ref().map(Url::as_str),
            )
            .field("region", &self.region)
            .field("bucket", &self.bucket)
            .field("access_key", &self.access_key)
            .field("secret_key", &"***")
            .field("force_path_style", &self.force_path_style)
            .field("create_bucket", &self.create_bucket)
            .finish()
    }
}

/// S3 bucket naming rules (the subset every S3-compatible store enforces).
pub fn validate_bucket_name(name: &str) -> Result<(), String> {
    let ok_chars = name
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.');
    let edges_ok = name
        .bytes()
        .next()
        .zip(name.bytes().last())
        .is_some_and(|(a, z)| a.is_ascii_alphanumeric() && z.is_ascii_alphanumeric());
    if !(3..=63).contains(&name.len()) || !ok_chars || !edges_ok || name.contains("..") {
        return Err(format!(
            "{name:?} is not a valid bucket name (3-63 lowercase letters, digits, '-' or '.')"
        ));
    }
    Ok(())
}

#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("object storage is unreachable or refused the request: {0}")]
    Unavailable(String),
    #[error("bucket {0:?} does not exist")]
    NoSuchBucket(String),
    #[error("object {0:?} does not exist")]
    NoSuchKey(String),
}

impl StorageError {
    fn from_sdk<E, R>(err: SdkError<E, R>) -> Self
    where
        E: std::error::Error + 'static,
        R: std::fmt::Debug,
    {
        Self::Unavailable(DisplayErrorContext(err).to_string())
    }
}

/// A client bound to the configured bucket.
#[derive(Clone, Debug)]
pub struct Storage {
    client: aws_sdk_s3::Client,
    /// Signs URLs handed to users; differs from `client` when the store has a public
    /// name (`S3_PUBLIC_ENDPOINT_URL`).
    presigner: aws_sdk_s3::Client,
    bucket: String,
    /// Files larger than this go up in parts of this size.
    part_size: u64,
}

/// The default part size of a multipart upload. S3 takes at most 5 GiB in one PUT and at
/// most 10 000 parts, so files up to 625 GiB fit.
pub const DEFAULT_PART_SIZE: u64 = 64 << 20;
/// S3's smallest part (all but the last).
pub const MIN_PART_SIZE: u64 = 5 << 20;
/// Parts sent at once.
const PARTS_IN_FLIGHT: usize = 4;
/// The most parts S3 takes in one upload.
const MAX_PARTS: u64 = 10_000;
/// The largest object S3 stores.
const MAX_OBJECT_SIZE: u64 = 5 << 40;

/// A multipart upload begun: the parts sent are kept (and billed) until the upload is
/// completed or aborted, so one that fails or is dropped half way (a cancelled task)
/// is aborted.
struct PendingUpload {
    client: aws_sdk_s3::Client,
    bucket: String,
    key: String,
    upload_id: String,
    settled: bool,
}

impl PendingUpload {
    fn request(
        &self,
    ) -> aws_sdk_s3::operation::abort_multipart_upload::builders::AbortMultipartUploadFluentBuilder
    {
        self.client
            .abort_multipart_upload()
            .bucket(&self.bucket)
            .key(&self.key)
            .upload_id(&self.upload_id)
    }

    async fn abort(&mut self) {
        self.settled = true;
        if let Err(err) = self.request().send().await {
            tracing::warn!(key = %self.key, error = %DisplayErrorContext(err), "aborting a failed multipart upload failed");
        }
    }
}

impl Drop for PendingUpload {
    fn drop(&mut self) {
        if self.settled {
            return;
        }
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            let request = self.request();
            runtime.spawn(async move {
                let _ = request.send().await;
            });
        }
    }
}

/// Every object the service stores, one constructor per kind: the only place a key is
/// spelled. All of a job's objects live under its three prefixes ([`job_prefixes`]),
/// which is what cancel, expiry and the storage sweep delete.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ObjectKey {
    /// `repos/{job}/source.bundle`: the scanned repository, every ref.
    SourceBundle(Uuid),
    /// `repos/{job}/source.idx`: the index of the source bundle's pack.
    SourceIndex(Uuid),
    /// `reports/{job}/report.json.enc`: the scan report with full values, encrypted.
    EncryptedReport(Uuid),
    /// `reports/{job}/report.sarif`: the scan report as SARIF, previews only.
    Sarif(Uuid),
    /// `cleaned/{job}/cleaned.bundle`: the rewritten repository, every ref.
    CleanedBundle(Uuid),
    /// `cleaned/{job}/cleaned.idx`: the index of the cleaned bundle's pack.
    CleanedIndex(Uuid),
    /// `cleaned/{job}/cleaned.zip`: the download archive (every branch checked out).
    Archive(Uuid),
}

/// The top-level prefixes of job objects.
pub const JOB_PREFIXES: [&str; 3] = ["repos/", "reports/", "cleaned/"];

impl ObjectKey {
    pub fn job(self) -> Uuid {
        match self {
            Self::SourceBundle(job)
            | Self::SourceIndex(job)
            | Self::EncryptedReport(job)
            | Self::Sarif(job)
            | Self::CleanedBundle(job)
            | Self::CleanedIndex(job)
            | Self::Archive(job) => job,
        }
    }

    /// The index stored beside a bundle.
    pub fn index(self) -> Option<Self> {
        match self {
            Self::SourceBundle(job) => Some(Self::SourceIndex(job)),
            Self::CleanedBundle(job) => Some(Self::CleanedIndex(job)),
            _ => None,
        }
    }

    /// The file name part of the key.
    pub fn file_name(self) -> &'static str {
        match self {
            Self::SourceBundle(_) => "source.bundle",
            Self::SourceIndex(_) => "source.idx",
            Self::EncryptedReport(_) => "report.json.enc",
            Self::Sarif(_) => "report.sarif",
            Self::CleanedBundle(_) => "cleaned.bundle",
            Self::CleanedIndex(_) => "cleaned.idx",
            Self::Archive(_) => "cleaned.zip",
        }
    }

    fn prefix(self) -> &'static str {
        match self {
            Self::SourceBundle(_) | Self::SourceIndex(_) => JOB_PREFIXES[0],
            Self::EncryptedReport(_) | Self::Sarif(_) => JOB_PREFIXES[1],
            Self::CleanedBundle(_) | Self::CleanedIndex(_) | Self::Archive(_) => JOB_PREFIXES[2],
        }
    }
}

impl fmt::Display for ObjectKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}{}/{}", self.prefix(), self.job(), self.file_name())
    }
}

/// The prefixes under which a job's objects live.
pub fn job_prefixes(job_id: Uuid) -> [String; 3] {
    JOB_PREFIXES.map(|prefix| format!("{prefix}{job_id}/"))
}

/// The job a stored key belongs to: `{prefix}/{job id}/…` under a job prefix.
pub fn job_of(key: &str) -> Option<Uuid> {
    let rest = JOB_PREFIXES.iter().find_map(|p| key.strip_prefix(p))?;
    let (id, name) = rest.split_once('/')?;
    if name.is_empty() {
        return None;
    }
    Uuid::parse_str(id).ok()
}

impl Storage {
    pub fn new(config: &StorageConfig) -> Self {
        let credentials = Credentials::new(
            config.access_key.clone(),
            config.secret_key.expose_secret().to_owned(),
            None,
            None,
            "deployguard-config",
        );
        let mut builder = aws_sdk_s3::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new(config.region.clone()))
            .credentials_provider(credentials)
            .force_path_style(config.force_path_style)
            // S3-compatible stores do not all understand the newer default checksums
            // (aws-chunked CRC trailers); ask for them only where S3 requires them.
            .request_checksum_calculation(RequestChecksumCalculation::WhenRequired)
            .response_checksum_validation(ResponseChecksumValidation::WhenRequired)
            .timeout_config(
                TimeoutConfig::builder()
                    .connect_timeout(Duration::from_secs(5))
                    .build(),
            );
        let mut public = builder.clone();
        if let Some(endpoint) = &config.endpoint {
            builder = builder.endpoint_url(endpoint.as_str().trim_end_matches('/'));
        }
        let client = aws_sdk_s3::Client::from_conf(builder.build());
        let presigner = match config.public_endpoint.as_ref() {
            Some(endpoint) => {
                public = public.endpoint_url(endpoint.as_str().trim_end_matches('/'));
                aws_sdk_s3::Client::from_conf(public.build())
            }
            None => client.clone(),
        };
        Self {
            client,
            presigner,
            bucket: config.bucket.clone(),
            part_size: DEFAULT_PART_SIZE,
        }
    }

    /// Uploads files larger than `bytes` in parts of that size (at least
    /// [`MIN_PART_SIZE`]).
    pub fn with_part_size(mut self, bytes: u64) -> Self {
        self.part_size = bytes.max(MIN_PART_SIZE);
        self
    }

    pub fn client(&self) -> &aws_sdk_s3::Client {
        &self.client
    }

    pub fn bucket(&self) -> &str {
        &self.bucket
    }

    /// Checks that the store answers and the bucket exists (the readiness probe).
    pub async fn check(&self) -> Result<(), StorageError> {
        match self.client.head_bucket().bucket(&self.bucket).send().await {
            Ok(_) => Ok(()),
            Err(err) if err.as_service_error().is_some_and(|e| e.is_not_found()) => {
                Err(StorageError::NoSuchBucket(self.bucket.clone()))
            }
            Err(err) => Err(StorageError::from_sdk(err)),
        }
    }

    /// Creates the bucket unless it exists already.
    pub async fn ensure_bucket(&self) -> Result<(), StorageError> {
        match self.check().await {
            Ok(()) => return Ok(()),
            Err(StorageError::NoSuchBucket(_)) => {}
            Err(other) => return Err(other),
        }
        match self
            .client
            .create_bucket()
            .bucket(&self.bucket)
            .send()
            .await
        {
            Ok(_) => Ok(()),
            // Another replica won the race.
            Err(err)
                if err.as_service_error().is_some_and(|e| {
                    e.is_bucket_already_owned_by_you() || e.is_bucket_already_exists()
                }) =>
            {
                Ok(())
            }
            Err(err) => Err(StorageError::from_sdk(err)),
        }
    }
}

impl Storage {
    /// Whether an object exists.
    pub async fn exists(&self, key: ObjectKey) -> Result<bool, StorageError> {
        let key = key.to_string();
        match self
            .client
            .head_object()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
        {
            Ok(_) => Ok(true),
            Err(err) if err.as_service_error().is_some_and(|e| e.is_not_found()) => Ok(false),
            Err(err)
                if err
                    .raw_response()
                    .is_some_and(|r| r.status().as_u16() == 404) =>
            {
                Ok(false)
            }
            Err(err) => Err(StorageError::from_sdk(err)),
        }
    }

    /// A URL that lets its holder download `key` for `ttl`, signed for the public
    /// endpoint; `filename` becomes the download's name.
    pub async fn presign_get(
        &self,
        key: ObjectKey,
        ttl: Duration,
        filename: &str,
    ) -> Result<String, StorageError> {
        let key = key.to_string();
        let config = aws_sdk_s3::presigning::PresigningConfig::expires_in(ttl)
            .map_err(|e| StorageError::Unavailable(e.to_string()))?;
        let request = self
            .presigner
            .get_object()
            .bucket(&self.bucket)
            .key(key)
            .response_content_disposition(format!("attachment; filename=\"{filename}\""))
            .presigned(config)
            .await
            .map_err(StorageError::from_sdk)?;
        Ok(request.uri().to_owned())
    }

    /// Keys under `prefix`, page by page (1000 at most per page).
    pub async fn list_keys(&self, prefix: &str) -> Result<Vec<String>, StorageError> {
        let mut keys = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let (page, next) = self.list_page(prefix, token.take()).await?;
            keys.extend(page);
            match next {
                Some(next) => token = Some(next),
                None => return Ok(keys),
            }
        }
    }

    /// One page (up to 1 000 keys) of the keys under `prefix`, from where `token` (the
    /// previous page's second value) left off; the token of the next page, if any.
    pub async fn list_page(
        &self,
        prefix: &str,
        token: Option<String>,
    ) -> Result<(Vec<String>, Option<String>), StorageError> {
        let page = self
            .client
            .list_objects_v2()
            .bucket(&self.bucket)
            .prefix(prefix)
            .set_continuation_token(token)
            .send()
            .await
            .map_err(StorageError::from_sdk)?;
        let keys = page
            .contents()
            .iter()
            .filter_map(|o| o.key().map(str::to_owned))
            .collect();
        let next = page
            .next_continuation_token()
            .filter(|_| page.is_truncated().unwrap_or(false))
            .map(str::to_owned);
        Ok((keys, next))
    }

    /// Uploads the file at `path` as `key`: in one request, or in parts (several at once)
    /// when it is larger than the part size. Returns its size.
    pub async fn put_file(
        &self,
        key: ObjectKey,
        path: &std::path::Path,
    ) -> Result<u64, StorageError> {
        let key = key.to_string();
        let key = key.as_str();
        let unreadable = |e: &dyn std::fmt::Display| {
            StorageError::Unavailable(format!("{}: {e}", path.display()))
        };
        let length = tokio::fs::metadata(path)
            .await
            .map_err(|e| unreadable(&e))?
            .len();
        if length > MAX_OBJECT_SIZE {
            return Err(StorageError::Unavailable(format!(
                "{}: {length} bytes, more than the {MAX_OBJECT_SIZE} an object can hold",
                path.display()
            )));
        }
        if length > self.part_size {
            return self.put_file_in_parts(key, path, length).await;
        }
        let body = aws_sdk_s3::primitives::ByteStream::from_path(path)
            .await
            .map_err(|e| unreadable(&e))?;
        self.client
            .put_object()
            .bucket(&self.bucket)
            .key(key)
            .body(body)
            .send()
            .await
            .map_err(StorageError::from_sdk)?;
        Ok(length)
    }

    async fn put_file_in_parts(
        &self,
        key: &str,
        path: &std::path::Path,
        length: u64,
    ) -> Result<u64, StorageError> {
        use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart};
        use futures_util::{StreamExt, TryStreamExt};

        let upload = self
            .client
            .create_multipart_upload()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
            .map_err(StorageError::from_sdk)?;
        let upload_id = upload
            .upload_id()
            .ok_or_else(|| StorageError::Unavailable("no upload id in the answer".into()))?
            .to_owned();
        let mut pending = PendingUpload {
            client: self.client.clone(),
            bucket: self.bucket.clone(),
            key: key.to_owned(),
            upload_id: upload_id.clone(),
            settled: false,
        };
        // S3 takes at most 10 000 parts: a very large file goes in larger ones.
        let part_size = self.part_size.max(length.div_ceil(MAX_PARTS));
        let parts = length.div_ceil(part_size);
        let sent: Result<Vec<CompletedPart>, StorageError> = futures_util::stream::iter(0..parts)
            .map(|index| {
                let upload_id = upload_id.as_str();
                async move {
                    let offset = index * self.part_size;
                    let size = self.part_size.min(length - offset);
                    let body = aws_sdk_s3::primitives::ByteStream::read_from()
                        .path(path)
                        .offset(offset)
                        .length(aws_sdk_s3::primitives::Length::Exact(size))
                        .build()
                        .await
                        .map_err(|e| {
                            StorageError::Unavailable(format!("{}: {e}", path.display()))
                        })?;
                    let number = i32::try_from(index + 1).unwrap_or(i32::MAX);
                    let part = self
                        .client
                        .upload_part()
                        .bucket(&self.bucket)
                        .key(key)
                        .upload_id(upload_id)
                        .part_number(number)
                        .body(body)
                        .send()
                        .await
                        .map_err(StorageError::from_sdk)?;
                    Ok(CompletedPart::builder()
                        .part_number(number)
                        .set_e_tag(part.e_tag().map(str::to_owned))
                        .build())
                }
            })
            .buffered(PARTS_IN_FLIGHT)
            .try_collect()
            .await;
        let completed = match sent {
            Ok(parts) => self
                .client
                .complete_multipart_upload()
                .bucket(&self.bucket)
                .key(key)
                .upload_id(&upload_id)
                .multipart_upload(
                    CompletedMultipartUpload::builder()
                        .set_parts(Some(parts))
                        .build(),
                )
                .send()
                .await
                .map_err(StorageError::from_sdk),
            Err(err) => Err(err),
        };
        match completed {
            Ok(_) => {
                pending.settled = true;
                Ok(length)
            }
            Err(err) => {
                pending.abort().await;
                Err(err)
            }
        }
    }

    /// Uploads `bytes` as `key`.
    pub async fn put_bytes(&self, key: ObjectKey, bytes: Vec<u8>) -> Result<(), StorageError> {
        let key = key.to_string();
        self.client
            .put_object()
            .bucket(&self.bucket)
            .key(key)
            .body(bytes.into())
            .send()
            .await
            .map_err(StorageError::from_sdk)?;
        Ok(())
    }

    async fn get(
        &self,
        key: &str,
    ) -> Result<aws_sdk_s3::operation::get_object::GetObjectOutput, StorageError> {
        match self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
        {
            Ok(object) => Ok(object),
            Err(err) if err.as_service_error().is_some_and(|e| e.is_no_such_key()) => {
                Err(StorageError::NoSuchKey(key.to_owned()))
            }
            Err(err) => Err(StorageError::from_sdk(err)),
        }
    }

    /// Downloads `key` into a new file at `path`, streaming; returns its size.
    pub async fn get_file(
        &self,
        key: ObjectKey,
        path: &std::path::Path,
    ) -> Result<u64, StorageError> {
        let object = self.get(&key.to_string()).await?;
        let io = |e: std::io::Error| StorageError::Unavailable(format!("{}: {e}", path.display()));
        let mut file = tokio::fs::File::create(path).await.map_err(io)?;
        let mut body = object.body.into_async_read();
        let copied = tokio::io::copy(&mut body, &mut file).await.map_err(io)?;
        tokio::io::AsyncWriteExt::flush(&mut file)
            .await
            .map_err(io)?;
        Ok(copied)
    }

    /// Downloads `key` into memory (small objects: reports).
    pub async fn get_bytes(&self, key: ObjectKey) -> Result<Vec<u8>, StorageError> {
        let object = self.get(&key.to_string()).await?;
        let data = object
            .body
            .collect()
            .await
            .map_err(|e| StorageError::Unavailable(e.to_string()))?;
        Ok(data.into_bytes().to_vec())
    }

    /// Deletes one object by the key a listing gave (no error when it is already gone).
    pub async fn delete(&self, key: &str) -> Result<(), StorageError> {
        self.client
            .delete_object()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
            .map_err(StorageError::from_sdk)?;
        Ok(())
    }

    /// Deletes every object under `prefix`; returns how many there were.
    pub async fn delete_prefix(&self, prefix: &str) -> Result<usize, StorageError> {
        let keys = self.list_keys(prefix).await?;
        for key in &keys {
            self.delete(key).await?;
        }
        Ok(keys.len())
    }

    /// Deletes every object of a job; returns how many there were.
    pub async fn delete_job_artifacts(&self, job_id: Uuid) -> Result<usize, StorageError> {
        let mut deleted = 0;
        for prefix in job_prefixes(job_id) {
            deleted += self.delete_prefix(&prefix).await?;
        }
        Ok(deleted)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    #[test]
    fn the_layout_of_a_jobs_objects() {
        let job = Uuid::nil();
        let keys: Vec<String> = [
            ObjectKey::SourceBundle(job),
            ObjectKey::SourceIndex(job),
            ObjectKey::EncryptedReport(job),
            ObjectKey::Sarif(job),
            ObjectKey::CleanedBundle(job),
            ObjectKey::CleanedIndex(job),
            ObjectKey::Archive(job),
        ]
        .iter()
        .map(ToString::to_string)
        .collect();
        let id = job.to_string();
        assert_eq!(
            keys,
            [
                format!("repos/{id}/source.bundle"),
                format!("repos/{id}/source.idx"),
                format!("reports/{id}/report.json.enc"),
                format!("reports/{id}/report.sarif"),
                format!("cleaned/{id}/cleaned.bundle"),
                format!("cleaned/{id}/cleaned.idx"),
                format!("cleaned/{id}/cleaned.zip"),
            ]
        );
        for key in &keys {
            assert_eq!(job_of(key), Some(job), "{key}");
            assert!(job_prefixes(job).iter().any(|p| key.starts_with(p)));
        }
        assert_eq!(
            ObjectKey::CleanedBundle(job).index(),
            Some(ObjectKey::CleanedIndex(job))
        );
    }

    #[test]
    fn a_key_names_its_job_only_in_the_layout() {
        let id = Uuid::now_v7();
        assert_eq!(job_of(&format!("reports/{id}/x/y")), Some(id));
        assert_eq!(job_of(&format!("repos/{id}")), None);
        assert_eq!(job_of(&format!("repos/{id}/")), None);
        assert_eq!(job_of(&format!("other/{id}/file")), None);
        assert_eq!(job_of("repos/not-a-job/source.bundle"), None);
        assert_eq!(job_of("repos/"), None);
    }

    fn base() -> HashMap<&'static str, &'static str> {
        HashMap::from([
            ("S3_ENDPOINT_URL", "http://minio:9000"),
            ("S3_ACCESS_KEY", "minioadmin"),
            ("S3_SECRET_KEY", "s3-secret-789"),
        ])
    }

    #[test]
    fn an_endpoint_implies_path_style_and_the_secret_is_never_shown() {
        let config = StorageConfig::from_source(&base()).unwrap();
        assert_eq!(config.bucket, "deployguard");
        assert!(config.force_path_style);
        assert!(!format!("{config:?}").contains("s3-secret-789"));
    }

    #[test]
    fn bad_values_name_their_variable() {
        for (var, bad) in [
            ("S3_BUCKET", "Bad_Bucket"),
            ("S3_ENDPOINT_URL", "minio:9000"),
            ("S3_ACCESS_KEY", "  "),
        ] {
            let mut env = base();
            env.insert(var, bad);
            assert_eq!(StorageConfig::from_source(&env).unwrap_err().var, var);
        }
    }
}
