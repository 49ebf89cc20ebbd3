//! Vendor payloads: a canonical event rendered for a cloud clinic API (`opsport`, `buktor`,
//! `px360`, `latrexa`) through `transforms::dest`, with the destination's options, then the
//! destination's `[destination.mapping]`, then the route's `mapping`.
//!
//! A vendor payload may be sent to a destination of another kind (a `webhook` with
//! `payload = "opsport"`): the vendor's default options are used then.

use channels::destination::DestinationConfig;
use transforms::dest::px360::Px360Options;
use transforms::dest::{MappingError, Rendered, Vendor};
use transforms::journey::Timeline;
use transforms::mapping::FieldMapping;
use transforms::model::Event;

/// Renders `event` as the requests of `vendor`, in the order they must be sent.
///
/// # Errors
///
/// [`MappingError`] naming the field path and the reason (never patient data).
pub fn render(
    vendor: Vendor,
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

/// [`render`], with the visit's stored timeline for PX360 (`None`: the event's own steps),
/// through [`transforms::dest::render`].
///
/// # Errors
///
/// As [`render`].
pub fn render_with(
    vendor: Vendor,
    dest: Option<&DestinationConfig>,
    event: &Event,
    timeline: Option<&Timeline>,
    route_mapping: Option<&FieldMapping>,
) -> Result<Vec<Rendered>, MappingError> {
    let (options, dest_mapping) = match dest
        .and_then(DestinationConfig::vendor_options)
        .filter(|(o, _)| o.vendor() == vendor)
    {
        Some((options, mapping)) => (options, Some(mapping)),
        None => (vendor.default_options(), None),
    };
    let mut items = transforms::dest::render(&options, event, timeline)?;
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
