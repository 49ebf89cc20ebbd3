//! Crash safety: SIGKILL under load never loses a message that was acknowledged.

use crate::support::*;
use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_under_load_loses_no_acknowledged_message() {
    let cfg = TestConfig::new("", "");
    let acked: Arc<Mutex<HashSet<String>>> = Arc::default();
    for round in 0..3 {
        let engine = EngineProcess::start(&cfg.conf(), &cfg.data());
        let addr = engine.mllp("lab");
        let mut tasks = Vec::new();
        for conn in 0..16 {
            let addr = addr.clone();
            let acked = acked.clone();
            tasks.push(tokio::spawn(async move {
                let Ok(mut client) =
                    channels::mllp::client::MllpClient::connect(&addr, Duration::from_secs(5))
                        .await
                else {
                    return;
                };
                // Bounded: at most 2,000 messages per connection per round.
                for i in 0..2000 {
                    let id = format!("K{round}-{conn}-{i}");
                    match client.send(adt(&id).as_bytes()).await {
                        Ok(bytes) => {
                            let text = String::from_utf8_lossy(&bytes);
                            if segment(&text, "MSA")[1] == "AA" {
                                acked.lock().expect("lock").insert(id);
                            }
                        }
                        Err(_) => return, // killed
                    }
                }
            }));
        }
        // Let the load run, then kill without warning.
        tokio::time::sleep(Duration::from_millis(700)).await;
        engine.kill();
        for t in tasks {
            let _ = t.await;
        }
    }
    let engine = EngineProcess::start(&cfg.conf(), &cfg.data());
    let list = get_json(&format!("{}/api/messages?limit=10000", engine.admin())).await;
    let stored: HashSet<String> = list["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|m| m["control_id"].as_str().expect("control id").to_string())
        .collect();
    let acked = acked.lock().expect("lock").clone();
    assert!(
        acked.len() > 100,
        "the load produced too few ACKs to mean anything: {}",
        acked.len()
    );
    let missing: Vec<&String> = acked.iter().filter(|id| !stored.contains(*id)).collect();
    assert!(
        missing.is_empty(),
        "{} acknowledged messages lost, e.g. {:?}",
        missing.len(),
        missing.iter().take(5).collect::<Vec<_>>()
    );
}
