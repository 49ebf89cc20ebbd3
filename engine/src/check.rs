//! `switchboard check`: every problem of a configuration folder, as errors and warnings, and
//! with `--connect` a real handshake with every peer a channel talks to.
//!
//! Errors are what [`crate::config::inspect`] finds: the engine would refuse to start (every
//! mistake of every file, each with its key path and a hint). Warnings are what would start
//! but probably not do what was meant: no channel at all, a channel without routes, a route
//! or accept pattern that can never match a message type, a destination no route sends to, a
//! listen port another program holds, a certificate that expires within 30 days. An expired
//! certificate is an error: the peer would refuse every handshake.
//!
//! `--connect` ([`connect`]) probes each source and destination of the channels without
//! errors, each within [`PROBE_TIMEOUT`]: MLLP peers get a TCP connection and, with TLS, a
//! handshake verified as the engine verifies it; SFTP servers an SSH handshake with the host
//! key check, a login and a look at the folder; HTTP peers a GET (over HTTPS a TLS handshake
//! with the engine's trust roots), and a FHIR server `GET [base]/metadata`; a listening
//! source must be able to bind its address. Where the vendor documents an authenticated
//! request that changes nothing, it is made with the configured credentials, and a refusal
//! makes the peer DOWN with the vendor's answer: OpsPort a bulk upsert of no record, Latrexa
//! (upload destination and bookings source) the list of pending bookings, a FHIR server its
//! OAuth2 token endpoint and `GET [base]/metadata` with the token. Buktor's and PX360's
//! contracts have no such request: the detail says the credentials were not checked.
//! Nothing is delivered.
//!
//! Not here: reading and validating the files (see [`crate::config`]).

use crate::config::{self, Inspection, LoadedChannel, Problem, SourceConfig};
use channels::destination::DestinationConfig;
use channels::sftp::remote::{Remote, RemoteConfig};
use channels::tls::{CertExpiry, ClientTlsConfig};
use serde::Serialize;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

/// How long one `--connect` probe may take, all steps together.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(5);

/// A certificate expiring within this many days is a warning.
pub const EXPIRY_WARNING_DAYS: i64 = 30;

/// What `check` found: errors stop the engine from starting; warnings do not.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Report {
    /// Problems the engine refuses to start with.
    pub errors: Vec<Problem>,
    /// Settings that start but probably do not do what was meant.
    pub warnings: Vec<Problem>,
    /// How many of `errors` are in test files (`DIR/tests/*.toml`, and channel files they
    /// name outside `channels/`): those stop `switchboard test`, not the engine.
    #[serde(skip)]
    pub test_errors: usize,
}

/// How `switchboard check` was asked to run.
#[derive(Debug, Clone, Copy, Default)]
pub struct CheckOptions {
    /// Probe every peer (`--connect`).
    pub connect: bool,
    /// Print JSON (`--json`).
    pub json: bool,
    /// Exit 1 on warnings too (`--deny-warnings`).
    pub deny_warnings: bool,
}

/// The outcome of one `--connect` probe.
#[derive(Debug, Clone, Serialize)]
pub struct Probe {
    /// `channel/source` or `channel/<destination name>`.
    pub target: String,
    /// The channel file.
    pub file: String,
    /// The table probed: `source` or `destination[N]`.
    pub key: String,
    /// True when the peer answered as it should.
    pub up: bool,
    /// What was done and what came back (never a secret).
    pub detail: String,
}

/// Loads `dir` and returns every error and warning, with what loaded (for [`connect`]).
pub fn check(dir: &Path) -> (Report, Inspection) {
    let inspection = config::inspect(dir);
    let mut report = Report {
        errors: inspection.problems.clone(),
        warnings: Vec::new(),
        test_errors: 0,
    };
    if inspection.channel_files == 0 && dir.is_dir() {
        report.warnings.push(Problem {
            file: dir.join("channels").display().to_string(),
            key: String::new(),
            message: "no channel files: the engine would start and receive nothing".into(),
            hint: "add channels/<name>.toml; conf/examples/ has one per kind".into(),
        });
    }
    if let Some(engine) = &inspection.engine {
        if let Some(w) = port_in_use(&engine.admin.listen) {
            report.warnings.push(Problem {
                file: dir.join("switchboard.toml").display().to_string(),
                key: "admin.listen".into(),
                message: w,
                hint: "stop what holds the port (another engine?) or choose another".into(),
            });
        }
    }
    let now = chrono::Utc::now().timestamp();
    for ch in &inspection.channels {
        channel_findings(ch, now, &mut report);
    }
    // The test cases beside the channels (`switchboard test`): an unknown channel or
    // destination, a missing input file, a wrong key. Problems of the channel files
    // themselves are reported above already.
    let tests = crate::config_test::inspect(dir);
    report.test_errors = tests.problems.len();
    report.errors.extend(tests.problems);
    (report, inspection)
}

/// The warnings (and certificate errors) of one channel that loaded.
fn channel_findings(ch: &LoadedChannel, now: i64, report: &mut Report) {
    let file = ch.file.display().to_string();
    let c = &ch.config;
    let warn = |report: &mut Report, key: String, message: String, hint: &str| {
        report.warnings.push(Problem {
            file: file.clone(),
            key,
            message,
            hint: hint.to_string(),
        })
    };
    let is_latrexa = matches!(c.source, SourceConfig::Latrexa(_));
    if c.routes.is_empty() && !is_latrexa {
        warn(
            report,
            "route".into(),
            "the channel has no [[route]]: every message is stored as filtered and sent nowhere"
                .into(),
            "add a [[route]] with `to = [\"<destination>\"]`",
        );
    }
    for (i, p) in c.accept.message_types.iter().enumerate() {
        if let Some(why) = pattern_never_matches(p) {
            warn(
                report,
                format!("accept.message_types[{i}]"),
                format!("'{p}' can never match a message: {why}"),
                "use *, ADT^*, or ADT^A04 (code ^ trigger event)",
            );
        }
    }
    for (i, r) in c.routes.iter().enumerate() {
        for (j, p) in r.when.message_type.iter().enumerate() {
            let key = format!("route[{i}].when.message_type[{j}]");
            // What a DICOM storage source records of each object it stored.
            if p == "C-STORE" && matches!(c.source, SourceConfig::DicomStore(_)) {
                continue;
            }
            if let Some(why) = pattern_never_matches(p) {
                warn(
                    report,
                    key,
                    format!("'{p}' can never match a message: {why}"),
                    "use *, ADT^*, or ADT^A04 (code ^ trigger event)",
                );
            } else if !c
                .accept
                .message_types
                .iter()
                .any(|a| patterns_overlap(a, p))
            {
                warn(
                    report,
                    key,
                    format!("'{p}' can never match: accept.message_types refuses such messages"),
                    "add the type to accept.message_types, or remove the pattern",
                );
            }
        }
    }
    for (i, d) in c.destinations.iter().enumerate() {
        if !c.routes.iter().any(|r| r.to.iter().any(|t| t == d.name())) {
            warn(
                report,
                format!("destination[{i}]"),
                format!(
                    "destination '{}' is in no route's `to`: it receives nothing",
                    d.name()
                ),
                "add it to a route's `to`, or remove it",
            );
        }
    }
    if let Some(listen) = c.source.listen() {
        if let Some(w) = port_in_use(listen) {
            warn(
                report,
                "source.listen".into(),
                w,
                "stop what holds the port (another engine?) or choose another",
            );
        }
    }
    for (key, expiry) in certificate_expiries(c) {
        let days = (expiry.not_after - now).div_euclid(86_400);
        let date = chrono::DateTime::from_timestamp(expiry.not_after, 0)
            .map(|d| d.format("%Y-%m-%d %H:%M UTC").to_string())
            .unwrap_or_else(|| expiry.not_after.to_string());
        if expiry.not_after <= now {
            report.errors.push(Problem {
                file: file.clone(),
                key,
                message: format!("the {} certificate expired on {date}", expiry.role),
                hint: "renew the certificate: peers refuse an expired one".into(),
            });
        } else if days < EXPIRY_WARNING_DAYS {
            warn(
                report,
                key,
                format!(
                    "the {} certificate expires on {date}, in {days} day(s)",
                    expiry.role
                ),
                "renew it before then",
            );
        }
    }
}

/// Why a message type pattern (`ADT^A04`, `ADT^*`, `*`) can never match, or `None`.
///
/// ```
/// use engine::check::pattern_never_matches;
/// assert_eq!(pattern_never_matches("ORU^R01"), None);
/// assert!(pattern_never_matches("ORU-R01").unwrap().contains("ORU^R01"));
/// assert!(pattern_never_matches("XYZ^A01").is_some());
/// ```
pub fn pattern_never_matches(pattern: &str) -> Option<String> {
    if pattern == "*" {
        return None;
    }
    let (code, trigger) = pattern.split_once('^').unwrap_or((pattern, "*"));
    let code = code.to_ascii_uppercase();
    let trigger = trigger.to_ascii_uppercase();
    if code != "*" && (code.len() != 3 || !code.chars().all(|c| c.is_ascii_alphanumeric())) {
        let suggestion = match code.split_once(|c: char| !c.is_ascii_alphanumeric()) {
            Some((a, b)) if trigger == "*" && a.len() == 3 && b.len() == 3 => {
                format!("; did you mean {a}^{b}?")
            }
            _ => String::new(),
        };
        return Some(format!(
            "'{code}' is not a message code (three letters, such as ADT){suggestion}"
        ));
    }
    if code != "*" && !code.starts_with('Z') && !MESSAGE_CODES.contains(&code.as_str()) {
        return Some(format!(
            "'{code}' is not an HL7 v2 message code (table 0076) nor a Z code"
        ));
    }
    let trigger_ok = trigger == "*"
        || (trigger.len() == 3
            && trigger.starts_with(|c: char| c.is_ascii_alphabetic())
            && trigger.chars().all(|c| c.is_ascii_alphanumeric()));
    if !trigger_ok {
        return Some(format!(
            "'{trigger}' is not a trigger event (a letter and two digits, such as A04)"
        ));
    }
    None
}

/// True when some message type matches both patterns.
fn patterns_overlap(a: &str, b: &str) -> bool {
    let part = |p: &str| -> (String, String) {
        if p == "*" {
            return ("*".into(), "*".into());
        }
        let (c, t) = p.split_once('^').unwrap_or((p, "*"));
        (c.to_ascii_uppercase(), t.to_ascii_uppercase())
    };
    let ((ac, at), (bc, bt)) = (part(a), part(b));
    (ac == "*" || bc == "*" || ac == bc) && (at == "*" || bt == "*" || at == bt)
}

/// HL7 v2 message codes (table 0076, v2.1 to v2.9).
const MESSAGE_CODES: &[&str] = &[
    "ACK", "ADR", "ADT", "ARD", "BAR", "BPS", "BRP", "BRT", "BTS", "CCF", "CCI", "CCM", "CCQ",
    "CCR", "CCU", "CNQ", "CQU", "CRM", "CSU", "DFT", "DOC", "DSR", "EAC", "EAN", "EAR", "EDR",
    "EHC", "ERP", "ESR", "ESU", "INR", "INU", "LSR", "LSU", "MCF", "MDM", "MFD", "MFK", "MFN",
    "MFQ", "MFR", "NMD", "NMQ", "NMR", "OMB", "OMD", "OMG", "OMI", "OML", "OMN", "OMP", "OMQ",
    "OMS", "OPL", "OPR", "OPU", "ORA", "ORB", "ORD", "ORF", "ORG", "ORI", "ORL", "ORM", "ORN",
    "ORP", "ORR", "ORS", "ORU", "ORX", "OSM", "OSQ", "OSR", "OUL", "PEX", "PGL", "PIN", "PMU",
    "PPG", "PPP", "PPR", "PPT", "PPV", "PRR", "PTR", "QBP", "QCK", "QCN", "QRY", "QSB", "QSX",
    "QVR", "RAR", "RAS", "RCI", "RCL", "RDE", "RDR", "RDS", "RDY", "REF", "RER", "RGR", "RGV",
    "ROC", "ROD", "ROR", "RPA", "RPI", "RPL", "RPR", "RQA", "RQC", "RQI", "RQP", "RQQ", "RRA",
    "RRD", "RRE", "RRG", "RRI", "RSP", "RTB", "SCN", "SDN", "SDR", "SIU", "SLN", "SLR", "SMD",
    "SPQ", "SQM", "SQR", "SRM", "SRR", "SSR", "SSU", "STC", "STI", "SUR", "TBR", "TCR", "TCU",
    "UDM", "VQQ", "VXQ", "VXR", "VXU", "VXX",
];

/// Why the engine could not listen on `listen` now (another program holds the port, or the
/// address is not this host's), or `None` when it could. Port 0 is never in use.
fn port_in_use(listen: &str) -> Option<String> {
    let addr: SocketAddr = listen.parse().ok()?;
    if addr.port() == 0 {
        return None;
    }
    match std::net::TcpListener::bind(addr) {
        Ok(_) => None,
        Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => Some(format!(
            "port {} is in use: the engine could not listen on {addr}",
            addr.port()
        )),
        Err(e) => Some(format!("cannot listen on {addr}: {}", io_reason(&e))),
    }
}

/// An IO error's text without its `(os error N)` suffix.
fn io_reason(e: &std::io::Error) -> String {
    let text = e.to_string();
    match text.find(" (os error") {
        Some(i) => text[..i].to_string(),
        None => text,
    }
}

/// Every certificate a channel loads, with the key it is configured at.
fn certificate_expiries(c: &config::ChannelConfig) -> Vec<(String, CertExpiry)> {
    let server_key = |role: &str| match role {
        "client_ca" => "source.tls.client_ca".to_string(),
        _ => "source.tls.cert".to_string(),
    };
    let client_key = |prefix: &str, role: &str| match role {
        "client" => format!("{prefix}.tls.cert"),
        _ => format!("{prefix}.tls.ca"),
    };
    let mut out = Vec::new();
    if let Some(Ok(tls)) = c.source.server_tls().map(|t| t.load()) {
        out.extend(tls.expiries.into_iter().map(|e| (server_key(e.role), e)));
    }
    if let SourceConfig::Latrexa(l) = &c.source {
        if let Some(Ok(tls)) = l.his.tls.as_ref().map(ClientTlsConfig::load) {
            out.extend(
                tls.expiries
                    .into_iter()
                    .map(|e| (client_key("source.his", e.role), e)),
            );
        }
    }
    for (i, d) in c.destinations.iter().enumerate() {
        if let Some(Ok(tls)) = d.client_tls().map(ClientTlsConfig::load) {
            let prefix = format!("destination[{i}]");
            out.extend(
                tls.expiries
                    .into_iter()
                    .map(|e| (client_key(&prefix, e.role), e)),
            );
        }
    }
    out
}

/// Probes every source and destination of `channels` at once, each within
/// [`PROBE_TIMEOUT`]; results in channel and table order.
pub async fn connect(channels: &[LoadedChannel]) -> Vec<Probe> {
    let mut probes: Vec<futures::future::BoxFuture<'_, Probe>> = Vec::new();
    for ch in channels {
        let file = ch.file.display().to_string();
        let name = &ch.config.name;
        probes.push(Box::pin(bounded(
            format!("{name}/source"),
            file.clone(),
            "source".into(),
            probe_source(&ch.config.source),
        )));
        for (i, d) in ch.config.destinations.iter().enumerate() {
            probes.push(Box::pin(bounded(
                format!("{name}/{}", d.name()),
                file.clone(),
                format!("destination[{i}]"),
                probe_destination(d),
            )));
        }
    }
    futures::future::join_all(probes).await
}

async fn bounded(
    target: String,
    file: String,
    key: String,
    probe: impl std::future::Future<Output = Result<String, String>>,
) -> Probe {
    let (up, detail) = match tokio::time::timeout(PROBE_TIMEOUT, probe).await {
        Ok(Ok(detail)) => (true, detail),
        Ok(Err(detail)) => (false, detail),
        Err(_) => (
            false,
            format!("no answer within {} s", PROBE_TIMEOUT.as_secs()),
        ),
    };
    Probe {
        target,
        file,
        key,
        up,
        detail,
    }
}

async fn probe_source(s: &SourceConfig) -> Result<String, String> {
    match s {
        SourceConfig::MllpListener(l) => bindable(&l.listen).await,
        SourceConfig::FhirRest(f) => bindable(&f.listen).await,
        SourceConfig::Webhook(w) => bindable(&w.listen).await,
        SourceConfig::DicomWorklist(d) => bindable(&d.listen).await,
        SourceConfig::DicomStore(d) => {
            let listen = bindable(&d.listen).await?;
            let folder = folder_writable(&d.folder)?;
            Ok(format!("{listen}; {folder}"))
        }
        SourceConfig::Sftp(p) => sftp_probe(&p.server, &p.folder).await,
        SourceConfig::Latrexa(l) => {
            let api = http_probe(&l.base_url).await?;
            let key = l.api_key.resolve()?;
            let client = channels::clinic_api::latrexa_bookings::LatrexaApi::new(
                &l.base_url,
                key,
                &l.organization_code,
                PROBE_TIMEOUT,
            )?;
            // Lists the pending bookings: authenticated, and they stay pending.
            let call = "GET /api/integration/appointments/pending";
            let listed = match client.pending().await {
                Ok(items) => format!(
                    "{call}: credentials accepted ({} booking(s) pending)",
                    items.len()
                ),
                Err(e) => return Err(format!("Latrexa API: {api}; GET {e}")),
            };
            let his = mllp_probe(&l.his.address, l.his.tls.as_ref()).await?;
            Ok(format!("Latrexa API: {api}; {listed}; HIS: {his}"))
        }
    }
}

async fn probe_destination(d: &DestinationConfig) -> Result<String, String> {
    match d {
        DestinationConfig::Mllp(m) => mllp_probe(&m.address, m.tls.as_ref()).await,
        DestinationConfig::Sftp(w) => sftp_probe(&w.server, &w.folder).await,
        DestinationConfig::File(_) => {
            let dest = d.build()?;
            dest.healthcheck().await?;
            Ok("the folder is writable".into())
        }
        DestinationConfig::Webhook(w) => match &w.health_url {
            Some(_) => {
                let dest = d.build()?;
                dest.healthcheck().await?;
                Ok("health_url answered 2xx".into())
            }
            None => http_probe(&w.url).await,
        },
        DestinationConfig::Fhir(f) => {
            let url = format!("{}/metadata", f.base_url.trim_end_matches('/'));
            let detail = http_probe(&url).await?;
            if !detail.contains("answered 2") {
                return Err(format!(
                    "GET [base]/metadata: {detail}; a FHIR server serves its CapabilityStatement there"
                ));
            }
            credentials(d, format!("GET [base]/metadata: {detail}")).await
        }
        DestinationConfig::Opsport(c) => credentials(d, http_probe(&c.base_url).await?).await,
        DestinationConfig::Buktor(c) => credentials(d, http_probe(&c.base_url).await?).await,
        DestinationConfig::Px360(c) => credentials(d, http_probe(&c.base_url).await?).await,
        DestinationConfig::Latrexa(c) => credentials(d, http_probe(&c.base_url).await?).await,
        DestinationConfig::Dicom(c) => {
            let dest = d.build()?;
            dest.healthcheck().await?;
            Ok(format!("{}: C-ECHO answered with success", c.address))
        }
        // The engine's own store: nothing to reach.
        DestinationConfig::Worklist(w) => Ok(format!(
            "worklist '{}' is kept in the engine's store",
            w.worklist
        )),
    }
}

/// After `reached` (the peer answered), an authenticated request that changes nothing,
/// where the vendor has one ([`channels::destination::Destination::check_credentials`]):
/// refused credentials make the destination down, with the vendor's answer.
async fn credentials(d: &DestinationConfig, reached: String) -> Result<String, String> {
    use channels::destination::CredentialCheck;
    let dest = d.build()?;
    match dest.check_credentials().await {
        CredentialCheck::Accepted(s) => Ok(format!("{reached}; {s}")),
        CredentialCheck::Refused(s) => Err(format!("{reached}; {s}")),
        CredentialCheck::NotChecked(why) => {
            Ok(format!("{reached}; credentials not checked: {why}"))
        }
    }
}

/// Creates (when missing) and writes a probe file in `folder`, then removes it.
fn folder_writable(folder: &std::path::Path) -> Result<String, String> {
    let probe = folder.join(".switchboard-probe");
    std::fs::create_dir_all(folder)
        .and_then(|()| std::fs::write(&probe, b"probe"))
        .and_then(|()| std::fs::remove_file(&probe))
        .map(|()| format!("{} is writable", folder.display()))
        .map_err(|e| format!("{}: cannot write: {}", folder.display(), io_reason(&e)))
}

/// Binds `listen` and lets go at once.
async fn bindable(listen: &str) -> Result<String, String> {
    match tokio::net::TcpListener::bind(listen).await {
        Ok(_) => Ok(format!("{listen} can be listened on")),
        Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => Err(format!(
            "{listen} is in use by another program (another engine?)"
        )),
        Err(e) => Err(format!("cannot listen on {listen}: {}", io_reason(&e))),
    }
}

/// A TCP connection to an MLLP peer and, with `tls`, the handshake the engine would do.
async fn mllp_probe(address: &str, tls: Option<&ClientTlsConfig>) -> Result<String, String> {
    let stream = tokio::net::TcpStream::connect(address)
        .await
        .map_err(|e| format!("{address}: cannot connect: {}", io_reason(&e)))?;
    let Some(tls) = tls else {
        return Ok(format!("{address}: TCP connection accepted"));
    };
    let client = tls.load().map_err(|problems| {
        problems
            .into_iter()
            .map(|(k, m)| format!("tls.{k}: {m}"))
            .collect::<Vec<_>>()
            .join("; ")
    })?;
    let tls_stream = client
        .connect(address, stream)
        .await
        .map_err(|e| format!("{address}: TLS handshake failed: {}", io_reason(&e)))?;
    let version = tls_stream
        .get_ref()
        .1
        .protocol_version()
        .map(|v| format!("{v:?}"))
        .unwrap_or_default();
    Ok(format!(
        "{address}: TLS handshake completed ({version}), certificate verified"
    ))
}

/// An SSH handshake with the host key check, a login, and a look at `folder`.
async fn sftp_probe(server: &RemoteConfig, folder: &str) -> Result<String, String> {
    let mut server = server.clone();
    server.timeout_secs = server.timeout_secs.clamp(1, PROBE_TIMEOUT.as_secs());
    let resolved = server.resolve()?;
    let remote = Remote::connect(&resolved)
        .await
        .map_err(|e| e.to_string())?;
    let looked = remote.sftp.metadata(folder).await;
    let addr = resolved.addr();
    remote.close().await;
    match looked {
        Ok(m) if m.is_dir() => Ok(format!(
            "{addr}: host key matches, logged in, folder {folder} exists"
        )),
        Ok(_) => Err(format!(
            "{addr}: host key matches, logged in, but {folder} is not a folder"
        )),
        Err(e) => Err(format!(
            "{addr}: host key matches, logged in, but folder {folder}: {e}"
        )),
    }
}

/// A GET of `url` with the engine's HTTP client settings: over HTTPS, the TLS handshake with
/// the same trust roots. Any HTTP answer means the peer is up.
async fn http_probe(url: &str) -> Result<String, String> {
    let endpoint = channels::http_answer::endpoint_of(url);
    let client = reqwest::Client::builder()
        .timeout(PROBE_TIMEOUT)
        .connect_timeout(PROBE_TIMEOUT)
        .build()
        .map_err(|e| format!("HTTP client: {e}"))?;
    let https = url.starts_with("https:");
    match client.get(url).send().await {
        Ok(resp) => Ok(format!(
            "{endpoint}: {}answered {}",
            if https {
                "TLS handshake completed, certificate verified; "
            } else {
                ""
            },
            resp.status().as_u16()
        )),
        Err(e) => {
            // The innermost cause says why (refused, unknown issuer, name mismatch), once.
            let mut cause: &dyn std::error::Error = &e;
            while let Some(inner) = cause.source() {
                cause = inner;
            }
            Err(format!(
                "{endpoint}: {}: {}",
                channels::http_answer::what_failed(&e),
                cause
            ))
        }
    }
}

/// Runs `switchboard check` on `dir`, prints the outcome and returns the exit code: 1 on
/// errors, on warnings with `deny_warnings`, and on a peer down with `connect`; 0 otherwise.
pub async fn run(dir: &Path, opts: CheckOptions) -> u8 {
    let (report, inspection) = check(dir);
    let probes = if opts.connect {
        let mut probes = connect(&inspection.channels).await;
        if let Some(cluster) = inspection.engine.as_ref().and_then(|e| e.cluster.as_ref()) {
            probes.push(
                bounded(
                    "cluster".into(),
                    "switchboard.toml".into(),
                    "cluster.urls".into(),
                    crate::cluster::probe(cluster),
                )
                .await,
            );
        }
        Some(probes)
    } else {
        None
    };
    let failed = !report.errors.is_empty()
        || (opts.deny_warnings && !report.warnings.is_empty())
        || probes.iter().flatten().any(|p| !p.up);
    if opts.json {
        let mut out = serde_json::json!({
            "errors": report.errors,
            "warnings": report.warnings,
        });
        if let Some(p) = &probes {
            out["connections"] = serde_json::json!(p);
        }
        println!("{out:#}");
    } else {
        print!("{}", render(&report, &inspection, probes.as_deref()));
    }
    u8::from(failed)
}

/// The text `check` prints: errors, warnings, probes, and a summary line.
fn render(report: &Report, inspection: &Inspection, probes: Option<&[Probe]>) -> String {
    let mut out = String::new();
    for e in &report.errors {
        out.push_str(&format!("error: {e}\n"));
    }
    for w in &report.warnings {
        out.push_str(&format!("warning: {w}\n"));
    }
    for p in probes.unwrap_or_default() {
        if p.up {
            out.push_str(&format!("{}: up: {}\n", p.target, p.detail));
        } else {
            out.push_str(&format!("{}: DOWN: {}\n", p.target, p.detail));
        }
    }
    let dir = inspection.dir.display();
    if report.errors.is_empty() {
        out.push_str(&format!(
            "{dir}: OK, {} channel(s), {} warning(s)\n",
            inspection.channels.len(),
            report.warnings.len()
        ));
    } else if report.test_errors == report.errors.len() {
        out.push_str(&format!(
            "{dir}: {} error(s) in test files (the engine would start; switchboard test exits 2), {} warning(s)\n",
            report.errors.len(),
            report.warnings.len()
        ));
    } else {
        out.push_str(&format!(
            "{dir}: {} error(s), {} warning(s); the engine would not start.\n",
            report.errors.len(),
            report.warnings.len()
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::tests::write;

    /// A self-signed certificate for 127.0.0.1 valid until `days` from now, and its key.
    fn certificate(days: i64) -> (String, String) {
        let until = chrono::Utc::now() + chrono::Duration::days(days);
        let mut params =
            rcgen::CertificateParams::new(vec!["127.0.0.1".to_string()]).expect("params");
        use chrono::Datelike;
        params.not_after =
            rcgen::date_time_ymd(until.year(), until.month() as u8, until.day() as u8);
        let key = rcgen::KeyPair::generate().expect("key");
        let cert = params.self_signed(&key).expect("self-signed");
        (cert.pem(), key.serialize_pem())
    }

    #[test]
    fn patterns_that_can_never_match() {
        for ok in [
            "*", "ADT", "ADT^*", "adt^a04", "ORU^R01", "ZXY^Z01", "*^A04", "SIU^S12",
        ] {
            assert_eq!(pattern_never_matches(ok), None, "{ok}");
        }
        let why = pattern_never_matches("ORU-R01").expect("never matches");
        assert!(why.contains("did you mean ORU^R01?"), "{why}");
        assert!(pattern_never_matches("XYZ^A01")
            .expect("unknown code")
            .contains("table 0076"));
        assert!(pattern_never_matches("ADT^A4").is_some());
        assert!(pattern_never_matches("ADT^A0-1").is_some());
        assert!(patterns_overlap("*", "ORU^R01"));
        assert!(patterns_overlap("ADT^*", "ADT^A04"));
        assert!(patterns_overlap("ADT", "adt^a04"));
        assert!(!patterns_overlap("ADT^*", "ORU^R01"));
        assert!(!patterns_overlap("ADT^A01", "ADT^A04"));
    }

    #[test]
    fn a_held_port_is_in_use_and_a_free_one_is_not() {
        let held = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = held.local_addr().expect("addr").to_string();
        let w = port_in_use(&addr).expect("in use");
        assert!(w.contains("is in use"), "{w}");
        assert!(!w.contains("os error"), "{w}");
        drop(held);
        assert_eq!(port_in_use(&addr), None);
        assert_eq!(port_in_use("127.0.0.1:0"), None);
    }

    #[test]
    fn warnings_and_certificate_expiry() {
        let dir = tempfile::tempdir().expect("tempdir");
        let d = dir.path();
        let (soon, soon_key) = certificate(10);
        let (later, later_key) = certificate(400);
        write(d, "soon.pem", &soon);
        write(d, "soon.key", &soon_key);
        write(d, "later.pem", &later);
        write(d, "later.key", &later_key);
        write(d, "switchboard.toml", "[admin]\nlisten = \"127.0.0.1:0\"\n");
        let tls = |name: &str| {
            format!(
                "[source.tls]\ncert = \"{}\"\nkey = \"{}\"\n",
                d.join(format!("{name}.pem")).display(),
                d.join(format!("{name}.key")).display()
            )
        };
        write(
            d,
            "channels/a.toml",
            &format!(
                "name = \"a\"\n[accept]\nmessage_types = [\"ADT^*\"]\n[source]\ntype = \"mllp_listener\"\nlisten = \"127.0.0.1:0\"\n{}\
                 [[route]]\nwhen = {{ message_type = [\"ORU^R01\", \"ADT^A04\"] }}\nto = [\"f\"]\n\
                 [[destination]]\nname = \"f\"\ntype = \"file\"\nfolder = \"{}\"\n",
                tls("soon"),
                d.display()
            ),
        );
        write(
            d,
            "channels/b.toml",
            &format!(
                "name = \"b\"\n[source]\ntype = \"mllp_listener\"\nlisten = \"127.0.0.1:0\"\n{}\
                 [[route]]\nto = [\"f\"]\n[[destination]]\nname = \"f\"\ntype = \"file\"\nfolder = \"{}\"\n",
                tls("later"),
                d.display()
            ),
        );
        let (report, inspection) = check(d);
        assert!(report.errors.is_empty(), "{:?}", report.errors);
        assert_eq!(inspection.channels.len(), 2);
        let shown: Vec<String> = report
            .warnings
            .iter()
            .map(|w| format!("{}|{}", w.key, w.message))
            .collect();
        assert_eq!(shown.len(), 2, "{shown:#?}");
        assert!(
            shown[0].starts_with("route[0].when.message_type[0]|'ORU^R01' can never match: accept.message_types refuses"),
            "{shown:#?}"
        );
        assert!(
            shown[1].starts_with("source.tls.cert|the server certificate expires on")
                && (shown[1].ends_with("in 9 day(s)") || shown[1].ends_with("in 10 day(s)")),
            "{shown:#?}"
        );
        assert!(report.warnings[1].file.ends_with("a.toml"));

        // An expired certificate is an error.
        let (old, old_key) = certificate(-2);
        write(d, "later.pem", &old);
        write(d, "later.key", &old_key);
        let (report, _) = check(d);
        assert_eq!(report.errors.len(), 1, "{:?}", report.errors);
        assert_eq!(report.errors[0].key, "source.tls.cert");
        assert!(report.errors[0].message.contains("expired on"));
    }

    #[test]
    fn test_files_are_checked_and_their_errors_do_not_stop_the_engine() {
        let dir = tempfile::tempdir().expect("tempdir");
        let d = dir.path();
        write(d, "switchboard.toml", "[admin]\nlisten = \"127.0.0.1:0\"\n");
        write(
            d,
            "channels/a.toml",
            &format!(
                "name = \"a\"\n[source]\ntype = \"mllp_listener\"\nlisten = \"127.0.0.1:0\"\n\
                 [[route]]\nto = [\"f\"]\n[[destination]]\nname = \"f\"\ntype = \"file\"\nfolder = \"{}\"\n",
                d.display()
            ),
        );
        write(
            d,
            "tests/a.toml",
            "channel = \"a\"\n[[case]]\nname = \"x\"\ninput = { hl7_file = \"gone.hl7\" }\nexpect.g = { nothing = true }\n",
        );
        let (report, inspection) = check(d);
        let keys: Vec<&str> = report.errors.iter().map(|e| e.key.as_str()).collect();
        assert_eq!(
            keys,
            ["case[0].input.hl7_file", "case[0].expect.g"],
            "{:?}",
            report.errors
        );
        assert_eq!(report.test_errors, 2);
        let text = render(&report, &inspection, None);
        assert!(
            text.contains("2 error(s) in test files (the engine would start"),
            "{text}"
        );
    }

    #[tokio::test]
    async fn connect_does_the_tls_handshake_with_the_configured_trust() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (cert, key) = certificate(100);
        let (other, _) = certificate(100);
        write(dir.path(), "cert.pem", &cert);
        write(dir.path(), "key.pem", &key);
        write(dir.path(), "other.pem", &other);
        let server = channels::tls::ServerTlsConfig {
            cert: channels::tls::PemSource::Path(dir.path().join("cert.pem")),
            key: channels::tls::PemSource::Path(dir.path().join("key.pem")),
            client_ca: None,
            allowed_client_names: Vec::new(),
            handshake_timeout_secs: 5,
        }
        .load()
        .expect("server TLS");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr").to_string();
        let acceptor = tokio_rustls::TlsAcceptor::from(server.config());
        tokio::spawn(async move {
            while let Ok((s, _)) = listener.accept().await {
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    let _ = acceptor.accept(s).await;
                });
            }
        });
        let trusting = |file: &str| ClientTlsConfig {
            ca: channels::tls::PemSource::Path(dir.path().join(file)),
            cert: None,
            key: None,
            server_name: None,
        };
        let up = mllp_probe(&addr, Some(&trusting("cert.pem")))
            .await
            .expect("handshake with the right CA");
        assert!(up.contains("TLS handshake completed"), "{up}");
        let down = mllp_probe(&addr, Some(&trusting("other.pem")))
            .await
            .expect_err("another CA");
        assert!(down.contains("TLS handshake failed"), "{down}");
        assert!(down.contains("invalid peer certificate"), "{down}");
        let plain = mllp_probe(&addr, None).await.expect("TCP");
        assert!(plain.contains("TCP connection accepted"), "{plain}");
    }
}
