//! The SFTP writer destination: each delivery becomes one file in a remote folder.
//!
//! The file is written under a temporary name (`.<final name>.part`, which a poller with a
//! plain pattern never takes) and renamed once complete, so a reader never sees half a
//! file. A retry writes the same bytes to the same final name, replacing the first copy.
//! One connection is kept open and reused; it is dropped after any transport failure.
//!
//! Failures: connection, handshake, host key, login, timeouts and generic server failures
//! are retried (with the destination's backoff, up to its attempt limit); `permission
//! denied` and other answers that a retry cannot change go to the dead letters at once.

use super::remote::{join, Remote, RemoteConfig, RemoteError, ResolvedRemote};
use crate::destination::{Delivery, DeliveryConfig, DeliveryError, Receipt};
use russh_sftp::protocol::StatusCode;
use serde::Deserialize;
use tokio::io::AsyncWriteExt;
use tokio::sync::Mutex;

/// Configuration of an SFTP destination (`type = "sftp"`).
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct WriterConfig {
    /// Name, unique within the channel.
    pub name: String,
    /// The server, user, credentials and host key (`[destination.server]`).
    pub server: RemoteConfig,
    /// Remote folder the files are written to (it must exist).
    pub folder: String,
    /// File name template. `{key}` is the delivery's idempotency key (unique per message
    /// and destination, the same on every retry), `{control_id}` the MSH-10 of an HL7
    /// payload (the key when there is none), `{ext}` `hl7` or `json` by payload. Characters
    /// other than letters, digits, `-`, `_` and `.` in the values become `_`.
    #[serde(default = "default_file_name")]
    pub file_name: String,
    /// Scheduling and retries.
    #[serde(default)]
    pub delivery: DeliveryConfig,
}

fn default_file_name() -> String {
    "{key}.{ext}".into()
}

const PLACEHOLDERS: &[&str] = &["{key}", "{control_id}", "{ext}"];

impl WriterConfig {
    /// Problems the loader cannot see, as (key, message).
    pub fn problems(&self) -> Vec<(String, String)> {
        let mut out: Vec<(String, String)> = self
            .server
            .problems()
            .into_iter()
            .map(|(k, m)| (format!("server.{k}"), m))
            .collect();
        if self.folder.is_empty() {
            out.push(("folder".into(), "must not be empty".into()));
        }
        let mut rest = self.file_name.clone();
        for p in PLACEHOLDERS {
            rest = rest.replace(p, "");
        }
        if rest.contains('{') || rest.contains('}') {
            out.push((
                "file_name".into(),
                format!(
                    "'{}' has an unknown placeholder; use {}",
                    self.file_name,
                    PLACEHOLDERS.join(", ")
                ),
            ));
        }
        if !self.file_name.contains("{key}") && !self.file_name.contains("{control_id}") {
            out.push((
                "file_name".into(),
                "must contain {key} or {control_id}, or every delivery overwrites the last".into(),
            ));
        }
        if self.file_name.contains('/') || self.file_name.starts_with('.') {
            out.push((
                "file_name".into(),
                "must be a plain file name that does not start with '.'".into(),
            ));
        }
        out
    }

    /// Every secret referenced, with its key, for `check`.
    pub fn secrets(&self) -> Vec<(&'static str, &crate::secret::SecretRef)> {
        self.server.secrets()
    }
}

/// The SFTP writer.
#[derive(Debug)]
pub struct SftpWriter {
    config: WriterConfig,
    remote: ResolvedRemote,
    conn: Mutex<Option<Remote>>,
}

impl SftpWriter {
    /// Reads the secrets and parses the keys; connects on first use.
    ///
    /// # Errors
    ///
    /// A sentence naming the key that is wrong.
    pub fn new(config: &WriterConfig) -> Result<Self, String> {
        let remote = config.server.resolve().map_err(|m| format!("server.{m}"))?;
        Ok(SftpWriter {
            config: config.clone(),
            remote,
            conn: Mutex::new(None),
        })
    }

    /// Tells whether the SSH server accepts connections now (a TCP connect; no login).
    ///
    /// # Errors
    ///
    /// The server address and why the connection failed.
    pub async fn healthcheck(&self) -> Result<(), String> {
        let addr = format!("{}:{}", self.config.server.host, self.config.server.port);
        crate::health::tcp_connect(&addr, std::time::Duration::from_secs(5)).await
    }

    /// The final file name of a delivery.
    pub fn file_name(&self, d: &Delivery) -> String {
        let ext = if d.content_type.contains("json") {
            "json"
        } else {
            "hl7"
        };
        let control_id = d.control_id.as_deref().unwrap_or(&d.idempotency_key);
        self.config
            .file_name
            .replace("{key}", &safe(&d.idempotency_key))
            .replace("{control_id}", &safe(control_id))
            .replace("{ext}", ext)
    }

    /// Writes one delivery as a file: temporary name, then rename.
    ///
    /// # Errors
    ///
    /// [`DeliveryError`], retryable unless the server said a retry cannot help.
    pub async fn deliver(&self, d: &Delivery) -> Result<Receipt, DeliveryError> {
        let name = self.file_name(d);
        let tmp = join(&self.config.folder, &format!(".{name}.part"));
        let dst = join(&self.config.folder, &name);
        let mut guard = self.conn.lock().await;
        if guard.as_ref().is_some_and(Remote::is_closed) {
            *guard = None;
        }
        if guard.is_none() {
            let r = Remote::connect(&self.remote).await.map_err(classify)?;
            *guard = Some(r);
        }
        let Some(remote) = guard.as_ref() else {
            return Err(DeliveryError::retry("no SFTP connection"));
        };
        let written = async {
            let mut f = remote
                .sftp
                .create(tmp.as_str())
                .await
                .map_err(|e| RemoteError::sftp("create", &tmp, e))?;
            let io = |e: std::io::Error| RemoteError::Sftp {
                op: "write",
                path: tmp.clone(),
                reason: e.to_string(),
                status: None,
            };
            f.write_all(&d.body).await.map_err(io)?;
            f.shutdown().await.map_err(io)?;
            remote.rename_over(&tmp, &dst).await
        };
        let result = tokio::time::timeout(self.remote.timeout() * 3, written).await;
        match result {
            Ok(Ok(())) => Ok(Receipt {
                status: None,
                detail: name,
                answer: None,
            }),
            Ok(Err(e)) => {
                if e.is_status() {
                    // The connection is fine; leave no half file behind.
                    let _ = remote.sftp.remove_file(tmp.as_str()).await;
                } else {
                    *guard = None;
                }
                Err(classify(e))
            }
            Err(_) => {
                *guard = None;
                Err(DeliveryError::retry(format!(
                    "writing {dst} on {} timed out",
                    self.remote.addr()
                )))
            }
        }
    }
}

/// Retry unless the server answered something a retry cannot change.
fn classify(e: RemoteError) -> DeliveryError {
    let permanent = matches!(
        e.status(),
        Some(StatusCode::PermissionDenied | StatusCode::OpUnsupported | StatusCode::BadMessage)
    );
    if permanent {
        DeliveryError::permanent(e.to_string())
    } else {
        DeliveryError::retry(e.to_string())
    }
}

fn safe(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') {
                c
            } else {
                '_'
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(file_name: &str) -> WriterConfig {
        let json = format!(
            r#"{{
                "name": "out",
                "folder": "/in",
                "file_name": "{file_name}",
                "server": {{
                    "host": "h",
                    "username": "u",
                    "password": {{ "env": "SWITCHBOARD_TEST_SFTP_WRITER_PASSWORD" }},
                    "host_key": "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIJdD7y3aLq454yWBdwLWbieU1ebz9/cu7/QEXn9OIeZJ"
                }}
            }}"#
        );
        serde_json::from_str(&json).expect("parses")
    }

    #[test]
    fn file_name_template_is_checked() {
        assert!(config("{key}.{ext}").problems().is_empty());
        assert!(config("adt-{control_id}.hl7").problems().is_empty());
        let keys =
            |c: WriterConfig| -> Vec<String> { c.problems().into_iter().map(|(k, _)| k).collect() };
        assert_eq!(keys(config("{id}.hl7")), ["file_name", "file_name"]);
        assert_eq!(keys(config("same.hl7")), ["file_name"]);
        assert_eq!(keys(config("../{key}")), ["file_name"]);
    }

    #[test]
    fn classification() {
        let status = |s| RemoteError::Sftp {
            op: "create",
            path: "/x".into(),
            reason: "r".into(),
            status: Some(s),
        };
        assert!(!classify(status(StatusCode::PermissionDenied)).is_retryable());
        assert!(classify(status(StatusCode::Failure)).is_retryable());
        assert!(classify(status(StatusCode::NoSuchFile)).is_retryable());
        let down = RemoteError::Connect {
            addr: "h:22".into(),
            reason: "refused".into(),
        };
        assert!(classify(down).is_retryable());
    }

    #[test]
    fn names_are_sanitised() {
        std::env::set_var("SWITCHBOARD_TEST_SFTP_WRITER_PASSWORD", "x");
        let w = SftpWriter::new(&config("{control_id}-{key}.{ext}")).expect("builds");
        let d = Delivery {
            body: "{}".into(),
            content_type: "application/json".into(),
            idempotency_key: "lab/out/12".into(),
            control_id: Some("A B".into()),
            path: None,
        };
        assert_eq!(w.file_name(&d), "A_B-lab_out_12.json");
    }
}
