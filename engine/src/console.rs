//! The operator web console: static files compiled into the binary and served on the admin
//! address at `/` and `/console/*`: the page, its script and style, and the HL7 v2 field
//! dictionary (`hl7-dictionary.json`) the message viewer names fields with on hover.
//!
//! Plain HTML, CSS and JavaScript in `engine/src/console/`, with no build step and nothing
//! fetched from elsewhere (no CDN, no external fonts), so the console works on an isolated
//! hospital network. The page itself holds no data and needs no token; everything it shows
//! comes from `/api` (see [`crate::admin`] and [`crate::admin_live`]), which does. A strict
//! Content-Security-Policy allows scripts, styles and connections to this origin only.

use crate::admin::AdminState;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;

const INDEX_HTML: &str = include_str!("console/index.html");
const APP_JS: &str = include_str!("console/app.js");
const STYLE_CSS: &str = include_str!("console/style.css");
/// Segment, field and data-type component names of HL7 v2.5.1 to v2.8 for the segments the
/// engine reads and writes, written from the standard's field names (see the file's
/// `about`). Reference data, no message content: served without a token like the page.
const HL7_DICTIONARY: &str = include_str!("console/hl7-dictionary.json");

/// Scripts, styles, images and connections from this origin only; no framing.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
                   connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

/// Routes of the console's files.
pub(crate) fn router() -> Router<AdminState> {
    Router::new()
        .route(
            "/",
            get(|| async { asset("text/html; charset=utf-8", INDEX_HTML) }),
        )
        .route(
            "/console/",
            get(|| async { asset("text/html; charset=utf-8", INDEX_HTML) }),
        )
        .route(
            "/console/app.js",
            get(|| async { asset("text/javascript; charset=utf-8", APP_JS) }),
        )
        .route(
            "/console/style.css",
            get(|| async { asset("text/css; charset=utf-8", STYLE_CSS) }),
        )
        .route(
            "/console/hl7-dictionary.json",
            get(|| async { asset("application/json; charset=utf-8", HL7_DICTIONARY) }),
        )
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CONTENT_SECURITY_POLICY, CSP),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (header::REFERRER_POLICY, "no-referrer"),
            (header::X_FRAME_OPTIONS, "DENY"),
            // Small files that change with the binary: always revalidate.
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_loads_only_its_own_files() {
        assert!(INDEX_HTML.contains("/console/app.js"));
        assert!(INDEX_HTML.contains("/console/style.css"));
        for text in [INDEX_HTML, APP_JS, STYLE_CSS, HL7_DICTIONARY] {
            // The SVG namespace is a name, not a fetch.
            let text = text.replace("http://www.w3.org/2000/svg", "");
            assert!(!text.contains("http://") && !text.contains("https://"));
        }
    }

    /// The dictionary names every segment the engine handles, each field of them, and the
    /// components of the composite types those fields use.
    #[test]
    fn the_hl7_dictionary_names_segments_fields_and_components() {
        let d: serde_json::Value = serde_json::from_str(HL7_DICTIONARY).expect("valid JSON");
        let segments = d["segments"].as_object().expect("segments");
        let types = d["types"].as_object().expect("types");
        for seg in [
            "MSH", "EVN", "PID", "PD1", "NK1", "PV1", "PV2", "AL1", "IAM", "DG1", "PR1", "GT1",
            "IN1", "IN2", "ORC", "OBR", "OBX", "NTE", "SPM", "SCH", "ARQ", "TQ1", "AIS", "AIG",
            "AIL", "AIP", "RGS", "FT1", "MSA", "ERR", "ROL", "PRT", "MRG", "TXA", "SFT", "FHS",
            "FTS", "BHS", "BTS",
        ] {
            let s = &segments[seg];
            assert!(s["name"].as_str().is_some_and(|n| !n.is_empty()), "{seg}");
            let fields = s["fields"]
                .as_array()
                .unwrap_or_else(|| panic!("{seg} fields"));
            assert!(!fields.is_empty(), "{seg}");
            for (i, f) in fields.iter().enumerate() {
                let name = f[0].as_str().unwrap_or_default();
                let ty = f[1].as_str().unwrap_or_default();
                assert!(!name.is_empty() && !ty.is_empty(), "{seg}-{}", i + 1);
                if let Some(t) = types.get(ty) {
                    assert!(t.as_array().is_some_and(|c| !c.is_empty()), "{ty}");
                }
            }
        }
        let field = |seg: &str, n: usize| segments[seg]["fields"][n - 1][0].as_str();
        let comp = |ty: &str, n: usize| types[ty][n - 1].as_str();
        assert_eq!(field("PID", 5), Some("Patient Name"));
        assert_eq!(segments["PID"]["fields"][4][1], "XPN");
        assert_eq!(comp("XPN", 1), Some("Family Name"));
        assert_eq!(comp("XPN", 2), Some("Given Name"));
        assert_eq!(field("PID", 3), Some("Patient Identifier List"));
        assert_eq!(comp("CX", 1), Some("ID Number"));
        assert_eq!(field("MSH", 9), Some("Message Type"));
        assert_eq!(comp("MSG", 2), Some("Trigger Event"));
        assert_eq!(field("MSH", 10), Some("Message Control ID"));
        assert_eq!(field("PV1", 19), Some("Visit Number"));
        assert_eq!(field("OBX", 5), Some("Observation Value"));
        assert_eq!(field("SCH", 2), Some("Filler Appointment ID"));
        assert_eq!(field("MSA", 1), Some("Acknowledgment Code"));
        assert_eq!(field("ERR", 3), Some("HL7 Error Code"));
        assert_eq!(field("PRT", 4), Some("Participation"));
    }
}
