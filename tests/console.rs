//! The web console and its endpoints: `/api/channels`, `/api/stats` and `/api/events` over
//! HTTP, the operator flows over the admin API (search by patient name and any key with
//! encryption at rest on, the peer's whole answer per attempt, pause and resume of MLLP and
//! HTTP sources across a restart, edit-and-resend), then the console itself in headless
//! Chromium driven over WebDriver (`chromedriver`, started here on a free loopback port):
//! live stream, message viewer, dead letters and retry; patient column and search by name,
//! field names on hover, answers per attempt, pause and resume, edit and resend; the radiology
//! view (worklist items and studies received). The pollers' pause is tested in `sftp.rs` and
//! `latrexa.rs`.
//!
//! Chromium and chromedriver must be installed (`apt-get install chromium chromium-driver`);
//! the browser test fails, with that sentence, when they are not. With
//! `SWITCHBOARD_SCREENSHOTS=1` it also writes `docs/screenshots/*.png`.

use crate::support::*;
use fantoccini::elements::Element;
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::json;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const TOKEN: &str = "console-t0ken";
const CHROMIUM: &str = "/usr/bin/chromium";
/// Longest any single wait in these tests may take.
const WAIT: Duration = Duration::from_secs(20);

fn webhook(name: &str, url: &str) -> String {
    format!("[[destination]]\nname = \"{name}\"\ntype = \"webhook\"\nurl = \"{url}\"\n{FAST_RETRY}")
}

/// An engine with the admin token set and channel `lab` routing HL7 to a webhook at `sink`.
fn engine_with_token(sink: &HttpSink) -> (TestConfig, EngineProcess) {
    let channel = format!(
        "[[route]]\nto = [\"hook\"]\npayload = \"hl7\"\n{}",
        webhook("hook", &sink.url)
    );
    let cfg = TestConfig::new("", &channel);
    let token_file = cfg.root.path().join("token");
    std::fs::write(&token_file, format!("{TOKEN}\n")).expect("write token");
    let main = std::fs::read_to_string(cfg.conf().join("switchboard.toml")).expect("read");
    std::fs::write(
        cfg.conf().join("switchboard.toml"),
        main.replace(
            "[admin]\n",
            &format!(
                "[admin]\ntoken = {{ file = \"{}\" }}\n",
                token_file.display()
            ),
        ),
    )
    .expect("write config");
    let engine = EngineProcess::start(&cfg.conf(), &cfg.data());
    (cfg, engine)
}

/// GET with the admin token.
async fn get_authed(url: &str) -> serde_json::Value {
    let resp = reqwest::Client::new()
        .get(url)
        .bearer_auth(TOKEN)
        .send()
        .await
        .expect("admin API reachable");
    assert!(resp.status().is_success(), "{url}: {}", resp.status());
    resp.json().await.expect("JSON body")
}

/// Polls `url` until `check` holds on its JSON (at most [`WAIT`]); returns the last body.
async fn poll_json(url: &str, check: impl Fn(&serde_json::Value) -> bool) -> serde_json::Value {
    let deadline = Instant::now() + WAIT;
    loop {
        let body = get_authed(url).await;
        if check(&body) || Instant::now() > deadline {
            return body;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The stored message with control id `control_id`.
async fn message_by_control_id(admin: &str, control_id: &str) -> serde_json::Value {
    let list = poll_json(
        &format!("{admin}/api/messages?control_id={control_id}"),
        |b| b["count"].as_u64().unwrap_or_default() > 0,
    )
    .await;
    let id = list["items"][0]["id"].as_str().expect("stored").to_string();
    get_authed(&format!("{admin}/api/messages/{id}")).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn console_endpoints_report_channels_stats_and_live_events() {
    let sink = HttpSink::start(SinkMode::RejectBad).await;
    let (_cfg, engine) = engine_with_token(&sink);
    let admin = engine.admin();

    // The page is public (it holds no data) and locked down by its CSP.
    let page = reqwest::get(format!("{admin}/")).await.expect("page");
    assert_eq!(page.status(), 200);
    let csp = page
        .headers()
        .get("content-security-policy")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    assert!(
        csp.contains("default-src 'none'") && csp.contains("script-src 'self'"),
        "{csp}"
    );
    assert!(page
        .text()
        .await
        .expect("html")
        .contains("<title>Switchboard console</title>"));
    for asset in ["/console/app.js", "/console/style.css"] {
        let r = reqwest::get(format!("{admin}{asset}"))
            .await
            .expect("asset");
        assert_eq!(r.status(), 200, "{asset}");
    }

    // The event stream wants the token: as a header or, for EventSource, in the query.
    for url in [
        format!("{admin}/api/events"),
        format!("{admin}/api/events?access_token=wrong"),
    ] {
        let r = reqwest::get(&url).await.expect("events");
        assert_eq!(r.status(), 401, "{url}");
    }
    for url in ["/api/channels", "/api/stats"] {
        let r = reqwest::get(format!("{admin}{url}")).await.expect("api");
        assert_eq!(r.status(), 401, "{url}");
    }
    let mut events = reqwest::get(format!("{admin}/api/events?access_token={TOKEN}"))
        .await
        .expect("events");
    assert_eq!(events.status(), 200);
    assert!(events
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("text/event-stream")));

    let mut client = connect(&engine.mllp("lab")).await;
    send(&mut client, adt_for("P1", "EV-1").as_bytes()).await;
    let bad = adt_for("P2", "EV-2").replace("Testperson", "BAD");
    send(&mut client, bad.as_bytes()).await;

    // Both messages' events arrive, as named SSE events with ids and types, no content.
    let mut text = String::new();
    let deadline = Instant::now() + WAIT;
    while !(text.contains("\"EV-2\"") && text.contains("dead_letter")) {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, events.chunk()).await {
            Ok(Ok(Some(bytes))) => text.push_str(&String::from_utf8_lossy(&bytes)),
            other => panic!("event stream ended or stalled ({other:?}); got {text:?}"),
        }
    }
    assert!(text.contains("event: message\ndata: {"), "{text}");
    assert!(text.contains("\"kind\":\"received\""), "{text}");
    assert!(text.contains("\"control_id\":\"EV-1\""), "{text}");
    assert!(text.contains("\"message_type\":\"ADT^A08\""), "{text}");
    assert!(
        !text.contains("Testperson") && !text.contains("BAD"),
        "no content in events: {text}"
    );

    let channels = poll_json(&format!("{admin}/api/channels"), |b| {
        b["channels"][0]["destinations"][0]["dead_letters"] == 1
            && b["channels"][0]["counts_24h"]["delivered"] == 1
    })
    .await;
    let lab = &channels["channels"][0];
    assert_eq!(lab["name"], "lab", "{channels}");
    assert_eq!(lab["source_type"], "mllp_listener");
    assert_eq!(lab["address"], engine.mllp("lab"));
    assert!(lab["last_message_at"].as_str().is_some(), "{channels}");
    assert_eq!(lab["counts_24h"]["failed"], 1, "{channels}");
    assert_eq!(lab["counts_24h"]["delivered"], 1, "{channels}");
    let hook = &lab["destinations"][0];
    assert_eq!(hook["name"], "hook");
    assert_eq!(hook["type"], "webhook");
    assert_eq!(hook["dead_letters"], 1, "{channels}");
    assert_eq!(hook["outbox_depth"], 0, "{channels}");
    assert_eq!(hook["up"], true, "{channels}");
    assert_eq!(channels["counts_truncated"], false);

    let stats = get_authed(&format!("{admin}/api/stats?window=1h")).await;
    assert_eq!(stats["window"], "1h");
    assert_eq!(stats["bucket_secs"], 300);
    assert_eq!(stats["total"], 2, "{stats}");
    assert_eq!(stats["truncated"], false);
    assert_eq!(stats["by_status"]["delivered"], 1, "{stats}");
    assert_eq!(stats["by_status"]["failed"], 1, "{stats}");
    assert_eq!(stats["channels"][0]["channel"], "lab");
    assert_eq!(stats["channels"][0]["total"], 2);
    assert_eq!(stats["message_types"][0]["message_type"], "ADT^A08");
    assert_eq!(stats["message_types"][0]["count"], 2);
    assert_eq!(stats["destinations"][0]["destination"], "lab/hook");
    assert_eq!(stats["destinations"][0]["by_status"]["dead_letter"], 1);
    let buckets = stats["buckets"].as_array().expect("buckets");
    assert_eq!(buckets.len(), 12);
    let in_buckets: u64 = buckets
        .iter()
        .map(|b| b["total"].as_u64().expect("total"))
        .sum();
    assert_eq!(in_buckets, 2, "every message lands in a bucket: {stats}");
    for window in ["24h", "7d"] {
        let s = get_authed(&format!("{admin}/api/stats?window={window}")).await;
        assert_eq!(s["total"], 2, "{window}: {s}");
    }
    let wrong = reqwest::Client::new()
        .get(format!("{admin}/api/stats?window=2h"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .expect("stats");
    assert_eq!(wrong.status(), 400);

    // An open event stream does not hold up shutdown: it ends, and the engine exits.
    let stopping = Instant::now();
    assert_eq!(engine.terminate(), Some(0), "clean exit with a stream open");
    assert!(
        stopping.elapsed() < Duration::from_secs(10),
        "{:?}",
        stopping.elapsed()
    );
    let rest = tokio::time::timeout(WAIT, async {
        while let Ok(Some(_)) = events.chunk().await {}
    })
    .await;
    assert!(rest.is_ok(), "the event stream ended with the engine");
}

/// `chromedriver` on a free loopback port, killed (with the browser it started) on drop.
struct ChromeDriver {
    child: Child,
    port: u16,
    _profile: tempfile::TempDir,
}

impl Drop for ChromeDriver {
    fn drop(&mut self) {
        // The browser processes this test started are the ones using its fresh profile
        // folder; end those by pid, then chromedriver itself.
        let profile = self._profile.path().to_string_lossy().into_owned();
        for pid in processes_mentioning(&profile) {
            let _ = Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .status();
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Pids of the processes whose command line contains `needle`.
fn processes_mentioning(needle: &str) -> Vec<u32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|c| String::from_utf8_lossy(&c).contains(needle))
        })
        .collect()
}

fn on_path(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|p| p.join(name))
            .find(|p| p.is_file())
    })
}

/// Starts chromedriver and a headless Chromium session; fails the test when either is missing.
async fn browser() -> (ChromeDriver, Client) {
    assert!(
        Path::new(CHROMIUM).is_file(),
        "{CHROMIUM} is missing: the console test needs Chromium (apt-get install chromium chromium-driver)"
    );
    let driver_bin = on_path("chromedriver").expect(
        "chromedriver is not on PATH: the console test needs it (apt-get install chromium chromium-driver)",
    );
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    let child = Command::new(driver_bin)
        .arg(format!("--port={port}"))
        .arg("--allowed-ips=127.0.0.1")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("chromedriver starts");
    let profile = tempfile::tempdir().expect("profile dir");
    let driver = ChromeDriver {
        child,
        port,
        _profile: profile,
    };
    let status = format!("http://127.0.0.1:{port}/status");
    let deadline = Instant::now() + WAIT;
    loop {
        if let Ok(r) = reqwest::get(&status).await {
            if r.status().is_success() {
                break;
            }
        }
        assert!(
            Instant::now() < deadline,
            "chromedriver did not answer on port {port} within 20 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut caps = serde_json::Map::new();
    caps.insert(
        "goog:chromeOptions".into(),
        serde_json::json!({
            "binary": CHROMIUM,
            "args": [
                "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--no-first-run", "--window-size=1280,960",
                format!("--user-data-dir={}", driver._profile.path().display()),
            ],
        }),
    );
    let client = ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
        .capabilities(caps)
        .connect(&format!("http://127.0.0.1:{}", driver.port))
        .await
        .expect("a Chromium session");
    (driver, client)
}

/// Waits (at most [`WAIT`]) for an element matching `css`.
async fn wait_for(c: &Client, css: &str, what: &str) -> Element {
    let deadline = Instant::now() + WAIT;
    loop {
        match c.find(Locator::Css(css)).await {
            Ok(e) => return e,
            Err(e) if Instant::now() > deadline => {
                panic!("{what}: nothing matches `{css}` after 20 s ({e})")
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

/// Waits (at most [`WAIT`]) until the element matching `css` shows text containing `text`.
async fn wait_for_text(c: &Client, css: &str, text: &str) -> Element {
    let deadline = Instant::now() + WAIT;
    let mut seen = String::new();
    loop {
        if let Ok(e) = c.find(Locator::Css(css)).await {
            if let Ok(t) = e.text().await {
                if t.contains(text) {
                    return e;
                }
                seen = t;
            }
        }
        assert!(
            Instant::now() < deadline,
            "`{css}` did not show {text:?} within 20 s; it shows {seen:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn open_view(c: &Client, view: &str) {
    c.find(Locator::Css(&format!("#nav a[data-view=\"{view}\"]")))
        .await
        .expect("nav link")
        .click()
        .await
        .expect("click nav link");
}

/// Saves a screenshot to `docs/screenshots/<name>.png` when `SWITCHBOARD_SCREENSHOTS=1`.
async fn screenshot(c: &Client, name: &str) {
    if std::env::var("SWITCHBOARD_SCREENSHOTS").as_deref() != Ok("1") {
        return;
    }
    // Let bars and rows settle before the picture.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let png = c.screenshot().await.expect("screenshot");
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/screenshots");
    std::fs::create_dir_all(&dir).expect("screenshots dir");
    std::fs::write(dir.join(format!("{name}.png")), png).expect("write screenshot");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn console_in_a_browser_streams_shows_and_retries_messages() {
    let started = Instant::now();
    let sink = HttpSink::start(SinkMode::RejectBad).await;
    let (_cfg, engine) = engine_with_token(&sink);
    let admin = engine.admin();
    let (_driver, c) = browser().await;
    {
        c.goto(&format!("{admin}/"))
            .await
            .expect("open the console");
        assert_eq!(c.title().await.expect("title"), "Switchboard console");
        wait_for_text(&c, "header h1", "Switchboard").await;

        // The API answers 401, so the console asks for the token.
        let input = wait_for(&c, "#token-dialog[open] #token-input", "token prompt").await;
        input.send_keys(TOKEN).await.expect("type the token");
        c.find(Locator::Css("#token-form button[type=submit]"))
            .await
            .expect("sign-in button")
            .click()
            .await
            .expect("sign in");
        wait_for(&c, "section.channel[data-channel=\"lab\"]", "channels view").await;
        wait_for_text(&c, "tr[data-destination=\"lab/hook\"]", "webhook").await;

        // Live stream: messages appear as they arrive.
        open_view(&c, "live").await;
        wait_for_text(&c, "#live-status", "live").await;
        let mut mllp = connect(&engine.mllp("lab")).await;
        for (patient, control_id) in [("P7", "CTL-A"), ("P8", "CTL-B"), ("P9", "CTL-LIVE")] {
            let ack = send(&mut mllp, adt_for(patient, control_id).as_bytes()).await;
            assert_eq!(segment(&ack, "MSA")[1], "AA");
        }
        let row = wait_for(
            &c,
            "#live-table tr[data-control-id=\"CTL-LIVE\"][data-kind=\"received\"]",
            "live stream row",
        )
        .await;
        assert!(row.text().await.expect("row text").contains("ADT^A08"));
        wait_for(
            &c,
            "#live-table tr[data-control-id=\"CTL-LIVE\"][data-kind=\"delivered\"]",
            "delivery event",
        )
        .await;
        screenshot(&c, "live").await;

        // Message viewer: one segment per line, ids highlighted, positions on hover.
        c.find(Locator::Css(
            "#live-table tr[data-control-id=\"CTL-LIVE\"][data-kind=\"received\"]",
        ))
        .await
        .expect("row")
        .click()
        .await
        .expect("open the message");
        wait_for(&c, "#raw .segment[data-segment=\"PID\"]", "viewer").await;
        let ids: Vec<String> = {
            let mut v = Vec::new();
            for e in c
                .find_all(Locator::Css("#raw .segid"))
                .await
                .expect("segids")
            {
                v.push(e.text().await.expect("segid"));
            }
            v
        };
        assert_eq!(ids, ["MSH", "EVN", "PID"], "one line per segment");
        for (pos, text) in [
            ("MSH-9", "ADT^A08^ADT_A01"),
            ("MSH-9.1", "ADT"),
            ("MSH-10", "CTL-LIVE"),
            ("PID-3.1", "P9"),
            ("PID-5", "Testperson^Alex"),
            ("PID-5.2", "Alex"),
        ] {
            let e = c
                .find(Locator::Css(&format!("#raw span[data-pos=\"{pos}\"]")))
                .await
                .unwrap_or_else(|_| panic!("a span at {pos}"));
            assert_eq!(e.text().await.expect("text"), text, "{pos}");
        }
        wait_for_text(&c, "#ack .segment[data-segment=\"MSA\"]", "AA").await;
        wait_for_text(&c, "#deliveries", "lab/hook").await;
        wait_for_text(&c, "#message-summary", "delivered").await;
        screenshot(&c, "message").await;

        // Search by control id finds the message and opens it.
        open_view(&c, "search").await;
        let field = wait_for(&c, "#search-form input[name=q]", "search form").await;
        field.send_keys("CTL-B").await.expect("type a control id");
        c.find(Locator::Css("#search-form button[type=submit]"))
            .await
            .expect("search button")
            .click()
            .await
            .expect("search");
        let found = wait_for_text(&c, "#search-table tbody", "CTL-B").await;
        let rows = found
            .find_all(Locator::Css("tr"))
            .await
            .expect("result rows");
        assert_eq!(rows.len(), 1, "exactly CTL-B");
        rows[0].click().await.expect("open the result");
        wait_for_text(&c, "#raw span[data-pos=\"MSH-10\"]", "CTL-B").await;

        // Another message by its patient id, through the business-key index.
        open_view(&c, "search").await;
        let field = wait_for(&c, "#search-form input[name=q]", "search form").await;
        field.clear().await.expect("clear the search box");
        field.send_keys("P9").await.expect("type a patient id");
        c.find(Locator::Css("#search-form button[type=submit]"))
            .await
            .expect("search button")
            .click()
            .await
            .expect("search");
        let found = wait_for_text(&c, "#search-table tbody", "CTL-LIVE").await;
        let rows = found
            .find_all(Locator::Css("tr"))
            .await
            .expect("result rows");
        assert_eq!(rows.len(), 1, "only the message of patient P9");

        // Deliveries the destination refuses end in the dead letters...
        for control_id in ["CTL-BAD", "CTL-KEEP"] {
            let bad = adt_for("P10", control_id).replace("Testperson", "BAD");
            send(&mut mllp, bad.as_bytes()).await;
        }
        open_view(&c, "dead-letters").await;
        let deadline = Instant::now() + WAIT;
        loop {
            let rows = c
                .find_all(Locator::Css("#dead-table tr.dead-letter"))
                .await
                .expect("rows");
            if rows.len() == 2 {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{} dead letters shown after 20 s, expected 2",
                rows.len()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
            if let Ok(b) = c.find(Locator::XPath("//button[text()='Refresh']")).await {
                let _ = b.click().await;
            }
        }
        let bad_id = message_by_control_id(&admin, "CTL-BAD").await["id"]
            .as_str()
            .expect("id")
            .to_string();
        let keep_id = message_by_control_id(&admin, "CTL-KEEP").await["id"]
            .as_str()
            .expect("id")
            .to_string();
        let row_css = format!("#dead-table tr.dead-letter[data-id=\"{bad_id}\"]");
        let row = wait_for_text(&c, &row_css, "answered 400").await;
        assert!(row.text().await.expect("text").contains("lab/hook"));
        wait_for_text(&c, "#main h2", "Dead letters (2)").await;
        screenshot(&c, "dead-letters").await;

        // ...and Retry, once the destination is fixed, delivers the one retried.
        sink.set(SinkMode::Up);
        row.find(Locator::Css("button.retry"))
            .await
            .expect("retry button")
            .click()
            .await
            .expect("click retry");
        wait_for_text(&c, "#notice", "Retried 1").await;
        wait_for_text(&c, "#main h2", "Dead letters (1)").await;
        wait_for(
            &c,
            &format!("#dead-table tr.dead-letter[data-id=\"{keep_id}\"]"),
            "the other dead letter stays",
        )
        .await;
        assert!(
            c.find(Locator::Css(&row_css)).await.is_err(),
            "the retried dead letter left the list"
        );
        let m = poll_json(&format!("{admin}/api/messages?control_id=CTL-BAD"), |b| {
            b["items"][0]["status"] == "delivered"
        })
        .await;
        assert_eq!(m["items"][0]["status"], "delivered", "{m}");
        assert!(sink
            .received()
            .iter()
            .any(|(_, body)| body.contains("|CTL-BAD|")));
        c.goto(&format!("{admin}/#/message/{bad_id}"))
            .await
            .expect("open the retried message");
        wait_for_text(&c, "#message-summary", "delivered").await;
        wait_for_text(&c, "#deliveries", "delivered").await;
        let kept = message_by_control_id(&admin, "CTL-KEEP").await;
        assert_eq!(kept["status"], "failed");

        // Statistics and channels reflect all five messages.
        open_view(&c, "stats").await;
        wait_for_text(&c, "#stats-total", "5").await;
        wait_for(&c, "svg.chart rect", "time chart").await;
        screenshot(&c, "statistics").await;
        open_view(&c, "channels").await;
        let lab = "section.channel[data-channel=\"lab\"]";
        wait_for_text(&c, lab, "delivered 4").await;
        wait_for_text(&c, lab, "failed 1").await;
        let hook = format!("{lab} tr[data-destination=\"lab/hook\"]");
        wait_for_text(&c, &format!("{hook} td:nth-child(3)"), "up").await;
        wait_for_text(&c, &format!("{hook} td:nth-child(5)"), "1").await;
        screenshot(&c, "channels").await;
    }
    // On a panic above, dropping the driver ends chromedriver and the browser instead.
    let _ = c.close().await;
    eprintln!("console browser test took {:?}", started.elapsed());
}

// ---- patients, answers, pause and resend (issue #21) ----------------------------------

/// POST `body` with the admin token; the status and the JSON answer.
async fn post_authed(url: &str, body: serde_json::Value) -> (u16, serde_json::Value) {
    let resp = reqwest::Client::new()
        .post(url)
        .bearer_auth(TOKEN)
        .json(&body)
        .send()
        .await
        .expect("admin API reachable");
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or_default())
}

/// An ADT^A08 for patient `mrn` named `family^given`.
fn adt_named(mrn: &str, family: &str, given: &str, control_id: &str) -> String {
    adt_for(mrn, control_id).replace("Testperson^Alex", &format!("{family}^{given}"))
}

/// An MLLP peer (the downstream HIS) that answers the first delivery of control id `CTL-M1`
/// AR with an ERR saying `peer database locked`, and everything else AA with
/// `stored as encounter E-<n>` in MSA-3. Returns its address.
async fn his_peer() -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr").to_string();
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            let seen = seen.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = vec![0u8; 8192];
                while let Ok(n) = s.read(&mut chunk).await {
                    if n == 0 {
                        return;
                    }
                    buf.extend_from_slice(&chunk[..n]);
                    while let Some(end) = buf.iter().position(|&b| b == 0x1c) {
                        let frame: Vec<u8> = buf.drain(..=end).collect();
                        let text = String::from_utf8_lossy(&frame).to_string();
                        let control_id = text
                            .split('\r')
                            .find_map(|l| l.split_once("MSH"))
                            .and_then(|(_, rest)| rest.split('|').nth(9))
                            .unwrap_or_default()
                            .to_string();
                        let (n, first_m1) = {
                            let mut seen = seen.lock().expect("lock");
                            let first = control_id == "CTL-M1" && !seen.contains(&control_id);
                            seen.push(control_id.clone());
                            (seen.len(), first)
                        };
                        let ack = if first_m1 {
                            format!("MSH|^~\\&|HIS|MAIN|SB|HUB|20250101120000||ACK^A08^ACK|H{n}|P|2.5.1\rMSA|AR|{control_id}\rERR|||207^Application internal error^HL70357|E||||peer database locked\r")
                        } else {
                            format!("MSH|^~\\&|HIS|MAIN|SB|HUB|20250101120000||ACK^A08^ACK|H{n}|P|2.5.1\rMSA|AA|{control_id}|stored as encounter E-{n}\r")
                        };
                        if s.write_all(&channels::mllp::codec::frame(ack.as_bytes()))
                            .await
                            .is_err()
                        {
                            return;
                        }
                    }
                    if buf.first() == Some(&0x0d) {
                        buf.remove(0);
                    }
                }
            });
        }
    });
    addr
}

/// Config and engine for the operator flows: admin token, channel `lab` routing HL7 to the
/// webhook at `sink` and to the MLLP peer at `his`, and encryption at rest when `sealed`.
fn operations_config(sink: &HttpSink, his: &str, sealed: bool) -> TestConfig {
    let channel = format!(
        "[[route]]\nto = [\"hook\", \"his\"]\npayload = \"hl7\"\n{}\n[[destination]]\nname = \"his\"\ntype = \"mllp\"\naddress = \"{his}\"\n{FAST_RETRY}",
        webhook("hook", &sink.url)
    );
    let cfg = TestConfig::new("", &channel);
    let token_file = cfg.root.path().join("token");
    std::fs::write(&token_file, format!("{TOKEN}\n")).expect("write token");
    let key_file = cfg.root.path().join("store.key");
    std::fs::write(&key_file, "5a".repeat(32)).expect("write key");
    let encryption = if sealed {
        format!(
            "[encryption]\n[[encryption.keys]]\nid = \"k1\"\nkey = {{ file = \"{}\" }}\n",
            key_file.display()
        )
    } else {
        String::new()
    };
    let main = std::fs::read_to_string(cfg.conf().join("switchboard.toml")).expect("read");
    std::fs::write(
        cfg.conf().join("switchboard.toml"),
        main.replace(
            "[admin]\n",
            &format!(
                "{encryption}[admin]\ntoken = {{ file = \"{}\" }}\n",
                token_file.display()
            ),
        ),
    )
    .expect("write config");
    cfg
}

/// True when any file under `dir` contains `needle`.
fn on_disk(dir: &Path, needle: &[u8]) -> bool {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return false;
    };
    entries.filter_map(|e| e.ok()).any(|e| {
        let p = e.path();
        if p.is_dir() {
            on_disk(&p, needle)
        } else {
            std::fs::read(&p)
                .map(|b| b.windows(needle.len()).any(|w| w == needle))
                .unwrap_or(false)
        }
    })
}

/// The ids of `GET /api/messages?{query}`.
async fn found(admin: &str, query: &str) -> Vec<String> {
    let list = get_authed(&format!("{admin}/api/messages?{query}")).await;
    list["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|i| i["id"].as_str().expect("id").to_string())
        .collect()
}

/// The admin API of the operator flows, with encryption at rest on: search by patient name
/// and any key, the patient of each message, the peer's whole answer per attempt, pause and
/// resume (MLLP answers AR, deliveries go on, a restart keeps it), and edit-and-resend.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn console_api_finds_patients_keeps_answers_pauses_and_resends() {
    let sink = HttpSink::start(SinkMode::RejectBad).await;
    let his = his_peer().await;
    let cfg = operations_config(&sink, &his, true);
    let engine = EngineProcess::start(&cfg.conf(), &cfg.data());
    let admin = engine.admin();
    let mut mllp = connect(&engine.mllp("lab")).await;
    for (mrn, family, given, control_id) in [
        ("P-LQ-1", "Lindqvist", "Maja", "CTL-M1"),
        ("P-OK-2", "Okafor", "Chidi", "CTL-C1"),
        ("P-LQ-3", "Lindqvist", "Erik", "CTL-E1"),
    ] {
        let ack = send(
            &mut mllp,
            adt_named(mrn, family, given, control_id).as_bytes(),
        )
        .await;
        assert_eq!(segment(&ack, "MSA")[1], "AA", "{ack}");
    }
    let maja = message_by_control_id(&admin, "CTL-M1").await;
    let maja_id = maja["id"].as_str().expect("id").to_string();
    let erik_id = message_by_control_id(&admin, "CTL-E1").await["id"]
        .as_str()
        .expect("id")
        .to_string();
    let chidi_id = message_by_control_id(&admin, "CTL-C1").await["id"]
        .as_str()
        .expect("id")
        .to_string();

    // The patient of each message, read on the server from the (sealed) body.
    assert_eq!(maja["patient"]["name"], "Lindqvist, Maja", "{maja}");
    assert_eq!(maja["patient"]["mrn"], "P-LQ-1");
    let list = get_authed(&format!("{admin}/api/messages?channel=lab")).await;
    assert!(
        list["items"]
            .as_array()
            .expect("items")
            .iter()
            .all(|i| i["patient"]["name"].as_str().is_some_and(|n| !n.is_empty())),
        "{list}"
    );

    // One search box: name words in any order and case, an MRN, a control id.
    assert_eq!(
        found(&admin, "q=maja%20lindqvist").await,
        [maja_id.as_str()]
    );
    assert_eq!(
        found(&admin, "q=LINDQVIST").await,
        [erik_id.clone(), maja_id.clone()]
    );
    assert_eq!(found(&admin, "q=P-OK-2").await, [chidi_id.as_str()]);
    assert_eq!(found(&admin, "q=CTL-E1").await, [erik_id.as_str()]);
    assert!(
        found(&admin, "q=lindq").await.is_empty(),
        "whole words only"
    );
    assert_eq!(
        found(&admin, "key=chidi&key_type=name").await,
        [chidi_id.as_str()]
    );
    // With encryption on, no word of a name is on disk in clear.
    for word in ["Lindqvist", "lindqvist", "Okafor", "okafor"] {
        assert!(
            !on_disk(&cfg.data(), word.as_bytes()),
            "{word} is on disk in clear"
        );
    }

    // The peer's whole answer, per attempt: the AR with its ERR, then the AA with its text.
    let m = poll_json(&format!("{admin}/api/messages/{maja_id}"), |m| {
        m["status"] == "delivered"
    })
    .await;
    let attempts = m["attempts"].as_array().expect("attempts");
    let his_answers: Vec<&str> = attempts
        .iter()
        .filter(|a| a["destination"] == "lab/his")
        .map(|a| a["answer"].as_str().unwrap_or_default())
        .collect();
    assert_eq!(his_answers.len(), 2, "{m}");
    assert!(
        his_answers[0].contains("MSA|AR|CTL-M1")
            && his_answers[0]
                .contains("ERR|||207^Application internal error^HL70357|E||||peer database locked"),
        "{his_answers:?}"
    );
    assert!(
        his_answers[1].contains("MSA|AA|CTL-M1|stored as encounter"),
        "{his_answers:?}"
    );
    let hook = attempts
        .iter()
        .find(|a| a["destination"] == "lab/hook")
        .expect("a webhook attempt");
    assert_eq!(hook["answer"], "{\"ok\":true}", "{hook}");

    // Pause: 404 for an unknown channel; MLLP answers AR with the reason and stores nothing.
    let (status, _) = post_authed(&format!("{admin}/api/channels/nope/pause"), json!({})).await;
    assert_eq!(status, 404);
    let unauthorized = reqwest::Client::new()
        .post(format!("{admin}/api/channels/lab/pause"))
        .send()
        .await
        .expect("post");
    assert_eq!(unauthorized.status(), 401);
    sink.set(SinkMode::Down);
    let ack = send(
        &mut mllp,
        adt_named("P-BL-4", "Backlog", "Bo", "CTL-BL").as_bytes(),
    )
    .await;
    assert_eq!(segment(&ack, "MSA")[1], "AA");
    let (status, paused) = post_authed(&format!("{admin}/api/channels/lab/pause"), json!({})).await;
    assert_eq!(status, 200, "{paused}");
    assert_eq!(paused["paused"], true);
    assert_eq!(paused["paused_by"], "admin");
    let before = get_authed(&format!("{admin}/api/messages?limit=1000")).await["count"].clone();
    let ack = send(
        &mut mllp,
        adt_named("P-X-5", "Refused", "Rae", "CTL-P1").as_bytes(),
    )
    .await;
    assert_eq!(segment(&ack, "MSA")[1..3], ["AR", "CTL-P1"], "{ack}");
    assert!(
        segment(&ack, "ERR")
            .join("|")
            .contains("channel paused by operator"),
        "{ack}"
    );
    assert_eq!(
        get_authed(&format!("{admin}/api/messages?limit=1000")).await["count"],
        before,
        "nothing stored while paused"
    );
    // Deliveries go on: the backlog drains while the channel is paused.
    sink.set(SinkMode::Up);
    let drained = poll_json(&format!("{admin}/api/messages?control_id=CTL-BL"), |b| {
        b["items"][0]["status"] == "delivered"
    })
    .await;
    assert_eq!(drained["items"][0]["status"], "delivered", "{drained}");
    let channels = get_authed(&format!("{admin}/api/channels")).await;
    assert_eq!(channels["channels"][0]["paused"], true, "{channels}");
    assert_eq!(channels["channels"][0]["paused_by"], "admin");
    let health = get_json(&format!("{admin}/health")).await;
    assert_eq!(health["paused_channels"], json!(["lab"]), "{health}");
    let metrics = metrics_text(&engine).await;
    assert_eq!(
        metric_value(&metrics, "switchboard_channel_paused{channel=\"lab\"}"),
        1.0
    );
    assert_eq!(
        metric_value(
            &metrics,
            "switchboard_messages_rejected_total{channel=\"lab\",reason=\"channel_paused\"}"
        ),
        1.0
    );
    // Resending into a paused channel is refused the same way.
    let (status, refused) = post_authed(
        &format!("{admin}/api/messages/{maja_id}/resend"),
        json!({"raw": maja["raw"]}),
    )
    .await;
    assert_eq!(status, 409, "{refused}");
    assert!(
        refused["detail"]
            .as_str()
            .is_some_and(|d| d.contains("channel paused by operator")),
        "{refused}"
    );

    // A restart keeps the pause.
    assert_eq!(engine.terminate(), Some(0));
    let engine = EngineProcess::start(&cfg.conf(), &cfg.data());
    let admin = engine.admin();
    let channels = get_authed(&format!("{admin}/api/channels")).await;
    assert_eq!(channels["channels"][0]["paused"], true, "{channels}");
    let mut mllp = connect(&engine.mllp("lab")).await;
    let ack = send(
        &mut mllp,
        adt_named("P-X-5", "Refused", "Rae", "CTL-P2").as_bytes(),
    )
    .await;
    assert_eq!(
        segment(&ack, "MSA")[1],
        "AR",
        "still paused after a restart: {ack}"
    );
    let (status, resumed) =
        post_authed(&format!("{admin}/api/channels/lab/resume"), json!({})).await;
    assert_eq!((status, resumed["paused"].clone()), (200, json!(false)));
    let ack = send(
        &mut mllp,
        adt_named("P-X-5", "Refused", "Rae", "CTL-P2").as_bytes(),
    )
    .await;
    assert_eq!(segment(&ack, "MSA")[1], "AA", "{ack}");

    // Edit and resend: a new message in the same channel, the original unchanged, audited.
    let edited = maja["raw"]
        .as_str()
        .expect("raw")
        .replace("Lindqvist^Maja", "Lindqvist^Maria")
        .replace('\r', "\n");
    let (status, resent) = post_authed(
        &format!("{admin}/api/messages/{maja_id}/resend"),
        json!({ "raw": edited }),
    )
    .await;
    assert_eq!(status, 200, "{resent}");
    assert_eq!(resent["ack_code"], "AA", "{resent}");
    let new_id = resent["id"].as_str().expect("new id").to_string();
    assert_ne!(new_id, maja_id);
    let new = poll_json(&format!("{admin}/api/messages/{new_id}"), |m| {
        m["status"] == "delivered"
    })
    .await;
    assert_eq!(new["resent_from"], maja_id.as_str(), "{new}");
    assert_eq!(new["peer"], "resent by admin");
    assert_eq!(new["channel"], "lab");
    assert_eq!(new["patient"]["name"], "Lindqvist, Maria");
    assert!(new["raw"]
        .as_str()
        .is_some_and(|r| r.contains("Lindqvist^Maria\r") || r.contains("Lindqvist^Maria|")));
    let original = get_authed(&format!("{admin}/api/messages/{maja_id}")).await;
    assert_eq!(original["raw"], maja["raw"], "the original is unchanged");
    assert!(sink
        .received()
        .iter()
        .any(|(_, body)| body.contains("Lindqvist^Maria")));
    // The very same text again is a new message too, not a duplicate of the resend.
    let (status, again) = post_authed(
        &format!("{admin}/api/messages/{maja_id}/resend"),
        json!({ "raw": edited }),
    )
    .await;
    assert_eq!(status, 200, "{again}");
    assert_ne!(again["id"], resent["id"]);
    let audit = get_authed(&format!("{admin}/api/audit")).await;
    let actions: Vec<(String, String, String)> = audit["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|a| {
            (
                a["action"].as_str().unwrap_or_default().to_string(),
                a["who"].as_str().unwrap_or_default().to_string(),
                a["target"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect();
    for expected in [
        ("channel_pause", "channel lab".to_string()),
        ("channel_resume", "channel lab".to_string()),
        ("resend", format!("message {maja_id} as message {new_id}")),
    ] {
        assert!(
            actions
                .iter()
                .any(|(a, w, t)| a == expected.0 && w == "admin" && *t == expected.1),
            "{expected:?} in {actions:?}"
        );
    }
    // Only HL7 v2 text is resent; an empty body is refused.
    let (status, _) = post_authed(
        &format!("{admin}/api/messages/{maja_id}/resend"),
        json!({ "raw": "  \n" }),
    )
    .await;
    assert_eq!(status, 400);
    assert_eq!(engine.terminate(), Some(0));
}

/// The console in Chromium: search by patient name and the patient column, field names on
/// hover, the peer's whole ACK per attempt, pause and resume, edit and resend, and no stray
/// "null" anywhere.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn console_in_a_browser_finds_patients_pauses_and_resends() {
    let sink = HttpSink::start(SinkMode::Up).await;
    let his = his_peer().await;
    let cfg = operations_config(&sink, &his, false);
    let engine = EngineProcess::start(&cfg.conf(), &cfg.data());
    let admin = engine.admin();
    let mut mllp = connect(&engine.mllp("lab")).await;
    for (mrn, family, given, control_id) in [
        ("P-LQ-1", "Lindqvist", "Maja", "CTL-M1"),
        ("P-OK-2", "Okafor", "Chidi", "CTL-C1"),
    ] {
        let ack = send(
            &mut mllp,
            adt_named(mrn, family, given, control_id).as_bytes(),
        )
        .await;
        assert_eq!(segment(&ack, "MSA")[1], "AA", "{ack}");
    }
    let maja_id = message_by_control_id(&admin, "CTL-M1").await["id"]
        .as_str()
        .expect("id")
        .to_string();
    poll_json(&format!("{admin}/api/messages/{maja_id}"), |m| {
        m["status"] == "delivered"
    })
    .await;
    let (_driver, c) = browser().await;
    {
        c.goto(&format!("{admin}/"))
            .await
            .expect("open the console");
        let input = wait_for(&c, "#token-dialog[open] #token-input", "token prompt").await;
        input.send_keys(TOKEN).await.expect("type the token");
        c.find(Locator::Css("#token-form button[type=submit]"))
            .await
            .expect("sign-in button")
            .click()
            .await
            .expect("sign in");
        wait_for(&c, "section.channel[data-channel=\"lab\"]", "channels view").await;

        // Search: nothing stray before a search, then by name in any order and case.
        open_view(&c, "search").await;
        let results = wait_for_text(&c, "#search-results", "Choose filters").await;
        let text = results.text().await.expect("text");
        assert!(
            !text.contains("null") && !text.contains("undefined"),
            "{text:?}"
        );
        let field = wait_for(&c, "#search-form input[name=q]", "search box").await;
        field
            .send_keys("maja LINDQVIST")
            .await
            .expect("type a name");
        c.find(Locator::Css("#search-form button[type=submit]"))
            .await
            .expect("search button")
            .click()
            .await
            .expect("search");
        let body = wait_for_text(&c, "#search-table tbody", "CTL-M1").await;
        let rows = body.find_all(Locator::Css("tr")).await.expect("rows");
        assert_eq!(rows.len(), 1, "only Maja");
        let patient = rows[0]
            .find(Locator::Css("td.patient"))
            .await
            .expect("patient cell")
            .text()
            .await
            .expect("text");
        assert!(
            patient.contains("Lindqvist, Maja") && patient.contains("P-LQ-1"),
            "{patient:?}"
        );
        // By MRN, through the same box.
        field.clear().await.expect("clear");
        field.send_keys("P-OK-2").await.expect("type an MRN");
        c.find(Locator::Css("#search-form button[type=submit]"))
            .await
            .expect("search button")
            .click()
            .await
            .expect("search");
        wait_for_text(&c, "#search-table tbody", "Okafor, Chidi").await;
        let main_text = c
            .find(Locator::Css("#main"))
            .await
            .expect("main")
            .text()
            .await
            .expect("text");
        assert!(
            !main_text.contains("null") && !main_text.contains("undefined"),
            "{main_text:?}"
        );
        screenshot(&c, "search").await;

        // The message: field names on hover, the peer's whole answer per attempt.
        c.goto(&format!("{admin}/#/message/{maja_id}"))
            .await
            .expect("open the message");
        wait_for_text(&c, "#message-patient", "Lindqvist, Maja").await;
        for (css, title) in [
            ("#raw span[data-pos=\"PID-5\"]", "PID-5 Patient Name"),
            ("#raw span[data-pos=\"PID-5.1\"]", "PID-5.1 Family Name"),
            ("#raw span[data-pos=\"PID-5.2\"]", "PID-5.2 Given Name"),
            ("#raw span[data-pos=\"PID-3.1\"]", "PID-3.1 ID Number"),
            ("#raw span[data-pos=\"MSH-9.2\"]", "MSH-9.2 Trigger Event"),
            (
                "#raw span[data-pos=\"MSH-10\"]",
                "MSH-10 Message Control ID",
            ),
            (
                "#raw .segment[data-segment=\"PID\"] .segid",
                "PID Patient Identification",
            ),
            ("#ack span[data-pos=\"MSA-1\"]", "MSA-1 Acknowledgment Code"),
        ] {
            let e = wait_for(&c, css, title).await;
            assert_eq!(
                e.attr("title").await.expect("title").as_deref(),
                Some(title),
                "{css}"
            );
        }
        let answers = c
            .find_all(Locator::Css(
                "#attempts tr.attempt-answer[data-destination=\"lab/his\"] summary",
            ))
            .await
            .expect("answers");
        assert_eq!(answers.len(), 2, "one answer per attempt to the HIS");
        for a in &answers {
            a.click().await.expect("open the answer");
        }
        let rows = c
            .find_all(Locator::Css(
                "#attempts tr.attempt-answer[data-destination=\"lab/his\"]",
            ))
            .await
            .expect("rows");
        let first = rows[0].text().await.expect("text");
        let second = rows[1].text().await.expect("text");
        assert!(
            first.contains("peer database locked") && first.contains("AR"),
            "{first:?}"
        );
        assert!(second.contains("stored as encounter"), "{second:?}");
        rows[0]
            .find(Locator::Css(".segment[data-segment=\"ERR\"]"))
            .await
            .expect("the ERR segment of the peer's ACK, as segments");
        wait_for_text(
            &c,
            "#attempts tr.attempt-answer[data-destination=\"lab/hook\"]",
            "Answer of lab/hook",
        )
        .await;
        screenshot(&c, "message-attempts").await;

        // Edit and resend: a new message, linked to the original, which stays as it was.
        c.find(Locator::Css("#resend-open"))
            .await
            .expect("Edit and resend")
            .click()
            .await
            .expect("open the editor");
        let area = wait_for(&c, "#resend-panel:not([hidden]) #resend-text", "editor").await;
        let raw = area.prop("value").await.expect("value").unwrap_or_default();
        assert!(
            raw.contains("PID|1||P-LQ-1^^^MAIN^MR||Lindqvist^Maja"),
            "{raw:?}"
        );
        // The operator's edit: Maja becomes Maria.
        c.execute(
            "const t = document.getElementById('resend-text'); t.value = t.value.replace('Lindqvist^Maja', 'Lindqvist^Maria');",
            vec![],
        )
        .await
        .expect("edit");
        area.send_keys("NTE|1||resent from the console")
            .await
            .expect("type a segment");
        screenshot(&c, "resend").await;
        c.find(Locator::Css("#resend-send"))
            .await
            .expect("send button")
            .click()
            .await
            .expect("resend");
        let link = wait_for(
            &c,
            "#resent-from a",
            "the new message links to the original",
        )
        .await;
        assert_eq!(
            link.text().await.expect("text"),
            format!("message {maja_id}")
        );
        wait_for_text(&c, "#message-patient", "Lindqvist, Maria").await;
        wait_for_text(&c, "#notice", "Sent as new message").await;
        let title = c
            .find(Locator::Css("#message-title"))
            .await
            .expect("title")
            .text()
            .await
            .expect("text");
        assert_ne!(title, format!("Message {maja_id}"), "a new message");
        wait_for(
            &c,
            "#raw .segment[data-segment=\"NTE\"]",
            "the typed segment",
        )
        .await;
        let original = get_authed(&format!("{admin}/api/messages/{maja_id}")).await;
        assert!(
            original["raw"]
                .as_str()
                .is_some_and(|r| r.contains("Lindqvist^Maja")),
            "the original is unchanged"
        );
        assert!(
            eventually(20, || sink
                .received()
                .iter()
                .any(|(_, b)| b.contains("Lindqvist^Maria")))
            .await,
            "the resent message was delivered"
        );

        // Pause from the channels view: MLLP senders get AR, then Resume.
        open_view(&c, "channels").await;
        let lab = "section.channel[data-channel=\"lab\"]";
        wait_for(
            &c,
            &format!("{lab}[data-paused=\"no\"] button.pause"),
            "Pause button",
        )
        .await
        .click()
        .await
        .expect("pause");
        c.accept_alert().await.expect("confirm the pause");
        wait_for_text(
            &c,
            &format!("{lab}[data-paused=\"yes\"]"),
            "Paused by admin",
        )
        .await;
        wait_for_text(&c, "#notice", "is paused").await;
        let ack = send(
            &mut mllp,
            adt_named("P-Z", "Zed", "Zoe", "CTL-Z1").as_bytes(),
        )
        .await;
        assert_eq!(segment(&ack, "MSA")[1], "AR", "{ack}");
        assert!(ack.contains("channel paused by operator"), "{ack}");
        screenshot(&c, "channels-paused").await;
        c.find(Locator::Css(&format!("{lab} button.resume")))
            .await
            .expect("Resume button")
            .click()
            .await
            .expect("resume");
        wait_for(&c, &format!("{lab}[data-paused=\"no\"]"), "resumed").await;
        let ack = send(
            &mut mllp,
            adt_named("P-Z", "Zed", "Zoe", "CTL-Z1").as_bytes(),
        )
        .await;
        assert_eq!(segment(&ack, "MSA")[1], "AA", "{ack}");
    }
    let _ = c.close().await;
}

/// POSTs a FHIR resource with the test's bearer token: status, `Retry-After`, JSON body.
async fn post_fhir(url: &str, body: &'static str) -> (u16, Option<String>, serde_json::Value) {
    let resp = reqwest::Client::new()
        .post(url)
        .bearer_auth("fhir-token")
        .header("content-type", "application/fhir+json")
        .body(body)
        .send()
        .await
        .expect("FHIR source reachable");
    let status = resp.status().as_u16();
    let retry_after = resp
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    (status, retry_after, resp.json().await.expect("a JSON body"))
}

/// A paused HTTP source (FHIR) answers 503 with `Retry-After` and an OperationOutcome naming
/// the pause, and stores nothing; resumed, it takes the same body.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn console_api_a_paused_http_source_answers_503_with_a_json_body() {
    let sink = HttpSink::start(SinkMode::Up).await;
    let cfg = TestConfig::new("", "");
    let token = cfg.root.path().join("fhir-token");
    std::fs::write(&token, "fhir-token\n").expect("write token");
    std::fs::write(
        cfg.conf().join("channels/fhir.toml"),
        format!(
            "name = \"fhir\"\n[source]\ntype = \"fhir_rest\"\nlisten = \"127.0.0.1:0\"\nbase_path = \"/fhir\"\n[source.auth]\nbearer_token = {{ file = \"{}\" }}\n[[route]]\nto = [\"hook\"]\n{}",
            token.display(),
            webhook("hook", &sink.url)
        ),
    )
    .expect("write channel");
    let engine = EngineProcess::start(&cfg.conf(), &cfg.data());
    let admin = engine.admin();
    let patient = include_str!("../fixtures/fhir/patient/full.input.json");
    let fhir = format!("http://{}/fhir/Patient", engine.info.channels["fhir"]);
    let paused = reqwest::Client::new()
        .post(format!("{admin}/api/channels/fhir/pause"))
        .send()
        .await
        .expect("pause");
    assert_eq!(paused.status(), 200);
    let (status, retry_after, body) = post_fhir(&fhir, patient).await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(retry_after.as_deref(), Some("5"));
    assert_eq!(body["resourceType"], "OperationOutcome", "{body}");
    assert_eq!(body["issue"][0]["code"], "transient");
    assert_eq!(
        body["issue"][0]["diagnostics"],
        "channel paused by operator"
    );
    let stored = get_json(&format!("{admin}/api/messages?channel=fhir")).await;
    assert_eq!(stored["count"], 0, "nothing stored while paused: {stored}");
    // Only the paused channel refuses: the MLLP channel beside it takes messages.
    let mut mllp = connect(&engine.mllp("lab")).await;
    let ack = send(&mut mllp, adt("CTL-OTHER").as_bytes()).await;
    assert_eq!(segment(&ack, "MSA")[1], "AA", "{ack}");
    let resumed = reqwest::Client::new()
        .post(format!("{admin}/api/channels/fhir/resume"))
        .send()
        .await
        .expect("resume");
    assert_eq!(resumed.status(), 200);
    let (status, _, body) = post_fhir(&fhir, patient).await;
    assert_eq!(status, 201, "{body}");
    let stored = get_json(&format!("{admin}/api/messages?channel=fhir")).await;
    assert_eq!(stored["count"], 1, "{stored}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn console_in_a_browser_lists_worklist_items_and_studies() {
    // Orders into worklist `rad`, served by `mwl`; images into `images` (quiet 1 s).
    let root = tempfile::tempdir().expect("tempdir");
    let (folder, made) = (root.path().join("store"), root.path().join("made"));
    std::fs::create_dir_all(&made).expect("mkdir");
    let cfg = TestConfig::new("durability = \"os\"", "");
    let conf = cfg.conf();
    std::fs::remove_file(conf.join("channels/lab.toml")).expect("rm lab");
    std::fs::write(
        conf.join("channels/his.toml"),
        "name = \"his\"\n[source]\ntype = \"mllp_listener\"\nlisten = \"127.0.0.1:0\"\n\
         [[route]]\nto = [\"worklist\"]\n\
         [[destination]]\nname = \"worklist\"\ntype = \"worklist\"\nworklist = \"rad\"\n",
    )
    .expect("write his");
    std::fs::write(
        conf.join("channels/mwl.toml"),
        "name = \"mwl\"\n[source]\ntype = \"dicom_worklist\"\nlisten = \"127.0.0.1:0\"\n\
         ae_title = \"SBMWL\"\nworklist = \"rad\"\n",
    )
    .expect("write mwl");
    std::fs::write(
        conf.join("channels/images.toml"),
        format!(
            "name = \"images\"\n[source]\ntype = \"dicom_store\"\nlisten = \"127.0.0.1:0\"\n\
             ae_title = \"SBSTORE\"\nfolder = \"{}\"\nquiet_period_secs = 1\n",
            folder.display()
        ),
    )
    .expect("write images");
    let token_file = cfg.root.path().join("token");
    std::fs::write(&token_file, format!("{TOKEN}\n")).expect("write token");
    let main = std::fs::read_to_string(conf.join("switchboard.toml")).expect("read");
    std::fs::write(
        conf.join("switchboard.toml"),
        main.replace(
            "[admin]\n",
            &format!(
                "[admin]\ntoken = {{ file = \"{}\" }}\n",
                token_file.display()
            ),
        ),
    )
    .expect("write config");
    let engine = EngineProcess::start(&conf, &cfg.data());
    let admin = engine.admin();

    let mut mllp = connect(&engine.mllp("his")).await;
    let ack = send(&mut mllp, crate::dicom::orm("RAD-C1", "NW", "").as_bytes()).await;
    assert_eq!(segment(&ack, "MSA")[1], "AA", "{ack}");
    let study = "1.2.826.0.1.3680043.9.7777.700";
    crate::dicom::store_files(
        &engine.mllp("images"),
        &[
            crate::dicom::synthetic_ct(&made, study, &format!("{study}.1"), 1),
            crate::dicom::synthetic_ct(&made, study, &format!("{study}.1"), 2),
        ],
    );
    poll_json(&format!("{admin}/api/dicom/worklist"), |b| b["count"] == 1).await;
    let studies = poll_json(&format!("{admin}/api/dicom/studies"), |b| {
        b["items"][0]["status"] == "announced"
    })
    .await;
    assert_eq!(studies["items"][0]["number_of_instances"], 2, "{studies}");

    let (_driver, c) = browser().await;
    {
        c.goto(&format!("{admin}/#/radiology"))
            .await
            .expect("open the console");
        let input = wait_for(&c, "#token-dialog[open] #token-input", "token prompt").await;
        input.send_keys(TOKEN).await.expect("type the token");
        c.find(Locator::Css("#token-form button[type=submit]"))
            .await
            .expect("sign-in button")
            .click()
            .await
            .expect("sign in");
        open_view(&c, "radiology").await;
        let item = wait_for_text(
            &c,
            "#worklist-table tr[data-accession=\"ACC-7001\"]",
            "Rayfield, Dana",
        )
        .await;
        let text = item.text().await.expect("row text");
        for want in [
            "2026-03-01 09:30",
            "rad",
            "MRN-RAD1",
            "CT chest without contrast",
            "CT",
            "scheduled",
        ] {
            assert!(text.contains(want), "{want:?} not in {text:?}");
        }
        let row = wait_for_text(
            &c,
            &format!("#studies-table tr.study[data-study=\"{study}\"]"),
            "announced",
        )
        .await;
        let text = row.text().await.expect("row text");
        for want in ["images", "Rayfield, Dana", "ACC-7001", "CT", study] {
            assert!(text.contains(want), "{want:?} not in {text:?}");
        }
        let count = |css: &'static str| {
            let row = row.clone();
            async move {
                row.find(Locator::Css(css))
                    .await
                    .expect("cell")
                    .text()
                    .await
                    .expect("text")
            }
        };
        assert_eq!(count("td.series").await, "1");
        assert_eq!(count("td.instances").await, "2");
        screenshot(&c, "radiology").await;
    }
    c.close().await.expect("close the browser");
}
