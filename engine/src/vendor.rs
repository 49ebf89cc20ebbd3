//! Vendor payloads: a canonical event rendered for a cloud clinic API (`opsport`, `buktor`,
//! `px360`, `latrexa`) through `transforms::dest`, with the destination's options, then the
//! destination's `[destination.mapping]`, then the route's `mapping`.
//!
//! A vendor payload may be sent to a destination of another kind (a `webhook` with
//! `payload = "opsport"`): the vendor's default options are used then.

use channels::destination::DestinationConfig;
use transforms::dest::{MappingError, Rendered};
use transforms::mapping::FieldMapping;
use transforms::model::Event;

/// The vendor payload names.
pub const VENDORS: [&str; 4] = ["opsport", "buktor", "px360", "latrexa"];

/// Renders `event` as the requests of `vendor`, in the order they must be sent.
///
/// # Errors
///
/// [`MappingError`] naming the field path and the reason (never patient data).
pub fn render(
    vendor: &str,
    dest: Option<&DestinationConfig>,
    event: &Event,
    route_mapping: Option<&FieldMapping>,
) -> Result<Vec<Rendered>, MappingError> {
    let (mut items, dest_mapping) = match (vendor, dest) {
        ("opsport", Some(DestinationConfig::Opsport(c))) => (
            transforms::dest::opsport::render(event, &c.options)?,
            Some(&c.mapping),
        ),
        ("opsport", _) => (
            transforms::dest::opsport::render(event, &Default::default())?,
            None,
        ),
        ("buktor", Some(DestinationConfig::Buktor(c))) => (
            transforms::dest::buktor::render(event, &c.options)?,
            Some(&c.mapping),
        ),
        ("buktor", _) => (
            transforms::dest::buktor::render(event, &Default::default())?,
            None,
        ),
        ("px360", Some(DestinationConfig::Px360(c))) => (
            transforms::dest::px360::render(event, &c.options)?,
            Some(&c.mapping),
        ),
        ("px360", _) => (
            transforms::dest::px360::render(event, &Default::default())?,
            None,
        ),
        ("latrexa", d) => {
            let (offset, mapping) = match d {
                Some(DestinationConfig::Latrexa(c)) => (c.offset(), Some(&c.mapping)),
                _ => (None, None),
            };
            let mut items = transforms::dest::latrexa::render(event)?;
            for item in &mut items {
                latrexa_times(event, item, offset)?;
            }
            (items, mapping)
        }
        (other, _) => {
            return Err(MappingError::InvalidValue {
                path: "payload".into(),
                reason: format!("unknown vendor payload '{other}'"),
            })
        }
    };
    for item in &mut items {
        if let Some(m) = dest_mapping.filter(|m| !m.is_empty()) {
            m.apply(&mut item.body);
        }
        if let Some(m) = route_mapping.filter(|m| !m.is_empty()) {
            m.apply(&mut item.body);
        }
    }
    Ok(items)
}

/// Latrexa takes RFC 3339 times: the appointment's own offset when HL7 gave one, else the
/// destination's `utc_offset` (UTC without one), written in UTC.
fn latrexa_times(
    event: &Event,
    item: &mut Rendered,
    offset: Option<chrono::FixedOffset>,
) -> Result<(), MappingError> {
    let Some(a) = &event.appointment else {
        return Ok(());
    };
    let offset = offset.unwrap_or_else(|| chrono::FixedOffset::east_opt(0).expect("zero offset"));
    let as_utc = |ts: &transforms::model::Timestamp, path: &str| {
        ts.to_utc()
            .or_else(|| {
                ts.naive_date_time()
                    .and_local_timezone(offset)
                    .single()
                    .map(|t| t.with_timezone(&chrono::Utc))
            })
            .map(|t| t.format("%Y-%m-%dT%H:%M:%SZ").to_string())
            .ok_or_else(|| MappingError::InvalidValue {
                path: path.into(),
                reason: "not a valid local time".into(),
            })
    };
    let start = a
        .start
        .as_ref()
        .map(|t| as_utc(t, "appointment.start"))
        .transpose()?;
    // Latrexa needs an end: the HL7 end, else start + duration, else the start itself.
    let end = match (&a.end, &a.start) {
        (Some(e), _) => Some(as_utc(e, "appointment.end")?),
        (None, Some(_)) => start.clone(),
        (None, None) => None,
    };
    if let Some(list) = item
        .body
        .get_mut("appointments")
        .and_then(|v| v.as_array_mut())
    {
        for appt in list {
            if let Some(s) = &start {
                appt["start"] = serde_json::Value::String(s.clone());
            }
            if let Some(e) = &end {
                appt["end"] = serde_json::Value::String(e.clone());
            }
        }
    }
    Ok(())
}
