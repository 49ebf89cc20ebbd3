//! The SFTP poller source: picks up HL7 v2 files from a remote folder.
//!
//! Every `poll_interval_secs` the folder is listed. A regular file whose name matches
//! `pattern` is taken only once its size and modification time are the same on two polls in
//! a row, so a file that is still being written is left alone. A taken file is read whole
//! and split into messages ([`transforms::hl7v2::batch::split`]: one message, several, or an
//! FHS/BHS batch whose counts must add up). Its messages go to the engine one at a time, in
//! file order, each waiting for its answer.
//!
//! What happens to the file then (persist before remove: a file is only ever archived,
//! deleted or moved aside after the engine said each of its messages is on disk):
//!
//! - every message `Accepted`: archived (moved to `archive_folder`) or deleted (`after`);
//! - any message `Rejected` (stored as rejected, with its reason), or the file cannot be read
//!   or split (bad batch counts, no MSH, too large): moved to `error_folder` with
//!   `<name>.reason.txt` beside it. The reason names message numbers, control ids and the
//!   NAK reason, never message content. Messages of the file that were accepted stay
//!   accepted; dropping the fixed file in again is safe, because resends are recognised by
//!   MSH-3/4/10 and answered from the store instead of being processed twice;
//! - a message answered `Retry` (the engine could not store it): the file stays where it is
//!   and the poll round ends; the next poll tries the file again from the start.
//!
//! While an operator has the channel paused, the folder is not listed (the connection is
//! kept); a file being taken when the pause comes gets `Retry` for its next message, so it
//! stays where it is and is taken again after the resume.
//!
//! A lost connection or a server that is down is retried with exponential backoff (1 s
//! doubling up to `reconnect_max_secs`). A server whose host key is not the configured one
//! is refused on every attempt, with an error in the log naming both fingerprints.

use super::remote::{join, Remote, RemoteConfig, RemoteError, ResolvedRemote};
use crate::source::{BuildError, Disposition, Inbound, Payload, SourceContext};
use bytes::Bytes;
use prometheus::IntCounter;
use rand::Rng;
use russh_sftp::protocol::StatusCode;
use serde::Deserialize;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::io::AsyncWriteExt;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tracing::{debug, error, info, warn};
use transforms::hl7v2::batch;

/// Configuration of an SFTP poller (`type = "sftp"` in a channel's `[source]`).
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct PollerConfig {
    /// The server, user, credentials and host key (`[source.server]`).
    pub server: RemoteConfig,
    /// Remote folder to poll, such as `/outbound/hl7`.
    pub folder: String,
    /// File names to take: `*` stands for any characters, `?` for one. Names that start
    /// with `.` match only a pattern that starts with `.` (so `.part` files being uploaded
    /// are never taken by `*`).
    #[serde(default = "default_pattern")]
    pub pattern: String,
    /// Seconds between two listings. A file is taken on the first listing that finds it
    /// unchanged since the previous one.
    #[serde(default = "default_poll_interval_secs")]
    pub poll_interval_secs: u64,
    /// What to do with a file whose messages were all accepted: `archive` (default: move it
    /// to `archive_folder`) or `delete`.
    #[serde(default)]
    pub after: After,
    /// Remote folder for processed files (required with `after = "archive"`); created
    /// when missing. A name already taken there gets a `.<unix ms>` suffix.
    #[serde(default)]
    pub archive_folder: Option<String>,
    /// Remote folder for files that failed, each with `<name>.reason.txt` beside it; created
    /// when missing.
    pub error_folder: String,
    /// Largest file taken, in bytes; a larger one is moved to the error folder.
    #[serde(default = "default_max_file_bytes")]
    pub max_file_bytes: u64,
    /// Longest wait between two reconnection attempts, in seconds.
    #[serde(default = "default_reconnect_max_secs")]
    pub reconnect_max_secs: u64,
}

/// What happens to a file once every message in it is stored.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum After {
    /// Moved to `archive_folder`.
    #[default]
    Archive,
    /// Removed from the server.
    Delete,
}

fn default_pattern() -> String {
    "*".into()
}
fn default_poll_interval_secs() -> u64 {
    10
}
fn default_max_file_bytes() -> u64 {
    16 * 1024 * 1024
}
fn default_reconnect_max_secs() -> u64 {
    300
}

/// Counters of one SFTP source; the engine creates them with the channel's label.
#[derive(Debug, Clone)]
pub struct SftpMetrics {
    /// Files taken for processing (stable and matching).
    pub files_picked: IntCounter,
    /// Files moved to the error folder.
    pub files_failed: IntCounter,
    /// Failed connections, listings and moves.
    pub poll_errors: IntCounter,
}

impl SftpMetrics {
    /// Metrics that are not registered anywhere, for tests and tools.
    pub fn unregistered() -> Self {
        let c = |n: &str| IntCounter::new(n, n).expect("a valid metric name");
        SftpMetrics {
            files_picked: c("picked"),
            files_failed: c("failed"),
            poll_errors: c("errors"),
        }
    }
}

impl PollerConfig {
    /// Problems the loader cannot see, as (key, message) with keys relative to `[source]`.
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
        if self.pattern.is_empty() || self.pattern.contains('/') {
            out.push((
                "pattern".into(),
                format!("'{}' is not a file name pattern", self.pattern),
            ));
        }
        if self.poll_interval_secs == 0 {
            out.push(("poll_interval_secs".into(), "must be at least 1".into()));
        }
        if self.reconnect_max_secs == 0 {
            out.push(("reconnect_max_secs".into(), "must be at least 1".into()));
        }
        if self.max_file_bytes == 0 {
            out.push(("max_file_bytes".into(), "must be at least 1".into()));
        }
        if self.error_folder.is_empty() {
            out.push(("error_folder".into(), "must not be empty".into()));
        }
        match (self.after, &self.archive_folder) {
            (After::Archive, None) => out.push((
                "archive_folder".into(),
                "required with after = \"archive\" (the default)".into(),
            )),
            (After::Archive, Some(a)) if a.is_empty() => {
                out.push(("archive_folder".into(), "must not be empty".into()))
            }
            _ => {}
        }
        for (key, other) in [
            ("error_folder", Some(&self.error_folder)),
            ("archive_folder", self.archive_folder.as_ref()),
        ] {
            if other.is_some_and(|o| o.trim_end_matches('/') == self.folder.trim_end_matches('/')) {
                out.push((key.into(), "must be another folder than `folder`".into()));
            }
        }
        out
    }

    /// Reads the secrets, parses the keys and starts polling; the server need not be up.
    ///
    /// # Errors
    ///
    /// [`BuildError::Config`] naming the key that is wrong.
    pub fn build(
        &self,
        cx: SourceContext,
        metrics: SftpMetrics,
    ) -> Result<JoinHandle<()>, BuildError> {
        if let Some((key, m)) = self.problems().into_iter().next() {
            return Err(BuildError::Config(format!("source.{key}: {m}")));
        }
        let remote = self
            .server
            .resolve()
            .map_err(|m| BuildError::Config(format!("source.server.{m}")))?;
        info!(channel = %cx.channel, server = %remote.addr(), folder = %self.folder, "SFTP poller started.");
        let poller = Poller {
            cfg: Arc::new(self.clone()),
            remote,
            cx,
            metrics,
            seen: HashMap::new(),
        };
        Ok(tokio::spawn(poller.run()))
    }
}

/// Size and modification time of a file at one listing.
type Signature = (u64, Option<u32>);

struct Poller {
    cfg: Arc<PollerConfig>,
    remote: ResolvedRemote,
    cx: SourceContext,
    metrics: SftpMetrics,
    /// What each matching file looked like at the previous listing.
    seen: HashMap<String, Signature>,
}

/// What became of one taken file.
enum FileOutcome {
    /// Archived or deleted.
    Done,
    /// Moved to the error folder.
    Failed,
    /// Left in place: changed while read, vanished, or the engine is stopping.
    Left,
    /// Left in place because the engine could not store a message: stop this round.
    Retry,
}

impl Poller {
    async fn run(mut self) {
        let max = Duration::from_secs(self.cfg.reconnect_max_secs);
        let mut backoff = Duration::from_secs(1).min(max);
        loop {
            if self.cx.shutdown.is_cancelled() {
                return;
            }
            let connected = tokio::select! {
                biased;
                _ = self.cx.shutdown.cancelled() => return,
                c = Remote::connect(&self.remote) => c,
            };
            let remote = match connected {
                Ok(r) => r,
                Err(e) => {
                    self.metrics.poll_errors.inc();
                    match &e {
                        RemoteError::HostKeyMismatch { .. } | RemoteError::AuthRejected { .. } => {
                            error!(channel = %self.cx.channel, error = %e, retry_secs = backoff.as_secs(), "SFTP server refused; check the configuration.")
                        }
                        _ => {
                            warn!(channel = %self.cx.channel, error = %e, retry_secs = backoff.as_secs(), "SFTP server unreachable, will retry.")
                        }
                    }
                    let jitter = rand::rng().random_range(0..=backoff.as_millis() as u64 / 4);
                    tokio::select! {
                        _ = self.cx.shutdown.cancelled() => return,
                        _ = tokio::time::sleep(backoff + Duration::from_millis(jitter)) => {}
                    }
                    backoff = (backoff * 2).min(max);
                    continue;
                }
            };
            info!(channel = %self.cx.channel, server = %self.remote.addr(), "SFTP connected.");
            backoff = Duration::from_secs(1).min(max);
            let result = self.serve(&remote).await;
            remote.close().await;
            match result {
                Ok(()) => return,
                Err(e) => {
                    self.metrics.poll_errors.inc();
                    warn!(channel = %self.cx.channel, error = %e, "SFTP connection lost, reconnecting.");
                }
            }
        }
    }

    /// Polls on one connection until shutdown (`Ok`) or a transport failure (`Err`).
    async fn serve(&mut self, remote: &Remote) -> Result<(), RemoteError> {
        let mut folders = vec![self.cfg.error_folder.clone()];
        if self.cfg.after == After::Archive {
            folders.extend(self.cfg.archive_folder.clone());
        }
        for f in folders {
            if let Err(e) = ensure_folder(remote, &f).await {
                if !e.is_status() {
                    return Err(e);
                }
                self.metrics.poll_errors.inc();
                warn!(channel = %self.cx.channel, error = %e, "Cannot create an SFTP folder.");
            }
        }
        let mut tick = tokio::time::interval(Duration::from_secs(self.cfg.poll_interval_secs));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                biased;
                _ = self.cx.shutdown.cancelled() => return Ok(()),
                _ = tick.tick() => {}
            }
            if self.cx.paused.is_paused() {
                // Paused by an operator: the folder is not listed, files stay where they are.
                continue;
            }
            if remote.is_closed() {
                return Err(RemoteError::Ssh {
                    addr: self.remote.addr(),
                    reason: "connection closed".into(),
                });
            }
            if let Err(e) = self.poll_once(remote).await {
                if !e.is_status() {
                    return Err(e);
                }
                self.metrics.poll_errors.inc();
                warn!(channel = %self.cx.channel, error = %e, "SFTP poll failed, will try again.");
            }
        }
    }

    async fn poll_once(&mut self, remote: &Remote) -> Result<(), RemoteError> {
        let listing = remote
            .sftp
            .read_dir(self.cfg.folder.as_str())
            .await
            .map_err(|e| RemoteError::sftp("list", &self.cfg.folder, e))?;
        let mut now = HashMap::new();
        let mut ready = Vec::new();
        for entry in listing {
            let name = entry.file_name();
            let meta = entry.metadata();
            if !meta.file_type().is_file() || !name_matches(&self.cfg.pattern, &name) {
                continue;
            }
            let sig = (meta.size.unwrap_or(0), meta.mtime);
            if self.seen.get(&name) == Some(&sig) {
                ready.push((name.clone(), sig));
            } else {
                debug!(channel = %self.cx.channel, file = %name, "File seen; waiting until it is stable.");
            }
            now.insert(name, sig);
        }
        self.seen = now;
        ready.sort();
        for (name, sig) in ready {
            if self.cx.shutdown.is_cancelled() {
                break;
            }
            self.metrics.files_picked.inc();
            let outcome = self.process(remote, &name, sig).await?;
            // Whatever happened, the file must look stable twice again before it is retried.
            self.seen.remove(&name);
            if matches!(outcome, FileOutcome::Retry) {
                break;
            }
        }
        Ok(())
    }

    async fn process(
        &self,
        remote: &Remote,
        name: &str,
        sig: Signature,
    ) -> Result<FileOutcome, RemoteError> {
        let path = join(&self.cfg.folder, name);
        if sig.0 > self.cfg.max_file_bytes {
            let reason = format!(
                "file is {} bytes, more than max_file_bytes = {}",
                sig.0, self.cfg.max_file_bytes
            );
            return self.fail(remote, name, &reason).await;
        }
        let bytes = match remote.sftp.read(path.as_str()).await {
            Ok(b) => b,
            Err(e) => {
                let e = RemoteError::sftp("read", &path, e);
                return match e.status() {
                    Some(StatusCode::NoSuchFile) => Ok(FileOutcome::Left),
                    Some(_) => self.fail(remote, name, &format!("cannot read: {e}")).await,
                    None => Err(e),
                };
            }
        };
        if bytes.len() as u64 != sig.0 {
            debug!(channel = %self.cx.channel, file = %name, "File changed while read; waiting until it is stable.");
            return Ok(FileOutcome::Left);
        }
        let messages = match split_file(&bytes) {
            Ok(m) if m.is_empty() => {
                return self
                    .fail(remote, name, "file holds no HL7 message (no MSH segment)")
                    .await
            }
            Ok(m) => m,
            Err(e) => {
                return self
                    .fail(remote, name, &format!("not a valid HL7 file: {e}"))
                    .await
            }
        };
        let total = messages.len();
        let mut rejected = Vec::new();
        for (i, message) in messages.into_iter().enumerate() {
            if self.cx.shutdown.is_cancelled() {
                return Ok(FileOutcome::Left);
            }
            let control_id = shown_control_id(&message);
            let (reply, answer) = oneshot::channel();
            let inbound = Inbound {
                payload: Payload::Hl7v2(message),
                peer: remote.peer,
                received_at: SystemTime::now(),
                reply,
            };
            if self.cx.out.send(inbound).await.is_err() {
                return Ok(FileOutcome::Left);
            }
            let Ok(reply) = answer.await else {
                return Ok(FileOutcome::Left);
            };
            match reply.disposition {
                Disposition::Accepted => {}
                Disposition::Rejected(reason) => rejected.push(format!(
                    "message {} of {total} (MSH-10 {control_id}): {reason}",
                    i + 1
                )),
                Disposition::Retry(reason) => {
                    warn!(channel = %self.cx.channel, file = %name, message = i + 1, reason = %reason, "Message not stored; the file stays and is tried again.");
                    return Ok(FileOutcome::Retry);
                }
            }
        }
        if !rejected.is_empty() {
            let reason = format!(
                "{} of {total} messages were rejected (each is stored with its reason; the others were accepted):\n{}",
                rejected.len(),
                rejected.join("\n")
            );
            return self.fail(remote, name, &reason).await;
        }
        let done = match (self.cfg.after, &self.cfg.archive_folder) {
            (After::Archive, Some(folder)) => {
                let target = free_name(remote, folder, name).await;
                remote
                    .sftp
                    .rename(path.as_str(), join(folder, &target))
                    .await
                    .map_err(|e| RemoteError::sftp("archive", &path, e))
            }
            _ => remote
                .sftp
                .remove_file(path.as_str())
                .await
                .map_err(|e| RemoteError::sftp("delete", &path, e)),
        };
        match done {
            Ok(()) => {
                debug!(channel = %self.cx.channel, file = %name, messages = total, "File processed.");
                Ok(FileOutcome::Done)
            }
            Err(e) if e.is_status() => {
                // Its messages are stored; taking it again only meets duplicates.
                self.metrics.poll_errors.inc();
                warn!(channel = %self.cx.channel, file = %name, error = %e, "File processed but cannot be archived or deleted.");
                Ok(FileOutcome::Left)
            }
            Err(e) => Err(e),
        }
    }

    /// Moves a file to the error folder with its reason beside it.
    async fn fail(
        &self,
        remote: &Remote,
        name: &str,
        reason: &str,
    ) -> Result<FileOutcome, RemoteError> {
        self.metrics.files_failed.inc();
        warn!(channel = %self.cx.channel, file = %name, reason = %reason.lines().next().unwrap_or_default(), "File moved to the error folder.");
        let folder = &self.cfg.error_folder;
        let target = free_name(remote, folder, name).await;
        let text = format!(
            "file: {name}\nchannel: {}\nmoved: {}\nreason: {reason}\n",
            self.cx.channel,
            chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
        );
        let reason_path = join(folder, &format!("{target}.reason.txt"));
        let written = async {
            let mut f = remote.sftp.create(reason_path.as_str()).await?;
            f.write_all(text.as_bytes()).await?;
            f.shutdown().await?;
            Ok::<(), std::io::Error>(())
        }
        .await;
        if let Err(e) = written {
            self.metrics.poll_errors.inc();
            warn!(channel = %self.cx.channel, file = %name, error = %e, "Cannot write the reason file.");
        }
        let from = join(&self.cfg.folder, name);
        match remote
            .sftp
            .rename(from.as_str(), join(folder, &target))
            .await
        {
            Ok(()) => Ok(FileOutcome::Failed),
            Err(e) => {
                let e = RemoteError::sftp("move to error folder", &from, e);
                if !e.is_status() {
                    return Err(e);
                }
                self.metrics.poll_errors.inc();
                warn!(channel = %self.cx.channel, file = %name, error = %e, "Cannot move the file to the error folder.");
                Ok(FileOutcome::Left)
            }
        }
    }
}

/// Creates `folder` when it does not exist.
async fn ensure_folder(remote: &Remote, folder: &str) -> Result<(), RemoteError> {
    match remote.sftp.try_exists(folder).await {
        Ok(true) => Ok(()),
        Ok(false) => remote
            .sftp
            .create_dir(folder)
            .await
            .map_err(|e| RemoteError::sftp("create folder", folder, e)),
        Err(e) => Err(RemoteError::sftp("stat", folder, e)),
    }
}

/// `name`, or `name.<unix ms>` when `folder` already has a `name`.
async fn free_name(remote: &Remote, folder: &str, name: &str) -> String {
    match remote.sftp.try_exists(join(folder, name)).await {
        Ok(false) => name.to_string(),
        _ => {
            let ms = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_millis())
                .unwrap_or_default();
            format!("{name}.{ms}")
        }
    }
}

/// Splits a file into messages, each as the bytes it had in the file (CR segment endings).
///
/// The file's bytes are mapped one to one onto the first 256 code points so that the split,
/// which looks only at ASCII (segment ids, CR, LF, `|`), works for every ASCII-compatible
/// character set, and each message maps back to exactly its original bytes. A UTF-8 byte
/// order mark at the start is dropped.
///
/// # Errors
///
/// [`batch::BatchError`] for a segment outside a message or wrong batch counts.
pub fn split_file(bytes: &[u8]) -> Result<Vec<Bytes>, batch::BatchError> {
    let bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
    let text: String = bytes.iter().map(|&b| char::from(b)).collect();
    let split = batch::split(&text)?;
    Ok(split
        .messages
        .into_iter()
        .map(|m| {
            // Every char came from one byte above, so it fits in one again.
            Bytes::from(m.chars().map(|c| c as u32 as u8).collect::<Vec<u8>>())
        })
        .collect())
}

/// MSH-10 of a message when it is a short plain code, for reason files.
fn shown_control_id(message: &[u8]) -> String {
    let first = message.split(|&b| b == b'\r').next().unwrap_or_default();
    let sep = first.get(3).copied().unwrap_or(b'|');
    let id = first.split(|&b| b == sep).nth(9).unwrap_or_default();
    let ok = !id.is_empty()
        && id.len() <= 40
        && id
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    if ok {
        String::from_utf8_lossy(id).into_owned()
    } else {
        "(not shown)".into()
    }
}

/// Whether `name` matches `pattern` (`*` any run of characters, `?` one character). Names
/// starting with `.` match only patterns starting with `.`.
///
/// ```
/// use channels::sftp::poller::name_matches;
/// assert!(name_matches("*.hl7", "adt-001.hl7"));
/// assert!(!name_matches("*.hl7", "adt-001.hl7.part"));
/// assert!(!name_matches("*", ".adt-001.hl7"));
/// ```
pub fn name_matches(pattern: &str, name: &str) -> bool {
    if name.starts_with('.') && !pattern.starts_with('.') {
        return false;
    }
    let p: Vec<char> = pattern.chars().collect();
    let n: Vec<char> = name.chars().collect();
    // Iterative wildcard match with one backtrack point (the last `*`).
    let (mut pi, mut ni) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ni < n.len() {
        match p.get(pi) {
            Some('*') => {
                star = Some((pi, ni));
                pi += 1;
            }
            Some(&c) if c == '?' || c == n[ni] => {
                pi += 1;
                ni += 1;
            }
            _ => match star {
                Some((sp, sn)) => {
                    pi = sp + 1;
                    ni = sn + 1;
                    star = Some((sp, sn + 1));
                }
                None => return false,
            },
        }
    }
    p[pi..].iter().all(|&c| c == '*')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns() {
        assert!(name_matches("*", "a"));
        assert!(!name_matches("*.hl7", ".hl7"));
        assert!(name_matches("adt_??.hl7", "adt_01.hl7"));
        assert!(!name_matches("adt_??.hl7", "adt_001.hl7"));
        assert!(name_matches("*_*.txt", "a_b_c.txt"));
        assert!(!name_matches("*.txt", "a.txt.tmp"));
        assert!(name_matches(".*", ".hidden"));
        assert!(name_matches("**a", "bba"));
    }

    #[test]
    fn split_keeps_the_original_bytes() {
        // ISO-8859-1 é (0xE9) and a UTF-8 ü (0xC3 0xBC) survive byte for byte.
        let file = b"\xEF\xBB\xBFMSH|^~\\&|A|\xE9\r\nPID|1||\xC3\xBC\r\n\r\nMSH|^~\\&|B\n";
        let m = split_file(file).expect("valid");
        assert_eq!(m.len(), 2);
        assert_eq!(&m[0][..], b"MSH|^~\\&|A|\xE9\rPID|1||\xC3\xBC\r");
        assert_eq!(&m[1][..], b"MSH|^~\\&|B\r");
    }

    #[test]
    fn bad_batch_is_an_error() {
        let file = b"BHS|^~\\&\rMSH|^~\\&|A\rBTS|2\r";
        assert!(split_file(file).is_err());
    }

    #[test]
    fn control_ids_in_reasons_are_plain_codes() {
        assert_eq!(
            shown_control_id(b"MSH|^~\\&|A|B|C|D|2025||ADT^A04|CTRL-1|P|2.5\r"),
            "CTRL-1"
        );
        assert_eq!(
            shown_control_id(b"MSH|^~\\&|A|B|C|D|2025||ADT^A04|Jane Doe|P|2.5\r"),
            "(not shown)"
        );
        assert_eq!(shown_control_id(b"MSH|^~\\&"), "(not shown)");
    }

    #[test]
    fn config_problems() {
        let json = r#"{
            "folder": "/in",
            "error_folder": "/in",
            "server": {
                "host": "h",
                "username": "u",
                "password": { "env": "X" },
                "host_key": "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIJdD7y3aLq454yWBdwLWbieU1ebz9/cu7/QEXn9OIeZJ"
            }
        }"#;
        let c: PollerConfig = serde_json::from_str(json).expect("parses");
        let keys: Vec<String> = c.problems().into_iter().map(|(k, _)| k).collect();
        assert_eq!(keys, ["archive_folder", "error_folder"]);
    }
}
