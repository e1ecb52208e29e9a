//! Deleting the resized copies of an avatar from S3: every object under a prefix of the image
//! resize bucket (`S3_IMAGE_RESIZE_BUCKET`), listed a page at a time (`ListObjectsV2`, at most
//! `S3_LIST_PAGE_SIZE` keys) and deleted a page per request (`DeleteObjects`), as the Go
//! worker's `clearImageCache` does — but awaited, and its failures classified instead of logged.
//!
//! Requests are built and signed by `rusty-s3` (sans-I/O: presigned URLs) and sent with
//! `reqwest`. Keys are used exactly as S3 holds them, leading `/` included (the Go prefixes
//! start with `/`).
//!
//! Errors: S3 unreachable, timed out, answering 5xx, or refusing with anything but `403` is
//! [`PurgeError::Transient`] (the partition waits and retries; a missing bucket is the
//! operator's to fix). `403` (`AccessDenied`, an unknown key, a bad signature) on listing or
//! on a key is [`PurgeError::Denied`]: the record is dead-lettered, its message naming bucket
//! and prefix, and can be replayed once the credentials are fixed.
//!
//! Idempotent: a prefix already purged lists nothing.

use std::time::Duration;

use cdc_runtime::Dependency;
use rusty_s3::actions::{DeleteObjectsResponse, ListObjectsV2, ObjectIdentifier};
use rusty_s3::{Bucket, Credentials, S3Action, UrlStyle};

/// How long a signed request stays valid (it is sent at once).
const SIGNATURE_LIFETIME: Duration = Duration::from_secs(300);

/// A failed purge.
#[derive(Debug, thiserror::Error)]
pub enum PurgeError {
    /// S3 unreachable or failing: retry.
    #[error("{0}")]
    Transient(String),
    /// S3 refused the credentials or the action (403): dead-letter the record.
    #[error("{0}")]
    Denied(String),
}

/// The S3 connection settings ([`crate::Settings`]), checked.
pub struct S3Target<'a> {
    /// `S3_ENDPOINT`.
    pub endpoint: &'a str,
    /// `S3_REGION`.
    pub region: &'a str,
    /// `S3_PATH_STYLE`.
    pub path_style: bool,
    /// `S3_IMAGE_RESIZE_BUCKET`.
    pub bucket: &'a str,
    /// `S3_ACCESS_KEY`, `S3_SECRET_KEY`.
    pub access_key: &'a str,
    /// `S3_SECRET_KEY`.
    pub secret_key: &'a str,
    /// `S3_LIST_PAGE_SIZE`.
    pub page_size: usize,
    /// `S3_TIMEOUT`.
    pub timeout: Duration,
}

/// Deletes objects by prefix in one bucket.
pub struct Purger {
    http: reqwest::Client,
    bucket: Bucket,
    credentials: Credentials,
    page_size: usize,
    /// The S3 server, for transient failures' log lines and readiness.
    pub dependency: Dependency,
}

impl Purger {
    /// A purger for `target`; fails on an endpoint that is not an http(s) URL.
    pub fn new(target: &S3Target<'_>) -> anyhow::Result<Self> {
        let endpoint: reqwest::Url = target
            .endpoint
            .parse()
            .map_err(|e| anyhow::anyhow!("S3_ENDPOINT: {e}"))?;
        let style = if target.path_style {
            UrlStyle::Path
        } else {
            UrlStyle::VirtualHost
        };
        let bucket = Bucket::new(
            endpoint,
            style,
            target.bucket.to_owned(),
            target.region.to_owned(),
        )
        .map_err(|e| anyhow::anyhow!("S3_ENDPOINT / S3_IMAGE_RESIZE_BUCKET: {e}"))?;
        let http = reqwest::Client::builder().timeout(target.timeout).build()?;
        Ok(Self {
            http,
            bucket,
            credentials: Credentials::new(target.access_key, target.secret_key),
            page_size: target.page_size,
            dependency: Dependency::s3(target.endpoint),
        })
    }

    /// The bucket's name.
    pub fn bucket(&self) -> &str {
        self.bucket.name()
    }

    /// Deletes every object whose key starts with `prefix`; returns how many were deleted.
    pub async fn purge(&self, prefix: &str) -> Result<u64, PurgeError> {
        let mut deleted = 0;
        let mut token: Option<String> = None;
        loop {
            let mut list = ListObjectsV2::new(&self.bucket, Some(&self.credentials));
            list.with_prefix(prefix);
            list.with_max_keys(self.page_size);
            if let Some(token) = &token {
                list.with_continuation_token(token.as_str());
            }
            let body = self
                .send(
                    prefix,
                    "listing",
                    self.http.get(list.sign(SIGNATURE_LIFETIME)),
                )
                .await?;
            let page = ListObjectsV2::parse_response(&body).map_err(|e| {
                self.transient(prefix, "listing", format!("unreadable answer: {e}"))
            })?;
            if !page.contents.is_empty() {
                let keys: Vec<ObjectIdentifier> = page
                    .contents
                    .into_iter()
                    .map(|object| ObjectIdentifier::new(object.key))
                    .collect();
                deleted += self.delete(prefix, &keys).await?;
            }
            match page.next_continuation_token {
                Some(next) if !next.is_empty() => token = Some(next),
                _ => return Ok(deleted),
            }
        }
    }

    /// Deletes `keys` (one page, at most 1000) with one `DeleteObjects`.
    async fn delete(&self, prefix: &str, keys: &[ObjectIdentifier]) -> Result<u64, PurgeError> {
        let mut action = self
            .bucket
            .delete_objects(Some(&self.credentials), keys.iter());
        action.set_quiet(true);
        let url = action.sign(SIGNATURE_LIFETIME);
        let (body, md5) = action.body_with_md5();
        let request = self
            .http
            .post(url)
            .header("Content-MD5", md5)
            .header("Content-Type", "application/xml")
            .body(body);
        let answer = self.send(prefix, "deleting", request).await?;
        let answer = DeleteObjectsResponse::parse(&answer)
            .map_err(|e| self.transient(prefix, "deleting", format!("unreadable answer: {e}")))?;
        if let Some(error) = answer.errors.first() {
            let message = format!(
                "{} of {} keys not deleted, first {:?}: {} {}",
                answer.errors.len(),
                keys.len(),
                error.key,
                error.code,
                error.message
            );
            return Err(if error.code == "AccessDenied" {
                self.denied(prefix, "deleting", message)
            } else {
                self.transient(prefix, "deleting", message)
            });
        }
        Ok(keys.len() as u64)
    }

    /// Sends `request` (a step of purging `prefix`) and returns the answer's body.
    async fn send(
        &self,
        prefix: &str,
        step: &str,
        request: reqwest::RequestBuilder,
    ) -> Result<String, PurgeError> {
        let response = request
            .send()
            .await
            .map_err(|e| self.transient(prefix, step, format!("{}", without_url(e))))?;
        let status = response.status();
        let body = response
            .text()
            .await
            .map_err(|e| self.transient(prefix, step, format!("{}", without_url(e))))?;
        if status.is_success() {
            return Ok(body);
        }
        let message = format!("{status}: {}", error_code(&body));
        Err(if status == reqwest::StatusCode::FORBIDDEN {
            self.denied(prefix, step, message)
        } else {
            self.transient(prefix, step, message)
        })
    }

    fn transient(&self, prefix: &str, step: &str, message: String) -> PurgeError {
        PurgeError::Transient(self.context(prefix, step, &message))
    }

    fn denied(&self, prefix: &str, step: &str, message: String) -> PurgeError {
        PurgeError::Denied(self.context(prefix, step, &message))
    }

    fn context(&self, prefix: &str, step: &str, message: &str) -> String {
        format!(
            "S3 bucket {:?}, prefix {prefix:?}: {step}: {message}",
            self.bucket.name()
        )
    }
}

/// A request error without its URL (a presigned URL carries the access key and signature).
fn without_url(error: reqwest::Error) -> reqwest::Error {
    error.without_url()
}

/// `Code: Message` of an S3 error document, or the start of the body.
fn error_code(body: &str) -> String {
    let field = |name: &str| {
        let open = format!("<{name}>");
        let close = format!("</{name}>");
        let start = body.find(&open)? + open.len();
        let end = body[start..].find(&close)? + start;
        Some(body[start..end].to_owned())
    };
    match (field("Code"), field("Message")) {
        (Some(code), Some(message)) => format!("{code}: {message}"),
        (Some(code), None) => code,
        _ => body.chars().take(200).collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_documents_give_code_and_message() {
        let body = "<?xml version=\"1.0\"?><Error><Code>AccessDenied</Code><Message>Access Denied</Message></Error>";
        assert_eq!(error_code(body), "AccessDenied: Access Denied");
        assert_eq!(error_code("oops"), "oops");
    }
}
