//! A fast local peer for webhook destinations in benchmarks: answers every POST with 200 and
//! an empty JSON object, on 127.0.0.1 only, and stops after `SECONDS` (default 600) or when
//! killed. Used by `tests/bench-destinations.sh` (the `webhook` configuration).
//!
//! ```sh
//! target/profiling/examples/http_sink PORT [SECONDS]
//! ```

use axum::http::StatusCode;
use axum::routing::post;
use axum::Router;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let usage = "usage: http_sink PORT [SECONDS]";
    let port: u16 = args.next().ok_or(usage)?.parse()?;
    let seconds: u64 = args.next().map_or(Ok(600), |s| s.parse())?;
    let app = Router::new().fallback(post(|| async { (StatusCode::OK, "{}") }));
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
    let serve = axum::serve(listener, app);
    tokio::select! {
        r = serve => r?,
        () = tokio::time::sleep(std::time::Duration::from_secs(seconds)) => {}
    }
    Ok(())
}
