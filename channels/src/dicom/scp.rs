//! The DICOM provider: accepts associations (peer and AE title checks), then serves each
//! association's DIMSE messages in order: C-ECHO always, and what its [`Service`] offers.

use super::dimse::{self, command, status, Message, Received};
use super::worklist::{self, DicomState, MWL_FIND};
use super::{DicomMetrics, StoreSourceConfig, WorklistSourceConfig, VERIFICATION};
use crate::peers::{self, PeerRange};
use crate::source::{BuildError, SourceContext};
use dicom_dictionary_std::tags;
use dicom_ul::association::server::AccessControl;
use dicom_ul::association::AsyncServerAssociation;
use dicom_ul::pdu::{AssociationRJServiceUserReason, UserIdentity};
use dicom_ul::{Pdu, ServerAssociationOptions};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use tokio_util::task::TaskTracker;
use tracing::{debug, info, warn};

/// Explicit and implicit VR little endian: what queries and MPPS data sets are read in.
const PLAIN_SYNTAXES: [&str; 2] = ["1.2.840.10008.1.2.1", "1.2.840.10008.1.2"];

/// What a provider offers beyond C-ECHO.
pub enum Service {
    /// Modality Worklist C-FIND and, when enabled, MPPS.
    Worklist {
        /// The source's settings.
        cfg: WorklistSourceConfig,
        /// The worklist and MPPS state.
        state: Arc<dyn DicomState>,
    },
    /// C-STORE into a folder.
    Store {
        /// The source's settings.
        cfg: StoreSourceConfig,
        /// Where objects go and how studies are announced.
        storage: Arc<super::storage::Storage>,
    },
}

/// A started provider.
pub struct ScpTask {
    /// The bound address.
    pub local_addr: SocketAddr,
    /// Ends when the provider stopped and every association ended.
    pub join: JoinHandle<()>,
}

struct Common {
    listen: String,
    ae_title: String,
    allowed_calling: Vec<String>,
    allowed_peers: Vec<PeerRange>,
    max_associations: usize,
    idle: Duration,
    tls: Option<crate::tls::ServerTlsConfig>,
}

impl Service {
    fn common(&self) -> Common {
        match self {
            Service::Worklist { cfg, .. } => Common {
                listen: cfg.listen.clone(),
                ae_title: cfg.ae_title.clone(),
                allowed_calling: cfg.allowed_calling_ae_titles.clone(),
                allowed_peers: cfg.allowed_peers.clone(),
                max_associations: cfg.max_associations,
                idle: Duration::from_secs(cfg.idle_timeout_secs),
                tls: cfg.tls.clone(),
            },
            Service::Store { cfg, .. } => Common {
                listen: cfg.listen.clone(),
                ae_title: cfg.ae_title.clone(),
                allowed_calling: cfg.allowed_calling_ae_titles.clone(),
                allowed_peers: cfg.allowed_peers.clone(),
                max_associations: cfg.max_associations,
                idle: Duration::from_secs(cfg.idle_timeout_secs),
                tls: cfg.tls.clone(),
            },
        }
    }
}

/// Refuses a calling AE title not in the list (an empty list allows any) and a called AE
/// title other than this provider's.
#[derive(Debug, Clone)]
struct AeAccess {
    allowed: Vec<String>,
}

impl AccessControl for AeAccess {
    fn check_access(
        &self,
        this_ae_title: &str,
        calling_ae_title: &str,
        called_ae_title: &str,
        _user_identity: Option<&UserIdentity>,
    ) -> Result<(), AssociationRJServiceUserReason> {
        if called_ae_title.trim() != this_ae_title.trim() {
            return Err(AssociationRJServiceUserReason::CalledAETitleNotRecognized);
        }
        if !self.allowed.is_empty()
            && !self
                .allowed
                .iter()
                .any(|a| a.trim() == calling_ae_title.trim())
        {
            return Err(AssociationRJServiceUserReason::CallingAETitleNotRecognized);
        }
        Ok(())
    }
}

/// Binds and starts a provider.
///
/// # Errors
///
/// [`BuildError::Bind`] when the address cannot be bound.
pub async fn start(
    service: Service,
    cx: SourceContext,
    metrics: DicomMetrics,
) -> Result<ScpTask, BuildError> {
    let common = service.common();
    let tls = match &common.tls {
        None => None,
        Some(t) => Some(t.load().map_err(|problems| {
            let text: Vec<String> = problems
                .iter()
                .map(|(k, m)| format!("source.tls.{k}: {m}"))
                .collect();
            BuildError::Config(text.join("; "))
        })?),
    };
    let bind_err = |source| BuildError::Bind {
        addr: common.listen.clone(),
        source,
    };
    let listener = TcpListener::bind(&common.listen).await.map_err(bind_err)?;
    let local_addr = listener.local_addr().map_err(bind_err)?;
    info!(channel = %cx.channel, addr = %local_addr, ae_title = %common.ae_title, tls = tls.is_some(), "DICOM provider bound.");
    let shared = Arc::new(Shared {
        common,
        tls,
        service,
        cx,
        metrics,
    });
    let join = tokio::spawn(accept_loop(listener, shared));
    Ok(ScpTask { local_addr, join })
}

struct Shared {
    common: Common,
    tls: Option<crate::tls::ServerTls>,
    service: Service,
    cx: SourceContext,
    metrics: DicomMetrics,
}

impl Shared {
    fn count(&self, outcome: &str) {
        self.metrics
            .associations
            .with_label_values(&[&self.cx.channel, outcome])
            .inc();
    }
}

async fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    let tracker = TaskTracker::new();
    let slots = Arc::new(tokio::sync::Semaphore::new(shared.common.max_associations));
    loop {
        let accepted = tokio::select! {
            () = shared.cx.shutdown.cancelled() => break,
            a = listener.accept() => a,
        };
        let (socket, peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                warn!(channel = %shared.cx.channel, error = %e, "Accept failed.");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        if !peers::allowed(&shared.common.allowed_peers, peer.ip()) {
            shared.count("refused");
            shared.cx.metrics.connections_refused.inc();
            warn!(channel = %shared.cx.channel, peer = %peer, "DICOM connection from a peer not allowed; closed.");
            continue;
        }
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            shared.count("refused");
            shared.cx.metrics.connections_refused.inc();
            warn!(channel = %shared.cx.channel, peer = %peer, "Too many DICOM associations; connection closed.");
            continue;
        };
        shared.cx.metrics.connections_opened.inc();
        let shared = shared.clone();
        tracker.spawn(async move {
            serve(socket, peer, &shared).await;
            shared.cx.metrics.connections_closed.inc();
            drop(permit);
        });
    }
    tracker.close();
    tracker.wait().await;
}

async fn serve(socket: TcpStream, peer: SocketAddr, shared: &Shared) {
    let _ = socket.set_nodelay(true);
    let access = AeAccess {
        allowed: shared.common.allowed_calling.clone(),
    };
    let mut opts = ServerAssociationOptions::new()
        .ae_access_control(access)
        .ae_title(shared.common.ae_title.clone())
        .read_timeout(shared.common.idle)
        .write_timeout(shared.common.idle)
        .with_abstract_syntax(VERIFICATION);
    match &shared.service {
        Service::Worklist { cfg, .. } => {
            opts = opts.with_abstract_syntax(MWL_FIND);
            if cfg.mpps {
                opts = opts.with_abstract_syntax(super::mpps::MPPS);
            }
            for ts in PLAIN_SYNTAXES {
                opts = opts.with_transfer_syntax(ts);
            }
        }
        Service::Store { .. } => {
            // Any storage SOP class, in any transfer syntax the registry can read.
            opts = opts.promiscuous(true);
        }
    }
    let refused = |e: dicom_ul::association::Error| {
        let rejected = matches!(e, dicom_ul::association::Error::Rejected { .. });
        if let dicom_ul::association::Error::TlsHandshake { source, .. } = &e {
            shared
                .cx
                .metrics
                .tls_handshake_failures
                .count(crate::tls::HandshakeFailure::classify(source));
        }
        shared.count(if rejected { "rejected" } else { "failed" });
        warn!(channel = %shared.cx.channel, peer = %peer, error = %e, "DICOM association not established.");
    };
    match &shared.tls {
        None => match opts.establish_async(socket).await {
            Ok(assoc) => associated(assoc, peer, shared).await,
            Err(e) => refused(e),
        },
        Some(tls) => {
            // The handshake and the A-ASSOCIATE within the handshake timeout and the idle
            // timeout: a peer that stalls holds only its own slot, and not for long.
            let opts = opts.tls_config(tls.config());
            let limit = tls.handshake_timeout() + shared.common.idle;
            match tokio::time::timeout(limit, opts.establish_tls_async(socket)).await {
                Ok(Ok(assoc)) => associated(assoc, peer, shared).await,
                Ok(Err(e)) => refused(e),
                Err(_) => {
                    shared
                        .cx
                        .metrics
                        .tls_handshake_failures
                        .count(crate::tls::HandshakeFailure::Timeout);
                    shared.count("failed");
                    warn!(channel = %shared.cx.channel, peer = %peer, "DICOM TLS association not established in time.");
                }
            }
        }
    }
}

/// Serves an established association until it is released, aborted or idle.
async fn associated<S>(mut assoc: AsyncServerAssociation<S>, peer: SocketAddr, shared: &Shared)
where
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    shared.count("accepted");
    let calling = dicom_ul::association::Association::peer_ae_title(&assoc)
        .trim()
        .to_string();
    debug!(channel = %shared.cx.channel, peer = %peer, calling_ae = %calling, "DICOM association accepted.");
    let max = match &shared.service {
        Service::Store { cfg, .. } => cfg.max_object_bytes,
        Service::Worklist { .. } => 4 * 1024 * 1024,
    };
    loop {
        let received = tokio::select! {
            () = shared.cx.shutdown.cancelled() => {
                let _ = assoc.abort().await;
                return;
            }
            r = dimse::receive(&mut assoc, shared.common.idle, max) => r,
        };
        match received {
            Ok(Received::Message(m)) => {
                let answered = handle(&mut assoc, m, peer, &calling, shared).await;
                if let Err(e) = answered {
                    warn!(channel = %shared.cx.channel, peer = %peer, error = %e, "DICOM answer failed; association aborted.");
                    let _ = assoc.abort().await;
                    return;
                }
            }
            Ok(Received::Release) => {
                let _ = assoc.send(&Pdu::ReleaseRP).await;
                return;
            }
            Ok(Received::Abort) => return,
            Err(e) => {
                debug!(channel = %shared.cx.channel, peer = %peer, error = %e, "DICOM association ended.");
                let _ = assoc.abort().await;
                return;
            }
        }
    }
}

/// The transfer syntax negotiated for a presentation context.
fn context_ts<S>(assoc: &AsyncServerAssociation<S>, id: u8) -> (String, String)
where
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    assoc
        .presentation_contexts()
        .iter()
        .find(|pc| pc.id == id)
        .map(|pc| (pc.transfer_syntax.clone(), pc.abstract_syntax.clone()))
        .unwrap_or_default()
}

async fn handle<S>(
    assoc: &mut AsyncServerAssociation<S>,
    m: Message,
    peer: SocketAddr,
    calling: &str,
    shared: &Shared,
) -> Result<(), dimse::DimseError>
where
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    let sop = m.text(tags::AFFECTED_SOP_CLASS_UID);
    let (ts, _abstract) = context_ts(assoc, m.context_id);
    match (m.field(), &shared.service) {
        (command::C_ECHO_RQ, _) => {
            let rsp = dimse::response(
                command::C_ECHO_RSP,
                VERIFICATION,
                m.message_id(),
                status::SUCCESS,
                false,
            );
            dimse::send(assoc, m.context_id, &rsp, None).await
        }
        (command::C_FIND_RQ, Service::Worklist { cfg, state }) if sop == MWL_FIND => {
            find(assoc, &m, &ts, (peer, cfg), state.as_ref(), &shared.cx).await
        }
        (command::N_CREATE_RQ | command::N_SET_RQ, Service::Worklist { cfg, state })
            if cfg.mpps && sop_or_requested(&m) == super::mpps::MPPS =>
        {
            let ctx = super::mpps::MppsContext {
                channel: &shared.cx.channel,
                worklist: &cfg.worklist,
                ae_title: &cfg.ae_title,
                calling,
                peer,
                state: state.as_ref(),
                out: &shared.cx.out,
            };
            let a = super::mpps::handle(&ctx, &m, &ts).await;
            let mut rsp =
                dimse::response(a.field, super::mpps::MPPS, m.message_id(), a.status, false);
            if !a.uid.is_empty() {
                rsp.put_str(tags::AFFECTED_SOP_INSTANCE_UID, dicom_core::VR::UI, a.uid);
            }
            if let Some(c) = &a.comment {
                dimse::put_error_comment(&mut rsp, c);
            }
            dimse::send(assoc, m.context_id, &rsp, None).await
        }
        (command::C_STORE_RQ, Service::Store { storage, .. }) => {
            let (st, comment) = storage
                .store(&m, &ts, calling, peer, &shared.cx, &shared.metrics)
                .await;
            let mut rsp = dimse::response(command::C_STORE_RSP, &sop, m.message_id(), st, false);
            rsp.put_str(
                tags::AFFECTED_SOP_INSTANCE_UID,
                dicom_core::VR::UI,
                m.text(tags::AFFECTED_SOP_INSTANCE_UID),
            );
            if let Some(c) = &comment {
                dimse::put_error_comment(&mut rsp, c);
            }
            dimse::send(assoc, m.context_id, &rsp, None).await
        }
        (command::C_CANCEL_RQ, _) => Ok(()),
        (field, _) => {
            debug!(channel = %shared.cx.channel, field, "DICOM operation not offered.");
            let rsp = dimse::response(
                field | 0x8000,
                &sop,
                m.message_id(),
                status::UNRECOGNIZED_OPERATION,
                false,
            );
            dimse::send(assoc, m.context_id, &rsp, None).await
        }
    }
}

/// N-SET names its class in RequestedSOPClassUID; N-CREATE in AffectedSOPClassUID.
fn sop_or_requested(m: &Message) -> String {
    let a = m.text(tags::AFFECTED_SOP_CLASS_UID);
    if a.is_empty() {
        m.text(tags::REQUESTED_SOP_CLASS_UID)
    } else {
        a
    }
}

/// Modality Worklist C-FIND: one pending response per match (at most `max_matches`), then
/// success. An identifier that does not parse gets "unable to process" (C001), none or one
/// whose keys are not what the SOP class allows "identifier does not match SOP class"
/// (A900); either is stored as a rejected message (format `dicom`, type `C-FIND`) with its
/// reason first.
async fn find<S>(
    assoc: &mut AsyncServerAssociation<S>,
    m: &Message,
    ts: &str,
    (peer, cfg): (SocketAddr, &WorklistSourceConfig),
    state: &dyn DicomState,
    cx: &SourceContext,
) -> Result<(), dimse::DimseError>
where
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    let id = m.message_id();
    let channel = &cx.channel;
    let refused = match m.dataset.as_deref().map(|d| dimse::read_dataset(d, ts)) {
        Some(Ok(q)) => match worklist::query_problem(&q) {
            None => Ok(q),
            Some(p) => Err((status::DATASET_MISMATCH, p)),
        },
        Some(Err(e)) => Err((
            status::UNABLE_TO_PROCESS,
            format!("the C-FIND identifier does not parse: {}", e.detail()),
        )),
        None => Err((
            status::DATASET_MISMATCH,
            "C-FIND without an identifier".to_string(),
        )),
    };
    let query = match refused {
        Ok(q) => q,
        Err((st, reason)) => {
            warn!(channel = %channel, peer = %peer, status = format!("{st:04X}"), reason = %reason, "Worklist query refused; stored as rejected.");
            super::reject(
                &cx.out,
                peer,
                super::Refusal {
                    operation: "C-FIND",
                    uid: "",
                    data: m.dataset.as_deref().unwrap_or_default(),
                    reason: &reason,
                },
            )
            .await;
            let mut rsp = dimse::response(command::C_FIND_RSP, MWL_FIND, id, st, false);
            dimse::put_error_comment(&mut rsp, &reason);
            return dimse::send(assoc, m.context_id, &rsp, None).await;
        }
    };
    let items = match state.items(&cfg.worklist) {
        Ok(i) => i,
        Err(e) => {
            warn!(channel = %channel, error = %e, "Worklist cannot be read.");
            let rsp = dimse::response(
                command::C_FIND_RSP,
                MWL_FIND,
                id,
                status::OUT_OF_RESOURCES,
                false,
            );
            return dimse::send(assoc, m.context_id, &rsp, None).await;
        }
    };
    let mut sent = 0usize;
    for item in items.iter().filter(|i| worklist::matches(i, &query)) {
        if sent >= cfg.max_matches {
            break;
        }
        let identifier = dimse::write_dataset(&worklist::response(item, &query), ts)?;
        let rsp = dimse::response(command::C_FIND_RSP, MWL_FIND, id, status::PENDING, true);
        dimse::send(assoc, m.context_id, &rsp, Some(&identifier)).await?;
        sent += 1;
    }
    debug!(channel = %channel, matches = sent, "Worklist query answered.");
    let rsp = dimse::response(command::C_FIND_RSP, MWL_FIND, id, status::SUCCESS, false);
    dimse::send(assoc, m.context_id, &rsp, None).await
}
