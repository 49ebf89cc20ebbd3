//! SFTP source and destination against a real OpenSSH server.
//!
//! Each test starts `/usr/sbin/sshd -D -e -f <temp config>` on a free 127.0.0.1 port with a
//! host key and a user key made by `ssh-keygen`, and the real engine with an SFTP channel.
//! The server's folders are temporary folders on this machine, so the tests look at them
//! directly. `openssh-server` must be installed (`.ci/run` does it); without it these tests
//! fail, they never skip.

use crate::support::*;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const SSHD: &str = "/usr/sbin/sshd";

/// A running sshd with its keys and folders.
pub(crate) struct Sshd {
    dir: tempfile::TempDir,
    port: u16,
    child: Child,
    /// `ssh-ed25519 AAAA...` of the server.
    pub(crate) host_key: String,
}

fn keygen(path: &Path) {
    let out = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", "switchboard-test", "-f"])
        .arg(path)
        .output()
        .unwrap_or_else(|e| {
            panic!("cannot run ssh-keygen ({e}): install openssh-server (apt-get install openssh-server)")
        });
    assert!(
        out.status.success(),
        "ssh-keygen failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn user_name() -> String {
    let out = Command::new("id").arg("-un").output().expect("id runs");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

impl Sshd {
    /// Starts sshd on a free loopback port and waits until it answers.
    pub(crate) fn start() -> Sshd {
        assert!(
            Path::new(SSHD).exists(),
            "{SSHD} is missing: install openssh-server (apt-get install openssh-server; .ci/run does it)"
        );
        // Privilege separation folder the Debian package normally creates at boot.
        std::fs::create_dir_all("/run/sshd").expect("create /run/sshd");
        let dir = tempfile::tempdir().expect("tempdir");
        let d = dir.path();
        keygen(&d.join("host_ed25519"));
        keygen(&d.join("user_ed25519"));
        std::fs::copy(d.join("user_ed25519.pub"), d.join("authorized_keys")).expect("copy");
        for f in ["in", "archive", "error", "out"] {
            std::fs::create_dir_all(d.join("remote").join(f)).expect("mkdir");
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        std::fs::write(
            d.join("sshd_config"),
            format!(
                "Port {port}\nListenAddress 127.0.0.1\nHostKey {host}\nPidFile none\n\
                 AuthorizedKeysFile {keys}\nStrictModes no\nPermitRootLogin prohibit-password\n\
                 PasswordAuthentication no\nKbdInteractiveAuthentication no\nUsePAM no\n\
                 Subsystem sftp internal-sftp\nLogLevel VERBOSE\n",
                host = d.join("host_ed25519").display(),
                keys = d.join("authorized_keys").display(),
            ),
        )
        .expect("write sshd_config");
        let log = std::fs::File::create(d.join("sshd.log")).expect("log file");
        let child = Command::new(SSHD)
            .args(["-D", "-e", "-f"])
            .arg(d.join("sshd_config"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("sshd starts");
        let host_key = std::fs::read_to_string(d.join("host_ed25519.pub"))
            .expect("host key")
            .trim()
            .to_string();
        let mut sshd = Sshd {
            dir,
            port,
            child,
            host_key,
        };
        sshd.wait_ready();
        sshd
    }

    fn wait_ready(&mut self) {
        use std::io::Read;
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("sshd exited ({status}): {}", self.log());
            }
            if let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", self.port)) {
                let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
                let mut banner = [0u8; 4];
                if s.read_exact(&mut banner).is_ok() && &banner == b"SSH-" {
                    return;
                }
            }
            assert!(
                Instant::now() < deadline,
                "sshd did not answer within 20 s: {}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("sshd.log")).unwrap_or_default()
    }

    /// A folder on the server.
    pub(crate) fn folder(&self, name: &str) -> PathBuf {
        self.dir.path().join("remote").join(name)
    }

    /// The `[xxx.server]` table body that logs in with the user key.
    pub(crate) fn server_table(&self, host_key: &str) -> String {
        format!(
            "host = \"127.0.0.1\"\nport = {}\nusername = \"{}\"\nprivate_key = {{ file = \"{}\" }}\nhost_key = \"{host_key}\"\ntimeout_secs = 10\n",
            self.port,
            user_name(),
            self.dir.path().join("user_ed25519").display(),
        )
    }

    /// A host key that is not this server's.
    pub(crate) fn other_host_key(&self) -> String {
        let path = self.dir.path().join("other_ed25519");
        keygen(&path);
        std::fs::read_to_string(path.with_extension("pub"))
            .expect("other key")
            .trim()
            .to_string()
    }
}

impl Drop for Sshd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A config with the usual `lab` MLLP channel (with `lab_extra`) and an SFTP source
/// channel `drop` polling `in/`.
pub(crate) fn poller_config(sshd: &Sshd, host_key: &str, lab_extra: &str) -> TestConfig {
    let cfg = TestConfig::new("", lab_extra);
    std::fs::write(
        cfg.conf().join("channels/drop.toml"),
        format!(
            "name = \"drop\"\n[source]\ntype = \"sftp\"\nfolder = \"{}\"\npattern = \"*.hl7\"\npoll_interval_secs = 1\narchive_folder = \"{}\"\nerror_folder = \"{}\"\nreconnect_max_secs = 2\n[source.server]\n{}",
            sshd.folder("in").display(),
            sshd.folder("archive").display(),
            sshd.folder("error").display(),
            sshd.server_table(host_key),
        ),
    )
    .expect("write channel");
    cfg
}

/// Control ids of the stored messages of channel `drop`, with their status.
async fn stored(engine: &EngineProcess) -> Vec<(String, String)> {
    let list = get_json(&format!(
        "{}/api/messages?channel=drop&limit=1000",
        engine.admin()
    ))
    .await;
    let mut out: Vec<(String, String)> = list["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|m| {
            (
                m["control_id"].as_str().unwrap_or_default().to_string(),
                m["status"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect();
    out.sort();
    out
}

async fn wait_for<F, Fut>(secs: u64, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !check().await {
        assert!(Instant::now() < deadline, "not within {secs} s: {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The names in `dir`, sorted (none if it cannot be read).
pub(crate) fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

async fn metrics(engine: &EngineProcess) -> String {
    reqwest::get(format!("{}/metrics", engine.admin()))
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text")
}

fn metric(text: &str, series: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .map(|v| v as u64)
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batch_is_ingested_and_archived_bad_files_go_to_the_error_folder() {
    let sshd = Sshd::start();
    let cfg = poller_config(&sshd, &sshd.host_key, "");
    let inbox = sshd.folder("in");
    // An FHS/BHS batch of three messages, LF endings, blank lines between.
    let batch = format!(
        "FHS|^~\\&|HIS|MAIN\nBHS|^~\\&|HIS|MAIN\n{}\n\n{}\n{}\nBTS|3\nFTS|1\n",
        adt("SFTP-B1").replace('\r', "\n"),
        adt("SFTP-B2").replace('\r', "\r\n"),
        adt("SFTP-B3"),
    );
    std::fs::write(inbox.join("batch-001.hl7"), &batch).expect("write");
    // A batch whose trailer count is wrong: none of it may be stored.
    let broken = format!(
        "BHS|^~\\&|HIS|MAIN\r{}{}BTS|5\r",
        adt("SFTP-X1"),
        adt("SFTP-X2")
    );
    std::fs::write(inbox.join("broken.hl7"), &broken).expect("write");
    // Two messages, the second with a processing id the channel does not accept.
    let mixed = format!(
        "{}{}",
        adt("SFTP-M1"),
        adt("SFTP-M2").replace("|P|2.5.1", "|X|2.5.1")
    );
    std::fs::write(inbox.join("mixed.hl7"), &mixed).expect("write");
    // Not matching the pattern: never touched.
    std::fs::write(inbox.join("notes.txt"), "not for us").expect("write");

    let engine = EngineProcess::start(&cfg.conf(), &cfg.data());
    wait_for(60, "the inbox is emptied of .hl7 files", || async {
        names(&inbox) == ["notes.txt"]
    })
    .await;

    // The batch: each message stored on its own, the file archived whole.
    let got = stored(&engine).await;
    assert_eq!(
        got.iter().map(|(c, _)| c.as_str()).collect::<Vec<_>>(),
        ["SFTP-B1", "SFTP-B2", "SFTP-B3", "SFTP-M1", "SFTP-M2"],
        "stored: {got:?}"
    );
    for (id, status) in &got {
        if id == "SFTP-M2" {
            assert_eq!(status, "rejected", "{got:?}");
        } else {
            assert_ne!(status, "rejected", "{got:?}");
        }
    }
    assert_eq!(names(&sshd.folder("archive")), ["batch-001.hl7"]);
    assert_eq!(
        std::fs::read_to_string(sshd.folder("archive").join("batch-001.hl7")).expect("read"),
        batch,
        "archived unchanged"
    );
    // The message record names the SFTP server as its peer.
    let list = get_json(&format!(
        "{}/api/messages?channel=drop&control_id=SFTP-B2",
        engine.admin()
    ))
    .await;
    let id = list["items"][0]["id"].as_str().expect("stored").to_string();
    let m = get_json(&format!("{}/api/messages/{id}", engine.admin())).await;
    assert_eq!(m["peer"], format!("127.0.0.1:{}", sshd.port));

    // The broken batch and the file with a rejected message: in the error folder, each
    // with its reason beside it.
    let errors = sshd.folder("error");
    assert_eq!(
        names(&errors),
        [
            "broken.hl7",
            "broken.hl7.reason.txt",
            "mixed.hl7",
            "mixed.hl7.reason.txt"
        ]
    );
    assert_eq!(
        std::fs::read_to_string(errors.join("broken.hl7")).expect("read"),
        broken
    );
    let reason = std::fs::read_to_string(errors.join("broken.hl7.reason.txt")).expect("read");
    assert!(reason.contains("file: broken.hl7"), "{reason}");
    assert!(
        reason.contains("BTS-1 says 5 messages, found 2"),
        "{reason}"
    );
    assert!(!reason.contains("Testperson"), "no patient data: {reason}");
    let reason = std::fs::read_to_string(errors.join("mixed.hl7.reason.txt")).expect("read");
    assert!(reason.contains("1 of 2 messages were rejected"), "{reason}");
    assert!(
        reason.contains("message 2 of 2 (MSH-10 SFTP-M2)"),
        "{reason}"
    );
    assert!(reason.contains("processing id"), "{reason}");
    assert!(!reason.contains("Testperson"), "no patient data: {reason}");

    let text = metrics(&engine).await;
    assert_eq!(
        metric(
            &text,
            "switchboard_sftp_files_picked_total{channel=\"drop\"}"
        ),
        3,
        "{text}"
    );
    assert_eq!(
        metric(
            &text,
            "switchboard_sftp_files_failed_total{channel=\"drop\"}"
        ),
        2,
        "{text}"
    );
    assert_eq!(names(&inbox), ["notes.txt"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_growing_file_is_left_alone_until_it_is_stable() {
    let sshd = Sshd::start();
    let cfg = poller_config(&sshd, &sshd.host_key, "");
    let engine = EngineProcess::start(&cfg.conf(), &cfg.data());
    let path = sshd.folder("in").join("growing.hl7");
    // A writer that adds a message every 300 ms for about 5 s: with a 1 s poll interval the
    // size differs on every listing, so the poller must not take the file.
    let writer = {
        let path = path.clone();
        std::thread::spawn(move || {
            use std::io::Write;
            let mut f = std::fs::File::create(&path).expect("create");
            for i in 0..16 {
                f.write_all(adt(&format!("GROW-{i:02}")).as_bytes())
                    .expect("append");
                f.flush().expect("flush");
                std::thread::sleep(Duration::from_millis(300));
            }
        })
    };
    loop {
        let ingested = !stored(&engine).await.is_empty();
        let moved = !path.exists();
        // Judged only when the writer was still writing after both looks: a look that took
        // long (a busy machine) may end after the file became stable, which is no fault.
        if writer.is_finished() {
            break;
        }
        assert!(!ingested, "a message of a growing file was ingested");
        assert!(!moved, "the growing file was moved");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    writer.join().expect("writer");
    // Now stable: taken whole, with every message.
    wait_for(30, "the stable file is archived", || async {
        names(&sshd.folder("archive")) == ["growing.hl7"]
    })
    .await;
    let got = stored(&engine).await;
    let ids: Vec<String> = got.iter().map(|(c, _)| c.clone()).collect();
    let expect: Vec<String> = (0..16).map(|i| format!("GROW-{i:02}")).collect();
    assert_eq!(ids, expect);
    assert!(got.iter().all(|(_, s)| s != "rejected"), "{got:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_writer_s_files_appear_whole_under_their_final_names() {
    let sshd = Sshd::start();
    let out = sshd.folder("out");
    let lab = format!(
        "[[route]]\nto = [\"drop-box\"]\n[[destination]]\nname = \"drop-box\"\ntype = \"sftp\"\nfolder = \"{}\"\nfile_name = \"adt-{{control_id}}.{{ext}}\"\n{FAST_RETRY}[destination.server]\n{}",
        out.display(),
        sshd.server_table(&sshd.host_key)
    );
    let cfg = TestConfig::new("", &lab);
    let engine = EngineProcess::start(&cfg.conf(), &cfg.data());
    // A big message, so that writing it takes several SFTP packets.
    let filler = format!("NTE|1||{}\r", "x".repeat(200_000));
    let messages: Vec<(String, String)> = (0..6)
        .map(|i| {
            let id = format!("OUT-{i}");
            (id.clone(), format!("{}{filler}", adt(&id)))
        })
        .collect();
    // Watch the folder the whole time: every file under a final name must be complete.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let watcher = {
        let out = out.clone();
        let stop = stop.clone();
        let expected: std::collections::HashMap<String, String> = messages
            .iter()
            .map(|(id, body)| (format!("adt-{id}.hl7"), body.clone()))
            .collect();
        std::thread::spawn(move || {
            let mut seen_final = std::collections::BTreeSet::new();
            let mut problems = Vec::new();
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                for name in names(&out) {
                    if name.starts_with('.') && name.ends_with(".part") {
                        continue;
                    }
                    match (
                        expected.get(&name),
                        std::fs::read_to_string(out.join(&name)),
                    ) {
                        (Some(body), Ok(text)) if &text == body => {
                            seen_final.insert(name);
                        }
                        (Some(_), Ok(text)) => {
                            problems.push(format!("{name} seen with {} bytes", text.len()))
                        }
                        (Some(_), Err(_)) => {}
                        (None, _) => problems.push(format!("unexpected file {name}")),
                    }
                }
                std::thread::sleep(Duration::from_millis(2));
            }
            (seen_final, problems)
        })
    };
    let mut client = connect(&engine.mllp("lab")).await;
    for (_, body) in &messages {
        let ack = send(&mut client, body.as_bytes()).await;
        assert_eq!(segment(&ack, "MSA")[1], "AA", "{ack}");
    }
    let all: Vec<String> = (0..6).map(|i| format!("adt-OUT-{i}.hl7")).collect();
    wait_for(60, "every delivery is a file", || async {
        names(&out) == all
    })
    .await;
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let (seen, problems) = watcher.join().expect("watcher");
    assert!(problems.is_empty(), "{problems:?}");
    assert_eq!(seen.len(), 6, "the watcher saw every file: {seen:?}");
    for (id, body) in &messages {
        let text = std::fs::read_to_string(out.join(format!("adt-{id}.hl7"))).expect("read");
        assert_eq!(&text, body, "{id} whole");
    }
    let list = get_json(&format!(
        "{}/api/messages?channel=lab&control_id=OUT-3",
        engine.admin()
    ))
    .await;
    let id = list["items"][0]["id"].as_str().expect("stored").to_string();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let m = get_json(&format!("{}/api/messages/{id}", engine.admin())).await;
        if m["status"] == "delivered" {
            break;
        }
        assert!(Instant::now() < deadline, "not delivered: {m}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_host_key_is_refused_by_the_poller_and_the_writer() {
    let sshd = Sshd::start();
    let wrong = sshd.other_host_key();
    let out = sshd.folder("out");
    let lab = format!(
        "[[route]]\nto = [\"drop-box\"]\n[[destination]]\nname = \"drop-box\"\ntype = \"sftp\"\nfolder = \"{}\"\n{FAST_RETRY}[destination.server]\n{}",
        out.display(),
        sshd.server_table(&wrong)
    );
    let cfg = poller_config(&sshd, &wrong, &lab);
    let waiting = sshd.folder("in").join("waiting.hl7");
    std::fs::write(&waiting, adt("KEY-IN")).expect("write");
    let engine = EngineProcess::start(&cfg.conf(), &cfg.data());
    let mut client = connect(&engine.mllp("lab")).await;
    let ack = send(&mut client, adt("KEY-OUT").as_bytes()).await;
    assert_eq!(segment(&ack, "MSA")[1], "AA", "{ack}");

    // The writer: each attempt fails on the host key, and says so.
    let list = get_json(&format!(
        "{}/api/messages?channel=lab&control_id=KEY-OUT",
        engine.admin()
    ))
    .await;
    let id = list["items"][0]["id"].as_str().expect("stored").to_string();
    let deadline = Instant::now() + Duration::from_secs(30);
    let detail = loop {
        let m = get_json(&format!("{}/api/messages/{id}", engine.admin())).await;
        let attempts = m["attempts"].as_array().cloned().unwrap_or_default();
        if attempts.len() >= 2 {
            break attempts[1]["detail"]
                .as_str()
                .unwrap_or_default()
                .to_string();
        }
        assert!(
            Instant::now() < deadline,
            "not two attempts within 30 s: {m}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(
        detail.contains("does not match the configured host_key"),
        "{detail}"
    );
    assert!(names(&out).is_empty(), "nothing written: {:?}", names(&out));

    // The poller: it keeps trying, counts the failures and leaves the file alone.
    wait_for(30, "the poller counts refused connections", || async {
        metric(
            &metrics(&engine).await,
            "switchboard_sftp_poll_errors_total{channel=\"drop\"}",
        ) >= 2
    })
    .await;
    assert!(waiting.exists(), "the file was not touched");
    assert!(stored(&engine).await.is_empty());
    // The server saw the connections and none of them logged in.
    let log = sshd.log();
    assert!(!log.contains("Accepted publickey"), "{log}");
}

/// A paused SFTP channel does not poll: a file dropped meanwhile stays where it is and
/// nothing is stored; once the channel is resumed, the file is taken and archived.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_poller_leaves_files_alone_until_resumed() {
    let sshd = Sshd::start();
    let cfg = poller_config(&sshd, &sshd.host_key, "");
    let engine = EngineProcess::start(&cfg.conf(), &cfg.data());
    let admin = engine.admin();
    let client = reqwest::Client::new();
    let paused = client
        .post(format!("{admin}/api/channels/drop/pause"))
        .send()
        .await
        .expect("pause");
    assert_eq!(paused.status(), 200);
    std::fs::write(sshd.folder("in").join("held.hl7"), adt("HELD-1")).expect("drop a file");
    // Four poll intervals: a running poller would have taken the file by now.
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(
        names(&sshd.folder("in")),
        ["held.hl7"],
        "left alone while paused"
    );
    assert!(
        stored(&engine).await.is_empty(),
        "nothing stored while paused"
    );
    let resumed = client
        .post(format!("{admin}/api/channels/drop/resume"))
        .send()
        .await
        .expect("resume");
    assert_eq!(resumed.status(), 200);
    wait_for(30, "the file is taken after the resume", || async {
        names(&sshd.folder("archive")) == ["held.hl7"]
    })
    .await;
    let got = stored(&engine).await;
    assert_eq!(
        got.iter().map(|(c, _)| c.as_str()).collect::<Vec<_>>(),
        ["HELD-1"]
    );
}
