//! The user-events family's stores for the end-to-end tests: web sessions in a test database
//! (`chii_os_web_sessions`, Bangumi's dev-env DDL) with their Redis copies, the S3 server
//! `make up` starts (moto, `S3_ENDPOINT`, default `http://127.0.0.1:9300`) with a bucket per
//! test (optionally with a policy denying deletes), and a subscriber of the notification
//! channels.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{Context, bail};
use futures::StreamExt;
use rusty_s3::actions::{CreateBucket, DeleteBucket, DeleteObject, ListObjectsV2, PutObject};
use rusty_s3::{Bucket, Credentials, S3Action, UrlStyle};
use tokio::sync::mpsc;

use crate::mysql::TestDatabase;

/// `chii_os_web_sessions` as in bangumi/dev-env `sql/schema/chii_os_web_sessions.sql`.
pub const SESSIONS_DDL: &str = "CREATE TABLE chii_os_web_sessions (
  `key` char(64) NOT NULL COMMENT 'session key',
  `user_id` int(10) unsigned NOT NULL COMMENT 'uint32 user id',
  `value` mediumblob NOT NULL COMMENT 'json encoded session data',
  `created_at` bigint(20) NOT NULL COMMENT 'int64 unix timestamp, when session is created',
  `expired_at` bigint(20) NOT NULL COMMENT 'int64 unix timestamp, when session is expired',
  PRIMARY KEY (`key`)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4";

/// One session row.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, sqlx::FromRow)]
pub struct Session {
    /// The session key.
    pub key: String,
    /// Its user.
    pub user_id: u32,
    /// Unix seconds.
    pub created_at: i64,
    /// Unix seconds.
    pub expired_at: i64,
}

/// Now, in unix seconds.
pub fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

impl TestDatabase {
    /// Adds `chii_os_web_sessions` to this database.
    pub async fn add_sessions_table(&self) -> anyhow::Result<()> {
        sqlx::raw_sql(SESSIONS_DDL).execute(&self.pool).await?;
        Ok(())
    }

    /// Inserts `sessions`, and caches each in Redis as Bangumi's API does
    /// (`{key_prefix}chii:web:session:{key}`).
    pub async fn add_sessions(&self, key_prefix: &str, sessions: &[Session]) -> anyhow::Result<()> {
        let mut redis = crate::redis().await?;
        for s in sessions {
            sqlx::query("INSERT INTO chii_os_web_sessions (`key`, user_id, value, created_at, expired_at) VALUES (?, ?, '{}', ?, ?)")
                .bind(&s.key)
                .bind(s.user_id)
                .bind(s.created_at)
                .bind(s.expired_at)
                .execute(&self.pool)
                .await?;
            redis::cmd("SET")
                .arg(format!("{key_prefix}chii:web:session:{}", s.key))
                .arg(format!(r#"{{"user_id":{}}}"#, s.user_id))
                .query_async::<()>(&mut redis)
                .await?;
        }
        Ok(())
    }

    /// Every session, by key.
    pub async fn sessions(&self) -> anyhow::Result<BTreeMap<String, Session>> {
        let rows: Vec<Session> = sqlx::query_as(
            "SELECT `key`, user_id, created_at, expired_at FROM chii_os_web_sessions",
        )
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.into_iter().map(|s| (s.key.clone(), s)).collect())
    }
}

/// The S3 server of `make up`.
pub fn s3_endpoint() -> String {
    std::env::var("S3_ENDPOINT").unwrap_or_else(|_| "http://127.0.0.1:9300".into())
}

/// A bucket of one test on an S3 server.
pub struct TestBucket {
    /// Its name.
    pub name: String,
    bucket: Bucket,
    credentials: Credentials,
    http: reqwest::Client,
}

const SIGNED_FOR: Duration = Duration::from_secs(300);

impl TestBucket {
    /// Creates a bucket with a unique name on `endpoint`.
    pub async fn create(endpoint: &str) -> anyhow::Result<Self> {
        let name = crate::unique("ue").to_lowercase();
        let bucket = Bucket::new(endpoint.parse()?, UrlStyle::Path, name.clone(), "us-east-1")?;
        let this = Self {
            name,
            bucket,
            credentials: Credentials::new("test", "test"),
            http: reqwest::Client::new(),
        };
        let url = CreateBucket::new(&this.bucket, &this.credentials).sign(SIGNED_FOR);
        this.http
            .put(url)
            .header(reqwest::header::CONTENT_LENGTH, 0)
            .send()
            .await
            .with_context(|| format!("no S3 server at {endpoint}; run `make up`"))?
            .error_for_status()?;
        Ok(this)
    }

    /// Gives the bucket a policy denying `s3:DeleteObject` to everyone: S3 then refuses each
    /// key of a `DeleteObjects` with `AccessDenied`.
    pub async fn deny_deletes(&self) -> anyhow::Result<()> {
        let policy = serde_json::json!({
            "Version": "2012-10-17",
            "Statement": [{
                "Effect": "Deny",
                "Principal": "*",
                "Action": "s3:DeleteObject",
                "Resource": format!("arn:aws:s3:::{}/*", self.name),
            }],
        })
        .to_string();
        // `PUT /{bucket}?policy`: the bucket's URL with the `policy` subresource.
        let mut action = CreateBucket::new(&self.bucket, &self.credentials);
        action.query_mut().insert("policy", "");
        self.http
            .put(action.sign(SIGNED_FOR))
            .body(policy)
            .send()
            .await?
            .error_for_status()
            .context("putting the bucket policy")?;
        Ok(())
    }

    /// Removes the bucket's policy (`DELETE /{bucket}?policy`).
    pub async fn allow_deletes(&self) -> anyhow::Result<()> {
        let mut action = DeleteBucket::new(&self.bucket, &self.credentials);
        action.query_mut().insert("policy", "");
        self.http
            .delete(action.sign(SIGNED_FOR))
            .send()
            .await?
            .error_for_status()
            .context("deleting the bucket policy")?;
        Ok(())
    }

    /// Puts an object at each of `keys` (keys as S3 holds them, leading `/` included).
    pub async fn put(&self, keys: &[String]) -> anyhow::Result<()> {
        for key in keys {
            let url = PutObject::new(&self.bucket, Some(&self.credentials), key).sign(SIGNED_FOR);
            self.http
                .put(url)
                .body("resized")
                .send()
                .await?
                .error_for_status()
                .with_context(|| format!("putting {key:?}"))?;
        }
        Ok(())
    }

    /// Deletes every object, then the bucket (a test's clean-up: moto keeps everything in
    /// memory for as long as it runs).
    pub async fn remove(&self) -> anyhow::Result<()> {
        for key in self.keys().await? {
            let url =
                DeleteObject::new(&self.bucket, Some(&self.credentials), &key).sign(SIGNED_FOR);
            self.http
                .delete(url)
                .send()
                .await?
                .error_for_status()
                .with_context(|| format!("deleting {key:?}"))?;
        }
        let url = DeleteBucket::new(&self.bucket, &self.credentials).sign(SIGNED_FOR);
        self.http
            .delete(url)
            .send()
            .await?
            .error_for_status()
            .with_context(|| format!("deleting bucket {}", self.name))?;
        Ok(())
    }

    /// Every key in the bucket, sorted.
    pub async fn keys(&self) -> anyhow::Result<Vec<String>> {
        let mut keys = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let mut list = ListObjectsV2::new(&self.bucket, Some(&self.credentials));
            if let Some(token) = &token {
                list.with_continuation_token(token.as_str());
            }
            let body = self
                .http
                .get(list.sign(SIGNED_FOR))
                .send()
                .await?
                .error_for_status()?
                .text()
                .await?;
            let page = ListObjectsV2::parse_response(&body)?;
            keys.extend(page.contents.into_iter().map(|o| o.key));
            match page.next_continuation_token {
                Some(next) if !next.is_empty() => token = Some(next),
                _ => break,
            }
        }
        keys.sort();
        Ok(keys)
    }
}

/// Messages published on `{key_prefix}event-user-notify-*`, as (channel without the prefix,
/// message), in the order Redis delivered them.
pub struct NotifySubscriber {
    received: mpsc::UnboundedReceiver<(String, String)>,
    task: tokio::task::JoinHandle<()>,
}

impl NotifySubscriber {
    /// Subscribes (before the worker starts, so nothing is missed).
    pub async fn start(key_prefix: &str) -> anyhow::Result<Self> {
        let client = redis::Client::open(crate::redis_uri())?;
        let mut pubsub = client.get_async_pubsub().await?;
        pubsub
            .psubscribe(format!("{key_prefix}event-user-notify-*"))
            .await?;
        let (send, received) = mpsc::unbounded_channel();
        let prefix = key_prefix.to_owned();
        let task = tokio::spawn(async move {
            let mut messages = pubsub.into_on_message();
            while let Some(message) = messages.next().await {
                let channel = message
                    .get_channel_name()
                    .trim_start_matches(&prefix)
                    .to_owned();
                let payload: String = message.get_payload().unwrap_or_default();
                if send.send((channel, payload)).is_err() {
                    return;
                }
            }
        });
        Ok(Self { received, task })
    }

    /// The next `n` messages, failing after `within`.
    pub async fn next(
        &mut self,
        n: usize,
        within: Duration,
    ) -> anyhow::Result<Vec<(String, String)>> {
        let mut got = Vec::with_capacity(n);
        let deadline = tokio::time::Instant::now() + within;
        while got.len() < n {
            match tokio::time::timeout_at(deadline, self.received.recv()).await {
                Ok(Some(message)) => got.push(message),
                Ok(None) => bail!("the subscription ended after {} of {n} messages", got.len()),
                Err(_) => bail!("{} of {n} messages within {within:?}: {got:?}", got.len()),
            }
        }
        Ok(got)
    }
}

impl Drop for NotifySubscriber {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// What the demo seeds for the user-events family from the expectations: per user whose
/// password changes, a session from before the change and a login after it; per purged
/// prefix, three resized copies.
pub fn demo_seed(expected: &crate::expected::UserEvents) -> (Vec<Session>, Vec<String>) {
    let mut until: BTreeMap<u32, i64> = BTreeMap::new();
    let mut objects = Vec::new();
    for record in &expected.records {
        let Some(effects) = &record.effects else {
            continue;
        };
        if let Some(t) = effects.revoke_created_until {
            until.insert(record.uid, t);
        }
        for prefix in &effects.purge_prefixes {
            for size in ["100x100.jpg", "200x200.jpg", "300x300.jpg"] {
                objects.push(format!("{prefix}/{size}"));
            }
        }
    }
    objects.sort();
    objects.dedup();
    let valid_until = now() + 7 * 86_400;
    let sessions = until
        .into_iter()
        .flat_map(|(uid, t)| {
            [
                Session {
                    key: format!("demo-u{uid}-before"),
                    user_id: uid,
                    created_at: t - 3600,
                    expired_at: valid_until,
                },
                Session {
                    key: format!("demo-u{uid}-later-login"),
                    user_id: uid,
                    created_at: t + 1,
                    expired_at: valid_until,
                },
            ]
        })
        .collect();
    (sessions, objects)
}
