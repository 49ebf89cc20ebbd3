//! `switchboard send`: an MLLP client for files, and a load generator.
//!
//! Files may hold one message, several (separated by blank lines or not), or an FHS/BHS
//! batch; segment endings may be CR, LF or CRLF. In plain mode every message is sent once, in
//! order, and one line per message says what came back. In load mode (`--connections` > 1,
//! `--repeat` or `--duration`) each connection sends the messages round and round with a
//! fresh MSH-10 each time, and a summary gives msgs/s and ACK latency percentiles.

use channels::mllp::client::MllpClient;
use std::path::PathBuf;
use std::time::{Duration, Instant};
use transforms::hl7v2::ack::{parse_ack, AckCode};
use transforms::hl7v2::batch;

/// What to send, where, and how hard.
#[derive(Debug, Clone)]
pub struct SendOptions {
    /// `host:port` of the MLLP listener.
    pub to: String,
    /// Files to send.
    pub files: Vec<PathBuf>,
    /// Parallel connections (load mode when above 1).
    pub connections: usize,
    /// Send the whole set this many times per connection (load mode).
    pub repeat: Option<u64>,
    /// Keep sending for this long (load mode).
    pub duration: Option<Duration>,
    /// How long to wait for each answer.
    pub timeout: Duration,
    /// TLS towards the listener (`--tls-ca`, `--tls-cert`, `--tls-key`); `None`: plain TCP.
    pub tls: Option<channels::tls::ClientTls>,
}

impl SendOptions {
    /// Opens one connection to `to`, plain or TLS.
    async fn connect(&self) -> Result<MllpClient, channels::mllp::client::ClientError> {
        match &self.tls {
            None => MllpClient::connect(&self.to, self.timeout).await,
            Some(tls) => MllpClient::connect_tls(&self.to, self.timeout, tls).await,
        }
    }
}

/// Why sending could not start or finish.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    /// A file could not be read.
    #[error("cannot read {file}: {source}")]
    Read {
        /// The file.
        file: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// A file could not be split into messages.
    #[error("{file}: {source}")]
    Split {
        /// The file.
        file: String,
        /// Why.
        source: batch::BatchError,
    },
    /// No message was found in the files.
    #[error("no HL7 message found in the given files")]
    Empty,
    /// The connection failed.
    #[error("{0}")]
    Client(#[from] channels::mllp::client::ClientError),
}

/// The outcome of one message in plain mode.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    /// `file#n`.
    pub what: String,
    /// MSA-1, or `None` when the answer was not an ACK.
    pub code: Option<AckCode>,
    /// MSA-2.
    pub control_id: String,
    /// MSA-3 / ERR text.
    pub text: String,
}

impl Answer {
    /// One line for the terminal.
    pub fn line(&self) -> String {
        match self.code {
            Some(code) if code.is_positive() => {
                format!("{} {} {}", self.what, code.as_str(), self.control_id)
            }
            Some(code) => format!(
                "{} {} {} {}",
                self.what,
                code.as_str(),
                self.control_id,
                self.text
            ),
            None => format!("{} ?? (answer is not an ACK) {}", self.what, self.text),
        }
    }
}

/// Summary of a load run.
#[derive(Debug, Clone, PartialEq)]
pub struct LoadReport {
    /// Messages answered.
    pub sent: u64,
    /// Answers that were AA or CA.
    pub positive: u64,
    /// Other answers, and failures to get one.
    pub negative: u64,
    /// Wall time of the run.
    pub elapsed: Duration,
    /// Median ACK latency.
    pub p50: Duration,
    /// 99th percentile ACK latency.
    pub p99: Duration,
    /// Slowest ACK.
    pub max: Duration,
}

impl LoadReport {
    /// Messages per second.
    pub fn rate(&self) -> f64 {
        self.sent as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    /// The summary line printed by `switchboard send`.
    pub fn line(&self) -> String {
        format!(
            "sent {} in {:.2}s: {:.0} msgs/s; ACK latency p50 {} p99 {} max {}; positive {}, negative {}",
            self.sent,
            self.elapsed.as_secs_f64(),
            self.rate(),
            fmt_duration(self.p50),
            fmt_duration(self.p99),
            fmt_duration(self.max),
            self.positive,
            self.negative
        )
    }
}

fn fmt_duration(d: Duration) -> String {
    if d < Duration::from_millis(1) {
        format!("{}µs", d.as_micros())
    } else {
        format!("{:.2}ms", d.as_secs_f64() * 1000.0)
    }
}

/// Reads and splits the files: (label, message text) in order.
///
/// # Errors
///
/// [`SendError`] when a file cannot be read or split, or holds no message.
pub fn load_messages(files: &[PathBuf]) -> Result<Vec<(String, Vec<u8>)>, SendError> {
    let mut out = Vec::new();
    for file in files {
        let name = file.display().to_string();
        let bytes = std::fs::read(file).map_err(|source| SendError::Read {
            file: name.clone(),
            source,
        })?;
        // Files are sent byte for byte: a file that is not UTF-8 (Latin-1, Arabic 8859-6...)
        // is split as one char per byte and turned back into the same bytes.
        let (text, single_byte) = match String::from_utf8(bytes) {
            Ok(t) => (t, false),
            Err(e) => (e.into_bytes().iter().map(|&b| b as char).collect(), true),
        };
        let b = batch::split(&text).map_err(|source| SendError::Split {
            file: name.clone(),
            source,
        })?;
        for (i, m) in b.messages.into_iter().enumerate() {
            let bytes = if single_byte {
                m.chars().map(|c| c as u32 as u8).collect()
            } else {
                m.into_bytes()
            };
            out.push((format!("{name}#{}", i + 1), bytes));
        }
    }
    if out.is_empty() {
        return Err(SendError::Empty);
    }
    Ok(out)
}

/// Sends each message once, in order, on one connection.
///
/// # Errors
///
/// [`SendError::Client`] when the connection fails.
pub async fn send_plain(
    opts: &SendOptions,
    messages: &[(String, Vec<u8>)],
) -> Result<Vec<Answer>, SendError> {
    let mut client = opts.connect().await?;
    let mut answers = Vec::with_capacity(messages.len());
    for (what, bytes) in messages {
        let bytes = client.send(bytes).await?;
        answers.push(read_answer(what, &bytes));
    }
    Ok(answers)
}

fn read_answer(what: &str, bytes: &[u8]) -> Answer {
    let text = String::from_utf8_lossy(bytes);
    match parse_ack(&text) {
        Some(a) => Answer {
            what: what.into(),
            code: Some(a.code),
            control_id: a.control_id,
            text: a.text,
        },
        None => Answer {
            what: what.into(),
            code: None,
            control_id: String::new(),
            text: String::new(),
        },
    }
}

/// Runs the load generator.
///
/// # Errors
///
/// [`SendError::Client`] when a connection cannot be opened.
pub async fn send_load(
    opts: &SendOptions,
    messages: &[(String, Vec<u8>)],
) -> Result<LoadReport, SendError> {
    let connections = opts.connections.max(1);
    let deadline = opts.duration.map(|d| Instant::now() + d);
    let rounds = match (opts.repeat, opts.duration) {
        (Some(r), _) => r,
        (None, Some(_)) => u64::MAX,
        (None, None) => 1,
    };
    let mut clients = Vec::with_capacity(connections);
    for _ in 0..connections {
        clients.push(opts.connect().await?);
    }
    let templates: Vec<Template> = messages.iter().map(|(_, m)| Template::new(m)).collect();
    let templates = std::sync::Arc::new(templates);
    let started = Instant::now();
    let run_id = started.elapsed().as_nanos()
        ^ std::process::id() as u128
        ^ chrono::Utc::now().timestamp_micros() as u128;
    let mut tasks = Vec::new();
    for (conn, mut client) in clients.into_iter().enumerate() {
        let templates = templates.clone();
        tasks.push(tokio::spawn(async move {
            let mut latencies: Vec<u32> = Vec::with_capacity(4096);
            let (mut positive, mut negative) = (0u64, 0u64);
            let mut seq = 0u64;
            'rounds: for _ in 0..rounds {
                for t in templates.iter() {
                    if deadline.is_some_and(|d| Instant::now() >= d) {
                        break 'rounds;
                    }
                    seq += 1;
                    let msg = t.render(&format!("{:x}-{conn}-{seq}", run_id & 0xffff_ffff));
                    let sent_at = Instant::now();
                    match client.send(&msg).await {
                        Ok(bytes) => {
                            latencies
                                .push(sent_at.elapsed().as_micros().min(u32::MAX as u128) as u32);
                            match parse_ack(&String::from_utf8_lossy(&bytes)) {
                                Some(a) if a.code.is_positive() => positive += 1,
                                _ => negative += 1,
                            }
                        }
                        Err(_) => {
                            negative += 1;
                            break 'rounds;
                        }
                    }
                }
            }
            (latencies, positive, negative)
        }));
    }
    let mut all = Vec::new();
    let (mut positive, mut negative) = (0, 0);
    for t in tasks {
        if let Ok((l, p, n)) = t.await {
            all.extend(l);
            positive += p;
            negative += n;
        }
    }
    let elapsed = started.elapsed();
    all.sort_unstable();
    let pct = |p: f64| {
        if all.is_empty() {
            Duration::ZERO
        } else {
            let i = ((all.len() as f64 * p).ceil() as usize).clamp(1, all.len()) - 1;
            Duration::from_micros(all[i] as u64)
        }
    };
    Ok(LoadReport {
        sent: all.len() as u64,
        positive,
        negative,
        elapsed,
        p50: pct(0.50),
        p99: pct(0.99),
        max: all
            .last()
            .map(|&m| Duration::from_micros(m as u64))
            .unwrap_or_default(),
    })
}

/// A message with its MSH-10 cut out, so each send can carry a fresh control id.
struct Template {
    before: Vec<u8>,
    control_id: Vec<u8>,
    after: Vec<u8>,
}

impl Template {
    fn new(msg: &[u8]) -> Template {
        let whole = Template {
            before: msg.to_vec(),
            control_id: vec![],
            after: vec![],
        };
        if !msg.starts_with(b"MSH") || msg.len() < 4 {
            return whole;
        }
        let sep = msg[3];
        let first_segment = msg.iter().position(|&b| b == b'\r').unwrap_or(msg.len());
        let seps: Vec<usize> = msg[..first_segment]
            .iter()
            .enumerate()
            .filter(|(_, &b)| b == sep)
            .map(|(i, _)| i)
            .take(10)
            .collect();
        // MSH-1 is the first separator, so MSH-10 lies between the 9th and 10th.
        match (seps.get(8), seps.get(9)) {
            (Some(&s), Some(&e)) => Template {
                before: msg[..=s].to_vec(),
                control_id: msg[s + 1..e].to_vec(),
                after: msg[e..].to_vec(),
            },
            _ => whole,
        }
    }

    fn render(&self, suffix: &str) -> Vec<u8> {
        let mut v = Vec::with_capacity(self.before.len() + self.after.len() + 64);
        v.extend_from_slice(&self.before);
        if !self.after.is_empty() {
            // MSH-10 is at most 199 characters: keep the suffix and what fits of the original.
            let keep = self
                .control_id
                .len()
                .min(199usize.saturating_sub(suffix.len() + 1));
            v.extend_from_slice(&self.control_id[..keep]);
            v.push(b'-');
            v.extend_from_slice(suffix.as_bytes());
            v.extend_from_slice(&self.after);
        }
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn template_replaces_msh10_only() {
        let t = Template::new(b"MSH|^~\\&|A|B|C|D|20250101||ADT^A04|CTRL1|P|2.5\rPID|1||X\r");
        let out = String::from_utf8(t.render("9-0-1")).expect("utf-8");
        assert_eq!(
            out,
            "MSH|^~\\&|A|B|C|D|20250101||ADT^A04|CTRL1-9-0-1|P|2.5\rPID|1||X\r"
        );
    }

    #[test]
    fn answer_lines() {
        let a = read_answer(
            "f#1",
            b"MSH|^~\\&|A|B|C|D|1||ACK^A04^ACK|9|P|2.5\rMSA|AE|C1|PID-3 missing\r",
        );
        assert_eq!(a.line(), "f#1 AE C1 PID-3 missing");
        let ok = read_answer("f#2", b"MSH|^~\\&|A|B|C|D|1||ACK|9|P|2.5\rMSA|AA|C2\r");
        assert_eq!(ok.line(), "f#2 AA C2");
    }
}
