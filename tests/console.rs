//! The web console and its endpoints: `/api/channels`, `/api/stats` and `/api/events` over
//! HTTP, then the console itself in headless Chromium driven over WebDriver (`chromedriver`,
//! started here on a free loopback port): live stream, message viewer, dead letters and retry.
//!
//! Chromium and chromedriver must be installed (`apt-get install chromium chromium-driver`);
//! the browser test fails, with that sentence, when they are not. With
//! `SWITCHBOARD_SCREENSHOTS=1` it also writes `docs/screenshots/*.png`.

use crate::support::*;
use fantoccini::elements::Element;
use fantoccini::{Client, ClientBuilder, Locator};
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
        for (title, text) in [
            ("MSH-9", "ADT^A08^ADT_A01"),
            ("MSH-9.1", "ADT"),
            ("MSH-10", "CTL-LIVE"),
            ("PID-3.1", "P9"),
            ("PID-5", "Testperson^Alex"),
            ("PID-5.2", "Alex"),
        ] {
            let e = c
                .find(Locator::Css(&format!("#raw span[title=\"{title}\"]")))
                .await
                .unwrap_or_else(|_| panic!("a span titled {title}"));
            assert_eq!(e.text().await.expect("text"), text, "{title}");
        }
        wait_for_text(&c, "#ack .segment[data-segment=\"MSA\"]", "AA").await;
        wait_for_text(&c, "#deliveries", "lab/hook").await;
        wait_for_text(&c, "#message-summary", "delivered").await;
        screenshot(&c, "message").await;

        // Search by control id finds the message and opens it.
        open_view(&c, "search").await;
        let field = wait_for(&c, "#search-form input[name=control_id]", "search form").await;
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
        wait_for_text(&c, "#raw span[title=\"MSH-10\"]", "CTL-B").await;

        // Another message by its patient id, through the business-key index.
        open_view(&c, "search").await;
        wait_for(&c, "#search-form input[name=control_id]", "search form")
            .await
            .clear()
            .await
            .expect("clear the control id");
        wait_for(&c, "#search-form input[name=key]", "business key field")
            .await
            .send_keys("P9")
            .await
            .expect("type a patient id");
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
