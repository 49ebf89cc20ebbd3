//! The Switchboard engine: configuration, the message store, ingest, the admin API and the
//! runtime that wires sources to them.
//!
//! Start at [`Engine::start`]: it opens the store, binds every channel's source and the
//! admin server, and returns a [`RunningEngine`] that knows the bound addresses and shuts
//! everything down in order (stop accepting, answer what is in flight, flush).
#![forbid(unsafe_code)]

pub mod admin;
pub mod admin_client;
pub mod admin_live;
pub mod config;
pub mod console;
pub mod delivery;
pub mod events;
pub mod formats;
pub mod ingest;
pub mod ingest_http;
pub mod metrics;
pub mod pipeline;
pub mod routing;
pub mod send;
pub mod store;

use crate::config::{LoadedConfig, SourceConfig};
use crate::metrics::Metrics;
use crate::store::Store;
use channels::source::SourceContext;
use serde::Serialize;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

/// Why the engine could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The store could not be opened.
    #[error("cannot open the store in {dir}: {source}")]
    Store {
        /// The data folder.
        dir: PathBuf,
        /// What sled said.
        source: store::StoreError,
    },
    /// A source could not be built (address taken, ...).
    #[error("channel {channel}: {source}")]
    Source {
        /// The channel.
        channel: String,
        /// Why.
        source: channels::source::BuildError,
    },
    /// A destination could not be built (a secret or folder missing).
    #[error("destination {name}: {reason}")]
    Destination {
        /// `channel/destination`.
        name: String,
        /// Why.
        reason: String,
    },
    /// The admin server could not bind.
    #[error("admin server cannot listen on {addr}: {source}")]
    Admin {
        /// The configured address.
        addr: String,
        /// The OS error.
        source: std::io::Error,
    },
}

/// What a started engine tells the outside world, also written to `DATA_DIR/engine.json`.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct RuntimeInfo {
    /// Process id.
    pub pid: u32,
    /// The admin server's bound address.
    pub admin: SocketAddr,
    /// Each channel's bound address.
    pub channels: BTreeMap<String, SocketAddr>,
    /// The configuration version.
    pub config_version: String,
}

/// The engine.
pub struct Engine;

/// A started engine.
pub struct RunningEngine {
    /// Bound addresses.
    pub info: RuntimeInfo,
    /// The store (for tests and tools in the same process).
    pub store: Store,
    shutdown: CancellationToken,
    sources: Vec<JoinHandle<()>>,
    ingests: Vec<JoinHandle<()>>,
    admin: JoinHandle<()>,
    retention: JoinHandle<()>,
    ready: Arc<AtomicBool>,
    grace: Duration,
    data_dir: PathBuf,
}

impl Engine {
    /// Opens the store and starts every channel and the admin server.
    ///
    /// # Errors
    ///
    /// [`StartError`] naming what could not be opened or bound; nothing keeps running.
    pub async fn start(config: LoadedConfig) -> Result<RunningEngine, StartError> {
        let data_dir = config.engine.data_dir.clone();
        let _ = std::fs::remove_file(data_dir.join("engine.json"));
        let metrics = Metrics::new(&config.version);
        metrics.record_tls_expiry(&config.channels);
        let store =
            Store::open(&data_dir, config.engine.durability, &metrics).map_err(|source| {
                StartError::Store {
                    dir: data_dir.clone(),
                    source,
                }
            })?;
        info!(dir = %data_dir.display(), messages = store.message_count(), "Store opened.");
        let shutdown = CancellationToken::new();
        let mut routers = std::collections::HashMap::new();
        let mut destinations = Vec::new();
        for ch in &config.channels {
            // `load` compiled every router already; this cannot fail on a loaded config.
            let router = routing::Router::compile(
                &ch.config.name,
                &ch.config.routes,
                &ch.config.destinations,
            )
            .map_err(|p| StartError::Destination {
                name: ch.config.name.clone(),
                reason: format!("{} route problem(s)", p.len()),
            })?;
            routers.insert(ch.config.name.clone(), router);
            for d in &ch.config.destinations {
                destinations.push((ch.config.name.clone(), d.clone()));
            }
        }
        let events = events::EventBus::default();
        let hub = delivery::Hub::start(
            &destinations,
            store.clone(),
            metrics.clone(),
            events.clone(),
            shutdown.child_token(),
        )
        .map_err(|(name, reason)| StartError::Destination { name, reason })?;
        let pipeline = Arc::new(pipeline::Pipeline::new(
            routers,
            hub,
            store.clone(),
            metrics.clone(),
        ));
        let retention = tokio::spawn(retention_task(
            config.clone(),
            store.clone(),
            metrics.clone(),
            shutdown.child_token(),
        ));
        let mut sources = Vec::new();
        let mut ingests = Vec::new();
        let mut channel_addrs = BTreeMap::new();
        for ch in &config.channels {
            let (tx, rx) = mpsc::channel(1024);
            let cx = SourceContext {
                channel: ch.config.name.clone(),
                out: tx,
                shutdown: shutdown.child_token(),
                metrics: metrics.source(&ch.config.name),
            };
            let built = match &ch.config.source {
                SourceConfig::MllpListener(l) => l.build(cx).await,
                SourceConfig::FhirRest(f) => f.build(cx).await,
                SourceConfig::Webhook(w) => w.build(cx).await,
            };
            let task = match built {
                Ok(t) => t,
                Err(source) => {
                    shutdown.cancel();
                    return Err(StartError::Source {
                        channel: ch.config.name.clone(),
                        source,
                    });
                }
            };
            channel_addrs.insert(ch.config.name.clone(), task.local_addr);
            sources.push(task.join);
            let ingest = Arc::new(ingest::ChannelIngest::new(
                ch,
                store.clone(),
                metrics.clone(),
                &config.version,
                pipeline.clone(),
            ));
            ingests.push(tokio::spawn(ingest::run(ingest, rx)));
        }
        let ready = Arc::new(AtomicBool::new(false));
        let state = admin::AdminState {
            store: store.clone(),
            metrics: metrics.clone(),
            token: config.admin_token.as_deref().map(Arc::from),
            ready: ready.clone(),
            pipeline: pipeline.clone(),
            events: events.clone(),
            data_dir: data_dir.clone(),
            live: Arc::new(admin_live::LiveContext {
                channels: config
                    .channels
                    .iter()
                    .map(|ch| admin_live::ChannelInfo {
                        name: ch.config.name.clone(),
                        source_type: match &ch.config.source {
                            SourceConfig::MllpListener(_) => "mllp_listener".into(),
                            SourceConfig::FhirRest(_) => "fhir_rest".into(),
                            SourceConfig::Webhook(_) => "webhook".into(),
                        },
                        address: channel_addrs.get(&ch.config.name).copied(),
                        destinations: ch
                            .config
                            .destinations
                            .iter()
                            .map(|d| (d.name().to_string(), admin_live::destination_type(d).into()))
                            .collect(),
                    })
                    .collect(),
                shutdown: shutdown.child_token(),
            }),
        };
        let listener = match tokio::net::TcpListener::bind(&config.engine.admin.listen).await {
            Ok(l) => l,
            Err(source) => {
                shutdown.cancel();
                return Err(StartError::Admin {
                    addr: config.engine.admin.listen.clone(),
                    source,
                });
            }
        };
        let admin_addr = listener.local_addr().map_err(|source| StartError::Admin {
            addr: config.engine.admin.listen.clone(),
            source,
        })?;
        let admin_shutdown = shutdown.clone();
        let app = admin::router(state);
        let admin = tokio::spawn(async move {
            let served = axum::serve(listener, app)
                .with_graceful_shutdown(async move { admin_shutdown.cancelled().await })
                .await;
            if let Err(e) = served {
                warn!(error = %e, "Admin server stopped with an error.");
            }
        });
        info!(addr = %admin_addr, "Admin server listening.");
        let info = RuntimeInfo {
            pid: std::process::id(),
            admin: admin_addr,
            channels: channel_addrs,
            config_version: config.version.clone(),
        };
        if let Ok(text) = serde_json::to_vec_pretty(&info) {
            if let Err(e) = std::fs::write(data_dir.join("engine.json"), text) {
                warn!(error = %e, "Cannot write engine.json.");
            }
        }
        ready.store(true, Ordering::SeqCst);
        info!(channels = info.channels.len(), config_version = %info.config_version, "Switchboard started.");
        Ok(RunningEngine {
            info,
            store,
            shutdown,
            sources,
            ingests,
            admin,
            retention,
            ready,
            grace: Duration::from_secs(config.engine.shutdown_grace_secs),
            data_dir,
        })
    }
}

impl RunningEngine {
    /// Stops accepting, answers every message already received, flushes the store.
    pub async fn shutdown(self) {
        info!("Shutting down: no new connections or messages.");
        self.ready.store(false, Ordering::SeqCst);
        self.shutdown.cancel();
        let drain = async {
            for s in self.sources {
                let _ = s.await;
            }
            for i in self.ingests {
                let _ = i.await;
            }
        };
        if tokio::time::timeout(self.grace, drain).await.is_err() {
            warn!(
                grace_secs = self.grace.as_secs(),
                "Shutdown grace period over; some answers were not sent."
            );
        }
        let _ = self.admin.await;
        let _ = self.retention.await;
        match self.store.flush().await {
            Ok(()) => info!("Store flushed. Bye."),
            Err(e) => warn!(error = %e, "Final store flush failed."),
        }
        let _ = std::fs::remove_file(self.data_dir.join("engine.json"));
    }
}

/// Prunes old messages once at start and then every `retention_interval_secs`.
async fn retention_task(
    config: LoadedConfig,
    store: Store,
    metrics: Metrics,
    shutdown: CancellationToken,
) {
    let policy = store::retention::RetentionPolicy {
        default_days: config.engine.retention_days,
        per_channel: config
            .channels
            .iter()
            .filter_map(|c| c.config.retention_days.map(|d| (c.config.name.clone(), d)))
            .collect(),
    };
    let mut tick = tokio::time::interval(Duration::from_secs(
        config.engine.retention_interval_secs.max(1),
    ));
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        let store2 = store.clone();
        let policy2 = policy.clone();
        let now = delivery::now_ms();
        match tokio::task::spawn_blocking(move || store2.prune(&policy2, now)).await {
            Ok(Ok(report)) => {
                metrics.purged.add(report.removed as i64);
                if report.removed > 0 || report.kept_pending > 0 {
                    info!(
                        removed = report.removed,
                        kept_pending = report.kept_pending,
                        "Retention pass done."
                    );
                }
            }
            Ok(Err(e)) => warn!(error = %e, "Retention pass failed; will try again."),
            Err(_) => warn!("Retention pass panicked; will try again."),
        }
    }
}
