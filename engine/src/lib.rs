//! The Switchboard engine: configuration, the message store, ingest, the admin API and the
//! runtime that wires sources to them.
//!
//! Start at [`Engine::start`]: it opens the store, starts every channel through the
//! [`topology::Supervisor`] (which also reloads them) and the admin server, and returns a
//! [`RunningEngine`] that knows the bound addresses, reloads the configuration, and shuts
//! everything down in order (stop accepting, answer what is in flight, flush).
#![forbid(unsafe_code)]

pub mod admin;
pub mod admin_client;
mod admin_cluster;
pub mod admin_dicom;
pub mod admin_live;
pub mod auth;
pub mod check;
pub mod cluster;
pub mod config;
pub mod config_test;
pub mod console;
pub mod delivery;
pub mod error_chain;
pub mod events;
pub mod formats;
pub mod ingest;
pub mod ingest_http;
pub mod keys;
pub mod latrexa_bookings;
pub mod metrics;
pub mod pause;
pub mod pipeline;
pub mod routing;
pub mod send;
pub mod store;
pub mod topology;
pub mod unified_diff;
pub mod vendor;

use crate::config::{LoadedConfig, Problems};
use crate::metrics::Metrics;
use crate::store::Store;
use crate::topology::{ReloadReport, RetentionSettings, Supervisor};
use serde::Serialize;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
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
    /// `[cluster]`: the NATS client could not be set up.
    #[error(transparent)]
    Cluster(#[from] cluster::ClusterError),
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
    /// Bound addresses at start (after a reload, see [`RunningEngine::runtime_info`]).
    pub info: RuntimeInfo,
    /// The store (for tests and tools in the same process).
    pub store: Store,
    shutdown: CancellationToken,
    supervisor: Arc<Supervisor>,
    admin: JoinHandle<()>,
    retention: JoinHandle<()>,
    /// Cluster mode: the lease round (it gives the leases back when it stops).
    cluster: Option<JoinHandle<()>>,
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
        metrics.record_tls_expiry(crate::config::certificate_expiries(&config.channels));
        let store = Store::open_with_cache(
            &data_dir,
            config.engine.durability,
            &metrics,
            store::seal::Seal::new(&config.store_keys),
            config.engine.store_cache_mib,
        )
        .map_err(|source| StartError::Store {
            dir: data_dir.clone(),
            source,
        })?;
        store.set_min_free_bytes(config.engine.min_free_disk_bytes);
        let pauses = Arc::new(pause::Pauses::load(store.clone(), metrics.clone()).map_err(
            |source| StartError::Store {
                dir: data_dir.clone(),
                source,
            },
        )?);
        for (channel, p) in pauses.paused() {
            warn!(channel = %channel, by = %p.by, "Channel is paused by an operator (since before this start); resume it in the console or with POST /api/channels/{{name}}/resume.");
        }
        // Not the message count: sled counts by reading every record, which on a large store
        // took seconds and filled the page cache before the engine was ready.
        let bytes = store.size_on_disk().unwrap_or_default();
        info!(dir = %data_dir.display(), bytes, "Store opened.");
        let shutdown = CancellationToken::new();
        let events = events::EventBus::default();
        let hub = delivery::Hub::new(
            store.clone(),
            metrics.clone(),
            events.clone(),
            shutdown.child_token(),
        );
        let pipeline = Arc::new(pipeline::Pipeline::new(
            std::collections::HashMap::new(),
            hub,
            store.clone(),
            metrics.clone(),
        ));
        let cluster = match config.engine.cluster.clone() {
            Some(c) => {
                store.set_id_lane(c.node_id);
                let cluster =
                    cluster::Cluster::connect(c, config.engine.retention_days, &metrics).await?;
                pipeline.set_cluster(cluster.clone());
                Some(cluster)
            }
            None => None,
        };
        let (retention_tx, retention_rx) = watch::channel(RetentionSettings::of(&config));
        let tokens = Arc::new(std::sync::RwLock::new(Arc::new(auth::Tokens(
            config.admin_tokens.clone(),
        ))));
        let live = Arc::new(admin_live::LiveContext {
            channels: std::sync::RwLock::default(),
            shutdown: shutdown.child_token(),
        });
        let shared = topology::Shared {
            store: store.clone(),
            metrics: metrics.clone(),
            pipeline: pipeline.clone(),
            shutdown: shutdown.clone(),
            tokens: tokens.clone(),
            live: live.clone(),
            retention: retention_tx,
            pauses,
        };
        let grace = Duration::from_secs(config.engine.shutdown_grace_secs);
        let admin_listen = config.engine.admin.listen.clone();
        let supervisor = match Supervisor::start(config, shared).await {
            Ok(s) => Arc::new(s),
            Err(e) => {
                shutdown.cancel();
                return Err(e);
            }
        };
        // After the supervisor: the delivery workers a partition's consumer hands work to
        // exist now.
        let cluster = cluster.map(|c| cluster::start(c, pipeline.clone(), shutdown.child_token()));
        let retention = tokio::spawn(retention_task(
            retention_rx,
            store.clone(),
            metrics.clone(),
            shutdown.child_token(),
        ));
        let ready = Arc::new(AtomicBool::new(false));
        let state = admin::AdminState {
            store: store.clone(),
            metrics: metrics.clone(),
            tokens,
            supervisor: supervisor.clone(),
            ready: ready.clone(),
            pipeline: pipeline.clone(),
            events: events.clone(),
            data_dir: data_dir.clone(),
            live,
        };
        let listener = match tokio::net::TcpListener::bind(&admin_listen).await {
            Ok(l) => l,
            Err(source) => {
                shutdown.cancel();
                return Err(StartError::Admin {
                    addr: admin_listen,
                    source,
                });
            }
        };
        let admin_addr = match listener.local_addr() {
            Ok(a) => a,
            Err(source) => {
                shutdown.cancel();
                return Err(StartError::Admin {
                    addr: admin_listen,
                    source,
                });
            }
        };
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
        if let Some(c) = pipeline.cluster() {
            c.set_admin_addr(admin_addr);
        }
        supervisor.set_admin_addr(admin_addr).await;
        let info = supervisor.runtime_info().await;
        ready.store(true, Ordering::SeqCst);
        info!(channels = info.channels.len(), config_version = %info.config_version, "Switchboard started.");
        Ok(RunningEngine {
            info,
            store,
            shutdown,
            supervisor,
            admin,
            retention,
            cluster,
            ready,
            grace,
            data_dir,
        })
    }
}

impl RunningEngine {
    /// Re-reads the configuration folder and restarts only the channels that changed
    /// (see [`topology`]); `who` goes into the audit record.
    ///
    /// # Errors
    ///
    /// [`Problems`] when the new configuration is refused; the running one stays.
    pub async fn reload(&self, who: &str) -> Result<ReloadReport, Problems> {
        self.supervisor.reload(who).await
    }

    /// The addresses and configuration version now running.
    pub async fn runtime_info(&self) -> RuntimeInfo {
        self.supervisor.runtime_info().await
    }

    /// Stops accepting, answers every message already received, flushes the store.
    pub async fn shutdown(self) {
        info!("Shutting down: no new connections or messages.");
        self.ready.store(false, Ordering::SeqCst);
        self.shutdown.cancel();
        if !self.supervisor.drain(self.grace).await {
            warn!(
                grace_secs = self.grace.as_secs(),
                "Shutdown grace period over; some answers were not sent."
            );
        }
        let _ = self.admin.await;
        let _ = self.retention.await;
        if let Some(cluster) = self.cluster {
            let _ = cluster.await;
        }
        match self.store.flush().await {
            Ok(()) => info!("Store flushed. Bye."),
            Err(e) => warn!(error = %e, "Final store flush failed."),
        }
        let _ = std::fs::remove_file(self.data_dir.join("engine.json"));
    }
}

/// Prunes old messages once at start and then every `retention_interval_secs`, following
/// the settings of the configuration running now.
async fn retention_task(
    mut settings: watch::Receiver<RetentionSettings>,
    store: Store,
    metrics: Metrics,
    shutdown: CancellationToken,
) {
    let mut current = settings.borrow_and_update().clone();
    start_retention_counters(&metrics, &current);
    let mut tick = tokio::time::interval(current.interval);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            changed = settings.changed() => {
                if changed.is_err() {
                    return;
                }
                current = settings.borrow_and_update().clone();
                start_retention_counters(&metrics, &current);
                tick = tokio::time::interval(current.interval);
                continue;
            }
            _ = tick.tick() => {}
        }
        let store2 = store.clone();
        let policy2 = current.policy.clone();
        let now = delivery::now_ms();
        let days = current.policy.default_days;
        // The pass rests between slices (it shares the cores with ingest) and ends early on
        // shutdown.
        let stop = Arc::new(AtomicBool::new(false));
        let pace = store::retention::Pace::shared(stop.clone());
        let mut pass = tokio::task::spawn_blocking(move || {
            let report = store2.prune_paced(&policy2, now, &pace)?;
            // Worklist items and MPPS states: the engine's retention (see store::dicom).
            let dicom = store2.prune_dicom(days, now)?;
            if dicom > 0 {
                info!(
                    removed = dicom,
                    "Retention removed old worklist items and MPPS states."
                );
            }
            Ok::<_, store::StoreError>(report)
        });
        let outcome = tokio::select! {
            outcome = &mut pass => outcome,
            () = shutdown.cancelled() => {
                stop.store(true, Ordering::Relaxed);
                pass.await
            }
        };
        match outcome {
            Ok(Ok(report)) => retention_pass_done(&metrics, &report),
            Ok(Err(e)) => warn!(error = %e, "Retention pass failed; will try again."),
            Err(_) => warn!("Retention pass panicked; will try again."),
        }
    }
}

/// Starts the removal counter of every configured channel at 0, so alerts see the series.
fn start_retention_counters(metrics: &Metrics, settings: &RetentionSettings) {
    for channel in &settings.channels {
        metrics.retention_removed.with_label_values(&[channel]);
    }
}

/// Logs what a retention pass did in each channel and counts what it removed.
fn retention_pass_done(metrics: &Metrics, report: &store::retention::PruneReport) {
    metrics
        .purged
        .add(i64::try_from(report.removed()).unwrap_or(i64::MAX));
    for (channel, c) in &report.channels {
        metrics
            .retention_removed
            .with_label_values(&[channel])
            .inc_by(c.removed);
        info!(
            channel = %channel,
            removed = c.removed,
            kept_pending = c.kept_pending,
            kept_dead_lettered = c.kept_dead_lettered,
            kept_unsettled_bookings = c.kept_unsettled_bookings,
            dedup_removed = c.dedup_removed,
            "Retention pass done."
        );
    }
}
