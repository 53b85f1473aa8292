//! Object storage (S3 or an S3-compatible store such as MinIO) for job artifacts.

use std::time::Duration;

use aws_sdk_s3::config::{
    BehaviorVersion, Credentials, Region, RequestChecksumCalculation, ResponseChecksumValidation,
    timeout::TimeoutConfig,
};
use aws_sdk_s3::error::{DisplayErrorContext, SdkError};
use secrecy::ExposeSecret;

use crate::config::StorageConfig;

#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("object storage is unreachable or refused the request: {0}")]
    Unavailable(String),
    #[error("bucket {0:?} does not exist")]
    NoSuchBucket(String),
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
    bucket: String,
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
        if let Some(endpoint) = &config.endpoint {
            builder = builder.endpoint_url(endpoint.as_str().trim_end_matches('/'));
        }
        Self {
            client: aws_sdk_s3::Client::from_conf(builder.build()),
            bucket: config.bucket.clone(),
        }
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
