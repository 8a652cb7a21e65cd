//! `--otlp-endpoint URL`: jobs' traces exported over OTLP/HTTP (protobuf)
//! to `URL/v1/traces`, in batches.
//!
//! Only the spans of target `brigade_trace` (`job.submit`, `task.lease`,
//! `task.result` on the server, `task.run` on workers) are exported; the
//! log output is what it is without tracing. The batch processor runs on a
//! thread of its own; its HTTP requests run on the process's Tokio runtime
//! (reqwest needs one), so [`Otlp::shutdown`] is called while that runtime
//! still runs, after the command returned: what is left is sent then.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_http::{Bytes, HttpClient, HttpError, Request, Response};
use opentelemetry_otlp::{Protocol, WithExportConfig, WithHttpConfig};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_subscriber::Layer;
use tracing_subscriber::filter::Targets;

pub use brigade_core::trace::TARGET;

/// How long one export may take.
const EXPORT_TIMEOUT: Duration = Duration::from_secs(10);

/// How long the last batch may take to go at exit.
const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(10);

/// The running exporter; shut it down at exit to send what is left.
pub struct Otlp {
    provider: SdkTracerProvider,
}

impl Otlp {
    /// Export what is left and stop. Blocks: call it outside the runtime's
    /// tasks (the exports run on the runtime).
    pub fn shutdown(self) {
        if let Err(e) = self.provider.shutdown_with_timeout(SHUTDOWN_TIMEOUT) {
            eprintln!("warning: OTLP exporter shutdown: {e}");
        }
    }
}

/// `{endpoint}/v1/traces`, checked to be an http(s) URL.
pub fn traces_url(endpoint: &str) -> anyhow::Result<String> {
    let base = endpoint.trim().trim_end_matches('/');
    anyhow::ensure!(
        base.starts_with("http://") || base.starts_with("https://"),
        "--otlp-endpoint must be an http:// or https:// URL, not {endpoint:?}"
    );
    let url = format!("{base}/v1/traces");
    url.parse::<http::Uri>()
        .with_context(|| format!("--otlp-endpoint {endpoint:?}"))?;
    Ok(url)
}

/// The OpenTelemetry layer of service `service`, exporting to `endpoint`,
/// and the exporter to shut down at exit.
pub fn layer<S>(
    endpoint: &str,
    service: &'static str,
    runtime: tokio::runtime::Handle,
) -> anyhow::Result<(impl Layer<S>, Otlp)>
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
{
    let client = reqwest::Client::builder()
        .timeout(EXPORT_TIMEOUT)
        .build()
        .context("building the OTLP HTTP client")?;
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_protocol(Protocol::HttpBinary)
        .with_endpoint(traces_url(endpoint)?)
        .with_timeout(EXPORT_TIMEOUT)
        .with_http_client(OnRuntime {
            client,
            runtime: Arc::new(runtime),
        })
        .build()
        .context("building the OTLP exporter")?;
    let provider = SdkTracerProvider::builder()
        .with_resource(Resource::builder().with_service_name(service).build())
        .with_batch_exporter(exporter)
        .build();
    let tracer = provider.tracer(service);
    let layer = tracing_opentelemetry::layer()
        .with_tracer(tracer)
        .with_filter(Targets::new().with_target(TARGET, tracing::Level::TRACE));
    Ok((layer, Otlp { provider }))
}

/// reqwest on the process's runtime: the batch processor's thread has none.
#[derive(Debug, Clone)]
struct OnRuntime {
    client: reqwest::Client,
    runtime: Arc<tokio::runtime::Handle>,
}

#[async_trait::async_trait]
impl HttpClient for OnRuntime {
    async fn send_bytes(&self, request: Request<Bytes>) -> Result<Response<Bytes>, HttpError> {
        let client = self.client.clone();
        self.runtime
            .spawn(async move { client.send_bytes(request).await })
            .await?
    }
}

#[cfg(test)]
mod tests {
    use super::traces_url;

    #[test]
    fn the_traces_path_is_appended_once() {
        for (given, want) in [
            ("http://127.0.0.1:4318", "http://127.0.0.1:4318/v1/traces"),
            ("http://collector:4318/", "http://collector:4318/v1/traces"),
            ("https://o.example/otlp", "https://o.example/otlp/v1/traces"),
        ] {
            assert_eq!(traces_url(given).ok().as_deref(), Some(want));
        }
        assert!(traces_url("collector:4318").is_err());
        assert!(traces_url("").is_err());
    }
}
