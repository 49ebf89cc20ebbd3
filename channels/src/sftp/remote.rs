//! One SSH connection with an SFTP session on it: what the poller and the writer share.
//!
//! [`RemoteConfig`] is the part of both configurations that says where the server is, who we
//! are and which host key the server must show. [`RemoteConfig::resolve`] reads the secrets
//! and parses the keys once, at build time; [`Remote::connect`] then opens the TCP
//! connection, refuses the server unless its host key equals the configured one, logs in and
//! starts the `sftp` subsystem. Errors say which step failed, never what was transferred.

use crate::secret::SecretRef;
use russh::client;
use russh::keys::{Algorithm, HashAlg, PrivateKey, PrivateKeyWithHashAlg, PublicKey};
use russh_sftp::client::error::Error as SftpError;
use russh_sftp::client::SftpSession;
use russh_sftp::protocol::StatusCode;
use serde::Deserialize;
use std::borrow::Cow;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpStream;

/// Where the SFTP server is and how to log in: the `server` table of an SFTP source
/// (`[source.server]`) or destination (`[destination.server]`).
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RemoteConfig {
    /// Host name or IP address of the SFTP server.
    pub host: String,
    /// SSH port.
    #[serde(default = "default_port")]
    pub port: u16,
    /// User name to log in as.
    pub username: String,
    /// Password, for password authentication (`{ env = "NAME" }` or `{ file = "path" }`).
    /// Give either `password` or `private_key`.
    #[serde(default)]
    pub password: Option<SecretRef>,
    /// Private key in OpenSSH (or PEM) format, for public key authentication.
    #[serde(default)]
    pub private_key: Option<SecretRef>,
    /// Passphrase of `private_key`, when it is encrypted.
    #[serde(default)]
    pub private_key_passphrase: Option<SecretRef>,
    /// The server's host key as a known-hosts entry: `ssh-ed25519 AAAA...` (the server's
    /// `.pub` file or `ssh-keyscan` output, with or without the leading host name). The
    /// connection is refused when the server shows any other key.
    pub host_key: String,
    /// Seconds to wait for the TCP connection, the SSH handshake and each SFTP request.
    #[serde(default = "default_timeout_secs")]
    pub timeout_secs: u64,
}

fn default_port() -> u16 {
    22
}
fn default_timeout_secs() -> u64 {
    10
}

/// How to log in, with the secrets read.
#[derive(Clone)]
enum Auth {
    Password(String),
    Key(Arc<PrivateKey>),
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Auth::Password(_) => "Password(..)",
            Auth::Key(_) => "Key(..)",
        })
    }
}

/// A [`RemoteConfig`] with its secrets read and its keys parsed.
#[derive(Debug, Clone)]
pub struct ResolvedRemote {
    host: String,
    port: u16,
    username: String,
    auth: Auth,
    host_key: PublicKey,
    timeout: Duration,
}

/// Why a connection could not be used.
#[derive(Debug, thiserror::Error)]
pub enum RemoteError {
    /// The TCP connection failed or timed out.
    #[error("cannot connect to {addr}: {reason}")]
    Connect {
        /// `host:port`.
        addr: String,
        /// What the OS said.
        reason: String,
    },
    /// The server showed a host key other than the configured one.
    #[error("host key of {addr} does not match the configured host_key: the server shows {shown}, expected {expected}; refusing to connect")]
    HostKeyMismatch {
        /// `host:port`.
        addr: String,
        /// Algorithm and SHA-256 fingerprint of the key the server showed.
        shown: String,
        /// Algorithm and SHA-256 fingerprint of the configured key.
        expected: String,
    },
    /// The server did not accept our credentials.
    #[error("{addr} refused to log in user {user} with {method}")]
    AuthRejected {
        /// `host:port`.
        addr: String,
        /// The configured user name.
        user: String,
        /// `password` or `public key`.
        method: &'static str,
    },
    /// The SSH protocol failed (handshake, channel, subsystem).
    #[error("SSH with {addr} failed: {reason}")]
    Ssh {
        /// `host:port`.
        addr: String,
        /// What russh said.
        reason: String,
    },
    /// An SFTP request failed.
    #[error("{op} {path}: {reason}")]
    Sftp {
        /// The operation (`list`, `read`, `rename`, ...).
        op: &'static str,
        /// The remote path.
        path: String,
        /// The status the server sent, or the transport error.
        reason: String,
        /// The SFTP status code, when the server sent one.
        status: Option<StatusCode>,
    },
}

impl RemoteError {
    /// An SFTP failure of `op` on `path`.
    pub fn sftp(op: &'static str, path: &str, e: SftpError) -> Self {
        let status = match &e {
            SftpError::Status(s) => Some(s.status_code),
            _ => None,
        };
        let reason = match &e {
            SftpError::Status(s) if s.error_message.is_empty() => s.status_code.to_string(),
            SftpError::Status(s) => format!("{} ({})", s.status_code, s.error_message),
            other => other.to_string(),
        };
        RemoteError::Sftp {
            op,
            path: path.to_string(),
            reason,
            status,
        }
    }

    /// True when the server answered with a status: the connection itself is still good.
    pub fn is_status(&self) -> bool {
        matches!(
            self,
            RemoteError::Sftp {
                status: Some(_),
                ..
            }
        )
    }

    /// The SFTP status code, when the server sent one.
    pub fn status(&self) -> Option<StatusCode> {
        match self {
            RemoteError::Sftp { status, .. } => *status,
            _ => None,
        }
    }
}

impl RemoteConfig {
    /// Problems the loader cannot see, as (key, message); secrets are only checked to exist.
    pub fn problems(&self) -> Vec<(String, String)> {
        let mut out = Vec::new();
        if self.host.trim().is_empty() {
            out.push(("host".into(), "must not be empty".into()));
        }
        if self.port == 0 {
            out.push(("port".into(), "must be between 1 and 65535".into()));
        }
        if self.username.is_empty() {
            out.push(("username".into(), "must not be empty".into()));
        }
        match (&self.password, &self.private_key) {
            (None, None) => out.push((
                "password".into(),
                "give `password` or `private_key` (as { env = \"NAME\" } or { file = \"path\" })"
                    .into(),
            )),
            (Some(_), Some(_)) => out.push((
                "private_key".into(),
                "give only one of `password` and `private_key`".into(),
            )),
            _ => {}
        }
        if self.private_key_passphrase.is_some() && self.private_key.is_none() {
            out.push((
                "private_key_passphrase".into(),
                "only makes sense with `private_key`".into(),
            ));
        }
        if let Err(m) = parse_host_key(&self.host_key, &self.host, self.port) {
            out.push(("host_key".into(), m));
        }
        if self.timeout_secs == 0 {
            out.push(("timeout_secs".into(), "must be at least 1".into()));
        }
        out
    }

    /// Every secret referenced, with its key, for `check`.
    pub fn secrets(&self) -> Vec<(&'static str, &SecretRef)> {
        let mut out = Vec::new();
        if let Some(s) = &self.password {
            out.push(("password", s));
        }
        if let Some(s) = &self.private_key {
            out.push(("private_key", s));
        }
        if let Some(s) = &self.private_key_passphrase {
            out.push(("private_key_passphrase", s));
        }
        out
    }

    /// Reads the secrets and parses the keys.
    ///
    /// # Errors
    ///
    /// A sentence naming the key that is wrong (never a secret's value).
    pub fn resolve(&self) -> Result<ResolvedRemote, String> {
        if let Some((key, m)) = self.problems().into_iter().next() {
            return Err(format!("{key}: {m}"));
        }
        let host_key = parse_host_key(&self.host_key, &self.host, self.port)
            .map_err(|m| format!("host_key: {m}"))?;
        let auth = match (&self.password, &self.private_key) {
            (Some(p), None) => Auth::Password(p.resolve().map_err(|m| format!("password: {m}"))?),
            (None, Some(k)) => {
                let text = k.resolve().map_err(|m| format!("private_key: {m}"))?;
                let passphrase = match &self.private_key_passphrase {
                    Some(p) => Some(
                        p.resolve()
                            .map_err(|m| format!("private_key_passphrase: {m}"))?,
                    ),
                    None => None,
                };
                let key =
                    russh::keys::decode_secret_key(&text, passphrase.as_deref()).map_err(|e| {
                        format!("private_key: not a usable private key (wrong passphrase?): {e}")
                    })?;
                Auth::Key(Arc::new(key))
            }
            _ => return Err("password: give exactly one of `password` and `private_key`".into()),
        };
        Ok(ResolvedRemote {
            host: self.host.clone(),
            port: self.port,
            username: self.username.clone(),
            auth,
            host_key,
            timeout: Duration::from_secs(self.timeout_secs),
        })
    }
}

/// Parses a known-hosts entry: `[hosts] algorithm base64 [comment]`. When the hosts field is
/// present it must name `host` (plain, or `[host]:port` for a port other than 22).
fn parse_host_key(entry: &str, host: &str, port: u16) -> Result<PublicKey, String> {
    let fields: Vec<&str> = entry.split_whitespace().collect();
    let looks_like_algorithm = |s: &str| {
        s.starts_with("ssh-") || s.starts_with("ecdsa-") || s.starts_with("sk-") || s == "rsa"
    };
    let (hosts, algorithm, blob) = match fields.as_slice() {
        [a, b, ..] if looks_like_algorithm(a) => (None, *a, *b),
        [h, a, b, ..] if looks_like_algorithm(a) => (Some(*h), *a, *b),
        _ => {
            return Err(
                "not a known-hosts entry; expected `ssh-ed25519 AAAA...` (the server's public host key)"
                    .into(),
            )
        }
    };
    if let Some(hosts) = hosts {
        if hosts.starts_with('@') {
            return Err("markers such as @cert-authority are not supported".into());
        }
        if hosts.starts_with("|1|") {
            return Err(
                "hashed host names are not supported; give the entry without the host name".into(),
            );
        }
        let bracketed = format!("[{host}]:{port}");
        let wanted = if port == 22 { host } else { &bracketed };
        if !hosts.split(',').any(|h| h == wanted || h == bracketed) {
            return Err(format!(
                "the entry is for {hosts}, not for {wanted}; give the entry of this server"
            ));
        }
    }
    let key = russh::keys::parse_public_key_base64(blob)
        .map_err(|e| format!("the key does not parse: {e}"))?;
    if key.algorithm().as_str() != algorithm {
        return Err(format!(
            "the entry says {algorithm} but the key is {}",
            key.algorithm().as_str()
        ));
    }
    Ok(key)
}

fn describe(key: &PublicKey) -> String {
    format!(
        "{} {}",
        key.algorithm().as_str(),
        key.fingerprint(HashAlg::Sha256)
    )
}

/// Checks the server's host key against the configured one.
struct HostKeyCheck {
    expected: PublicKey,
    addr: String,
}

/// What the SSH session fails with: a refused host key, or anything russh reports.
#[derive(Debug)]
enum SessionError {
    HostKey(RemoteError),
    Ssh(russh::Error),
}

impl From<russh::Error> for SessionError {
    fn from(e: russh::Error) -> Self {
        SessionError::Ssh(e)
    }
}

impl client::Handler for HostKeyCheck {
    type Error = SessionError;

    async fn check_server_key(
        &mut self,
        server_public_key: &russh::keys::PublicKeyOrCertificate,
    ) -> Result<bool, Self::Error> {
        let shown = match server_public_key {
            russh::keys::PublicKeyOrCertificate::PublicKey { key, .. } => key,
            russh::keys::PublicKeyOrCertificate::Certificate(cert) => {
                return Err(SessionError::HostKey(RemoteError::HostKeyMismatch {
                    addr: self.addr.clone(),
                    shown: format!("a host certificate ({})", cert.algorithm().as_str()),
                    expected: describe(&self.expected),
                }));
            }
        };
        if shown.key_data() == self.expected.key_data() {
            Ok(true)
        } else {
            Err(SessionError::HostKey(RemoteError::HostKeyMismatch {
                addr: self.addr.clone(),
                shown: describe(shown),
                expected: describe(&self.expected),
            }))
        }
    }
}

/// A logged-in SFTP session. Dropping it closes the connection.
pub struct Remote {
    /// The SFTP session.
    pub sftp: SftpSession,
    /// The server's address, for `Inbound::peer`.
    pub peer: SocketAddr,
    ssh: client::Handle<HostKeyCheck>,
}

impl std::fmt::Debug for Remote {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Remote").field("peer", &self.peer).finish()
    }
}

impl ResolvedRemote {
    /// `host:port`, for messages.
    pub fn addr(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }

    /// The per-step timeout.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }
}

impl Remote {
    /// Connects, checks the host key, logs in and starts the `sftp` subsystem.
    ///
    /// # Errors
    ///
    /// [`RemoteError`] naming the step that failed.
    pub async fn connect(r: &ResolvedRemote) -> Result<Remote, RemoteError> {
        let addr = r.addr();
        let connect_err = |reason: String| RemoteError::Connect {
            addr: addr.clone(),
            reason,
        };
        let stream = tokio::time::timeout(r.timeout, TcpStream::connect((r.host.as_str(), r.port)))
            .await
            .map_err(|_| connect_err(format!("timed out after {} s", r.timeout.as_secs())))?
            .map_err(|e| connect_err(e.to_string()))?;
        let _ = stream.set_nodelay(true);
        let peer = stream.peer_addr().map_err(|e| connect_err(e.to_string()))?;
        let ssh_err = |reason: String| RemoteError::Ssh {
            addr: addr.clone(),
            reason,
        };
        let mut config = client::Config {
            inactivity_timeout: Some(Duration::from_secs(3600)),
            ..Default::default()
        };
        // Ask for the configured key's algorithm first, so a server with several host keys
        // shows the one we know.
        let mut preferred: Vec<Algorithm> = match r.host_key.algorithm() {
            Algorithm::Rsa { .. } => vec![
                Algorithm::Rsa {
                    hash: Some(HashAlg::Sha512),
                },
                Algorithm::Rsa {
                    hash: Some(HashAlg::Sha256),
                },
                Algorithm::Rsa { hash: None },
            ],
            other => vec![other],
        };
        preferred.extend(
            config
                .preferred
                .key
                .iter()
                .filter(|a| !preferred.contains(a))
                .cloned()
                .collect::<Vec<_>>(),
        );
        config.preferred.key = Cow::Owned(preferred);
        let check = HostKeyCheck {
            expected: r.host_key.clone(),
            addr: addr.clone(),
        };
        let mut ssh = tokio::time::timeout(
            r.timeout,
            client::connect_stream(Arc::new(config), stream, check),
        )
        .await
        .map_err(|_| {
            ssh_err(format!(
                "handshake timed out after {} s",
                r.timeout.as_secs()
            ))
        })?
        .map_err(|e| match e {
            SessionError::HostKey(e) => e,
            SessionError::Ssh(e) => ssh_err(e.to_string()),
        })?;
        let login = async {
            match &r.auth {
                Auth::Password(p) => ssh
                    .authenticate_password(r.username.clone(), p.clone())
                    .await
                    .map(|a| (a.success(), "password")),
                Auth::Key(k) => {
                    let hash = match ssh.best_supported_rsa_hash().await {
                        Ok(h) => h.flatten(),
                        Err(_) => None,
                    };
                    ssh.authenticate_publickey(
                        r.username.clone(),
                        PrivateKeyWithHashAlg::new(k.clone(), hash),
                    )
                    .await
                    .map(|a| (a.success(), "public key"))
                }
            }
        };
        let (ok, method) = tokio::time::timeout(r.timeout, login)
            .await
            .map_err(|_| ssh_err(format!("login timed out after {} s", r.timeout.as_secs())))?
            .map_err(|e| ssh_err(e.to_string()))?;
        if !ok {
            return Err(RemoteError::AuthRejected {
                addr,
                user: r.username.clone(),
                method,
            });
        }
        let open = async {
            let channel = ssh.channel_open_session().await?;
            channel.request_subsystem(true, "sftp").await?;
            Ok::<_, russh::Error>(channel)
        };
        let channel = tokio::time::timeout(r.timeout, open)
            .await
            .map_err(|_| ssh_err("opening the sftp subsystem timed out".into()))?
            .map_err(|e| ssh_err(format!("cannot start the sftp subsystem: {e}")))?;
        let sftp = tokio::time::timeout(r.timeout, SftpSession::new(channel.into_stream()))
            .await
            .map_err(|_| ssh_err("SFTP handshake timed out".into()))?
            .map_err(|e| ssh_err(format!("SFTP handshake failed: {e}")))?;
        sftp.set_timeout(r.timeout.as_secs().max(1));
        Ok(Remote { sftp, peer, ssh })
    }

    /// True when the SSH connection is gone.
    pub fn is_closed(&self) -> bool {
        self.ssh.is_closed()
    }

    /// Closes the SFTP session and the connection politely.
    pub async fn close(self) {
        let _ = self.sftp.close().await;
        let _ = self
            .ssh
            .disconnect(russh::Disconnect::ByApplication, "bye", "en")
            .await;
    }

    /// Moves `from` to `to`; when `to` exists (SFTP v3 rename refuses to overwrite), removes
    /// it first and tries again.
    ///
    /// # Errors
    ///
    /// [`RemoteError::Sftp`].
    pub async fn rename_over(&self, from: &str, to: &str) -> Result<(), RemoteError> {
        match self.sftp.rename(from, to).await {
            Ok(()) => Ok(()),
            Err(first) => {
                let exists = self.sftp.try_exists(to).await.unwrap_or(false);
                if !exists {
                    return Err(RemoteError::sftp("rename", from, first));
                }
                self.sftp
                    .remove_file(to)
                    .await
                    .map_err(|e| RemoteError::sftp("remove", to, e))?;
                self.sftp
                    .rename(from, to)
                    .await
                    .map_err(|e| RemoteError::sftp("rename", from, e))
            }
        }
    }
}

/// Joins a remote folder and a file name with `/`.
pub fn join(folder: &str, name: &str) -> String {
    if folder.is_empty() {
        name.to_string()
    } else if folder.ends_with('/') {
        format!("{folder}{name}")
    } else {
        format!("{folder}/{name}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "AAAAC3NzaC1lZDI1NTE5AAAAIJdD7y3aLq454yWBdwLWbieU1ebz9/cu7/QEXn9OIeZJ";

    #[test]
    fn host_key_entries() {
        let plain = format!("ssh-ed25519 {KEY} root@host");
        assert!(parse_host_key(&plain, "sftp.example.org", 22).is_ok());
        let with_host = format!("[127.0.0.1]:2222 ssh-ed25519 {KEY}");
        assert!(parse_host_key(&with_host, "127.0.0.1", 2222).is_ok());
        let err = parse_host_key(&with_host, "127.0.0.1", 22).expect_err("other host");
        assert!(err.contains("not for 127.0.0.1"), "{err}");
        let err = parse_host_key(&format!("ssh-rsa {KEY}"), "h", 22).expect_err("wrong algo");
        assert!(err.contains("says ssh-rsa"), "{err}");
        assert!(parse_host_key("nonsense", "h", 22).is_err());
        assert!(parse_host_key(&format!("|1|abc|def ssh-ed25519 {KEY}"), "h", 22).is_err());
    }

    #[test]
    fn config_problems_name_keys() {
        let c = RemoteConfig {
            host: String::new(),
            port: 22,
            username: "u".into(),
            password: None,
            private_key: None,
            private_key_passphrase: None,
            host_key: "x".into(),
            timeout_secs: 0,
        };
        let keys: Vec<String> = c.problems().into_iter().map(|(k, _)| k).collect();
        assert_eq!(keys, ["host", "password", "host_key", "timeout_secs"]);
    }

    #[test]
    fn join_paths() {
        assert_eq!(join("/in", "a.hl7"), "/in/a.hl7");
        assert_eq!(join("/in/", "a.hl7"), "/in/a.hl7");
        assert_eq!(join("", "a.hl7"), "a.hl7");
    }
}
