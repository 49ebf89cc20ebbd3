//! Vendor payloads: a canonical event rendered for a cloud clinic API (`opsport`, `buktor`,
//! `px360`, `latrexa`) through `transforms::dest`, with the destination's options, then the
//! destination's `[destination.mapping]`, then the route's `mapping`.
//!
//! A vendor payload may be sent to a destination of another kind (a `webhook` with
//! `payload = "opsport"`): the vendor's default options are used then.

use channels::destination::DestinationConfig;
use transforms::dest::px360::Px360Options;
use transforms::dest::{MappingError, Rendered};
use transforms::journey::Timeline;
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
    render_with(vendor, dest, event, None, route_mapping)
}

/// The PX360 options of a destination (the defaults for a destination of another kind).
pub fn px360_options(dest: Option<&DestinationConfig>) -> std::borrow::Cow<'_, Px360Options> {
    match dest {
        Some(DestinationConfig::Px360(c)) => std::borrow::Cow::Borrowed(&c.options),
        _ => std::borrow::Cow::Owned(Px360Options::default()),
    }
}

/// [`render`], with the visit's stored timeline for PX360 (`None`: the event's own steps).
///
/// # Errors
///
/// As [`render`].
pub fn render_with(
    vendor: &str,
    dest: Option<&DestinationConfig>,
    event: &Event,
    timeline: Option<&Timeline>,
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
        ("px360", _) => {
            let opts = px360_options(dest);
            let items = match timeline {
                Some(t) => transforms::dest::px360::render_journey(event, t, &opts)?,
                None => transforms::dest::px360::render(event, &opts)?,
            };
            let mapping = match dest {
                Some(DestinationConfig::Px360(c)) => Some(&c.mapping),
                _ => None,
            };
            (items, mapping)
        }
        // Latrexa takes the HIS's local times (`YYYY-MM-DDTHH:MM:SS`), as rendered.
        ("latrexa", Some(DestinationConfig::Latrexa(c))) => {
            let mut items = transforms::dest::latrexa::render(event)?;
            if c.walk_in_registrations {
                items.extend(transforms::dest::latrexa::render_walk_in(event)?);
            }
            (items, Some(&c.mapping))
        }
        ("latrexa", _) => (transforms::dest::latrexa::render(event)?, None),
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
