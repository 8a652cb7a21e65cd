//! A typed HTTP client for the brigade API, shared by the CLI, the worker and the tests.
//!
//! It speaks the contract of `brigade-api` over reqwest, turns problem+json
//! errors into [`ClientError::Api`], and fails over between several server
//! URLs when one cannot be reached.

pub mod workflow;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use brigade_api::{
    CancelledReply, Heartbeat, HeartbeatReply, JobSubmit, JobView, LeaseRequest, LeaseResponse,
    LimitSpec, LimitView, LogBatch, LogLine, LogsReply, LogsRequest, Page, Problem, QueueView,
    ResultsReply, ResultsRequest, RetriedReply, ScheduleCreate, SchedulePatch, ScheduleView,
    TaskFilterSpec, TaskResult, TaskView, WorkerJoin, WorkerJoined, WorkerView,
};
use reqwest::{Method, RequestBuilder, StatusCode};
use serde::Serialize;
use serde::de::DeserializeOwned;

/// What can go wrong talking to a server.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// No server could be reached.
    #[error("cannot reach the brigade server at {url}: {source}")]
    Unreachable {
        /// The last URL tried.
        url: String,
        /// Why.
        source: reqwest::Error,
    },
    /// The server answered with an error.
    #[error("{} {}: {}", .problem.status, .problem.title, .problem.detail)]
    Api {
        /// HTTP status.
        status: StatusCode,
        /// Its problem document.
        problem: Box<Problem>,
    },
    /// The request failed mid-way or the answer was not what the contract says.
    #[error("bad response from {url}: {message}")]
    Protocol {
        /// URL asked.
        url: String,
        /// What was wrong.
        message: String,
    },
    /// The client was configured wrongly.
    #[error("{0}")]
    Config(String),
}

impl ClientError {
    /// HTTP status of an API error.
    pub fn status(&self) -> Option<StatusCode> {
        match self {
            ClientError::Api { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// Whether trying again later may succeed (server unreachable, 5xx, 429).
    pub fn is_transient(&self) -> bool {
        match self {
            ClientError::Unreachable { .. } | ClientError::Protocol { .. } => true,
            ClientError::Api { status, .. } => {
                status.is_server_error() || *status == StatusCode::TOO_MANY_REQUESTS
            }
            ClientError::Config(_) => false,
        }
    }
}

/// Result of a client call.
pub type Result<T, E = ClientError> = std::result::Result<T, E>;

/// Default time limit of a request that does not long-poll.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);
/// Every item of a paged list, in order: `page(cursor)` fetches one page.
async fn every_page<T, F, Fut>(mut page: F) -> Result<Vec<T>>
where
    F: FnMut(Option<String>) -> Fut,
    Fut: std::future::Future<Output = Result<Page<T>>>,
{
    let mut all = Vec::new();
    let mut cursor = None;
    loop {
        let p = page(cursor.take()).await?;
        all.extend(p.items);
        match p.next_cursor {
            Some(c) => cursor = Some(c),
            None => return Ok(all),
        }
    }
}

/// Margin added to a long-poll's wait for its request time limit.
const LONG_POLL_MARGIN: Duration = Duration::from_secs(15);

/// Filters of [`Client::jobs`].
#[derive(Debug, Clone, Default, Serialize)]
pub struct JobQuery {
    /// Only jobs in this state.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub state: Option<String>,
    /// Only jobs with this name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// `key:value`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
    /// Page size.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub limit: Option<u32>,
    /// Page cursor.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cursor: Option<String>,
}

/// What [`Client::submit_outcome`] answers.
#[derive(Debug, Clone)]
pub struct SubmitOutcome {
    /// The new job, or the earlier one answered instead.
    pub job: JobView,
    /// Whether this submit created it (201).
    pub created: bool,
    /// The earlier job holding the `unique` key, from `Brigade-Duplicate-Of`.
    pub duplicate_of: Option<String>,
}

/// Filters of [`Client::tasks`] (`GET /v1/tasks`).
#[derive(Debug, Clone, Default, Serialize)]
pub struct TaskQuery {
    /// Only tasks in this state.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub state: Option<String>,
    /// Only tasks of this kind.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// Only tasks in this queue.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub queue: Option<String>,
    /// Only tasks whose error is of this kind.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error_kind: Option<String>,
    /// Only tasks of this job.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub job: Option<String>,
    /// Only tasks created at or after this time (RFC 3339).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub since: Option<String>,
    /// Page size.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub limit: Option<u32>,
    /// Page cursor.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cursor: Option<String>,
}

/// A brigade API client. Cheap to clone.
#[derive(Clone)]
pub struct Client {
    http: reqwest::Client,
    bases: Arc<Vec<String>>,
    current: Arc<AtomicUsize>,
    token: Option<Arc<str>>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("servers", &self.bases)
            .finish_non_exhaustive()
    }
}

/// Extra settings of a [`Client`].
#[derive(Debug, Clone, Default)]
pub struct ClientOptions {
    /// A CA certificate (PEM) to trust for `https://` servers, in addition to the
    /// public roots: for servers with a self-signed or private-CA certificate.
    pub ca_cert_pem: Option<Vec<u8>>,
}

impl ClientOptions {
    /// Options trusting the CA certificate in the PEM file at `path`.
    pub fn with_ca_cert_file(path: &std::path::Path) -> Result<Self> {
        let pem = std::fs::read(path).map_err(|e| {
            ClientError::Config(format!(
                "cannot read the CA certificate {}: {e}",
                path.display()
            ))
        })?;
        Ok(Self {
            ca_cert_pem: Some(pem),
        })
    }
}

impl Client {
    /// A client of the servers in `urls` (comma-separated, tried in turn when one is unreachable).
    pub fn new(urls: &str, token: Option<String>) -> Result<Self> {
        Self::with_options(urls, token, ClientOptions::default())
    }

    /// Like [`Client::new`], with [`ClientOptions`].
    pub fn with_options(urls: &str, token: Option<String>, options: ClientOptions) -> Result<Self> {
        let bases: Vec<String> = urls
            .split(',')
            .map(|u| u.trim().trim_end_matches('/').to_owned())
            .filter(|u| !u.is_empty())
            .collect();
        if bases.is_empty() {
            return Err(ClientError::Config("no server URL given".into()));
        }
        for b in &bases {
            if !(b.starts_with("http://") || b.starts_with("https://")) {
                return Err(ClientError::Config(format!(
                    "{b}: a server URL starts with http:// or https://"
                )));
            }
        }
        let mut builder = reqwest::Client::builder()
            .pool_max_idle_per_host(64)
            .tcp_nodelay(true)
            .connect_timeout(Duration::from_secs(5));
        if let Some(pem) = &options.ca_cert_pem {
            let certs = reqwest::Certificate::from_pem_bundle(pem).map_err(|e| {
                ClientError::Config(format!("the CA certificate is not valid PEM: {e}"))
            })?;
            if certs.is_empty() {
                return Err(ClientError::Config(
                    "the CA certificate file holds no certificate".into(),
                ));
            }
            for c in certs {
                builder = builder.add_root_certificate(c);
            }
        }
        let http = builder
            .build()
            .map_err(|e| ClientError::Config(format!("cannot build the HTTP client: {e}")))?;
        Ok(Self {
            http,
            bases: Arc::new(bases),
            current: Arc::new(AtomicUsize::new(0)),
            token: token.filter(|t| !t.is_empty()).map(Arc::from),
        })
    }

    /// The server URL in use now.
    pub fn base_url(&self) -> &str {
        let i = self.current.load(Ordering::Relaxed) % self.bases.len();
        &self.bases[i]
    }

    async fn send<B: Serialize + ?Sized>(
        &self,
        method: Method,
        path: &str,
        query: Option<&(dyn erased::Query + Sync)>,
        body: Option<&B>,
        timeout: Duration,
        headers: &[(&str, &str)],
    ) -> Result<reqwest::Response> {
        let n = self.bases.len();
        let start = self.current.load(Ordering::Relaxed);
        let mut last = None;
        for k in 0..n {
            let i = (start + k) % n;
            let url = format!("{}{}", self.bases[i], path);
            let mut req: RequestBuilder = self.http.request(method.clone(), &url).timeout(timeout);
            if let Some(t) = &self.token {
                req = req.bearer_auth(t);
            }
            for (k, v) in headers {
                req = req.header(*k, *v);
            }
            if let Some(q) = query {
                req = q.apply(req);
            }
            if let Some(b) = body {
                req = req.json(b);
            }
            match req.send().await {
                Ok(res) => {
                    if k > 0 {
                        self.current.store(i, Ordering::Relaxed);
                    }
                    return Ok(res);
                }
                // Only a failure to connect is safe to repeat elsewhere: the request never arrived.
                Err(e) if e.is_connect() => last = Some((url, e)),
                Err(e) => return Err(ClientError::Unreachable { url, source: e }),
            }
        }
        match last {
            Some((url, source)) => Err(ClientError::Unreachable { url, source }),
            None => Err(ClientError::Config("no server URL".into())),
        }
    }

    async fn decode<T: DeserializeOwned>(res: reqwest::Response) -> Result<T> {
        let url = res.url().to_string();
        let status = res.status();
        let bytes = res.bytes().await.map_err(|e| ClientError::Protocol {
            url: url.clone(),
            message: e.to_string(),
        })?;
        if status.is_success() {
            serde_json::from_slice(&bytes).map_err(|e| ClientError::Protocol {
                url,
                message: e.to_string(),
            })
        } else {
            Err(Self::problem(status, &bytes))
        }
    }

    fn problem(status: StatusCode, bytes: &[u8]) -> ClientError {
        let problem = serde_json::from_slice::<Problem>(bytes).unwrap_or_else(|_| Problem {
            kind: "about:blank".into(),
            title: status.canonical_reason().unwrap_or("Error").into(),
            status: status.as_u16(),
            detail: String::from_utf8_lossy(bytes).chars().take(500).collect(),
            errors: Vec::new(),
        });
        ClientError::Api {
            status,
            problem: Box::new(problem),
        }
    }

    async fn no_content(res: reqwest::Response) -> Result<()> {
        let status = res.status();
        if status.is_success() {
            return Ok(());
        }
        let bytes = res.bytes().await.unwrap_or_default();
        Err(Self::problem(status, &bytes))
    }

    async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T> {
        let res = self
            .send::<()>(Method::GET, path, None, None, DEFAULT_TIMEOUT, &[])
            .await?;
        Self::decode(res).await
    }

    async fn post<B: Serialize + ?Sized, T: DeserializeOwned>(
        &self,
        path: &str,
        body: Option<&B>,
    ) -> Result<T> {
        let res = self
            .send(Method::POST, path, None, body, DEFAULT_TIMEOUT, &[])
            .await?;
        Self::decode(res).await
    }

    /// `DELETE path`, expecting 204.
    async fn delete(&self, path: &str) -> Result<()> {
        let res = self
            .send::<()>(Method::DELETE, path, None, None, DEFAULT_TIMEOUT, &[])
            .await?;
        Self::no_content(res).await
    }

    // ---- jobs ----

    /// Submit a job; with `idempotency_key`, a repeat returns the first job.
    pub async fn submit(&self, job: &JobSubmit, idempotency_key: Option<&str>) -> Result<JobView> {
        Ok(self.submit_outcome(job, idempotency_key).await?.job)
    }

    /// Submit a job and learn whether it was created: `duplicate_of` names
    /// the earlier job that holds its `unique` key (then that job is returned).
    pub async fn submit_outcome(
        &self,
        job: &JobSubmit,
        idempotency_key: Option<&str>,
    ) -> Result<SubmitOutcome> {
        let headers: Vec<(&str, &str)> = idempotency_key
            .map(|k| ("Idempotency-Key", k))
            .into_iter()
            .collect();
        let res = self
            .send(
                Method::POST,
                "/v1/jobs",
                None,
                Some(job),
                DEFAULT_TIMEOUT * 4,
                &headers,
            )
            .await?;
        let created = res.status() == StatusCode::CREATED;
        let duplicate_of = res
            .headers()
            .get("brigade-duplicate-of")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let job = Self::decode(res).await?;
        Ok(SubmitOutcome {
            job,
            created,
            duplicate_of,
        })
    }

    /// A job.
    pub async fn job(&self, id: &str) -> Result<JobView> {
        self.get(&format!("/v1/jobs/{}", enc(id))).await
    }

    /// `GET path?wait_ms=`: a read the server holds until the thing is
    /// finished or `wait` (at most 60 s) passes.
    async fn long_poll<T: serde::de::DeserializeOwned>(
        &self,
        path: &str,
        wait: Duration,
    ) -> Result<T> {
        let ms = wait.as_millis().min(60_000) as u64;
        let q = [("wait_ms", ms.to_string())];
        let res = self
            .send::<()>(
                Method::GET,
                path,
                Some(&q),
                None,
                wait + LONG_POLL_MARGIN,
                &[],
            )
            .await?;
        Self::decode(res).await
    }

    /// A job, waiting up to `wait` for it to finish.
    pub async fn wait_job(&self, id: &str, wait: Duration) -> Result<JobView> {
        self.long_poll(&format!("/v1/jobs/{}", enc(id)), wait).await
    }

    /// Jobs, newest first.
    pub async fn jobs(&self, query: &JobQuery) -> Result<Page<JobView>> {
        let res = self
            .send::<()>(
                Method::GET,
                "/v1/jobs",
                Some(query),
                None,
                DEFAULT_TIMEOUT,
                &[],
            )
            .await?;
        Self::decode(res).await
    }

    /// One page of a job's tasks.
    pub async fn job_tasks_page(
        &self,
        id: &str,
        state: Option<&str>,
        limit: u32,
        cursor: Option<&str>,
    ) -> Result<Page<TaskView>> {
        let mut q: Vec<(&str, String)> = vec![("limit", limit.to_string())];
        if let Some(s) = state {
            q.push(("state", s.to_owned()));
        }
        if let Some(c) = cursor {
            q.push(("cursor", c.to_owned()));
        }
        let path = format!("/v1/jobs/{}/tasks", enc(id));
        let res = self
            .send::<()>(Method::GET, &path, Some(&q), None, DEFAULT_TIMEOUT, &[])
            .await?;
        Self::decode(res).await
    }

    /// Every task of a job, following pages.
    pub async fn job_tasks(&self, id: &str, state: Option<&str>) -> Result<Vec<TaskView>> {
        every_page(|c| async move { self.job_tasks_page(id, state, 1000, c.as_deref()).await })
            .await
    }

    /// Cancel a job.
    pub async fn cancel_job(&self, id: &str) -> Result<JobView> {
        self.post::<(), _>(&format!("/v1/jobs/{}/cancel", enc(id)), None)
            .await
    }

    /// Delete a finished job.
    pub async fn delete_job(&self, id: &str) -> Result<()> {
        self.delete(&format!("/v1/jobs/{}", enc(id))).await
    }

    // ---- schedules ----

    /// Create a schedule.
    pub async fn create_schedule(&self, schedule: &ScheduleCreate) -> Result<ScheduleView> {
        self.post("/v1/schedules", Some(schedule)).await
    }

    /// A schedule.
    pub async fn schedule(&self, id: &str) -> Result<ScheduleView> {
        self.get(&format!("/v1/schedules/{}", enc(id))).await
    }

    /// One page of schedules, oldest first.
    pub async fn schedules_page(
        &self,
        limit: u32,
        cursor: Option<&str>,
    ) -> Result<Page<ScheduleView>> {
        let mut q: Vec<(&str, String)> = vec![("limit", limit.to_string())];
        if let Some(c) = cursor {
            q.push(("cursor", c.to_owned()));
        }
        let res = self
            .send::<()>(
                Method::GET,
                "/v1/schedules",
                Some(&q),
                None,
                DEFAULT_TIMEOUT,
                &[],
            )
            .await?;
        Self::decode(res).await
    }

    /// Every schedule the caller may see, following pages.
    pub async fn schedules(&self) -> Result<Vec<ScheduleView>> {
        every_page(|c| async move {
            self.schedules_page(brigade_api::page::MAX_LIMIT, c.as_deref())
                .await
        })
        .await
    }

    /// Change a schedule.
    pub async fn update_schedule(&self, id: &str, patch: &SchedulePatch) -> Result<ScheduleView> {
        let res = self
            .send(
                Method::PATCH,
                &format!("/v1/schedules/{}", enc(id)),
                None,
                Some(patch),
                DEFAULT_TIMEOUT,
                &[],
            )
            .await?;
        Self::decode(res).await
    }

    /// Delete a schedule (its jobs stay).
    pub async fn delete_schedule(&self, id: &str) -> Result<()> {
        self.delete(&format!("/v1/schedules/{}", enc(id))).await
    }

    /// Pause a schedule.
    pub async fn pause_schedule(&self, id: &str) -> Result<ScheduleView> {
        self.post::<(), _>(&format!("/v1/schedules/{}/pause", enc(id)), None)
            .await
    }

    /// Resume a schedule.
    pub async fn resume_schedule(&self, id: &str) -> Result<ScheduleView> {
        self.post::<(), _>(&format!("/v1/schedules/{}/resume", enc(id)), None)
            .await
    }

    /// Fire a schedule now; the job it created.
    pub async fn trigger_schedule(&self, id: &str) -> Result<JobView> {
        self.post::<(), _>(&format!("/v1/schedules/{}/trigger", enc(id)), None)
            .await
    }

    /// One page of the jobs a schedule created, newest first.
    pub async fn schedule_jobs_page(
        &self,
        id: &str,
        limit: u32,
        cursor: Option<&str>,
    ) -> Result<Page<JobView>> {
        let mut q: Vec<(&str, String)> = vec![("limit", limit.to_string())];
        if let Some(c) = cursor {
            q.push(("cursor", c.to_owned()));
        }
        let path = format!("/v1/schedules/{}/jobs", enc(id));
        let res = self
            .send::<()>(Method::GET, &path, Some(&q), None, DEFAULT_TIMEOUT, &[])
            .await?;
        Self::decode(res).await
    }

    /// Every job a schedule created, newest first, following pages.
    pub async fn schedule_jobs(&self, id: &str) -> Result<Vec<JobView>> {
        every_page(|c| async move {
            self.schedule_jobs_page(id, brigade_api::page::MAX_LIMIT, c.as_deref())
                .await
        })
        .await
    }

    /// The delivery attempts of a job's callback, oldest first.
    pub async fn job_callbacks(&self, id: &str) -> Result<Vec<brigade_api::CallbackAttempt>> {
        self.get(&format!("/v1/jobs/{}/callbacks", enc(id))).await
    }

    // ---- tasks ----

    /// A task with its history.
    pub async fn task(&self, id: &str) -> Result<TaskView> {
        self.get(&format!("/v1/tasks/{}", enc(id))).await
    }

    /// A task, waiting up to `wait` for it to finish (succeeded, failed or
    /// cancelled): one request that the task's finish answers.
    pub async fn wait_task(&self, id: &str, wait: Duration) -> Result<TaskView> {
        self.long_poll(&format!("/v1/tasks/{}", enc(id)), wait)
            .await
    }

    /// Cancel a task.
    pub async fn cancel_task(&self, id: &str) -> Result<TaskView> {
        self.post::<(), _>(&format!("/v1/tasks/{}/cancel", enc(id)), None)
            .await
    }

    /// Retry a failed or cancelled task.
    pub async fn retry_task(&self, id: &str) -> Result<TaskView> {
        self.post::<(), _>(&format!("/v1/tasks/{}/retry", enc(id)), None)
            .await
    }

    /// One page of tasks across jobs, newest first.
    pub async fn tasks(&self, query: &TaskQuery) -> Result<Page<TaskView>> {
        let res = self
            .send::<()>(
                Method::GET,
                "/v1/tasks",
                Some(query),
                None,
                DEFAULT_TIMEOUT,
                &[],
            )
            .await?;
        Self::decode(res).await
    }

    /// Retry every failed or cancelled task matching `filter` (admin); how many.
    pub async fn retry_tasks(&self, filter: &TaskFilterSpec) -> Result<u64> {
        let res = self
            .send(
                Method::POST,
                "/v1/tasks/retry",
                None,
                Some(filter),
                DEFAULT_TIMEOUT * 4,
                &[],
            )
            .await?;
        Ok(Self::decode::<RetriedReply>(res).await?.retried)
    }

    /// Cancel every unfinished task matching `filter` (admin); how many.
    pub async fn cancel_tasks(&self, filter: &TaskFilterSpec) -> Result<u64> {
        let res = self
            .send(
                Method::POST,
                "/v1/tasks/cancel",
                None,
                Some(filter),
                DEFAULT_TIMEOUT * 4,
                &[],
            )
            .await?;
        Ok(Self::decode::<CancelledReply>(res).await?.cancelled)
    }

    /// One page of a task's log lines, oldest first.
    pub async fn task_logs_page(
        &self,
        id: &str,
        limit: u32,
        cursor: Option<&str>,
    ) -> Result<Page<LogLine>> {
        let mut q: Vec<(&str, String)> = vec![("limit", limit.to_string())];
        if let Some(c) = cursor {
            q.push(("cursor", c.to_owned()));
        }
        let path = format!("/v1/tasks/{}/logs", enc(id));
        let res = self
            .send::<()>(Method::GET, &path, Some(&q), None, DEFAULT_TIMEOUT, &[])
            .await?;
        Self::decode(res).await
    }

    /// Every log line of a task so far, following pages.
    pub async fn task_logs(&self, id: &str) -> Result<Vec<LogLine>> {
        every_page(|c| async move {
            self.task_logs_page(id, brigade_api::page::MAX_LIMIT, c.as_deref())
                .await
        })
        .await
    }

    /// Follow a task's log (`?follow=true`): its lines so far, then new ones as
    /// they are written, until the task is finished.
    pub async fn follow_task_logs(&self, id: &str) -> Result<LogFollow> {
        let path = format!("/v1/tasks/{}/logs", enc(id));
        let q = [("follow", "true")];
        let res = self
            .send::<()>(Method::GET, &path, Some(&q), None, FOLLOW_TIMEOUT, &[])
            .await?;
        let status = res.status();
        if !status.is_success() {
            let bytes = res.bytes().await.unwrap_or_default();
            return Err(Self::problem(status, &bytes));
        }
        Ok(LogFollow {
            url: res.url().to_string(),
            body: Box::pin(res.bytes_stream()),
            buf: Vec::new(),
            done: false,
        })
    }

    // ---- cluster ----

    /// Every worker.
    pub async fn workers(&self) -> Result<Vec<WorkerView>> {
        self.get("/v1/workers").await
    }

    /// The languages the cluster's `code` workers run now.
    pub async fn languages(&self) -> Result<Vec<brigade_api::LanguageView>> {
        self.get("/v1/languages").await
    }

    /// Every queue.
    pub async fn queues(&self) -> Result<Vec<QueueView>> {
        self.get("/v1/queues").await
    }

    // ---- limits ----

    /// Every limit with what its keys use now.
    pub async fn limits(&self) -> Result<Vec<LimitView>> {
        self.get("/v1/limits").await
    }

    /// One limit (`key`, or a pattern like `tenant:*`).
    pub async fn limit(&self, key: &str) -> Result<LimitView> {
        self.get(&format!("/v1/limits/{}", enc(key))).await
    }

    /// Set the limit of a key or pattern (admin).
    pub async fn set_limit(&self, key: &str, spec: &LimitSpec) -> Result<LimitView> {
        let res = self
            .send(
                Method::PUT,
                &format!("/v1/limits/{}", enc(key)),
                None,
                Some(spec),
                DEFAULT_TIMEOUT,
                &[],
            )
            .await?;
        Self::decode(res).await
    }

    /// Remove a limit (admin).
    pub async fn delete_limit(&self, key: &str) -> Result<()> {
        self.delete(&format!("/v1/limits/{}", enc(key))).await
    }

    /// Pause a queue.
    pub async fn pause_queue(&self, name: &str) -> Result<QueueView> {
        self.post::<(), _>(&format!("/v1/queues/{}/pause", enc(name)), None)
            .await
    }

    /// Resume a queue.
    pub async fn resume_queue(&self, name: &str) -> Result<QueueView> {
        self.post::<(), _>(&format!("/v1/queues/{}/resume", enc(name)), None)
            .await
    }

    /// Ask a worker to drain.
    pub async fn drain_worker(&self, id: &str) -> Result<WorkerView> {
        self.post::<(), _>(&format!("/v1/workers/{}/drain", enc(id)), None)
            .await
    }

    /// Whether the server is ready (storage reachable).
    pub async fn ready(&self) -> Result<()> {
        let res = self
            .send::<()>(
                Method::GET,
                "/readyz",
                None,
                None,
                Duration::from_secs(5),
                &[],
            )
            .await?;
        Self::no_content(res).await
    }

    // ---- worker protocol ----

    /// Join as a worker.
    pub async fn join(&self, join: &WorkerJoin) -> Result<WorkerJoined> {
        self.post("/v1/workers", Some(join)).await
    }

    /// Lease up to `max` tasks, waiting up to `wait`.
    pub async fn lease(&self, worker_id: &str, max: u32, wait: Duration) -> Result<LeaseResponse> {
        self.report_and_lease(worker_id, Vec::new(), max, wait)
            .await
    }

    /// Report finished tasks and lease up to `max` more in one request (the
    /// reply's `results` says what was recorded), waiting up to `wait` for
    /// work. With `max` 0 it leases nothing and waits for a cancel or a drain.
    pub async fn report_and_lease(
        &self,
        worker_id: &str,
        results: Vec<TaskResult>,
        max: u32,
        wait: Duration,
    ) -> Result<LeaseResponse> {
        let body = LeaseRequest {
            max,
            wait_ms: Some(wait.as_millis() as u64),
            results,
        };
        let path = format!("/v1/workers/{}/lease", enc(worker_id));
        let res = self
            .send(
                Method::POST,
                &path,
                None,
                Some(&body),
                wait + LONG_POLL_MARGIN,
                &[],
            )
            .await?;
        Self::decode(res).await
    }

    /// Heartbeat.
    pub async fn heartbeat(&self, worker_id: &str, hb: &Heartbeat) -> Result<HeartbeatReply> {
        self.post(
            &format!("/v1/workers/{}/heartbeat", enc(worker_id)),
            Some(hb),
        )
        .await
    }

    /// Report finished tasks.
    pub async fn results(&self, worker_id: &str, results: Vec<TaskResult>) -> Result<ResultsReply> {
        let body = ResultsRequest { results };
        self.post(
            &format!("/v1/workers/{}/results", enc(worker_id)),
            Some(&body),
        )
        .await
    }

    /// Report how far running tasks got.
    pub async fn progress(
        &self,
        worker_id: &str,
        progress: Vec<brigade_api::ProgressReport>,
    ) -> Result<ResultsReply> {
        let body = brigade_api::ProgressRequest { progress };
        self.post(
            &format!("/v1/workers/{}/progress", enc(worker_id)),
            Some(&body),
        )
        .await
    }

    /// A page of the parents (with their outputs) of a task this worker runs.
    pub async fn task_parents_page(
        &self,
        worker_id: &str,
        task_id: &str,
        limit: u32,
        cursor: Option<&str>,
    ) -> Result<Page<brigade_api::ParentResult>> {
        let mut path = format!(
            "/v1/workers/{}/tasks/{}/parents?limit={limit}",
            enc(worker_id),
            enc(task_id)
        );
        if let Some(c) = cursor {
            path.push_str("&cursor=");
            path.push_str(&enc(c));
        }
        self.get(&path).await
    }

    /// Every parent (with its output) of a task this worker runs, page by page.
    pub async fn task_parents(
        &self,
        worker_id: &str,
        task_id: &str,
    ) -> Result<Vec<brigade_api::ParentResult>> {
        every_page(|c| async move {
            self.task_parents_page(worker_id, task_id, 1000, c.as_deref())
                .await
        })
        .await
    }

    /// Ship log lines of tasks running on this worker.
    pub async fn logs(&self, worker_id: &str, logs: Vec<LogBatch>) -> Result<LogsReply> {
        let body = LogsRequest { logs };
        self.post(&format!("/v1/workers/{}/logs", enc(worker_id)), Some(&body))
            .await
    }

    /// Leave.
    pub async fn leave(&self, worker_id: &str) -> Result<()> {
        self.delete(&format!("/v1/workers/{}", enc(worker_id)))
            .await
    }
}

/// Longest a followed log stream stays open.
const FOLLOW_TIMEOUT: Duration = Duration::from_secs(24 * 3600);

/// A followed task log (Server-Sent Events), from [`Client::follow_task_logs`].
pub struct LogFollow {
    url: String,
    body:
        std::pin::Pin<Box<dyn futures::Stream<Item = reqwest::Result<bytes::Bytes>> + Send + Sync>>,
    buf: Vec<u8>,
    done: bool,
}

impl LogFollow {
    /// The next line; `None` once the task is finished and every line was read.
    pub async fn next(&mut self) -> Result<Option<LogLine>> {
        use futures::StreamExt;
        loop {
            if self.done {
                return Ok(None);
            }
            // One SSE event ends at a blank line.
            if let Some(end) = self.buf.windows(2).position(|w| w == b"\n\n") {
                let event: Vec<u8> = self.buf.drain(..end + 2).collect();
                let text = String::from_utf8_lossy(&event);
                let mut kind = "message";
                let mut data = String::new();
                for line in text.lines() {
                    if let Some(v) = line.strip_prefix("event:") {
                        kind = v.trim();
                    } else if let Some(v) = line.strip_prefix("data:") {
                        data.push_str(v.strip_prefix(' ').unwrap_or(v));
                    }
                }
                match kind {
                    "log" => {
                        return serde_json::from_str(&data).map(Some).map_err(|e| {
                            ClientError::Protocol {
                                url: self.url.clone(),
                                message: e.to_string(),
                            }
                        });
                    }
                    "end" => self.done = true,
                    _ => {}
                }
                continue;
            }
            match self.body.next().await {
                Some(Ok(chunk)) => self.buf.extend_from_slice(&chunk),
                Some(Err(e)) => {
                    return Err(ClientError::Protocol {
                        url: self.url.clone(),
                        message: e.to_string(),
                    });
                }
                None => return Ok(None),
            }
        }
    }
}

/// Percent-encode a path segment.
fn enc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

mod erased {
    use reqwest::RequestBuilder;
    use serde::Serialize;

    /// Anything that can be a query string.
    pub trait Query {
        fn apply(&self, req: RequestBuilder) -> RequestBuilder;
    }

    impl<T: Serialize> Query for T {
        fn apply(&self, req: RequestBuilder) -> RequestBuilder {
            req.query(self)
        }
    }
}
