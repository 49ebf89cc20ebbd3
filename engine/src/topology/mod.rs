//! The running topology: which channels run, with which source, ingest, router and
//! destinations, and how a reload changes that without stopping the others.
//!
//! [`Supervisor::start`] starts every channel of a loaded configuration. A channel is its
//! source (built in [`source::build_source`], the one match over source kinds), its ingest
//! task, its router (in the shared [`Pipeline`]) and its destinations' delivery workers
//! (in the shared [`Hub`]).
//!
//! [`Supervisor::reload`] (SIGHUP, `POST /api/reload`) reads the configuration folder again
//! and checks it exactly as `switchboard check` does. A configuration with any problem is
//! refused whole: nothing changes, and every problem is returned and logged. Otherwise:
//! - a channel whose file is unchanged keeps its source and its open connections; only the
//!   configuration version stamped on its new messages changes;
//! - a changed channel is stopped (its source stops accepting and answers what it received,
//!   its workers finish what is in flight) and started again from its new settings; if the
//!   new settings cannot start (a port taken), its previous settings are started again and
//!   the reload reports the failure;
//! - new channels start, removed channels stop (their undelivered outbox items stay in the
//!   store until a channel of that name delivers them).
//!
//! Engine-wide keys that cannot change in a running process (`data_dir`, `durability`,
//! `admin.listen`) make a reload refused; admin tokens and retention apply at once; `log.*`
//! and `shutdown_grace_secs` apply at the next start.

pub mod source;

use crate::admin_live::{destination_type, ChannelInfo, LiveContext};
use crate::auth::Tokens;
use crate::config::{self, LoadedChannel, LoadedConfig, Problem, Problems};
use crate::delivery::{now_ms, Hub};
use crate::ingest::ChannelIngest;
use crate::metrics::Metrics;
use crate::pipeline::Pipeline;
use crate::routing::Router;
use crate::store::kind::AuditAction;
use crate::store::outbox::AuditRecord;
use crate::store::retention::RetentionPolicy;
use crate::store::Store;
use crate::{RuntimeInfo, StartError};
use channels::source::{Inbound, SourceContext};
use serde::Serialize;
use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::{Arc, RwLock};
use std::time::Duration;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{error, info, warn};

pub use source::{build_source, source_endpoint, source_type};

/// The ingest a channel's messages go to; replaced (not restarted) on reload.
type IngestSlot = Arc<RwLock<Arc<ChannelIngest>>>;

/// What retention follows; sent again on reload.
#[derive(Debug, Clone)]
pub struct RetentionSettings {
    /// Days per channel.
    pub policy: RetentionPolicy,
    /// Time between passes.
    pub interval: Duration,
    /// Every configured channel (their removal counters start at 0).
    pub channels: Vec<String>,
}

impl RetentionSettings {
    /// The retention settings of a configuration.
    pub fn of(config: &LoadedConfig) -> Self {
        RetentionSettings {
            policy: RetentionPolicy {
                default_days: config.engine.retention_days,
                per_channel: config
                    .channels
                    .iter()
                    .filter_map(|c| c.config.retention_days.map(|d| (c.config.name.clone(), d)))
                    .collect(),
            },
            interval: Duration::from_secs(config.engine.retention_interval_secs.max(1)),
            channels: config
                .channels
                .iter()
                .map(|c| c.config.name.clone())
                .collect(),
        }
    }
}

/// What the topology shares with the rest of the engine.
pub struct Shared {
    /// The store.
    pub store: Store,
    /// Metrics.
    pub metrics: Metrics,
    /// Routers of every channel and the delivery hub.
    pub pipeline: Arc<Pipeline>,
    /// The engine's shutdown; each channel's source stops on a child of it.
    pub shutdown: CancellationToken,
    /// The admin API's tokens.
    pub tokens: Arc<RwLock<Arc<Tokens>>>,
    /// What the console's endpoints show.
    pub live: Arc<LiveContext>,
    /// The retention task's settings.
    pub retention: watch::Sender<RetentionSettings>,
    /// Which channels an operator paused (see [`crate::pause`]).
    pub pauses: Arc<crate::pause::Pauses>,
}

struct RunningChannel {
    loaded: LoadedChannel,
    addr: Option<SocketAddr>,
    stop: CancellationToken,
    source: JoinHandle<()>,
    ingest: JoinHandle<()>,
    slot: IngestSlot,
}

struct Topology {
    config: LoadedConfig,
    channels: Vec<RunningChannel>,
    admin: Option<SocketAddr>,
}

/// What a reload did, channel by channel.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ReloadReport {
    /// The configuration version now running.
    pub config_version: String,
    /// The version before the reload.
    pub previous_version: String,
    /// Channels added.
    pub started: Vec<String>,
    /// Channels whose settings changed, restarted.
    pub restarted: Vec<String>,
    /// Channels removed.
    pub stopped: Vec<String>,
    /// Channels left running as they were (connections kept).
    pub unchanged: Vec<String>,
    /// `channel: reason` for channels whose new settings could not start.
    pub failed: Vec<String>,
}

/// Owns the running channels; starts, reloads and drains them.
pub struct Supervisor {
    shared: Shared,
    state: tokio::sync::Mutex<Topology>,
}

impl Supervisor {
    /// Starts every channel of `config`.
    ///
    /// # Errors
    ///
    /// [`StartError`] for the first channel that cannot start; the ones already started
    /// stop with the engine's shutdown token.
    pub async fn start(config: LoadedConfig, shared: Shared) -> Result<Supervisor, StartError> {
        let mut channels = Vec::new();
        for ch in &config.channels {
            channels.push(start_channel(&shared, ch, &config.version).await?);
        }
        let s = Supervisor {
            shared,
            state: tokio::sync::Mutex::new(Topology {
                config,
                channels,
                admin: None,
            }),
        };
        s.publish(&*s.state.lock().await);
        Ok(s)
    }

    /// Which channels an operator paused.
    pub fn pauses(&self) -> &Arc<crate::pause::Pauses> {
        &self.shared.pauses
    }

    /// The ingest of a running channel, for an operator's resend (see
    /// [`crate::admin`]); `None` when no channel of that name runs.
    pub async fn ingest_of(&self, channel: &str) -> Option<Arc<ChannelIngest>> {
        let t = self.state.lock().await;
        t.channels
            .iter()
            .find(|c| c.loaded.config.name == channel)
            .map(|c| c.slot.read().unwrap_or_else(|p| p.into_inner()).clone())
    }

    /// The addresses and version now running.
    pub async fn runtime_info(&self) -> RuntimeInfo {
        runtime_info(&*self.state.lock().await)
    }

    /// Records the admin server's address and writes `DATA_DIR/engine.json`.
    pub async fn set_admin_addr(&self, addr: SocketAddr) {
        let mut t = self.state.lock().await;
        t.admin = Some(addr);
        write_runtime_info(&t);
    }

    /// Re-reads and checks the configuration folder, then restarts only what changed
    /// (see the module documentation). `who` goes into the audit record.
    ///
    /// # Errors
    ///
    /// [`Problems`], every one of them, when the new configuration is refused; the
    /// running one stays as it was.
    pub async fn reload(&self, who: &str) -> Result<ReloadReport, Problems> {
        let mut t = self.state.lock().await;
        let loaded = config::load(&t.config.dir).and_then(|new| {
            let fixed = fixed_problems(&t.config, &new);
            if fixed.is_empty() {
                Ok(new)
            } else {
                Err(Problems(fixed))
            }
        });
        let new = match loaded {
            Ok(c) => c,
            Err(problems) => {
                self.shared
                    .metrics
                    .reloads
                    .with_label_values(&["refused"])
                    .inc();
                for p in &problems.0 {
                    warn!(problem = %p, "Configuration problem.");
                }
                warn!(
                    problems = problems.0.len(),
                    config_version = %t.config.version,
                    "Reload refused; the running configuration stays."
                );
                self.audit(
                    who,
                    AuditAction::ReloadRefused,
                    format!("{} problem(s)", problems.0.len()),
                    0,
                );
                return Err(problems);
            }
        };
        let grace = Duration::from_secs(t.config.engine.shutdown_grace_secs);
        let mut report = ReloadReport {
            config_version: new.version.clone(),
            previous_version: t.config.version.clone(),
            ..ReloadReport::default()
        };
        let mut old: HashMap<String, RunningChannel> = std::mem::take(&mut t.channels)
            .into_iter()
            .map(|c| (c.loaded.config.name.clone(), c))
            .collect();
        let removed: Vec<String> = old
            .keys()
            .filter(|n| !new.channels.iter().any(|c| &c.config.name == *n))
            .cloned()
            .collect();
        for name in removed {
            if let Some(ch) = old.remove(&name) {
                stop_channel(&self.shared, ch, grace).await;
                self.shared.pipeline.set_router(&name, None);
                info!(channel = %name, "Channel removed by reload; stopped.");
                report.stopped.push(name);
            }
        }
        let mut running = Vec::new();
        for loaded in &new.channels {
            let name = loaded.config.name.clone();
            match old.remove(&name) {
                Some(ch)
                    if ch.loaded.config == loaded.config
                        && ch.loaded.charset_fallback == loaded.charset_fallback =>
                {
                    let ingest = Arc::new(
                        ChannelIngest::new(
                            loaded,
                            self.shared.store.clone(),
                            self.shared.metrics.clone(),
                            &new.version,
                            self.shared.pipeline.clone(),
                        )
                        .with_pause(self.shared.pauses.flag(&name)),
                    );
                    *ch.slot.write().unwrap_or_else(|p| p.into_inner()) = ingest;
                    running.push(RunningChannel {
                        loaded: loaded.clone(),
                        ..ch
                    });
                    report.unchanged.push(name);
                }
                Some(ch) => {
                    let previous = ch.loaded.clone();
                    stop_channel(&self.shared, ch, grace).await;
                    match start_channel(&self.shared, loaded, &new.version).await {
                        Ok(ch) => {
                            info!(channel = %name, "Channel restarted with its new settings.");
                            running.push(ch);
                            report.restarted.push(name);
                        }
                        Err(e) => {
                            error!(channel = %name, error = %e, "The changed channel cannot start; starting its previous settings again.");
                            report.failed.push(format!("{name}: {e}"));
                            match start_channel(&self.shared, &previous, &report.previous_version)
                                .await
                            {
                                Ok(ch) => running.push(ch),
                                Err(e) => {
                                    error!(channel = %name, error = %e, "The channel's previous settings cannot start either; it is stopped.")
                                }
                            }
                        }
                    }
                }
                None => match start_channel(&self.shared, loaded, &new.version).await {
                    Ok(ch) => {
                        info!(channel = %name, "Channel added by reload; started.");
                        running.push(ch);
                        report.started.push(name);
                    }
                    Err(e) => {
                        error!(channel = %name, error = %e, "The new channel cannot start.");
                        report.failed.push(format!("{name}: {e}"));
                    }
                },
            }
        }
        t.channels = running;
        *self
            .shared
            .tokens
            .write()
            .unwrap_or_else(|p| p.into_inner()) = Arc::new(Tokens(new.admin_tokens.clone()));
        let _ = self.shared.retention.send(RetentionSettings::of(&new));
        self.shared
            .metrics
            .set_config_version(&report.previous_version, &new.version);
        self.shared
            .metrics
            .record_tls_expiry(crate::config::certificate_expiries(&new.channels));
        if t.config.engine.log.level != new.engine.log.level
            || t.config.engine.log.format != new.engine.log.format
            || t.config.engine.log.color != new.engine.log.color
        {
            warn!("log settings changed; they apply at the next start.");
        }
        t.config = new;
        self.publish(&t);
        write_runtime_info(&t);
        let outcome = if report.failed.is_empty() {
            "ok"
        } else {
            "failed"
        };
        self.shared
            .metrics
            .reloads
            .with_label_values(&[outcome])
            .inc();
        let touched = report.started.len() + report.restarted.len() + report.stopped.len();
        self.audit(
            who,
            AuditAction::Reload,
            format!(
                "config {} -> {}",
                report.previous_version, report.config_version
            ),
            touched,
        );
        info!(
            config_version = %report.config_version,
            previous_version = %report.previous_version,
            started = report.started.len(),
            restarted = report.restarted.len(),
            stopped = report.stopped.len(),
            unchanged = report.unchanged.len(),
            failed = report.failed.len(),
            "Configuration reloaded."
        );
        Ok(report)
    }

    /// After the shutdown token is cancelled: waits, at most `grace`, until every source
    /// has stopped and every message received has been answered.
    ///
    /// Returns false when the grace period ran out first.
    pub async fn drain(&self, grace: Duration) -> bool {
        let mut t = self.state.lock().await;
        let channels = std::mem::take(&mut t.channels);
        let drained = async {
            for ch in channels {
                let _ = ch.source.await;
                let _ = ch.ingest.await;
            }
        };
        tokio::time::timeout(grace, drained).await.is_ok()
    }

    /// Tells the console endpoints what runs now.
    fn publish(&self, t: &Topology) {
        let infos = t
            .channels
            .iter()
            .map(|ch| ChannelInfo {
                name: ch.loaded.config.name.clone(),
                source_type: source_type(&ch.loaded.config.source).into(),
                address: ch.addr,
                endpoint: source_endpoint(&ch.loaded.config.source, ch.addr),
                destinations: ch
                    .loaded
                    .config
                    .destinations
                    .iter()
                    .map(|d| (d.name().to_string(), destination_type(d).into()))
                    .collect(),
            })
            .collect();
        *self
            .shared
            .live
            .channels
            .write()
            .unwrap_or_else(|p| p.into_inner()) = infos;
    }

    fn audit(&self, who: &str, action: AuditAction, target: String, count: usize) {
        let record = AuditRecord {
            at_ms: now_ms(),
            who: who.to_string(),
            action: action.into(),
            target,
            count,
            counts: Default::default(),
        };
        if let Err(e) = self.shared.store.audit(&record) {
            warn!(error = %e, "Cannot write an audit record.");
        }
    }
}

/// Keys a running engine cannot change: a reload that changes them is refused.
fn fixed_problems(running: &LoadedConfig, new: &LoadedConfig) -> Vec<Problem> {
    let (a, b) = (&running.engine, &new.engine);
    let mut out = Vec::new();
    let mut differs = |key: &str, old: String, new: String| {
        if old != new {
            out.push(Problem {
                file: "switchboard.toml".into(),
                key: key.into(),
                message: format!("cannot change while the engine runs ('{old}' -> '{new}')"),
                hint: "restart the engine to apply it, or put the running value back".into(),
            });
        }
    };
    differs(
        "data_dir",
        a.data_dir.display().to_string(),
        b.data_dir.display().to_string(),
    );
    differs(
        "durability",
        format!("{:?}", a.durability).to_lowercase(),
        format!("{:?}", b.durability).to_lowercase(),
    );
    differs(
        "admin.listen",
        a.admin.listen.clone(),
        b.admin.listen.clone(),
    );
    out
}

/// Starts one channel: router, destinations, source, ingest. Undoes what it started when a
/// later step fails.
async fn start_channel(
    shared: &Shared,
    loaded: &LoadedChannel,
    version: &str,
) -> Result<RunningChannel, StartError> {
    let name = loaded.config.name.clone();
    // `load` compiled every router already; this cannot fail on a loaded config.
    let router = Router::compile(&name, &loaded.config.routes, &loaded.config.destinations)
        .map_err(|p| StartError::Destination {
            name: name.clone(),
            reason: format!("{} route problem(s)", p.len()),
        })?
        // `load` checked the zone name; an unknown one never gets here.
        .with_timezone(
            loaded
                .config
                .timezone
                .as_deref()
                .and_then(|z| z.parse().ok()),
        );
    shared.pipeline.set_router(&name, Some(router));
    let hub: &Arc<Hub> = shared.pipeline.hub();
    if let Err((dest, reason)) = hub.start_channel(&name, &loaded.config.destinations) {
        shared.pipeline.set_router(&name, None);
        return Err(StartError::Destination { name: dest, reason });
    }
    let (tx, rx) = mpsc::channel(1024);
    let stop = shared.shutdown.child_token();
    let paused = shared.pauses.flag(&name);
    let cx = SourceContext {
        channel: name.clone(),
        out: tx,
        shutdown: stop.clone(),
        metrics: shared.metrics.source(&name),
        paused: paused.clone(),
    };
    shared.metrics.channel_started(
        &name,
        matches!(
            loaded.config.source,
            crate::config::SourceConfig::MllpListener(_)
        ),
    );
    let deps = source::SourceDeps {
        metrics: &shared.metrics,
        store: &shared.store,
        version,
    };
    let task = match build_source(&loaded.config.source, cx, deps).await {
        Ok(t) => t,
        Err(source) => {
            hub.stop_channel(&name).await;
            shared.pipeline.set_router(&name, None);
            return Err(StartError::Source {
                channel: name,
                source,
            });
        }
    };
    let slot: IngestSlot = Arc::new(RwLock::new(Arc::new(
        ChannelIngest::new(
            loaded,
            shared.store.clone(),
            shared.metrics.clone(),
            version,
            shared.pipeline.clone(),
        )
        .with_pause(paused),
    )));
    let ingest = tokio::spawn(run_ingest(slot.clone(), rx));
    Ok(RunningChannel {
        loaded: loaded.clone(),
        addr: task.local_addr,
        stop,
        source: task.join,
        ingest,
        slot,
    })
}

/// Stops one channel: its source stops accepting and answers what it received (at most
/// `grace`), then its delivery workers stop.
async fn stop_channel(shared: &Shared, ch: RunningChannel, grace: Duration) {
    let name = ch.loaded.config.name.clone();
    ch.stop.cancel();
    let drained = tokio::time::timeout(grace, async {
        let _ = ch.source.await;
        let _ = ch.ingest.await;
    })
    .await;
    if drained.is_err() {
        warn!(channel = %name, grace_secs = grace.as_secs(), "Channel did not finish its messages within the grace period; restarting it anyway.");
    }
    shared.pipeline.hub().stop_channel(&name).await;
}

/// Takes a channel's messages until its source closes, each handled in its own task by
/// whatever ingest the slot holds when it arrives. Returns once every one is answered.
async fn run_ingest(slot: IngestSlot, mut rx: mpsc::Receiver<Inbound>) {
    let tracker = TaskTracker::new();
    while let Some(inbound) = rx.recv().await {
        let ingest = slot.read().unwrap_or_else(|p| p.into_inner()).clone();
        tracker.spawn(async move { ingest.handle(inbound).await });
    }
    tracker.close();
    tracker.wait().await;
}

fn runtime_info(t: &Topology) -> RuntimeInfo {
    RuntimeInfo {
        pid: std::process::id(),
        admin: t
            .admin
            .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 0))),
        channels: t
            .channels
            .iter()
            .filter_map(|c| Some((c.loaded.config.name.clone(), c.addr?)))
            .collect::<BTreeMap<_, _>>(),
        config_version: t.config.version.clone(),
    }
}

/// Writes `DATA_DIR/engine.json` (once the admin server is bound).
fn write_runtime_info(t: &Topology) {
    if t.admin.is_none() {
        return;
    }
    let info = runtime_info(t);
    let path = t.config.engine.data_dir.join("engine.json");
    let tmp = t.config.engine.data_dir.join("engine.json.tmp");
    let written = serde_json::to_vec_pretty(&info)
        .map_err(std::io::Error::other)
        .and_then(|text| std::fs::write(&tmp, text))
        .and_then(|()| std::fs::rename(&tmp, &path));
    if let Err(e) = written {
        warn!(error = %e, "Cannot write engine.json.");
    }
}
