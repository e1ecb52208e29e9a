//! Meilisearch over HTTP: the calls the family makes (replace documents, delete documents,
//! wait for a task; for `search settings` and `search reindex` also settings, indexes, their swap
//! and single documents) and the classification of their failures.
//!
//! Meilisearch applies writes as asynchronous tasks: a call only enqueues one. A batch is applied
//! when its tasks have **succeeded**, which [`Meilisearch::wait`] waits for; only then may the
//! runtime store the batch's offsets.
//!
//! Failures: a task or request that Meilisearch refuses because of a document
//! ([`DOCUMENT_ERRORS`]) is [`HandlerError::Permanent`] (the runtime then applies the batch's
//! records one by one and dead-letters the bad one with Meilisearch's message). Everything else —
//! unreachable, timed out, overloaded (429, 5xx), a key without the rights — is
//! [`HandlerError::Transient`]: the partition waits and retries.

use std::time::Duration;

use cdc_runtime::{Dependency, HandlerError};
use serde::Deserialize;
use serde_json::{Map, Value, json};

/// Meilisearch error codes that are about a document the worker sent.
pub const DOCUMENT_ERRORS: &[&str] = &[
    "invalid_document_id",
    "missing_document_id",
    "invalid_document_fields",
    "invalid_document_geo_field",
    "invalid_document_geojson_field",
    "max_fields_limit_exceeded",
];

/// The longest pause between two looks at a task.
const MAX_POLL: Duration = Duration::from_millis(50);

/// A Meilisearch server.
#[derive(Clone)]
pub struct Meilisearch {
    http: reqwest::Client,
    url: String,
    key: Option<String>,
    /// The server, as failures name it.
    pub at: Dependency,
}

/// An enqueued task.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Task(u64);

#[derive(Debug, Deserialize)]
struct Enqueued {
    #[serde(rename = "taskUid")]
    task_uid: u64,
}

#[derive(Debug, Deserialize)]
struct TaskState {
    status: String,
    #[serde(default)]
    error: Option<ApiError>,
}

/// Meilisearch's error body.
#[derive(Debug, Deserialize)]
struct ApiError {
    #[serde(default)]
    message: String,
    #[serde(default)]
    code: String,
}

impl Meilisearch {
    /// The server at `url` (`http://host:7700`), authenticated with `key` when not empty; every
    /// request gives up after `timeout`.
    pub fn new(url: &str, key: &str, timeout: Duration) -> anyhow::Result<Self> {
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout.min(Duration::from_secs(2)))
            .build()?;
        Ok(Self {
            http,
            url: url.trim_end_matches('/').to_owned(),
            key: (!key.is_empty()).then(|| key.to_owned()),
            at: Dependency::meilisearch(url),
        })
    }

    fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        let request = self.http.request(method, format!("{}{path}", self.url));
        match &self.key {
            Some(key) => request.bearer_auth(key),
            None => request,
        }
    }

    /// Enqueues `documents` into `index`, each replacing the document of its `id`.
    pub async fn replace_documents(
        &self,
        index: &str,
        documents: &[Map<String, Value>],
    ) -> Result<Task, HandlerError> {
        let request = self
            .request(
                reqwest::Method::POST,
                &format!("/indexes/{index}/documents?primaryKey=id"),
            )
            .json(documents);
        self.enqueue(request, index).await
    }

    /// Enqueues the deletion of the documents `ids` of `index`.
    pub async fn delete_documents(&self, index: &str, ids: &[u32]) -> Result<Task, HandlerError> {
        let request = self
            .request(
                reqwest::Method::POST,
                &format!("/indexes/{index}/documents/delete-batch"),
            )
            .json(&json!(ids));
        self.enqueue(request, index).await
    }

    /// The settings of `index`; `None` when it does not exist.
    pub async fn settings(&self, index: &str) -> anyhow::Result<Option<Value>> {
        let response = self
            .request(reqwest::Method::GET, &format!("/indexes/{index}/settings"))
            .send()
            .await?;
        if response.status() == reqwest::StatusCode::NOT_FOUND {
            return Ok(None);
        }
        Ok(Some(response.error_for_status()?.json().await?))
    }

    /// Creates `index` with primary key `id`, and waits until it exists.
    pub async fn create_index(&self, index: &str) -> anyhow::Result<()> {
        let request = self
            .request(reqwest::Method::POST, "/indexes")
            .json(&json!({ "uid": index, "primaryKey": "id" }));
        let task = self
            .enqueue(request, index)
            .await
            .map_err(anyhow::Error::from)?;
        Ok(self.wait(task).await?)
    }

    /// Changes the settings of `index` to `settings`, and waits until they apply.
    pub async fn update_settings(&self, index: &str, settings: &Value) -> anyhow::Result<()> {
        let request = self
            .request(
                reqwest::Method::PATCH,
                &format!("/indexes/{index}/settings"),
            )
            .json(settings);
        let task = self
            .enqueue(request, index)
            .await
            .map_err(anyhow::Error::from)?;
        Ok(self.wait(task).await?)
    }

    /// Deletes `index` and waits until it is gone (a missing index is not an error).
    pub async fn delete_index(&self, index: &str) -> Result<(), HandlerError> {
        let request = self.request(reqwest::Method::DELETE, &format!("/indexes/{index}"));
        let response = request
            .send()
            .await
            .map_err(|e| self.transient(format!("index {index}: {e}")))?;
        if response.status() == reqwest::StatusCode::NOT_FOUND {
            return Ok(());
        }
        let task = self.enqueued(response, index).await?;
        self.wait(task).await
    }

    /// Swaps the names of the indexes `a` and `b` (both must exist) in one atomic task, and
    /// waits until it is done: searches of either name never see a missing or half-built index.
    pub async fn swap_indexes(&self, a: &str, b: &str) -> Result<(), HandlerError> {
        let request = self
            .request(reqwest::Method::POST, "/swap-indexes")
            .json(&json!([{ "indexes": [a, b] }]));
        let task = self.enqueue(request, a).await?;
        self.wait(task).await
    }

    /// The document `id` of `index`; `None` when it or the index does not exist.
    pub async fn document(&self, index: &str, id: &str) -> Result<Option<Value>, HandlerError> {
        let response = self
            .request(
                reqwest::Method::GET,
                &format!("/indexes/{index}/documents/{id}"),
            )
            .send()
            .await
            .map_err(|e| self.transient(format!("index {index}: {e}")))?;
        if response.status() == reqwest::StatusCode::NOT_FOUND {
            return Ok(None);
        }
        let response = response
            .error_for_status()
            .map_err(|e| self.transient(format!("index {index}: {e}")))?;
        let document = response
            .json()
            .await
            .map_err(|e| self.transient(format!("index {index}: document {id}: {e}")))?;
        Ok(Some(document))
    }

    /// Enqueues the deletion of the documents `ids` (strings) of `index`.
    pub async fn delete_documents_by_key(
        &self,
        index: &str,
        ids: &[&str],
    ) -> Result<Task, HandlerError> {
        let request = self
            .request(
                reqwest::Method::POST,
                &format!("/indexes/{index}/documents/delete-batch"),
            )
            .json(&json!(ids));
        self.enqueue(request, index).await
    }

    async fn enqueue(
        &self,
        request: reqwest::RequestBuilder,
        index: &str,
    ) -> Result<Task, HandlerError> {
        let response = request
            .send()
            .await
            .map_err(|e| self.transient(format!("index {index}: {e}")))?;
        self.enqueued(response, index).await
    }

    /// The task an answer to an enqueuing request names, or its error classified.
    async fn enqueued(
        &self,
        response: reqwest::Response,
        index: &str,
    ) -> Result<Task, HandlerError> {
        let status = response.status();
        if status.is_success() {
            let enqueued: Enqueued = response
                .json()
                .await
                .map_err(|e| self.transient(format!("index {index}: enqueue answer: {e}")))?;
            return Ok(Task(enqueued.task_uid));
        }
        let body = response.text().await.unwrap_or_default();
        let error: ApiError = serde_json::from_str(&body).unwrap_or(ApiError {
            message: body,
            code: String::new(),
        });
        Err(self.classify(
            &error,
            &format!("index {index}: HTTP {status}: {}", error.message),
        ))
    }

    /// Waits until `task` is done: `Ok` once it succeeded. A deletion from an index that does
    /// not exist succeeded too (nothing was there).
    pub async fn wait(&self, task: Task) -> Result<(), HandlerError> {
        let mut pause = Duration::from_millis(1);
        loop {
            let state: TaskState = self
                .request(reqwest::Method::GET, &format!("/tasks/{}", task.0))
                .send()
                .await
                .and_then(reqwest::Response::error_for_status)
                .map_err(|e| self.transient(format!("task {}: {e}", task.0)))?
                .json()
                .await
                .map_err(|e| self.transient(format!("task {}: {e}", task.0)))?;
            match state.status.as_str() {
                "succeeded" => return Ok(()),
                "failed" | "canceled" => {
                    let error = state.error.unwrap_or(ApiError {
                        message: format!("task {}", state.status),
                        code: String::new(),
                    });
                    if error.code == "index_not_found" {
                        return Ok(());
                    }
                    return Err(self.classify(
                        &error,
                        &format!("task {} {}: {}", task.0, state.status, error.message),
                    ));
                }
                _ => {
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(MAX_POLL);
                }
            }
        }
    }

    fn classify(&self, error: &ApiError, message: &str) -> HandlerError {
        let failure = anyhow::anyhow!("{message}");
        if DOCUMENT_ERRORS.contains(&error.code.as_str()) {
            HandlerError::Permanent(failure).at(&self.at)
        } else {
            HandlerError::Transient(failure).at(&self.at)
        }
    }

    fn transient(&self, message: String) -> HandlerError {
        HandlerError::Transient(anyhow::anyhow!(message)).at(&self.at)
    }
}
