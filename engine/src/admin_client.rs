//! A small client of the admin API, for `switchboard messages`.
//!
//! [`AdminTarget::resolve`] finds the engine the way `switchboard run` sets it up: the admin
//! address and token come from the same merge of defaults, `switchboard.toml` and
//! `SWITCHBOARD_*` variables ([`crate::config::engine_figment`]), and when `admin.listen` has
//! port 0 the port the engine picked is read from `DATA_DIR/engine.json`. `--admin` takes
//! `host:port` or an `http://`/`https://` URL. [`Table`] prints the human output with
//! columns as wide as their widest value.

use crate::config::{engine_figment, AdminConfig};
use serde_json::Value;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// How long a connection attempt may take before the engine counts as not answering.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a whole call may take (a bulk retry answers when it is done).
const CALL_TIMEOUT: Duration = Duration::from_secs(120);

/// Why an admin API call failed, or could not be made.
///
/// Each variant carries its cause as text and returns no [`std::error::Error::source`], so a
/// printed error states each cause once.
#[derive(Debug, thiserror::Error)]
pub enum AdminClientError {
    /// Nothing answers at the address.
    #[error("no engine answers at {base} ({origin}): {reason}")]
    Unreachable {
        /// The base URL called.
        base: String,
        /// Where the address came from (`--admin`, `admin.listen in conf/switchboard.toml`).
        origin: String,
        /// The innermost cause, such as `Connection refused (os error 111)`.
        reason: String,
    },
    /// The call failed after connecting (reset, timeout, TLS).
    #[error("the admin API at {base} ({origin}) did not answer: {reason}")]
    Http {
        /// The base URL called.
        base: String,
        /// Where the address came from.
        origin: String,
        /// What went wrong.
        reason: String,
    },
    /// The server answered with an error.
    #[error("admin API answered {status}: {body}{hint}")]
    Status {
        /// HTTP status.
        status: u16,
        /// The JSON error body.
        body: String,
        /// What to do, for 401 and 403; empty otherwise.
        hint: String,
    },
    /// The address or token could not be worked out.
    #[error("{0}")]
    Setup(String),
}

/// An engine's admin API: where it is, where that was found, and the token to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdminTarget {
    /// `http://host:port` (or the URL given), without a trailing `/`.
    pub base: String,
    /// Where `base` came from, for error texts.
    pub origin: String,
    /// The bearer token, if any.
    pub token: Option<String>,
}

impl AdminTarget {
    /// Works out the admin API to call.
    ///
    /// `admin` is `--admin` (`host:port` or a URL); without it the address is the engine's
    /// `admin.listen` from the configuration folder `config` as `run` would read it (a
    /// wildcard address is called on loopback; port 0 is looked up in `engine.json`).
    /// `config_given` says whether the folder was named on the command line: only then is
    /// a missing folder an error (the default `conf` may be absent, leaving defaults and
    /// environment). `token` is `--token` or `SWITCHBOARD_ADMIN_TOKEN`; without it the
    /// configuration's `admin.token` is used, as `run` reads it.
    ///
    /// # Errors
    ///
    /// [`AdminClientError::Setup`] naming the option, file and key at fault.
    pub fn resolve(
        admin: Option<&str>,
        token: Option<String>,
        config: &Path,
        config_given: bool,
    ) -> Result<AdminTarget, AdminClientError> {
        if config_given && !config.is_dir() {
            return Err(AdminClientError::Setup(format!(
                "config folder {} does not exist (--config)",
                config.display()
            )));
        }
        let figment = engine_figment(config);
        let key_origin = |key: &str| -> String {
            match figment.find_metadata(key) {
                Some(m) => match &m.source {
                    Some(figment::Source::File(path)) => format!("{key} in {}", path.display()),
                    _ if m.name.contains("environment") => {
                        format!(
                            "SWITCHBOARD_{}",
                            key.to_ascii_uppercase().replace('.', "__")
                        )
                    }
                    _ => format!("the default {key}"),
                },
                None => format!("the default {key}"),
            }
        };
        let bad_key = |key: &str, e: figment::Error| {
            AdminClientError::Setup(format!(
                "{}: {}",
                key_origin(key),
                crate::error_chain::text(&e)
            ))
        };

        // The whole [admin] table, as `run` reads it (every key has a default).
        let settings: AdminConfig = match figment.extract_inner("admin") {
            Ok(a) => a,
            Err(_) if admin.is_some() => AdminConfig::default(),
            Err(e) => return Err(bad_key("admin", e)),
        };
        let token = match (token, &settings.token) {
            (Some(t), _) => Some(t),
            (None, Some(secret)) => match secret.resolve() {
                Ok(t) => Some(t),
                // The configuration's token is for its own engine; another one named with
                // --admin may need none.
                Err(_) if admin.is_some() => None,
                Err(m) => {
                    return Err(AdminClientError::Setup(format!(
                        "{}: {m}; set it, or pass --token",
                        key_origin("admin.token")
                    )))
                }
            },
            (None, None) => None,
        };
        if let Some(given) = admin {
            return Ok(AdminTarget {
                base: base_url(given)?,
                origin: "--admin".into(),
                token,
            });
        }
        let listen = settings.listen;
        let origin = key_origin("admin.listen");
        let addr: SocketAddr = listen.parse().map_err(|_| {
            AdminClientError::Setup(format!(
                "{origin}: '{listen}' is not an address (use IP:PORT, or pass --admin)"
            ))
        })?;
        if addr.port() != 0 {
            return Ok(AdminTarget {
                base: format!("http://{}", callable(addr)),
                origin,
                token,
            });
        }
        // Port 0: the engine picked one and wrote it to DATA_DIR/engine.json.
        let data_dir: PathBuf = figment
            .extract_inner("data_dir")
            .map_err(|e| bad_key("data_dir", e))?;
        let file = data_dir.join("engine.json");
        let info: crate::RuntimeInfo = std::fs::read(&file)
            .ok()
            .and_then(|bytes| serde_json::from_slice(&bytes).ok())
            .ok_or_else(|| {
                AdminClientError::Setup(format!(
                    "{origin} is {listen} (a port picked at start) and {} cannot be read: is \
                     the engine running with data_dir {}? Pass --admin HOST:PORT otherwise",
                    file.display(),
                    data_dir.display()
                ))
            })?;
        Ok(AdminTarget {
            base: format!("http://{}", callable(info.admin)),
            origin: format!("{} ({origin} is {listen})", file.display()),
            token,
        })
    }

    /// GETs `path` with the query, returning the JSON body.
    ///
    /// # Errors
    ///
    /// [`AdminClientError`] when unreachable or the answer is not 2xx JSON.
    pub async fn get_json(
        &self,
        path: &str,
        query: &[(&str, String)],
    ) -> Result<Value, AdminClientError> {
        let req = client()?.get(self.url(path)).query(query);
        self.call(req).await
    }

    /// POSTs a JSON body to `path`, returning the JSON answer. The request names the local
    /// user (`X-Switchboard-User: cli:$USER`) for the audit record.
    ///
    /// # Errors
    ///
    /// [`AdminClientError`] when unreachable or the answer is not 2xx JSON.
    pub async fn post_json(&self, path: &str, body: &Value) -> Result<Value, AdminClientError> {
        let user = std::env::var("USER").unwrap_or_else(|_| "cli".into());
        let req = client()?
            .post(self.url(path))
            .header("X-Switchboard-User", format!("cli:{user}"))
            .json(body);
        self.call(req).await
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    async fn call(&self, mut req: reqwest::RequestBuilder) -> Result<Value, AdminClientError> {
        if let Some(t) = &self.token {
            req = req.bearer_auth(t);
        }
        let resp = req.send().await.map_err(|e| self.transport(&e))?;
        let status = resp.status();
        let body = resp.text().await.map_err(|e| self.transport(&e))?;
        if !status.is_success() {
            let hint = match status.as_u16() {
                401 => " (pass --token, or set admin.token in the configuration)",
                403 => " (this token's role may not do that)",
                _ => "",
            };
            return Err(AdminClientError::Status {
                status: status.as_u16(),
                body,
                hint: hint.into(),
            });
        }
        serde_json::from_str(&body).map_err(|_| AdminClientError::Status {
            status: status.as_u16(),
            body: format!("the answer from {} is not JSON", self.base),
            hint: String::new(),
        })
    }

    fn transport(&self, e: &reqwest::Error) -> AdminClientError {
        if e.is_connect() {
            // The innermost cause says why: refused, no route, name not resolved.
            let mut inner: &(dyn std::error::Error + 'static) = e;
            while let Some(s) = inner.source() {
                inner = s;
            }
            AdminClientError::Unreachable {
                base: self.base.clone(),
                origin: self.origin.clone(),
                reason: inner.to_string(),
            }
        } else {
            let text = crate::error_chain::text(e);
            let reason = match e.url() {
                Some(url) => text.replace(&format!(" ({url})"), ""),
                None => text,
            };
            AdminClientError::Http {
                base: self.base.clone(),
                origin: self.origin.clone(),
                reason,
            }
        }
    }
}

fn client() -> Result<reqwest::Client, AdminClientError> {
    reqwest::Client::builder()
        .connect_timeout(CONNECT_TIMEOUT)
        .timeout(CALL_TIMEOUT)
        .build()
        .map_err(|e| AdminClientError::Setup(crate::error_chain::text(&e)))
}

/// An address to call for one the engine listens on: a wildcard becomes loopback.
fn callable(addr: SocketAddr) -> SocketAddr {
    match addr.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => {
            SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), addr.port())
        }
        IpAddr::V6(ip) if ip.is_unspecified() => {
            SocketAddr::new(IpAddr::V6(Ipv6Addr::LOCALHOST), addr.port())
        }
        _ => addr,
    }
}

/// The base URL for `--admin`: `host:port` gets `http://`; an `http://` or `https://` URL is
/// kept (without a trailing `/`).
///
/// # Errors
///
/// [`AdminClientError::Setup`] for anything else.
pub fn base_url(given: &str) -> Result<String, AdminClientError> {
    let given = given.trim();
    let url = if given.contains("://") {
        given.to_string()
    } else {
        format!("http://{given}")
    };
    match reqwest::Url::parse(&url) {
        Ok(u) if matches!(u.scheme(), "http" | "https") && u.host_str().is_some() => {
            Ok(url.trim_end_matches('/').to_string())
        }
        _ => Err(AdminClientError::Setup(format!(
            "--admin '{given}' is neither host:port nor an http:// or https:// URL"
        ))),
    }
}

/// A table for people: a header row and rows, each column as wide as its widest cell; the
/// last column is not padded.
#[derive(Debug, Clone, Default)]
pub struct Table {
    rows: Vec<Vec<String>>,
}

impl Table {
    /// A table with these column headers.
    pub fn new(headers: &[&str]) -> Table {
        Table {
            rows: vec![headers.iter().map(|h| h.to_string()).collect()],
        }
    }

    /// Adds a row; line breaks and tabs in cells become spaces, so a row stays one line.
    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(
            cells
                .into_iter()
                .map(|c| c.replace(['\r', '\n', '\t'], " "))
                .collect(),
        );
    }

    /// The table as text, one line per row, each ending in `\n`.
    pub fn render(&self) -> String {
        let columns = self.rows.iter().map(Vec::len).max().unwrap_or(0);
        let widths: Vec<usize> = (0..columns)
            .map(|i| {
                self.rows
                    .iter()
                    .filter_map(|r| r.get(i))
                    .map(|c| c.chars().count())
                    .max()
                    .unwrap_or(0)
            })
            .collect();
        let mut out = String::new();
        for row in &self.rows {
            let mut line = String::new();
            for (i, cell) in row.iter().enumerate() {
                if i > 0 {
                    line.push_str("  ");
                }
                line.push_str(cell);
                if i + 1 < row.len() {
                    let pad = widths[i].saturating_sub(cell.chars().count());
                    line.push_str(&" ".repeat(pad));
                }
            }
            out.push_str(line.trim_end());
            out.push('\n');
        }
        out
    }
}

/// A JSON value as a table cell: strings as they are, null as empty, others as JSON.
pub fn cell(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn admin_takes_host_port_or_a_url() {
        assert_eq!(
            base_url("127.0.0.1:9000").expect("ok"),
            "http://127.0.0.1:9000"
        );
        assert_eq!(
            base_url("localhost:9000").expect("ok"),
            "http://localhost:9000"
        );
        assert_eq!(base_url("[::1]:9000").expect("ok"), "http://[::1]:9000");
        assert_eq!(
            base_url("https://engine.example:8443/").expect("ok"),
            "https://engine.example:8443"
        );
        assert_eq!(
            base_url("http://10.0.0.5:8080").expect("ok"),
            "http://10.0.0.5:8080"
        );
        for bad in ["ftp://host:21", "http://", "not a host"] {
            let e = base_url(bad).expect_err(bad);
            assert!(e.to_string().contains("--admin"), "{e}");
        }
    }

    #[test]
    fn wildcard_listen_is_called_on_loopback() {
        let v4: SocketAddr = "0.0.0.0:8080".parse().expect("addr");
        assert_eq!(callable(v4).to_string(), "127.0.0.1:8080");
        let v6: SocketAddr = "[::]:8080".parse().expect("addr");
        assert_eq!(callable(v6).to_string(), "[::1]:8080");
        let ip: SocketAddr = "10.1.2.3:9".parse().expect("addr");
        assert_eq!(callable(ip), ip);
    }

    #[test]
    fn resolve_reads_listen_and_token_from_the_config_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("tok"), "s3cret-token\n").expect("write");
        std::fs::write(
            dir.path().join("switchboard.toml"),
            format!(
                "[admin]\nlisten = \"0.0.0.0:18123\"\ntoken = {{ file = \"{}\" }}\n",
                dir.path().join("tok").display()
            ),
        )
        .expect("write");
        let t = AdminTarget::resolve(None, None, dir.path(), true).expect("resolves");
        assert_eq!(t.base, "http://127.0.0.1:18123");
        assert_eq!(t.token.as_deref(), Some("s3cret-token"));
        assert!(t.origin.starts_with("admin.listen in "), "{}", t.origin);
        assert!(t.origin.ends_with("switchboard.toml"), "{}", t.origin);

        // --token wins; --admin wins.
        let t = AdminTarget::resolve(Some("h:1"), Some("x".into()), dir.path(), true)
            .expect("resolves");
        assert_eq!(
            (t.base.as_str(), t.token.as_deref()),
            ("http://h:1", Some("x"))
        );
    }

    #[test]
    fn resolve_reads_port_zero_from_engine_json() {
        let dir = tempfile::tempdir().expect("tempdir");
        let data = dir.path().join("data");
        std::fs::create_dir_all(&data).expect("mkdir");
        std::fs::write(
            dir.path().join("switchboard.toml"),
            format!(
                "data_dir = \"{}\"\n[admin]\nlisten = \"127.0.0.1:0\"\n",
                data.display()
            ),
        )
        .expect("write");
        let e = AdminTarget::resolve(None, None, dir.path(), true).expect_err("no engine.json");
        assert!(e.to_string().contains("engine.json"), "{e}");
        std::fs::write(
            data.join("engine.json"),
            r#"{"pid":1,"admin":"127.0.0.1:40404","channels":{},"config_version":"x"}"#,
        )
        .expect("write");
        let t = AdminTarget::resolve(None, None, dir.path(), true).expect("resolves");
        assert_eq!(t.base, "http://127.0.0.1:40404");
    }

    #[test]
    fn resolve_names_a_missing_folder_and_a_bad_listen() {
        let dir = tempfile::tempdir().expect("tempdir");
        let missing = dir.path().join("nope");
        let e = AdminTarget::resolve(None, None, &missing, true).expect_err("missing");
        assert!(e.to_string().contains("does not exist"), "{e}");
        std::fs::write(
            dir.path().join("switchboard.toml"),
            "[admin]\nlisten = \"localhost\"\n",
        )
        .expect("write");
        let e = AdminTarget::resolve(None, None, dir.path(), true).expect_err("bad listen");
        let text = e.to_string();
        assert!(text.contains("admin.listen in "), "{text}");
        assert!(text.contains("'localhost' is not an address"), "{text}");
    }

    #[test]
    fn table_columns_fit_the_widest_value() {
        let mut t = Table::new(&["ID", "CHANNEL", "STATUS"]);
        t.row(vec![
            "1".into(),
            "a-very-long-channel-name".into(),
            "ok".into(),
        ]);
        t.row(vec!["22".into(), "lab".into(), "rejected\nbadly".into()]);
        let text = t.render();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3);
        // Every row's third column starts at the same offset.
        let starts: Vec<usize> = lines
            .iter()
            .map(|l| {
                ["STATUS", "ok", "rejected"]
                    .iter()
                    .find_map(|w| l.find(w))
                    .expect("status cell")
            })
            .collect();
        assert!(starts.iter().all(|s| *s == starts[0]), "{text}");
        assert_eq!(starts[0], 2 + 2 + "a-very-long-channel-name".len() + 2);
        assert!(lines[2].ends_with("rejected badly"), "{text}");
    }
}
