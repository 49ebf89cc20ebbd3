//! TLS for sources and destinations, with rustls (ring provider): the `[source.tls]` and
//! `[destination.tls]` tables, loading and checking certificates, the handshake on both
//! sides (HTTPS serving itself is [`crate::http_source::serve`]).
//!
//! A server side ([`ServerTlsConfig`]) presents `cert`/`key`; with `client_ca` it asks every
//! client for a certificate signed by that CA and refuses, at the handshake, a client without
//! one; `allowed_client_names` narrows that to certificates whose subject CN or SAN DNS names
//! are on the list (checked inside the handshake too, so a refused client never gets to send
//! a byte of HL7). A client side ([`ClientTlsConfig`]) trusts `ca` and may present a client
//! certificate. Both sides report config problems as `(key, message)` pairs for
//! `switchboard check`, and the notAfter of what they loaded for the expiry metric.
//!
//! Not here: plain TCP framing (see [`crate::mllp`]); this module only turns a `TcpStream`
//! into a TLS stream, so the MLLP code stays generic over the stream.

use crate::secret::SecretRef;
use prometheus::IntCounter;
use rustls::client::danger::HandshakeSignatureValid;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::WebPkiClientVerifier;
use rustls::{
    CertificateError, DigitallySignedStruct, DistinguishedName, RootCertStore, SignatureScheme,
};
use serde::Deserialize;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpStream;
use tokio_rustls::{TlsAcceptor, TlsConnector};
use tracing::warn;

/// PEM text given as a file path (`cert = "conf/tls/server.pem"`) or as a secret reference
/// (`key = { env = "MLLP_TLS_KEY" }`, `key = { file = "/run/secrets/key.pem" }`).
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(untagged)]
pub enum PemSource {
    /// A PEM file; relative paths are relative to the working directory.
    Path(PathBuf),
    /// A secret holding the PEM text.
    Secret(SecretRef),
}

impl PemSource {
    /// The PEM bytes.
    ///
    /// # Errors
    ///
    /// A sentence naming the file or variable (never its content).
    pub fn read(&self) -> Result<Vec<u8>, String> {
        match self {
            PemSource::Path(p) => {
                std::fs::read(p).map_err(|e| format!("cannot read PEM file {}: {e}", p.display()))
            }
            PemSource::Secret(s) => s.resolve().map(String::into_bytes),
        }
    }

    /// Where the PEM comes from, for messages.
    fn describe(&self) -> String {
        match self {
            PemSource::Path(p) => p.display().to_string(),
            PemSource::Secret(SecretRef { env: Some(v), .. }) => {
                format!("environment variable {v}")
            }
            PemSource::Secret(SecretRef { file: Some(f), .. }) => f.display().to_string(),
            PemSource::Secret(_) => "the secret".into(),
        }
    }
}

/// TLS on a listening source (`[source.tls]`): the certificate it presents and, optionally,
/// which client certificates it accepts (mutual TLS).
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ServerTlsConfig {
    /// The server certificate chain (PEM, leaf first).
    pub cert: PemSource,
    /// The server's private key (PEM: PKCS#8, PKCS#1 or SEC1); best given as a secret.
    pub key: PemSource,
    /// CA certificates (PEM) that client certificates must chain to. Set, it turns on mutual
    /// TLS: a client without a certificate signed by one of them is refused at the handshake.
    #[serde(default)]
    pub client_ca: Option<PemSource>,
    /// With `client_ca`: client certificate names allowed to connect, matched exactly (ASCII
    /// case-insensitive) against the subject CN and the SAN DNS names. Empty allows every
    /// certificate the CA signed.
    #[serde(default)]
    pub allowed_client_names: Vec<String>,
    /// Seconds a client has to complete the handshake.
    #[serde(default = "default_handshake_timeout_secs")]
    pub handshake_timeout_secs: u64,
}

/// TLS towards a peer (`[destination.tls]`): which CA to trust and, optionally, the client
/// certificate to present.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ClientTlsConfig {
    /// CA certificates (PEM) the peer's certificate must chain to.
    pub ca: PemSource,
    /// A client certificate chain (PEM) for mutual TLS; needs `key`.
    #[serde(default)]
    pub cert: Option<PemSource>,
    /// The client certificate's private key (PEM); needs `cert`.
    #[serde(default)]
    pub key: Option<PemSource>,
    /// The name the peer's certificate must carry; defaults to the host of the address.
    #[serde(default)]
    pub server_name: Option<String>,
}

fn default_handshake_timeout_secs() -> u64 {
    10
}

/// The expiry of one loaded certificate (the earliest, for a CA bundle).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CertExpiry {
    /// `server` (a listener's own certificate), `client` (a destination's own certificate),
    /// `client_ca` (the CA a listener checks clients against) or `ca` (the CA a destination
    /// trusts).
    pub role: &'static str,
    /// notAfter as Unix seconds.
    pub not_after: i64,
}

/// A config problem: (key below the `tls` table, message).
pub type Problem = (String, String);

/// The crypto provider every TLS config here uses.
fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn load_certs(src: &PemSource, key: &str) -> Result<Vec<CertificateDer<'static>>, Problem> {
    let pem = src.read().map_err(|m| (key.to_string(), m))?;
    let certs: Result<Vec<_>, _> = rustls_pemfile::certs(&mut pem.as_slice()).collect();
    match certs {
        Ok(c) if !c.is_empty() => {
            for der in &c {
                if x509_parser::parse_x509_certificate(der).is_err() {
                    return Err((
                        key.to_string(),
                        format!(
                            "{} holds a CERTIFICATE block that is not X.509",
                            src.describe()
                        ),
                    ));
                }
            }
            Ok(c)
        }
        Ok(_) => Err((
            key.to_string(),
            format!("no PEM CERTIFICATE block in {}", src.describe()),
        )),
        Err(e) => Err((
            key.to_string(),
            format!("{} is not valid PEM: {e}", src.describe()),
        )),
    }
}

fn load_key(src: &PemSource, key: &str) -> Result<PrivateKeyDer<'static>, Problem> {
    let pem = src.read().map_err(|m| (key.to_string(), m))?;
    match rustls_pemfile::private_key(&mut pem.as_slice()) {
        Ok(Some(k)) => Ok(k),
        Ok(None) => Err((
            key.to_string(),
            format!(
                "no PEM PRIVATE KEY block in {} (PKCS#8, RSA or EC)",
                src.describe()
            ),
        )),
        Err(e) => Err((
            key.to_string(),
            format!("{} is not valid PEM: {e}", src.describe()),
        )),
    }
}

/// Checks that `key` belongs to the leaf of `certs`; the message never shows key material.
fn check_pair(
    certs: &[CertificateDer<'static>],
    key: &PrivateKeyDer<'static>,
    key_name: &str,
) -> Result<(), Problem> {
    rustls::sign::CertifiedKey::from_der(certs.to_vec(), key.clone_key(), &provider())
        .map(|_| ())
        .map_err(|e| {
            let m = match e {
                rustls::Error::InconsistentKeys(_) => {
                    "the private key does not belong to the certificate".to_string()
                }
                other => format!("unusable private key: {other}"),
            };
            (key_name.to_string(), m)
        })
}

fn roots(certs: &[CertificateDer<'static>], key: &str) -> Result<RootCertStore, Problem> {
    let mut store = RootCertStore::empty();
    for c in certs {
        store
            .add(c.clone())
            .map_err(|e| (key.to_string(), format!("unusable CA certificate: {e}")))?;
    }
    Ok(store)
}

/// The earliest notAfter of `certs`, as Unix seconds.
fn not_after(certs: &[CertificateDer<'static>]) -> Option<i64> {
    certs
        .iter()
        .filter_map(|c| x509_parser::parse_x509_certificate(c).ok())
        .map(|(_, c)| c.validity().not_after.timestamp())
        .min()
}

/// The subject CN and SAN DNS names of a certificate.
pub fn certificate_names(der: &[u8]) -> Vec<String> {
    let Ok((_, cert)) = x509_parser::parse_x509_certificate(der) else {
        return Vec::new();
    };
    let mut names: Vec<String> = cert
        .subject()
        .iter_common_name()
        .filter_map(|cn| cn.as_str().ok().map(str::to_string))
        .collect();
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for n in &san.value.general_names {
            if let x509_parser::extensions::GeneralName::DNSName(d) = n {
                names.push((*d).to_string());
            }
        }
    }
    names
}

/// A loaded server side: the rustls config plus what the metrics need.
#[derive(Debug, Clone)]
pub struct ServerTls {
    config: Arc<rustls::ServerConfig>,
    handshake_timeout: Duration,
    /// notAfter of the server certificate and of the client CA.
    pub expiries: Vec<CertExpiry>,
}

impl ServerTlsConfig {
    /// Reads and checks every file and secret, and builds the rustls server config.
    ///
    /// # Errors
    ///
    /// Every problem found, each naming its key (`cert`, `key`, `client_ca`, ...).
    pub fn load(&self) -> Result<ServerTls, Vec<Problem>> {
        let mut problems = Vec::new();
        let certs = load_certs(&self.cert, "cert")
            .map_err(|p| problems.push(p))
            .ok();
        let key = load_key(&self.key, "key")
            .map_err(|p| problems.push(p))
            .ok();
        if let (Some(c), Some(k)) = (&certs, &key) {
            if let Err(p) = check_pair(c, k, "key") {
                problems.push(p);
            }
        }
        let ca = self.client_ca.as_ref().and_then(|src| {
            load_certs(src, "client_ca")
                .and_then(|c| roots(&c, "client_ca").map(|r| (c, r)))
                .map_err(|p| problems.push(p))
                .ok()
        });
        if self.client_ca.is_none() && !self.allowed_client_names.is_empty() {
            problems.push((
                "allowed_client_names".into(),
                "needs client_ca: names are read from verified client certificates".into(),
            ));
        }
        if self
            .allowed_client_names
            .iter()
            .any(|n| n.trim().is_empty())
        {
            problems.push((
                "allowed_client_names".into(),
                "names must not be empty".into(),
            ));
        }
        if self.handshake_timeout_secs == 0 {
            problems.push(("handshake_timeout_secs".into(), "must be at least 1".into()));
        }
        let (Some(certs), Some(key), true) = (certs, key, problems.is_empty()) else {
            return Err(problems);
        };
        let builder = rustls::ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| vec![("cert".to_string(), e.to_string())])?;
        let mut expiries = Vec::new();
        if let Some(t) = not_after(&certs) {
            expiries.push(CertExpiry {
                role: "server",
                not_after: t,
            });
        }
        let builder = match ca {
            None => builder.with_no_client_auth(),
            Some((ca_certs, store)) => {
                if let Some(t) = not_after(&ca_certs) {
                    expiries.push(CertExpiry {
                        role: "client_ca",
                        not_after: t,
                    });
                }
                let inner =
                    WebPkiClientVerifier::builder_with_provider(Arc::new(store), provider())
                        .build()
                        .map_err(|e| vec![("client_ca".to_string(), e.to_string())])?;
                let verifier: Arc<dyn ClientCertVerifier> = if self.allowed_client_names.is_empty()
                {
                    inner
                } else {
                    Arc::new(NameAllowList {
                        inner,
                        names: self
                            .allowed_client_names
                            .iter()
                            .map(|n| n.trim().to_ascii_lowercase())
                            .collect(),
                    })
                };
                builder.with_client_cert_verifier(verifier)
            }
        };
        let config = builder
            .with_single_cert(certs, key)
            .map_err(|e| vec![("key".to_string(), e.to_string())])?;
        Ok(ServerTls {
            config: Arc::new(config),
            handshake_timeout: Duration::from_secs(self.handshake_timeout_secs),
            expiries,
        })
    }

    /// Problems `switchboard check` reports: (key below `tls`, message).
    pub fn problems(&self) -> Vec<Problem> {
        self.load().err().unwrap_or_default()
    }
}

/// Wraps the CA check with the certificate-name allow-list, so a certificate signed by the CA
/// but not on the list fails inside the handshake (the client gets an access-denied alert).
#[derive(Debug)]
struct NameAllowList {
    inner: Arc<dyn ClientCertVerifier>,
    names: Vec<String>,
}

impl ClientCertVerifier for NameAllowList {
    fn offer_client_auth(&self) -> bool {
        self.inner.offer_client_auth()
    }

    fn client_auth_mandatory(&self) -> bool {
        self.inner.client_auth_mandatory()
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.inner.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        let verified = self
            .inner
            .verify_client_cert(end_entity, intermediates, now)?;
        let allowed = certificate_names(end_entity)
            .iter()
            .any(|n| self.names.contains(&n.to_ascii_lowercase()));
        if allowed {
            Ok(verified)
        } else {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::ApplicationVerificationFailure,
            ))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// Why a server-side handshake failed; the `reason` label of the handshake-failure metric.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HandshakeFailure {
    /// Mutual TLS and the client sent no certificate.
    NoCertificate,
    /// The client certificate is not signed by the client CA, expired, or otherwise invalid.
    BadCertificate,
    /// The client certificate is valid but its names are not on `allowed_client_names`.
    NameNotAllowed,
    /// The handshake did not complete within `handshake_timeout_secs`.
    Timeout,
    /// Anything else: not TLS, no common protocol version or cipher, an alert, a reset.
    Protocol,
}

impl HandshakeFailure {
    /// Every reason, as label values.
    pub const REASONS: [&'static str; 5] = [
        "no_certificate",
        "bad_certificate",
        "name_not_allowed",
        "timeout",
        "protocol",
    ];

    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::NoCertificate => "no_certificate",
            Self::BadCertificate => "bad_certificate",
            Self::NameNotAllowed => "name_not_allowed",
            Self::Timeout => "timeout",
            Self::Protocol => "protocol",
        }
    }

    /// The reason of a failed server handshake, from its IO error.
    pub fn classify(e: &std::io::Error) -> HandshakeFailure {
        let tls = e
            .get_ref()
            .and_then(|inner| inner.downcast_ref::<rustls::Error>());
        match tls {
            Some(rustls::Error::NoCertificatesPresented) => Self::NoCertificate,
            Some(rustls::Error::InvalidCertificate(
                CertificateError::ApplicationVerificationFailure,
            )) => Self::NameNotAllowed,
            Some(rustls::Error::InvalidCertificate(_)) => Self::BadCertificate,
            _ => Self::Protocol,
        }
    }
}

/// Server-side handshake failures of one channel, one counter per reason.
#[derive(Debug, Clone)]
pub struct HandshakeFailures {
    counters: [IntCounter; 5],
}

impl HandshakeFailures {
    /// Counters made by `make(reason)` for each of [`HandshakeFailure::REASONS`].
    pub fn new(make: impl Fn(&str) -> IntCounter) -> Self {
        HandshakeFailures {
            counters: HandshakeFailure::REASONS.map(make),
        }
    }

    /// Counters that are not registered anywhere, for tests and tools.
    pub fn unregistered() -> Self {
        Self::new(|r| IntCounter::new(format!("tls_{r}"), r).expect("a valid metric name"))
    }

    /// Counts one failure.
    pub fn count(&self, reason: HandshakeFailure) {
        self.counter(reason).inc();
    }

    /// The counter of `reason`.
    pub fn counter(&self, reason: HandshakeFailure) -> &IntCounter {
        let i = HandshakeFailure::REASONS
            .iter()
            .position(|r| *r == reason.as_str())
            .unwrap_or(HandshakeFailure::REASONS.len() - 1);
        &self.counters[i]
    }
}

impl ServerTls {
    /// The rustls config, for callers that drive their own acceptor.
    pub fn config(&self) -> Arc<rustls::ServerConfig> {
        self.config.clone()
    }

    /// Time a client has to complete the handshake.
    pub fn handshake_timeout(&self) -> Duration {
        self.handshake_timeout
    }

    /// Runs the server handshake on an accepted connection, within the handshake timeout;
    /// a failure is counted and logged (peer, reason, rustls' description; no key material).
    ///
    /// # Errors
    ///
    /// The reason the handshake failed; the connection is dropped.
    pub async fn accept(
        &self,
        stream: TcpStream,
        peer: SocketAddr,
        channel: &str,
        failures: &HandshakeFailures,
    ) -> Result<tokio_rustls::server::TlsStream<TcpStream>, HandshakeFailure> {
        let acceptor = TlsAcceptor::from(self.config.clone());
        let reason = match tokio::time::timeout(self.handshake_timeout, acceptor.accept(stream))
            .await
        {
            Ok(Ok(s)) => return Ok(s),
            Ok(Err(e)) => {
                let reason = HandshakeFailure::classify(&e);
                warn!(channel = %channel, peer = %peer, reason = reason.as_str(), error = %e, "TLS handshake failed, connection refused.");
                reason
            }
            Err(_) => {
                warn!(channel = %channel, peer = %peer, reason = "timeout", "TLS handshake timed out, connection refused.");
                HandshakeFailure::Timeout
            }
        };
        failures.count(reason);
        Err(reason)
    }
}

/// A loaded client side.
#[derive(Clone)]
pub struct ClientTls {
    config: Arc<rustls::ClientConfig>,
    connector: TlsConnector,
    server_name: Option<ServerName<'static>>,
    /// notAfter of the trusted CA and of the client certificate.
    pub expiries: Vec<CertExpiry>,
}

impl std::fmt::Debug for ClientTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientTls")
            .field("server_name", &self.server_name)
            .field("expiries", &self.expiries)
            .finish_non_exhaustive()
    }
}

impl ClientTlsConfig {
    /// Reads and checks every file and secret, and builds the rustls client config.
    ///
    /// # Errors
    ///
    /// Every problem found, each naming its key (`ca`, `cert`, `key`, `server_name`).
    pub fn load(&self) -> Result<ClientTls, Vec<Problem>> {
        let mut problems = Vec::new();
        let ca = load_certs(&self.ca, "ca")
            .and_then(|c| roots(&c, "ca").map(|r| (c, r)))
            .map_err(|p| problems.push(p))
            .ok();
        let pair = match (&self.cert, &self.key) {
            (None, None) => None,
            (Some(_), None) => {
                problems.push(("key".into(), "cert is set, key is missing".into()));
                None
            }
            (None, Some(_)) => {
                problems.push(("cert".into(), "key is set, cert is missing".into()));
                None
            }
            (Some(c), Some(k)) => {
                let certs = load_certs(c, "cert").map_err(|p| problems.push(p)).ok();
                let key = load_key(k, "key").map_err(|p| problems.push(p)).ok();
                match (certs, key) {
                    (Some(c), Some(k)) => match check_pair(&c, &k, "key") {
                        Ok(()) => Some((c, k)),
                        Err(p) => {
                            problems.push(p);
                            None
                        }
                    },
                    _ => None,
                }
            }
        };
        let server_name = match &self.server_name {
            None => None,
            Some(n) => match ServerName::try_from(n.clone()) {
                Ok(s) => Some(s),
                Err(_) => {
                    problems.push((
                        "server_name".into(),
                        format!("'{n}' is not a DNS name or IP address"),
                    ));
                    None
                }
            },
        };
        let Some((ca_certs, store)) = ca else {
            return Err(problems);
        };
        if !problems.is_empty() {
            return Err(problems);
        }
        let mut expiries = Vec::new();
        if let Some(t) = not_after(&ca_certs) {
            expiries.push(CertExpiry {
                role: "ca",
                not_after: t,
            });
        }
        let builder = rustls::ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| vec![("ca".to_string(), e.to_string())])?
            .with_root_certificates(store);
        let config = match pair {
            None => builder.with_no_client_auth(),
            Some((certs, key)) => {
                if let Some(t) = not_after(&certs) {
                    expiries.push(CertExpiry {
                        role: "client",
                        not_after: t,
                    });
                }
                builder
                    .with_client_auth_cert(certs, key)
                    .map_err(|e| vec![("key".to_string(), e.to_string())])?
            }
        };
        let config = Arc::new(config);
        Ok(ClientTls {
            connector: TlsConnector::from(config.clone()),
            config,
            server_name,
            expiries,
        })
    }

    /// Problems `switchboard check` reports: (key below `tls`, message).
    pub fn problems(&self) -> Vec<Problem> {
        self.load().err().unwrap_or_default()
    }
}

impl ClientTls {
    /// The rustls config, for callers that drive their own connector.
    pub fn config(&self) -> Arc<rustls::ClientConfig> {
        self.config.clone()
    }

    /// The name the peer at `addr` (`host:port`) must carry: `server_name`, else the host.
    pub fn server_name_for(&self, addr: &str) -> String {
        match &self.server_name {
            Some(n) => n.to_str().into_owned(),
            None => addr
                .rsplit_once(':')
                .map_or(addr, |(h, _)| h)
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_string(),
        }
    }

    /// Runs the client handshake on a connected stream to `addr` (`host:port`); the peer's
    /// certificate must chain to the CA and name `server_name` (default: the host of `addr`).
    ///
    /// # Errors
    ///
    /// The IO error of the handshake; its text says why (unknown issuer, name mismatch, an
    /// alert from the peer).
    pub async fn connect(
        &self,
        addr: &str,
        stream: TcpStream,
    ) -> std::io::Result<tokio_rustls::client::TlsStream<TcpStream>> {
        let name = match &self.server_name {
            Some(n) => n.clone(),
            None => {
                let host = addr
                    .rsplit_once(':')
                    .map_or(addr, |(h, _)| h)
                    .trim_start_matches('[')
                    .trim_end_matches(']');
                ServerName::try_from(host.to_string()).map_err(|_| {
                    std::io::Error::new(
                        std::io::ErrorKind::InvalidInput,
                        format!("'{host}' is not a valid TLS server name; set tls.server_name"),
                    )
                })?
            }
        };
        self.connector.connect(name, stream).await
    }
}

/// The verified client certificate of an HTTPS request (mutual TLS), as a request extension.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClientCertificate {
    /// Subject CN and SAN DNS names; empty without mutual TLS.
    pub names: Vec<String>,
}

#[cfg(test)]
pub(crate) mod test_pki {
    //! Certificates for tests, made with rcgen: a CA, and leaves it signs.

    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};

    /// A test CA.
    pub struct Ca {
        /// Its certificate, PEM.
        pub pem: String,
        issuer: Issuer<'static, KeyPair>,
    }

    /// A certificate and its key, PEM.
    pub struct Leaf {
        /// The certificate.
        pub cert: String,
        /// The private key.
        pub key: String,
    }

    impl Ca {
        /// A new self-signed CA named `name`.
        pub fn new(name: &str) -> Ca {
            let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
            params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
            params.distinguished_name.push(DnType::CommonName, name);
            let key = KeyPair::generate().expect("key");
            let cert = params.self_signed(&key).expect("self-signed");
            Ca {
                pem: cert.pem(),
                issuer: Issuer::new(params, key),
            }
        }

        /// A leaf with subject CN `cn` and these SANs (DNS names or IP addresses).
        pub fn leaf(&self, cn: &str, sans: &[&str]) -> Leaf {
            let mut params =
                CertificateParams::new(sans.iter().map(|s| s.to_string()).collect::<Vec<_>>())
                    .expect("params");
            params.distinguished_name.push(DnType::CommonName, cn);
            let key = KeyPair::generate().expect("key");
            let cert = params.signed_by(&key, &self.issuer).expect("signed");
            Leaf {
                cert: cert.pem(),
                key: key.serialize_pem(),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::test_pki::Ca;
    use super::*;
    use std::path::Path;

    fn write(dir: &Path, name: &str, text: &str) -> PemSource {
        let p = dir.join(name);
        std::fs::write(&p, text).expect("write");
        PemSource::Path(p)
    }

    fn server_config(dir: &Path, ca: &Ca, client_ca: Option<&Ca>) -> ServerTlsConfig {
        let leaf = ca.leaf("switchboard", &["localhost", "127.0.0.1"]);
        ServerTlsConfig {
            cert: write(dir, "server.pem", &leaf.cert),
            key: write(dir, "server.key", &leaf.key),
            client_ca: client_ca.map(|c| write(dir, "client-ca.pem", &c.pem)),
            allowed_client_names: vec![],
            handshake_timeout_secs: 5,
        }
    }

    #[test]
    fn config_parses_paths_and_secrets() {
        let c: ServerTlsConfig = toml::from_str(
            "cert = \"conf/tls/server.pem\"\nkey = { env = \"SB_KEY\" }\nclient_ca = { file = \"ca.pem\" }\nallowed_client_names = [\"lab-1\"]\n",
        )
        .expect("parses");
        assert_eq!(c.cert, PemSource::Path("conf/tls/server.pem".into()));
        assert_eq!(
            c.key,
            PemSource::Secret(SecretRef {
                env: Some("SB_KEY".into()),
                file: None
            })
        );
        assert_eq!(c.handshake_timeout_secs, 10);
        assert!(
            toml::from_str::<ServerTlsConfig>("cert = \"a\"\nkey = \"b\"\nca = \"c\"\n").is_err()
        );
    }

    #[test]
    fn problems_name_the_key() {
        let dir = tempfile::tempdir().expect("tempdir");
        let ca = Ca::new("Test CA");
        let a = ca.leaf("a", &["a.test"]);
        let b = ca.leaf("b", &["b.test"]);
        let cfg = ServerTlsConfig {
            cert: write(dir.path(), "a.pem", &a.cert),
            key: write(dir.path(), "b.key", &b.key),
            client_ca: Some(PemSource::Path(dir.path().join("missing.pem"))),
            allowed_client_names: vec![],
            handshake_timeout_secs: 0,
        };
        let problems = cfg.problems();
        let keys: Vec<&str> = problems.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(
            keys,
            ["key", "client_ca", "handshake_timeout_secs"],
            "{problems:?}"
        );
        assert!(problems[0].1.contains("does not belong"), "{problems:?}");
        assert!(problems[1].1.contains("missing.pem"), "{problems:?}");
        assert!(
            !problems[0].1.contains("PRIVATE"),
            "no key material in messages"
        );

        let garbage = ServerTlsConfig {
            cert: write(dir.path(), "garbage.pem", "not a certificate"),
            key: write(dir.path(), "empty.key", ""),
            client_ca: None,
            allowed_client_names: vec!["lab".into()],
            handshake_timeout_secs: 5,
        };
        let problems = garbage.problems();
        let keys: Vec<&str> = problems.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(
            keys,
            ["cert", "key", "allowed_client_names"],
            "{problems:?}"
        );
        assert!(problems[0].1.contains("no PEM CERTIFICATE"), "{problems:?}");

        let client = ClientTlsConfig {
            ca: PemSource::Secret(SecretRef {
                env: Some("SWITCHBOARD_TEST_SURELY_UNSET_CA".into()),
                file: None,
            }),
            cert: Some(write(dir.path(), "a2.pem", &a.cert)),
            key: None,
            server_name: Some("not a name!".into()),
        };
        let problems = client.problems();
        let keys: Vec<&str> = problems.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(keys, ["ca", "key", "server_name"], "{problems:?}");
        assert!(problems[0].1.contains("SWITCHBOARD_TEST_SURELY_UNSET_CA"));
    }

    #[test]
    fn expiry_and_names_are_read_from_the_certificates() {
        let dir = tempfile::tempdir().expect("tempdir");
        let ca = Ca::new("Test CA");
        let tls = server_config(dir.path(), &ca, Some(&ca))
            .load()
            .expect("loads");
        let roles: Vec<&str> = tls.expiries.iter().map(|e| e.role).collect();
        assert_eq!(roles, ["server", "client_ca"]);
        // rcgen's default validity ends in 4096.
        assert!(tls.expiries.iter().all(|e| e.not_after > 4_000_000_000));
        let leaf = ca.leaf("lab-analyzer-1", &["lab1.example.test"]);
        let der = rustls_pemfile::certs(&mut leaf.cert.as_bytes())
            .next()
            .expect("one")
            .expect("pem");
        assert_eq!(
            certificate_names(&der),
            ["lab-analyzer-1", "lab1.example.test"]
        );
    }

    /// A TLS echo-once server: handshake, then read up to 5 bytes and answer "ok".
    async fn handshake_server(
        tls: ServerTls,
        failures: HandshakeFailures,
    ) -> (String, tokio::task::JoinHandle<Option<Vec<String>>>) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr").to_string();
        let join = tokio::spawn(async move {
            let (s, peer) = listener.accept().await.expect("accept");
            let mut s = tls.accept(s, peer, "t", &failures).await.ok()?;
            let names = s
                .get_ref()
                .1
                .peer_certificates()
                .and_then(|c| c.first())
                .map(|c| certificate_names(c))
                .unwrap_or_default();
            let mut buf = [0u8; 5];
            s.read_exact(&mut buf).await.ok()?;
            s.write_all(b"ok").await.ok()?;
            s.shutdown().await.ok()?;
            Some(names)
        });
        (addr, join)
    }

    /// Connects, sends "hello" and reads the answer; an error when anything fails.
    async fn talk(addr: &str, client: &ClientTls) -> std::io::Result<Vec<u8>> {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let tcp = TcpStream::connect(addr).await?;
        let mut s = client.connect("localhost:1", tcp).await?;
        s.write_all(b"hello").await?;
        let mut out = Vec::new();
        s.read_to_end(&mut out).await?;
        Ok(out)
    }

    fn client(dir: &Path, trust: &Ca, leaf: Option<&test_pki::Leaf>, tag: &str) -> ClientTls {
        ClientTlsConfig {
            ca: write(dir, &format!("{tag}-ca.pem"), &trust.pem),
            cert: leaf.map(|l| write(dir, &format!("{tag}.pem"), &l.cert)),
            key: leaf.map(|l| write(dir, &format!("{tag}.key"), &l.key)),
            server_name: None,
        }
        .load()
        .expect("client loads")
    }

    #[tokio::test]
    async fn mutual_tls_accepts_signed_clients_and_refuses_the_others() {
        let dir = tempfile::tempdir().expect("tempdir");
        let server_ca = Ca::new("Server CA");
        let client_ca = Ca::new("Client CA");
        let rogue_ca = Ca::new("Rogue CA");
        let mut cfg = server_config(dir.path(), &server_ca, Some(&client_ca));
        cfg.allowed_client_names = vec!["LAB-1".into()];
        let tls = cfg.load().expect("loads");
        let failures = HandshakeFailures::unregistered();

        let good = client_ca.leaf("lab-1", &[]);
        let (addr, server) = handshake_server(tls.clone(), failures.clone()).await;
        let answer = talk(&addr, &client(dir.path(), &server_ca, Some(&good), "good"))
            .await
            .expect("a signed client on the list gets through");
        assert_eq!(answer, b"ok");
        assert_eq!(server.await.expect("task"), Some(vec!["lab-1".to_string()]));

        let cases = [
            (None, HandshakeFailure::NoCertificate),
            (
                Some(rogue_ca.leaf("lab-1", &[])),
                HandshakeFailure::BadCertificate,
            ),
            (
                Some(client_ca.leaf("lab-2", &["lab-2.test"])),
                HandshakeFailure::NameNotAllowed,
            ),
        ];
        for (i, (leaf, reason)) in cases.iter().enumerate() {
            let (addr, server) = handshake_server(tls.clone(), failures.clone()).await;
            let c = client(dir.path(), &server_ca, leaf.as_ref(), &format!("c{i}"));
            let result = talk(&addr, &c).await;
            assert!(result.is_err(), "{reason:?}: got {result:?}");
            assert_eq!(server.await.expect("task"), None, "{reason:?}");
            assert_eq!(failures.counter(*reason).get(), 1, "{reason:?}");
        }

        // A client that does not trust the server's CA gives up itself.
        let (addr, server) = handshake_server(tls, failures.clone()).await;
        let e = talk(
            &addr,
            &client(dir.path(), &rogue_ca, Some(&good), "wrong-trust"),
        )
        .await
        .expect_err("untrusted server");
        assert!(e.to_string().contains("UnknownIssuer"), "{e}");
        assert_eq!(server.await.expect("task"), None);
    }

    #[tokio::test]
    async fn https_sources_serve_a_router_to_a_client_trusting_the_ca() {
        let dir = tempfile::tempdir().expect("tempdir");
        let ca = Ca::new("Test CA");
        let tls = server_config(dir.path(), &ca, None);
        let app = axum::Router::new().route(
            "/ping",
            axum::routing::post(
                |axum::extract::ConnectInfo(peer): axum::extract::ConnectInfo<SocketAddr>,
                 body: String| async move { format!("pong {} {body}", peer.ip()) },
            ),
        );
        let (out, _inbound) = tokio::sync::mpsc::channel(1);
        let shutdown = tokio_util::sync::CancellationToken::new();
        let cx = crate::source::SourceContext {
            channel: "t".into(),
            out,
            shutdown: shutdown.clone(),
            metrics: crate::source::SourceMetrics::unregistered(),
            paused: Default::default(),
        };
        let failures = cx.metrics.tls_handshake_failures.clone();
        let limits = crate::http_source::HttpLimits {
            header_timeout: Duration::from_secs(10),
            caps: crate::admission::Caps {
                max_connections: 16,
                max_connections_per_peer: 16,
            },
        };
        let task = crate::http_source::serve("127.0.0.1:0", "test", app, &cx, Some(&tls), limits)
            .await
            .expect("serves");
        let port = task.local_addr.port();
        let server = task.join;
        let http = reqwest::Client::builder()
            .use_rustls_tls()
            .add_root_certificate(reqwest::Certificate::from_pem(ca.pem.as_bytes()).expect("pem"))
            .build()
            .expect("client");
        let url = format!("https://localhost:{port}/ping");
        let resp = http
            .post(&url)
            .body("hi")
            .send()
            .await
            .expect("HTTPS works");
        assert_eq!(resp.status(), 200);
        assert_eq!(resp.text().await.expect("body"), "pong 127.0.0.1 hi");

        // A client without the CA is refused by its own verifier; plain HTTP fails the
        // handshake on the server and is counted.
        let untrusting = reqwest::Client::builder()
            .use_rustls_tls()
            .build()
            .expect("client");
        assert!(untrusting.post(&url).send().await.is_err());
        let plain = reqwest::Client::new()
            .post(format!("http://127.0.0.1:{port}/ping"))
            .send()
            .await;
        assert!(plain.is_err() || !plain.expect("resp").status().is_success());
        // Counted by the connection task, which may finish just after the client saw the close.
        let counted = async {
            while failures.counter(HandshakeFailure::Protocol).get() == 0 {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        };
        tokio::time::timeout(Duration::from_secs(10), counted)
            .await
            .expect("the failed handshakes are counted");

        shutdown.cancel();
        tokio::time::timeout(Duration::from_secs(10), server)
            .await
            .expect("stops after shutdown")
            .expect("task");
    }
}
