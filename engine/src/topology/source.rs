//! Building a channel's source: the one place each `SourceConfig` kind is started.
//!
//! One match arm per [`SourceConfig`] variant, never a `_` arm, so that a new kind of
//! source is added here and nowhere else in the runtime.

use crate::config::SourceConfig;
use crate::metrics::Metrics;
use crate::store::Store;
use channels::source::{BuildError, SourceContext};
use std::net::SocketAddr;
use tokio::task::JoinHandle;

/// What some sources need beyond their [`SourceContext`]: sources that keep state of their
/// own in the store (Latrexa bookings), read from it (FHIR REST reads) or count things of
/// their own (SFTP).
pub struct SourceDeps<'a> {
    /// The engine's metrics.
    pub metrics: &'a Metrics,
    /// The store.
    pub store: &'a Store,
    /// The configuration version, recorded on what the source stores itself.
    pub version: &'a str,
}

/// A started source.
pub struct SourceTask {
    /// The bound address, for sources that listen (MLLP, HTTP); `None` for pollers.
    pub local_addr: Option<SocketAddr>,
    /// Ends when the source stopped and answered what it took.
    pub join: JoinHandle<()>,
}

/// Checks, binds and starts a channel's source.
///
/// # Errors
///
/// [`BuildError`] when it cannot bind or its settings are refused at build time.
pub async fn build_source(
    source: &SourceConfig,
    cx: SourceContext,
    deps: SourceDeps<'_>,
) -> Result<SourceTask, BuildError> {
    match source {
        SourceConfig::MllpListener(l) => l.build(cx).await.map(|t| SourceTask {
            local_addr: Some(t.local_addr),
            join: t.join,
        }),
        SourceConfig::Sftp(s) => {
            let counters = deps.metrics.sftp(&cx.channel);
            s.build(cx, counters).map(|join| SourceTask {
                local_addr: None,
                join,
            })
        }
        SourceConfig::FhirRest(f) => {
            let reader = std::sync::Arc::new(crate::ingest_http::StoreReader(deps.store.clone()));
            f.build(cx, reader).await.map(|t| SourceTask {
                local_addr: Some(t.local_addr),
                join: t.join,
            })
        }
        SourceConfig::Webhook(w) => w.build(cx).await.map(|t| SourceTask {
            local_addr: Some(t.local_addr),
            join: t.join,
        }),
        SourceConfig::DicomWorklist(c) => {
            let metrics = deps.metrics.dicom(&cx.channel);
            let state = dicom_state(deps.store, deps.metrics);
            let n = deps
                .store
                .worklist_items(&c.worklist)
                .map(|i| i.len())
                .unwrap_or(0);
            deps.metrics
                .dicom_worklist_items
                .with_label_values(&[&c.worklist])
                .set(i64::try_from(n).unwrap_or(i64::MAX));
            let service = channels::dicom::scp::Service::Worklist {
                cfg: c.clone(),
                state,
            };
            channels::dicom::scp::start(service, cx, metrics)
                .await
                .map(|t| SourceTask {
                    local_addr: Some(t.local_addr),
                    join: t.join,
                })
        }
        SourceConfig::DicomStore(c) => {
            let metrics = deps.metrics.dicom(&cx.channel);
            let storage = std::sync::Arc::new(channels::dicom::storage::Storage::new(
                &cx.channel,
                &c.ae_title,
                c.folder.clone(),
                std::time::Duration::from_secs(c.quiet_period_secs),
                dicom_state(deps.store, deps.metrics),
            ));
            let announcer = tokio::spawn(storage.clone().announce_loop(cx.clone()));
            let service = channels::dicom::scp::Service::Store {
                cfg: c.clone(),
                storage,
            };
            let task = channels::dicom::scp::start(service, cx, metrics).await?;
            let join = tokio::spawn(async move {
                let _ = task.join.await;
                let _ = announcer.await;
            });
            Ok(SourceTask {
                local_addr: Some(task.local_addr),
                join,
            })
        }
        SourceConfig::Latrexa(c) => crate::latrexa_bookings::start(
            c,
            &cx.channel,
            deps.store.clone(),
            deps.metrics.clone(),
            deps.version,
            cx.shutdown,
            cx.paused,
        )
        .map(|join| SourceTask {
            local_addr: None,
            join,
        }),
    }
}

/// Where a source takes messages from, as the console shows it: the bound address of a
/// listener (`addr`), `sftp://user@host:port/folder` for an SFTP poller, the base URL of a
/// Latrexa channel. Never a secret.
pub fn source_endpoint(source: &SourceConfig, addr: Option<std::net::SocketAddr>) -> String {
    match source {
        SourceConfig::Sftp(p) => format!(
            "sftp://{}@{}:{}{}{}",
            p.server.username,
            p.server.host,
            p.server.port,
            if p.folder.starts_with('/') { "" } else { "/" },
            p.folder
        ),
        SourceConfig::Latrexa(l) => l.base_url.clone(),
        _ => addr.map(|a| a.to_string()).unwrap_or_default(),
    }
}

/// The `type` of a `[source]` table, as the admin API shows it.
pub fn source_type(source: &SourceConfig) -> &'static str {
    match source {
        SourceConfig::MllpListener(_) => "mllp_listener",
        SourceConfig::Sftp(_) => "sftp",
        SourceConfig::Latrexa(_) => "latrexa",
        SourceConfig::FhirRest(_) => "fhir_rest",
        SourceConfig::Webhook(_) => "webhook",
        SourceConfig::DicomWorklist(_) => "dicom_worklist",
        SourceConfig::DicomStore(_) => "dicom_store",
    }
}

/// The engine's DICOM state over its store: what DICOM sources and worklist destinations
/// read and write (see `crate::store::dicom`).
pub fn dicom_state(
    store: &Store,
    metrics: &Metrics,
) -> std::sync::Arc<dyn channels::dicom::worklist::DicomState> {
    std::sync::Arc::new(crate::store::dicom::StoreDicom::new(
        store.clone(),
        metrics.dicom_worklist_items.clone(),
    ))
}
