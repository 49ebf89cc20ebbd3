//! Building a channel's source: the one place each `SourceConfig` kind is started.
//!
//! One match arm per [`SourceConfig`] variant, never a `_` arm, so that a new kind of
//! source is added here and nowhere else in the runtime.

use crate::config::SourceConfig;
use channels::mllp::listener::ListenerTask;
use channels::source::{BuildError, SourceContext};

/// Checks, binds and starts a channel's source.
///
/// # Errors
///
/// [`BuildError`] when it cannot bind or its settings are refused at build time.
pub async fn build_source(
    source: &SourceConfig,
    cx: SourceContext,
) -> Result<ListenerTask, BuildError> {
    match source {
        SourceConfig::MllpListener(l) => l.build(cx).await,
    }
}

/// The `type` of a `[source]` table, as the admin API shows it.
pub fn source_type(source: &SourceConfig) -> &'static str {
    match source {
        SourceConfig::MllpListener(_) => "mllp_listener",
    }
}
