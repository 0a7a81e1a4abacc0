//! [`TracingLayer`]: a span per call; provider and operation on every error.

use std::fmt;
use std::future::Future;
use std::sync::Arc;

use tracing::Instrument;

use super::{Call, Layer, layered};
use crate::error::Result;
use crate::source::{Applied, Op, Sink, Source};

/// Runs every call in a `tracing` span (`idsync.call`, with `provider`, `instance` and
/// `operation` fields), logs failures at `debug`, and adds the provider and operation to
/// every error that lacks them ([`Error::with_provider`], [`Error::with_operation`]).
///
/// [`Error::with_provider`]: crate::Error::with_provider
/// [`Error::with_operation`]: crate::Error::with_operation
#[derive(Debug, Clone, Copy, Default)]
pub struct TracingLayer;

impl TracingLayer {
    /// The layer.
    pub fn new() -> Self {
        TracingLayer
    }
}

impl Layer for TracingLayer {
    fn layer_source(&self, inner: Arc<dyn Source>) -> Arc<dyn Source> {
        let d = inner.describe();
        Arc::new(Traced {
            inner,
            provider: d.provider,
            instance: d.instance,
        })
    }

    fn layer_sink(&self, inner: Arc<dyn Sink>) -> Arc<dyn Sink> {
        let d = inner.describe();
        Arc::new(Traced {
            inner,
            provider: d.provider,
            instance: d.instance,
        })
    }
}

/// A source or sink wrapped by [`TracingLayer`].
pub struct Traced<S: ?Sized> {
    inner: Arc<S>,
    provider: String,
    instance: String,
}

impl<S: ?Sized + fmt::Debug> fmt::Debug for Traced<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Traced")
            .field("inner", &self.inner)
            .finish()
    }
}

impl<S: ?Sized> Traced<S> {
    async fn around<'a, T, F, Fut>(&'a self, call: Call<'a>, f: F) -> Result<T>
    where
        F: Fn() -> Fut + Send + Sync,
        Fut: Future<Output = Result<T>> + Send,
    {
        let span = tracing::debug_span!(
            "idsync.call",
            provider = %self.provider,
            instance = %self.instance,
            operation = call.name,
            anchor = call.op.map(|o| o.anchor().as_str()).unwrap_or(""),
        );
        async {
            f().await.map_err(|e| {
                let e = e
                    .with_provider(self.provider.clone())
                    .with_operation(call.name);
                tracing::debug!(error = %e, kind = %e.kind(), "call failed");
                e
            })
        }
        .instrument(span)
        .await
    }
}

impl<S: ?Sized + Sink> Traced<S> {
    async fn around_apply(&self, op: &Op) -> Result<Applied> {
        self.around(Call::write(op), || self.inner.apply(op)).await
    }
}

layered!(Traced);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::{Error, ErrorKind};
    use crate::layers::testing::Scripted;
    use crate::memory::MemoryAdapter;
    use crate::source::PageRequest;

    #[tokio::test]
    async fn errors_name_provider_and_operation() {
        let inner = Arc::new(
            Scripted::new(MemoryAdapter::new("m"))
                .failing(vec![Error::new(ErrorKind::Unavailable, "down")]),
        );
        let s = TracingLayer::new().layer_source(inner);
        let e = s.accounts(PageRequest::first()).await.unwrap_err();
        assert_eq!(e.provider(), Some("scripted"));
        assert_eq!(e.operation(), Some("accounts"));
        assert!(e.to_string().contains("scripted accounts"), "{e}");
        // What the adapter said is kept.
        let inner = Arc::new(Scripted::new(MemoryAdapter::new("m")).failing(vec![
            Error::new(ErrorKind::Unavailable, "down")
                .with_provider("ldap")
                .with_operation("search"),
        ]));
        let s = TracingLayer::new().layer_source(inner);
        let e = s.check().await.unwrap_err();
        assert_eq!(e.provider(), Some("ldap"));
        assert_eq!(e.operation(), Some("search"));
        // Writes are named by their op; the memory adapter's own errors get an operation.
        let sink = TracingLayer::new().layer_sink(Arc::new(MemoryAdapter::new("m")));
        let e = sink
            .apply(&Op::DisableAccount {
                anchor: "nobody".into(),
            })
            .await
            .unwrap_err();
        assert_eq!(e.kind(), ErrorKind::NotFound);
        assert_eq!(e.provider(), Some("memory"));
        assert_eq!(e.operation(), Some("disable_account"));
        // Successful calls pass through.
        assert!(sink.check().await.is_ok());
    }
}
