//! Logs and traces: `tracing` to stderr, filtered by `RUST_LOG` (default `info`), as text
//! or, with `WEFT_LOG_FORMAT=json`, one JSON object per line (its span fields, such as
//! a run's `run_id` and a node's `node`, included). With `OTEL_EXPORTER_OTLP_ENDPOINT`
//! set, the same spans are exported over OTLP/HTTP (`OTEL_EXPORTER_OTLP_PROTOCOL`:
//! `http/json`, the default, or `http/protobuf`), batched on a thread of their own.

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_subscriber::{layer::SubscriberExt, util::SubscriberInitExt, EnvFilter, Layer};

/// Flushes and stops the trace export when dropped (at the end of `main`).
#[must_use = "traces are flushed when this is dropped"]
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

impl Drop for Telemetry {
    fn drop(&mut self) {
        if let Some(provider) = self.provider.take() {
            if let Err(err) = provider.shutdown() {
                eprintln!("could not flush the last traces: {err}");
            }
        }
    }
}

/// The OTLP exporter, when `OTEL_EXPORTER_OTLP_ENDPOINT` asks for one.
fn otlp() -> Option<SdkTracerProvider> {
    std::env::var("OTEL_EXPORTER_OTLP_ENDPOINT")
        .ok()
        .filter(|v| !v.is_empty())?;
    let exporter = match opentelemetry_otlp::SpanExporter::builder().build() {
        Ok(exporter) => exporter,
        Err(err) => {
            eprintln!("OTEL_EXPORTER_OTLP_ENDPOINT is set, but traces cannot be exported: {err}");
            return None;
        }
    };
    let resource = opentelemetry_sdk::Resource::builder().with_service_name("weft").build();
    Some(
        SdkTracerProvider::builder()
            .with_batch_exporter(exporter)
            .with_resource(resource)
            .build(),
    )
}

/// Installs the global subscriber; later calls install nothing (and export nothing).
pub fn init() -> Telemetry {
    let filter = || EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let json = std::env::var("WEFT_LOG_FORMAT").is_ok_and(|format| format.eq_ignore_ascii_case("json"));
    let logs = if json {
        tracing_subscriber::fmt::layer()
            .json()
            .with_current_span(true)
            .with_span_list(true)
            .with_writer(std::io::stderr)
            .with_filter(filter())
            .boxed()
    } else {
        tracing_subscriber::fmt::layer()
            .with_writer(std::io::stderr)
            .with_filter(filter())
            .boxed()
    };
    let provider = otlp();
    let traces = provider.as_ref().map(|provider| {
        tracing_opentelemetry::layer()
            .with_tracer(provider.tracer("weft"))
            .with_filter(filter())
    });
    let installed = tracing_subscriber::registry()
        .with(logs)
        .with(traces)
        .try_init()
        .is_ok();
    Telemetry {
        provider: provider.filter(|_| installed),
    }
}
