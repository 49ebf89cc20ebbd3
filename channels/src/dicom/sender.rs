//! `[[destination]] type = "dicom"`: sends objects a `dicom_store` source stored to a PACS by
//! C-STORE (one association per delivery), with the retries of any destination.
//!
//! The delivery is the stored object's reference ([`ObjectRef`], payload `dicom`); the file
//! is read when it is sent, and its data set goes as stored, in its own transfer syntax. A
//! PACS that does not accept that SOP class and transfer syntax, or answers a failure status
//! other than "out of resources", is a permanent failure (dead letter); no answer, a refused
//! association or "out of resources" are tried again. With `[destination.tls]` the
//! association runs over TLS (DICOM's secure transport, PS3.15 B.1).

use super::dimse::{self, command, status, Received};
use crate::destination::{Delivery, DeliveryConfig, DeliveryError, Receipt};
use dicom_dictionary_std::tags;
use dicom_ul::association::client::AsyncClientAssociation;
use dicom_ul::pdu::PresentationContextResultReason;
use dicom_ul::ClientAssociationOptions;
use serde::{Deserialize, Serialize};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};

/// Content type of a delivery that references a stored DICOM object.
pub const CONTENT_TYPE: &str = "application/x-dicom-object-ref+json";

/// What a `dicom_store` source records for each object it stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObjectRef {
    /// The file (absolute, or relative to the engine's working directory).
    pub path: String,
    /// SOP Class UID.
    pub sop_class_uid: String,
    /// SOP Instance UID.
    pub sop_instance_uid: String,
    /// Transfer syntax of the stored data set.
    pub transfer_syntax: String,
    /// Study Instance UID.
    pub study_instance_uid: String,
    /// Series Instance UID.
    pub series_instance_uid: String,
}

/// The `[[destination]]` table of a PACS.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct DicomDestinationConfig {
    /// Destination name.
    pub name: String,
    /// `host:port` of the PACS.
    pub address: String,
    /// The PACS's AE title (the called AE title).
    pub ae_title: String,
    /// Our AE title (the calling AE title).
    #[serde(default = "default_calling")]
    pub calling_ae_title: String,
    /// Seconds for connecting, and for each answer.
    #[serde(default = "default_timeout_secs")]
    pub timeout_secs: u64,
    /// DICOM TLS (PS3.15 B.1) towards the PACS: the CA its certificate must chain to and,
    /// optionally, our client certificate (the same `[destination.tls]` table as an MLLP
    /// destination). Without it the association is plain TCP.
    #[serde(default)]
    pub tls: Option<crate::tls::ClientTlsConfig>,
    /// Delivery scheduling.
    #[serde(default)]
    pub delivery: DeliveryConfig,
}

fn default_calling() -> String {
    "SWITCHBOARD".into()
}
fn default_timeout_secs() -> u64 {
    30
}

impl DicomDestinationConfig {
    /// Problems a config loader cannot see: (key, message).
    pub fn problems(&self) -> Vec<(String, String)> {
        let mut out = Vec::new();
        if !self.address.contains(':') {
            out.push((
                "address".into(),
                format!("'{}' is not host:port", self.address),
            ));
        }
        for (k, v) in [
            ("ae_title", &self.ae_title),
            ("calling_ae_title", &self.calling_ae_title),
        ] {
            if let Some(m) = super::ae_title_problem(v) {
                out.push((k.into(), m));
            }
        }
        if self.timeout_secs == 0 {
            out.push(("timeout_secs".into(), "must be at least 1".into()));
        }
        if let Some(tls) = &self.tls {
            out.extend(
                tls.problems()
                    .into_iter()
                    .map(|(k, m)| (format!("tls.{k}"), m)),
            );
        }
        out
    }
}

/// The built destination.
#[derive(Debug)]
pub struct DicomSender {
    cfg: DicomDestinationConfig,
    tls: Option<crate::tls::ClientTls>,
}

/// An association to the PACS, over TCP or TLS.
enum Link {
    Plain(Box<AsyncClientAssociation<tokio::net::TcpStream>>),
    Tls(Box<AsyncClientAssociation<dicom_ul::association::client::AsyncTlsStream>>),
}

impl DicomSender {
    /// Builds the sender (loading its TLS certificates).
    ///
    /// # Errors
    ///
    /// The TLS problems, each naming its key.
    pub fn build(cfg: DicomDestinationConfig) -> Result<Self, String> {
        let tls = match &cfg.tls {
            None => None,
            Some(t) => Some(t.load().map_err(|problems| {
                problems
                    .iter()
                    .map(|(k, m)| format!("tls.{k}: {m}"))
                    .collect::<Vec<_>>()
                    .join("; ")
            })?),
        };
        Ok(DicomSender { cfg, tls })
    }

    /// notAfter of the certificates its TLS loaded.
    pub fn certificate_expiries(&self) -> Vec<crate::tls::CertExpiry> {
        self.tls
            .as_ref()
            .map(|t| t.expiries.clone())
            .unwrap_or_default()
    }

    fn timeout(&self) -> Duration {
        Duration::from_secs(self.cfg.timeout_secs)
    }

    fn options(&self) -> ClientAssociationOptions<'static> {
        ClientAssociationOptions::new()
            .calling_ae_title(self.cfg.calling_ae_title.clone())
            .called_ae_title(self.cfg.ae_title.clone())
            .connection_timeout(self.timeout())
            .read_timeout(self.timeout())
            .write_timeout(self.timeout())
    }

    /// Opens an association with `opts`, over TLS when configured.
    async fn associate(
        &self,
        opts: ClientAssociationOptions<'static>,
    ) -> Result<Link, dicom_ul::association::Error> {
        let addr = self.cfg.address.as_str();
        Ok(match &self.tls {
            None => Link::Plain(Box::new(opts.establish_with_async(addr).await?)),
            Some(tls) => Link::Tls(Box::new(
                opts.tls_config(tls.config())
                    .server_name(&tls.server_name_for(addr))
                    .establish_with_async_tls(addr)
                    .await?,
            )),
        })
    }

    /// Sends the object a delivery references by C-STORE.
    ///
    /// # Errors
    ///
    /// [`DeliveryError`], retryable or not as the module documentation says.
    pub async fn deliver(&self, d: &Delivery) -> Result<Receipt, DeliveryError> {
        let r: ObjectRef = serde_json::from_slice(&d.body).map_err(|_| {
            DeliveryError::permanent("payload is not a stored DICOM object's reference")
        })?;
        let path = r.path.clone();
        let bytes = tokio::task::spawn_blocking(move || std::fs::read(path))
            .await
            .map_err(|_| DeliveryError::retry("reading the object failed"))?
            .map_err(|e| {
                DeliveryError::permanent(format!("the stored object cannot be read: {}", e.kind()))
            })?;
        let dataset = dataset_of(&bytes)
            .ok_or_else(|| DeliveryError::permanent("the stored object is not a DICOM file"))?;
        let addr = &self.cfg.address;
        let opts = self
            .options()
            .with_presentation_context(r.sop_class_uid.clone(), vec![r.transfer_syntax.clone()]);
        let link = self
            .associate(opts)
            .await
            .map_err(|e| DeliveryError::retry(format!("{addr}: association: {e}")))?;
        match link {
            Link::Plain(a) => store(*a, addr, &r, dataset, self.timeout()).await,
            Link::Tls(a) => store(*a, addr, &r, dataset, self.timeout()).await,
        }
    }

    /// C-ECHO.
    ///
    /// # Errors
    ///
    /// A sentence naming the PACS and what failed.
    pub async fn healthcheck(&self) -> Result<(), String> {
        let address = &self.cfg.address;
        let link = self
            .associate(self.options().with_abstract_syntax(super::VERIFICATION))
            .await
            .map_err(|e| format!("{address}: association: {e}"))?;
        match link {
            Link::Plain(a) => echo_on(*a, address).await,
            Link::Tls(a) => echo_on(*a, address).await,
        }
    }
}

/// One C-STORE of `dataset` over `assoc`, then release.
async fn store<S>(
    mut assoc: AsyncClientAssociation<S>,
    addr: &str,
    r: &ObjectRef,
    dataset: &[u8],
    timeout: Duration,
) -> Result<Receipt, DeliveryError>
where
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    let pc = assoc
        .presentation_contexts()
        .iter()
        .find(|pc| pc.reason == PresentationContextResultReason::Acceptance)
        .map(|pc| pc.id);
    let Some(pc) = pc else {
        let _ = assoc.abort().await;
        return Err(DeliveryError::permanent(format!(
            "{addr}: the PACS does not accept SOP class {} in transfer syntax {}",
            r.sop_class_uid, r.transfer_syntax
        )));
    };
    let mut cmd = dimse::request(command::C_STORE_RQ, &r.sop_class_uid, 1, true);
    cmd.put_str(
        tags::AFFECTED_SOP_INSTANCE_UID,
        dicom_core::VR::UI,
        r.sop_instance_uid.clone(),
    );
    cmd.put(dicom_core::DataElement::new(
        tags::PRIORITY,
        dicom_core::VR::US,
        dicom_core::PrimitiveValue::from(0u16),
    ));
    dimse::send(&mut assoc, pc, &cmd, Some(dataset))
        .await
        .map_err(|e| DeliveryError::retry(format!("{addr}: C-STORE: {e}")))?;
    let answer = dimse::receive(&mut assoc, timeout, 1 << 20)
        .await
        .map_err(|e| DeliveryError::retry(format!("{addr}: C-STORE answer: {e}")))?;
    let st = match answer {
        Received::Message(m) => dimse::us(&m.command, tags::STATUS).unwrap_or(0xFFFF),
        _ => return Err(DeliveryError::retry(format!("{addr}: association ended"))),
    };
    let _ = assoc.release().await;
    match st {
        status::SUCCESS | 0xB000 | 0xB006 | 0xB007 => Ok(Receipt {
            status: None,
            detail: format!("C-STORE status {st:04X}"),
            // The answer is a DIMSE status, not a text; the detail names it.
            answer: None,
        }),
        0xA700..=0xA7FF => Err(DeliveryError::retry(format!(
            "{addr}: C-STORE status {st:04X} (out of resources)"
        ))),
        _ => Err(DeliveryError::permanent(format!(
            "{addr}: C-STORE status {st:04X}"
        ))),
    }
}

/// C-ECHO over an established association, then release.
async fn echo_on<S>(mut assoc: AsyncClientAssociation<S>, address: &str) -> Result<(), String>
where
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    let pc = assoc
        .presentation_contexts()
        .first()
        .map(|p| p.id)
        .ok_or_else(|| format!("{address}: verification not accepted"))?;
    let cmd = dimse::request(command::C_ECHO_RQ, super::VERIFICATION, 1, false);
    dimse::send(&mut assoc, pc, &cmd, None)
        .await
        .map_err(|e| format!("{address}: C-ECHO: {e}"))?;
    let answer = dimse::receive(&mut assoc, Duration::from_secs(10), 1 << 16)
        .await
        .map_err(|e| format!("{address}: C-ECHO answer: {e}"))?;
    let _ = assoc.release().await;
    match answer {
        Received::Message(m) if dimse::us(&m.command, tags::STATUS) == Some(0) => Ok(()),
        _ => Err(format!("{address}: C-ECHO not answered with success")),
    }
}

/// The data set of a DICOM file (after its preamble, `DICM` and file meta group).
pub fn dataset_of(file: &[u8]) -> Option<&[u8]> {
    if file.get(128..132)? != b"DICM" {
        return None;
    }
    // (0002,0000) UL, explicit VR: tag 4, VR 2, length 2, value 4.
    let head = file.get(132..144)?;
    if head[..4] != [0x02, 0x00, 0x00, 0x00] {
        return None;
    }
    let group_len = u32::from_le_bytes(head[8..12].try_into().ok()?) as usize;
    file.get(144 + group_len..)
}
