//! Reading both sides for a plan: listings as streams (the sink's, or the store's shadow
//! copy of a sink that cannot be read), read-ahead tasks that use the second core, a job's
//! links, and the one error every failed read becomes.

use std::sync::Arc;

use futures::stream::{BoxStream, StreamExt, TryStreamExt};
use rustc_hash::FxHashMap;

use crate::engine::{Engine, Job};
use crate::error::{Error, ErrorKind, Result};
use crate::model::{Account, Anchor, EntityKind, Org};
use crate::source::{PageRequest, Source, SourceExt};

pub(super) async fn load_links<V>(
    engine: &Engine,
    job: &str,
    kind: EntityKind,
    value: impl Fn(Anchor) -> V,
) -> Result<FxHashMap<Anchor, V>> {
    let mut out = FxHashMap::default();
    let mut req = PageRequest::sized(10_000);
    loop {
        let page = engine.store.links(job, kind, req.clone()).await?;
        out.extend(page.items.into_iter().map(|l| (l.source, value(l.target))));
        match page.next {
            Some(t) => req.token = Some(t),
            None => return Ok(out),
        }
    }
}

pub(super) fn shadow_stream<T: serde::de::DeserializeOwned + Send + 'static>(
    engine: &Engine,
    job: &str,
    kind: EntityKind,
) -> BoxStream<'static, Result<T>> {
    let store = engine.store.clone();
    let job = job.to_owned();
    crate::source::paged(
        Some(1000),
        move |req| {
            let store = store.clone();
            let job = job.clone();
            async move { store.shadow(&job, kind, req).await }
        },
        "shadow",
    )
    .and_then(|v| async move { serde_json::from_value::<T>(v).map_err(Error::from) })
    .boxed()
}

pub(super) fn target_orgs<'a>(engine: &'a Engine, job: &'a Job) -> BoxStream<'a, Result<Org>> {
    if job.target.capabilities().readable {
        job.target.as_source().org_stream(job.page_size)
    } else {
        shadow_stream(engine, &job.name, EntityKind::Org)
    }
}

/// The target's accounts (the sink's listing, or the shadow copies of a sink that cannot
/// be read), as a stream that owns what it reads from.
pub(super) fn target_accounts(engine: &Engine, job: &Job) -> BoxStream<'static, Result<Account>> {
    if job.target.capabilities().readable {
        owned_accounts(job.target.to_source(), job.page_size)
    } else {
        shadow_stream(engine, &job.name, EntityKind::Account)
    }
}

/// All accounts of a source, as a stream that owns the source (`'static`, so that a task
/// of its own can read it).
pub(super) fn owned_accounts<S: Source + ?Sized + 'static>(
    src: Arc<S>,
    page_size: Option<usize>,
) -> BoxStream<'static, Result<Account>> {
    crate::source::paged(
        page_size,
        move |req| {
            let src = src.clone();
            async move { src.accounts(req).await }
        },
        "accounts",
    )
}

/// The accounts a planner takes at once: enough for the lookups of a batch to overlap.
pub(super) const BATCH: usize = 256;

/// A stream of items as batches of up to [`BATCH`].
pub(super) fn batches<T: Send + 'static>(
    s: BoxStream<'_, Result<T>>,
) -> BoxStream<'_, Result<Vec<T>>> {
    s.try_chunks(BATCH).map_err(|e| e.1).boxed()
}

/// What a read-ahead task sends.
pub(super) enum Ahead<T> {
    Batch(Vec<T>),
    Failed(Error),
    End,
}

/// Aborts the read-ahead task when the planner stops early (an error, a dropped future).
pub(super) struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Where the planner hands back items it is done with: to the read-ahead task, which
/// frees them on its own core (freeing is a good part of a million accounts' cost, and
/// an allocator frees fastest on the thread that allocated).
pub(super) struct Spent<T>(Option<tokio::sync::mpsc::UnboundedSender<Vec<T>>>);

impl<T> Spent<T> {
    pub(super) fn give(&self, items: Vec<T>) {
        if let Some(tx) = &self.0 {
            // Once the task has ended, the items are freed here.
            let _ = tx.send(items);
        }
    }
}

/// Batches of a listing read by a task of their own, a few batches ahead of the planner,
/// so that reading (the provider's I/O, decoding, copying) and planning use two cores;
/// the task also frees what the planner hands back through [`Spent`].
/// The listing counts as complete only when the task says it ended: a task that stops
/// otherwise (a panic in an adapter, the runtime shutting down) is an incomplete read.
/// Outside a tokio runtime the listing is read inline.
pub(super) fn read_ahead<T: Send + 'static>(
    listing: BoxStream<'static, Result<T>>,
) -> (BoxStream<'static, Result<Vec<T>>>, Spent<T>) {
    let Ok(rt) = tokio::runtime::Handle::try_current() else {
        return (batches(listing), Spent(None));
    };
    let (tx, rx) = tokio::sync::mpsc::channel::<Ahead<T>>(4);
    let (spent_tx, mut spent_rx) = tokio::sync::mpsc::unbounded_channel::<Vec<T>>();
    let task = rt.spawn(async move {
        let mut s = batches(listing);
        loop {
            while let Ok(items) = spent_rx.try_recv() {
                drop(items);
            }
            let msg = match s.next().await {
                Some(Ok(batch)) => Ahead::Batch(batch),
                Some(Err(e)) => Ahead::Failed(e),
                None => Ahead::End,
            };
            let last = !matches!(msg, Ahead::Batch(_));
            // Free what comes back while waiting for room in the channel.
            let permit = loop {
                tokio::select! {
                    biased;
                    permit = tx.reserve() => break permit,
                    Some(items) = spent_rx.recv() => drop(items),
                }
            };
            match permit {
                Ok(permit) => permit.send(msg),
                Err(_) => return,
            }
            if last {
                return;
            }
        }
    });
    let state = (rx, AbortOnDrop(task), false);
    let stream = futures::stream::unfold(state, |(mut rx, task, done)| async move {
        if done {
            return None;
        }
        match rx.recv().await {
            Some(Ahead::Batch(b)) => Some((Ok(b), (rx, task, false))),
            Some(Ahead::Failed(e)) => Some((Err(e), (rx, task, true))),
            Some(Ahead::End) => None,
            None => Some((
                Err(Error::new(
                    ErrorKind::Incomplete,
                    "the listing stopped before its end (its reading task ended)",
                )),
                (rx, task, true),
            )),
        }
    })
    .boxed();
    (stream, Spent(Some(spent_tx)))
}

pub(super) fn read_err(side: &str, what: &str, e: Error) -> Error {
    let status = e.status();
    // Transport trouble means the listing ended early; bad data, bad credentials and the
    // like keep their kind.
    let kind = match e.kind() {
        ErrorKind::Unavailable | ErrorKind::RateLimited | ErrorKind::Unexpected => {
            ErrorKind::Incomplete
        }
        k => k,
    };
    Error::new(
        kind,
        format!("reading {what} from the {side} failed; nothing was planned: {e}"),
    )
    .with_status(status)
    .with_source(e)
}
