//! Meilisearch for the tests: the shared server `make up` starts, a small client of its HTTP
//! API, and a server of a test's own for fault scenarios.
//!
//! The shared server is at `MEILISEARCH_URL` (default `http://127.0.0.1:$CDC_MEILISEARCH_PORT`,
//! port 7700) with the key `MEILISEARCH_KEY` (default [`LOCAL_MASTER_KEY`], the local
//! development key `scripts/infra.sh` gives it). Tests run in parallel against it, so each one
//! names its indexes after a [`unique_index_prefix`] (`<prefix>subjects`, …) and deletes them at
//! the end ([`Meili::delete_indexes_with_prefix`]). It is not a Meilisearch SDK: it speaks the
//! few endpoints tests need, with raw JSON documents, and fails with Meilisearch's own error
//! code and message.
//!
//! # Layout
//! - [`meili_url`], [`meili_key`], [`unique_index_prefix`]: where things are.
//! - [`Meili`]: the client (indexes, documents, search, tasks); [`is_timeout`] classifies its errors.
//! - [`PrivateMeilisearch`] (`server.rs`): a server on a free port with its own data dir, which a
//!   test kills, restarts, pauses and resumes; it is a [`crate::scenario::Dependency`]. Also
//!   [`meilisearch_binary`], the binary lookup it shares with `scripts/lib.sh`.

mod server;

use std::time::Duration;

use anyhow::{Context, bail};
use reqwest::{Method, StatusCode, Url};
use serde_json::{Value, json};

pub use server::{PrivateMeilisearch, meilisearch_binary};

/// The master key `scripts/infra.sh` starts the local server with (and [`PrivateMeilisearch`]
/// too): a fixed development key, not a secret.
pub const LOCAL_MASTER_KEY: &str = "bangumi-cdc-local-master-key";

/// How long one request may take by default ([`Meili::with_timeout`] changes it).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// The shared server: `MEILISEARCH_URL`, else `http://127.0.0.1:{CDC_MEILISEARCH_PORT or 7700}`.
pub fn meili_url() -> String {
    std::env::var("MEILISEARCH_URL").unwrap_or_else(|_| {
        let port = std::env::var("CDC_MEILISEARCH_PORT").unwrap_or_else(|_| "7700".into());
        format!("http://127.0.0.1:{port}")
    })
}

/// The shared server's key: `MEILISEARCH_KEY`, else [`LOCAL_MASTER_KEY`].
pub fn meili_key() -> String {
    std::env::var("MEILISEARCH_KEY").unwrap_or_else(|_| LOCAL_MASTER_KEY.into())
}

/// A prefix of index uids no other test (or run) uses: `name` (characters an index uid cannot
/// hold replaced by `-`), a random suffix and `_`, e.g. `search-subjects-0123456789abcdef_`.
pub fn unique_index_prefix(name: &str) -> String {
    let name: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                c
            } else {
                '-'
            }
        })
        .collect();
    format!("{}_", crate::unique(&name))
}

/// Whether `err` (from a [`Meili`] call) is a request that got no answer in time, e.g. from a
/// paused server.
pub fn is_timeout(err: &anyhow::Error) -> bool {
    err.chain()
        .filter_map(|e| e.downcast_ref::<reqwest::Error>())
        .any(reqwest::Error::is_timeout)
}

/// A client of one Meilisearch server. Every call fails on an HTTP error with Meilisearch's
/// error code and message, or after the request timeout (see [`is_timeout`]).
#[derive(Clone)]
pub struct Meili {
    base: Url,
    key: String,
    http: reqwest::Client,
}

impl Meili {
    /// A client of the server at `url` (e.g. `http://127.0.0.1:7700`) using `key`.
    pub fn new(url: &str, key: &str) -> anyhow::Result<Self> {
        Self::build(url, key, REQUEST_TIMEOUT)
    }

    /// A client of the shared server ([`meili_url`], [`meili_key`]).
    pub fn local() -> anyhow::Result<Self> {
        Self::new(&meili_url(), &meili_key())
    }

    /// The same server, with requests given up after `timeout`.
    pub fn with_timeout(&self, timeout: Duration) -> anyhow::Result<Self> {
        Self::build(self.base.as_str(), &self.key, timeout)
    }

    fn build(url: &str, key: &str, timeout: Duration) -> anyhow::Result<Self> {
        let base = Url::parse(url).with_context(|| format!("Meilisearch URL {url:?}"))?;
        let http = reqwest::Client::builder()
            .no_proxy()
            .timeout(timeout)
            .connect_timeout(timeout.min(Duration::from_secs(3)))
            .build()?;
        Ok(Self {
            base,
            key: key.to_owned(),
            http,
        })
    }

    /// The server's URL.
    pub fn url(&self) -> &str {
        self.base.as_str().trim_end_matches('/')
    }

    /// Fails with a clear message unless the server answers `GET /health` with `available` and
    /// accepts the key (`GET /version`).
    pub async fn require(&self) -> anyhow::Result<()> {
        let (_, body) = self
            .call(Method::GET, &["health"], &[], None)
            .await
            .with_context(|| format!("no Meilisearch at {}; run `make up`", self.url()))?;
        if body["status"] != "available" {
            bail!("Meilisearch at {} is not available: {body}", self.url());
        }
        self.expect(Method::GET, &["version"], &[], None)
            .await
            .with_context(|| format!("Meilisearch at {} refuses the key", self.url()))?;
        Ok(())
    }

    /// Creates index `uid` with `primary_key` and waits until it exists.
    pub async fn create_index(&self, uid: &str, primary_key: &str) -> anyhow::Result<()> {
        let body = json!({ "uid": uid, "primaryKey": primary_key });
        let task = self
            .enqueue(Method::POST, &["indexes"], &[], Some(&body))
            .await?;
        self.wait_task(task, Duration::from_secs(30)).await?;
        Ok(())
    }

    /// `PUT /indexes/{uid}/documents?primaryKey=…`: adds `documents`, or updates the fields they
    /// carry of documents already there (fields they lack are kept). Returns the task's uid
    /// ([`Meili::wait_task`]); creates the index if it does not exist.
    pub async fn put_documents(
        &self,
        uid: &str,
        primary_key: &str,
        documents: &[Value],
    ) -> anyhow::Result<u64> {
        self.enqueue(
            Method::PUT,
            &["indexes", uid, "documents"],
            &[("primaryKey", primary_key)],
            Some(&Value::from(documents)),
        )
        .await
    }

    /// `POST /indexes/{uid}/documents?primaryKey=…`: adds `documents`, each replacing the
    /// document of its id whole (as the search worker writes). Returns the task's uid.
    pub async fn replace_documents(
        &self,
        uid: &str,
        primary_key: &str,
        documents: &[Value],
    ) -> anyhow::Result<u64> {
        self.enqueue(
            Method::POST,
            &["indexes", uid, "documents"],
            &[("primaryKey", primary_key)],
            Some(&Value::from(documents)),
        )
        .await
    }

    /// How many documents index `uid` holds (`GET /indexes/{uid}/stats`).
    pub async fn document_count(&self, uid: &str) -> anyhow::Result<u64> {
        let stats = self
            .expect(Method::GET, &["indexes", uid, "stats"], &[], None)
            .await?;
        stats["numberOfDocuments"]
            .as_u64()
            .with_context(|| format!("index {uid}: stats without numberOfDocuments: {stats}"))
    }

    /// The document `id` of index `uid`; `None` if the document or the index does not exist.
    pub async fn get_document(&self, uid: &str, id: &str) -> anyhow::Result<Option<Value>> {
        match self
            .call(Method::GET, &["indexes", uid, "documents", id], &[], None)
            .await?
        {
            (StatusCode::NOT_FOUND, body)
                if matches!(
                    body["code"].as_str(),
                    Some("document_not_found" | "index_not_found")
                ) =>
            {
                Ok(None)
            }
            (status, body) if status.is_success() => Ok(Some(body)),
            (status, body) => Err(api_error("GET document", status, &body)),
        }
    }

    /// Every document of index `uid`, in Meilisearch's order (none if the index does not exist).
    pub async fn documents(&self, uid: &str) -> anyhow::Result<Vec<Value>> {
        let mut all = Vec::new();
        loop {
            let offset = all.len().to_string();
            let page = match self
                .call(
                    Method::GET,
                    &["indexes", uid, "documents"],
                    &[("offset", offset.as_str()), ("limit", "1000")],
                    None,
                )
                .await?
            {
                (StatusCode::NOT_FOUND, body) if body["code"] == "index_not_found" => {
                    return Ok(all);
                }
                (status, body) if status.is_success() => body,
                (status, body) => return Err(api_error("GET documents", status, &body)),
            };
            let results = page["results"].as_array().cloned().unwrap_or_default();
            let done = results.len() < 1000;
            all.extend(results);
            if done {
                return Ok(all);
            }
        }
    }

    /// The ids (the `id` field, a string or a number rendered in decimal) of the hits of query
    /// `q` in index `uid`, best first (up to 1000).
    pub async fn search(&self, uid: &str, q: &str) -> anyhow::Result<Vec<String>> {
        let body = self
            .search_raw(uid, &json!({ "q": q, "limit": 1000 }))
            .await?;
        let hits = body["hits"]
            .as_array()
            .context("search answer without hits")?;
        hits.iter()
            .map(|hit| match &hit["id"] {
                Value::String(s) => Ok(s.clone()),
                Value::Number(n) => Ok(n.to_string()),
                other => bail!("hit without a string or number id: {other}"),
            })
            .collect()
    }

    /// `POST /indexes/{uid}/search` with `body` as given; the whole answer.
    pub async fn search_raw(&self, uid: &str, body: &Value) -> anyhow::Result<Value> {
        self.expect(Method::POST, &["indexes", uid, "search"], &[], Some(body))
            .await
    }

    /// `GET /tasks/{task_uid}`: the task as Meilisearch describes it.
    pub async fn task(&self, task_uid: u64) -> anyhow::Result<Value> {
        self.expect(Method::GET, &["tasks", &task_uid.to_string()], &[], None)
            .await
    }

    /// Waits (polling `GET /tasks/{task_uid}`) until the task is done; the task if it
    /// succeeded, an error with Meilisearch's reason if it failed or was canceled, or if it is
    /// still enqueued or processing after `within`.
    pub async fn wait_task(&self, task_uid: u64, within: Duration) -> anyhow::Result<Value> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let task = self.task(task_uid).await?;
            match task["status"].as_str() {
                Some("succeeded") => return Ok(task),
                Some("failed" | "canceled") => bail!(
                    "Meilisearch task {task_uid} ({}) {}: {}",
                    task["type"],
                    task["status"],
                    task["error"]
                ),
                _ if tokio::time::Instant::now() > deadline => {
                    bail!("Meilisearch task {task_uid} not done after {within:?}: {task}")
                }
                _ => tokio::time::sleep(Duration::from_millis(25)).await,
            }
        }
    }

    /// The uids of every index, sorted.
    pub async fn index_uids(&self) -> anyhow::Result<Vec<String>> {
        let mut uids = Vec::new();
        loop {
            let offset = uids.len().to_string();
            let page = self
                .expect(
                    Method::GET,
                    &["indexes"],
                    &[("limit", "1000"), ("offset", &offset)],
                    None,
                )
                .await?;
            let results = page["results"]
                .as_array()
                .context("indexes without results")?;
            uids.extend(
                results
                    .iter()
                    .filter_map(|i| i["uid"].as_str().map(String::from)),
            );
            if results.is_empty() || uids.len() as u64 >= page["total"].as_u64().unwrap_or(0) {
                uids.sort();
                return Ok(uids);
            }
        }
    }

    /// Deletes every index whose uid starts with `prefix` (a test's clean-up) and waits until
    /// they are gone; how many there were.
    pub async fn delete_indexes_with_prefix(&self, prefix: &str) -> anyhow::Result<usize> {
        let doomed: Vec<String> = self
            .index_uids()
            .await?
            .into_iter()
            .filter(|uid| uid.starts_with(prefix))
            .collect();
        let mut tasks = Vec::with_capacity(doomed.len());
        for uid in &doomed {
            tasks.push(
                self.enqueue(Method::DELETE, &["indexes", uid], &[], None)
                    .await?,
            );
        }
        for task in tasks {
            self.wait_task(task, Duration::from_secs(30)).await?;
        }
        Ok(doomed.len())
    }

    /// Sends a request that enqueues a task (answered `202 Accepted`); the task's uid.
    async fn enqueue(
        &self,
        method: Method,
        path: &[&str],
        query: &[(&str, &str)],
        body: Option<&Value>,
    ) -> anyhow::Result<u64> {
        let answer = self.expect(method, path, query, body).await?;
        answer["taskUid"]
            .as_u64()
            .with_context(|| format!("no taskUid in {answer}"))
    }

    /// Sends a request; its JSON answer, or an error for any status but 2xx.
    async fn expect(
        &self,
        method: Method,
        path: &[&str],
        query: &[(&str, &str)],
        body: Option<&Value>,
    ) -> anyhow::Result<Value> {
        let what = format!("{method} /{}", path.join("/"));
        match self.call(method, path, query, body).await? {
            (status, body) if status.is_success() => Ok(body),
            (status, body) => Err(api_error(&what, status, &body)),
        }
    }

    /// Sends a request to the path made of `path`'s segments (each escaped); the status and the
    /// JSON body (`null` when empty).
    async fn call(
        &self,
        method: Method,
        path: &[&str],
        query: &[(&str, &str)],
        body: Option<&Value>,
    ) -> anyhow::Result<(StatusCode, Value)> {
        let mut url = self.base.clone();
        url.path_segments_mut()
            .map_err(|()| anyhow::anyhow!("{} cannot be a base URL", self.base))?
            .pop_if_empty()
            .extend(path);
        url.query_pairs_mut().extend_pairs(query);
        if query.is_empty() {
            url.set_query(None);
        }
        let mut request = self
            .http
            .request(method.clone(), url)
            .bearer_auth(&self.key);
        if let Some(body) = body {
            request = request.json(body);
        }
        let what = format!("{method} {}/{}", self.url(), path.join("/"));
        let response = request.send().await.with_context(|| what.clone())?;
        let status = response.status();
        let bytes = response.bytes().await.with_context(|| what.clone())?;
        let body = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes).with_context(|| format!("{what}: answer not JSON"))?
        };
        Ok((status, body))
    }
}

fn api_error(what: &str, status: StatusCode, body: &Value) -> anyhow::Error {
    anyhow::anyhow!(
        "{what}: Meilisearch answered {status}: {} ({})",
        body["message"].as_str().unwrap_or("no message"),
        body["code"].as_str().unwrap_or("no code")
    )
}
