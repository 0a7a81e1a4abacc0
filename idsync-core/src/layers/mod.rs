//! Layers wrap any [`Source`] or [`Sink`] from the outside, as `tower` layers wrap
//! services: retry, rate limit, concurrency limit, timeout. Adapters contain no retry loops.

use std::sync::Arc;

use crate::source::{Sink, Source};

/// Wraps sources and sinks.
pub trait Layer: Send + Sync + std::fmt::Debug {
    /// Wrap a source.
    fn layer_source(&self, inner: Arc<dyn Source>) -> Arc<dyn Source>;
    /// Wrap a sink.
    fn layer_sink(&self, inner: Arc<dyn Sink>) -> Arc<dyn Sink>;
}
