//! Building the router and running the server.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use brigade_core::{Clock, Limits, SystemClock};
use brigade_store::{Remote, Store};
use tokio::net::TcpListener;
use tokio::sync::{Notify, Semaphore};
use tower_http::sensitive_headers::SetSensitiveRequestHeadersLayer;
use tower_http::trace::TraceLayer;
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use utoipa_swagger_ui::SwaggerUi;

use crate::auth::RateLimiter;
use crate::bus::Bus;
use crate::config::ServerConfig;
use crate::dispatcher::Dispatcher;
use crate::error::ApiError;
use crate::heartbeats::Heartbeats;
use crate::metrics::{Metrics, track_http};
use crate::openapi::ApiDoc;
use crate::routes::{
    events, jobs, languages, limits, ops, queues, schedules, tasks, token, workers,
};
use crate::state::{AppState, Publisher};

/// Errors starting a server.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The database could not be opened.
    #[error("cannot open the database: {0}")]
    Store(#[from] brigade_store::StoreError),
    /// Open mode (no tokens) on an address others can reach.
    #[error(
        "refusing to listen on {0} with no tokens configured: anyone who can reach it could run \
         anything. Give --auth-file (see `brigade token create`), listen on 127.0.0.1, \
         or pass --insecure if this network is trusted"
    )]
    Insecure(SocketAddr),
    /// TLS material could not be loaded.
    #[error(transparent)]
    Tls(#[from] crate::serve::TlsError),
    /// The address could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// Address asked for.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
}

/// A server that is running.
pub struct RunningServer {
    /// Where it listens (the real port when 0 was asked for).
    pub addr: SocketAddr,
    /// Completes when the server stops.
    pub task: tokio::task::JoinHandle<std::io::Result<()>>,
}

/// The router and the OpenAPI document it serves.
pub fn router(state: AppState) -> Router {
    let (api_router, openapi) = OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(jobs::submit, jobs::list))
        .routes(routes!(jobs::get, jobs::delete))
        .routes(routes!(jobs::tasks))
        .routes(routes!(jobs::cancel))
        .routes(routes!(tasks::list))
        .routes(routes!(tasks::retry_matching))
        .routes(routes!(tasks::cancel_matching))
        .routes(routes!(jobs::callbacks))
        .routes(routes!(tasks::get))
        .routes(routes!(tasks::cancel))
        .routes(routes!(tasks::retry))
        .routes(routes!(tasks::logs))
        .routes(routes!(workers::join, workers::list))
        .routes(routes!(workers::get, workers::leave))
        .routes(routes!(workers::lease))
        .routes(routes!(workers::heartbeat))
        .routes(routes!(workers::results))
        .routes(routes!(workers::logs))
        .routes(routes!(workers::progress))
        .routes(routes!(workers::parents))
        .routes(routes!(workers::drain))
        .routes(routes!(languages::list))
        .routes(routes!(limits::list))
        .routes(routes!(limits::get, limits::set, limits::delete))
        .routes(routes!(queues::list))
        .routes(routes!(queues::pause))
        .routes(routes!(queues::resume))
        .routes(routes!(schedules::create, schedules::list))
        .routes(routes!(
            schedules::get,
            schedules::update,
            schedules::delete
        ))
        .routes(routes!(schedules::pause))
        .routes(routes!(schedules::resume))
        .routes(routes!(schedules::trigger))
        .routes(routes!(schedules::jobs))
        .routes(routes!(events::sse))
        .routes(routes!(events::throughput))
        .routes(routes!(events::ws))
        .routes(routes!(ops::healthz))
        .routes(routes!(ops::readyz))
        .routes(routes!(ops::metrics))
        .routes(routes!(token::token))
        .split_for_parts();
    let mut openapi = openapi;
    crate::openapi::document_common(&mut openapi);
    let openapi = Arc::new(openapi);
    let doc = openapi.clone();
    let body_limit = state.config.max_body_bytes;
    let request_timeout = state.config.request_timeout;
    api_router
        .route(
            "/openapi.json",
            get(move || async move { axum::Json((*doc).clone()) }),
        )
        .merge(SwaggerUi::new("/docs"))
        .merge(crate::dashboard::router())
        .fallback(|| async {
            ApiError::new(
                StatusCode::NOT_FOUND,
                "no such route; see /docs for the API",
            )
        })
        .method_not_allowed_fallback(|| async {
            ApiError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "this route does not take that method; see /docs",
            )
        })
        .layer(DefaultBodyLimit::max(body_limit))
        .layer(axum::middleware::from_fn_with_state(
            request_timeout,
            time_limit,
        ))
        .layer(axum::middleware::from_fn(track_http))
        // Spans name the path only: a query may hold `access_token`.
        .layer(TraceLayer::new_for_http().make_span_with(|req: &axum::http::Request<_>| {
            tracing::info_span!("request", method = %req.method(), path = %req.uri().path())
        }))
        .layer(SetSensitiveRequestHeadersLayer::new([
            header::AUTHORIZATION,
            header::COOKIE,
        ]))
        .with_state(state)
}

/// Whether a request may be held open long: lease and job long-polls, event streams.
fn is_long(req: &axum::extract::Request) -> bool {
    let path = req.uri().path();
    path.starts_with("/v1/events")
        || path.ends_with("/lease")
        || (path.starts_with("/v1/jobs/")
            && req.uri().query().is_some_and(|q| q.contains("wait_ms")))
}

/// Long-polls wait at most 60 s; this is their limit, margin included.
const LONG_POLL_LIMIT: std::time::Duration = std::time::Duration::from_secs(75);

/// A time limit on every request (reading its body included), against slow clients;
/// long-polls get a longer one and event streams none.
async fn time_limit(
    axum::extract::State(limit): axum::extract::State<std::time::Duration>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    let limit = if req.uri().path().starts_with("/v1/events") {
        return next.run(req).await;
    } else if is_long(&req) {
        LONG_POLL_LIMIT.max(limit)
    } else {
        limit
    };
    match tokio::time::timeout(limit, next.run(req)).await {
        Ok(res) => res,
        Err(_) => ApiError::new(
            StatusCode::REQUEST_TIMEOUT,
            format!("the request took longer than {} ms", limit.as_millis()),
        )
        .into_response(),
    }
}

/// Open the store, bind, start the background duties and serve until `shutdown` completes.
pub async fn start(
    config: ServerConfig,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<RunningServer, StartError> {
    let store = brigade_store::open(&config.database_url).await?;
    start_with(config, store, Arc::new(SystemClock), shutdown).await
}

/// Like [`start`], on a given store and clock.
pub async fn start_with(
    config: ServerConfig,
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<RunningServer, StartError> {
    if config.auth.is_open() && !config.listen.ip().is_loopback() && !config.insecure {
        return Err(StartError::Insecure(config.listen));
    }
    store.set_poison_after(config.poison_after);
    store.set_clock(clock.clone());
    let tls = match &config.tls {
        Some(files) => Some(crate::serve::tls_acceptor(&files.cert, &files.key)?),
        None => None,
    };
    let listener = TcpListener::bind(config.listen)
        .await
        .map_err(|source| StartError::Bind {
            addr: config.listen,
            source,
        })?;
    let addr = listener.local_addr().map_err(|source| StartError::Bind {
        addr: config.listen,
        source,
    })?;
    let (dispatcher, inbox) = Dispatcher::channel();
    let scheduled = Arc::new(Notify::new());
    let publisher = Publisher {
        bus: Bus::new(),
        dispatcher,
        scheduled: scheduled.clone(),
        schedules: Arc::new(Notify::new()),
        metrics: Metrics::install(),
        worker_owners: Default::default(),
        history: Default::default(),
    };
    let limits = Limits {
        max_tasks_per_job: config.max_tasks_per_job,
        max_input_bytes: config.max_input_bytes,
    };
    let state = AppState {
        store: store.clone(),
        clock: clock.clone(),
        limiter: Arc::new(RateLimiter::new(
            config.rate_limit_per_s,
            config.worker_rate_limit_per_s,
        )),
        long_polls: Arc::new(Semaphore::new(config.max_long_polls)),
        heartbeats: Heartbeats::spawn(
            store.clone(),
            clock.clone(),
            config.heartbeat_ms,
            config.lease_ttl_ms as i64,
        ),
        worker_owners: publisher.worker_owners.clone(),
        closing: Default::default(),
        config: Arc::new(config),
        publisher,
        limits,
    };
    if let Some(remote) = store.remote() {
        tokio::spawn(forward_remote(remote, state.publisher.clone()));
    }
    Dispatcher::spawn(
        inbox,
        store,
        clock,
        state.config.lease_ttl_ms as i64,
        std::time::Duration::from_millis(state.config.heartbeat_ms),
        {
            let publisher = state.publisher.clone();
            Arc::new(move |changes| publisher.publish(changes))
        },
    );
    crate::duties::spawn(state.clone(), scheduled);
    crate::callbacks::spawn(state.clone());
    let header_timeout = state.config.header_read_timeout;
    // Waiting long-polls are answered as soon as shutdown begins: the
    // graceful shutdown then only has short requests to finish.
    let dispatcher = state.publisher.dispatcher.clone();
    let closing = state.closing.clone();
    let shutdown = async move {
        shutdown.await;
        tracing::info!("shutting down: answering waiting long-polls, finishing requests");
        dispatcher.shut_down();
        closing.cancel();
    };
    let app = router(state);
    let task = tokio::spawn(crate::serve::serve(
        listener,
        app,
        tls,
        header_timeout,
        shutdown,
    ));
    Ok(RunningServer { addr, task })
}

/// Changes other servers made to the shared database reach this server's
/// live events and wake its waiting workers and promoter.
async fn forward_remote(
    mut remote: tokio::sync::broadcast::Receiver<Remote>,
    publisher: Publisher,
) {
    use tokio::sync::broadcast::error::RecvError;
    loop {
        match remote.recv().await {
            Ok(Remote::Event(event)) => {
                publisher.follow(&event, true);
                publisher.metrics.event(&event);
                publisher.history.record(&event);
                publisher.bus.publish(event);
            }
            Ok(Remote::Ready) => publisher.dispatcher.wake(),
            Ok(Remote::Scheduled) => publisher.scheduled.notify_one(),
            Err(RecvError::Lagged(missed)) => {
                tracing::warn!(
                    missed,
                    "fell behind other servers' notifications; re-checking"
                );
                publisher.dispatcher.wake();
                publisher.scheduled.notify_one();
            }
            Err(RecvError::Closed) => return,
        }
    }
}
