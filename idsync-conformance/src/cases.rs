//! The cases. Each returns `Ok(Verdict)` or a `Failure` saying what went wrong.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use futures::TryStreamExt;
use idsync_core::source::{collect_accounts, collect_orgs};
use idsync_core::{
    Account, Anchor, Engine, EntityKind, ErrorKind, ErrorStatus, Guard, Job, MemoryAdapter,
    MemoryStore, Op, OpKind, Org, PageRequest, Patch, Report, RunStatus, Sink, Source, SourceExt,
    Status,
};
use serde_json::Value;

use crate::Ctx;
use crate::content::Content;
use crate::fixture::{Fixture, account, account_anchor, org_anchor};

/// Every case, in the order [`run_all`](crate::run_all) runs them.
pub const CASES: &[&str] = &[
    "empty",
    "listing",
    "page_boundaries",
    "unicode",
    "deep_tree",
    "multi_org",
    "engine_into_sink",
    "moves_and_renames",
    "deletions",
    "engine_from_source",
    "cursor_resume",
    "bad_credentials",
    "throttled",
    "missing_entity",
    "lookups",
    "page_replay",
];

pub(crate) enum Verdict {
    Passed,
    Skipped(String),
}

pub(crate) struct Failure(pub(crate) String);

impl From<idsync_core::Error> for Failure {
    fn from(e: idsync_core::Error) -> Self {
        Failure(format!("unexpected error: {e}"))
    }
}

type CaseResult = Result<Verdict, Failure>;

macro_rules! ensure {
    ($cond:expr, $($arg:tt)+) => {
        if !$cond {
            return Err(Failure(format!($($arg)+)));
        }
    };
}

fn skip(why: impl Into<String>) -> CaseResult {
    Ok(Verdict::Skipped(why.into()))
}

fn ctx_err(what: &str) -> impl FnOnce(idsync_core::Error) -> Failure + '_ {
    move |e| Failure(format!("{what}: {e}"))
}

pub(crate) async fn run(cx: &Ctx<'_>, name: &str) -> CaseResult {
    match name {
        "empty" => Box::pin(empty(cx)).await,
        "listing" => Box::pin(listing(cx)).await,
        "page_boundaries" => Box::pin(page_boundaries(cx)).await,
        "unicode" => Box::pin(seeded_equals(cx, &Fixture::unicode())).await,
        "deep_tree" => Box::pin(deep_tree(cx)).await,
        "multi_org" => Box::pin(multi_org(cx)).await,
        "engine_into_sink" => Box::pin(engine_into_sink(cx)).await,
        "moves_and_renames" => Box::pin(moves_and_renames(cx)).await,
        "deletions" => Box::pin(deletions(cx)).await,
        "engine_from_source" => Box::pin(engine_from_source(cx)).await,
        "cursor_resume" => Box::pin(cursor_resume(cx)).await,
        "bad_credentials" => Box::pin(bad_credentials(cx)).await,
        "throttled" => Box::pin(throttled(cx)).await,
        "missing_entity" => Box::pin(missing_entity(cx)).await,
        "lookups" => Box::pin(lookups(cx)).await,
        "page_replay" => Box::pin(page_replay(cx)).await,
        other => Err(Failure(format!("no case named {other:?}"))),
    }
}

/// Everything a source lists, as content.
async fn content_of(cx: &Ctx<'_>, src: &dyn Source) -> Result<Content, Failure> {
    let orgs = if cx.caps.orgs {
        collect_orgs(src).await.map_err(ctx_err("listing orgs"))?
    } else {
        Vec::new()
    };
    let accounts = collect_accounts(src)
        .await
        .map_err(ctx_err("listing accounts"))?;
    Ok(Content::of(&orgs, &accounts))
}

fn expect_equal(
    cx: &Ctx<'_>,
    found: &Content,
    expected: &Content,
    when: &str,
) -> Result<(), Failure> {
    let d = if cx.caps.ordered_orgs {
        found.diff(expected, &cx.options.account_fields, cx.caps.orgs)
    } else {
        // The adapter keeps memberships as a set: no primary org to compare.
        found.orgs_as_sets().diff(
            &expected.orgs_as_sets(),
            &cx.options.account_fields,
            cx.caps.orgs,
        )
    };
    if d.is_empty() {
        return Ok(());
    }
    let shown: Vec<&String> = d.iter().take(20).collect();
    let mut msg = format!(
        "{when}: {} difference(s) from the expected content",
        d.len()
    );
    for line in shown {
        msg.push_str("\n  ");
        msg.push_str(line);
    }
    Err(Failure(msg))
}

fn need_readable(cx: &Ctx<'_>) -> Option<CaseResult> {
    (!cx.caps.readable).then(|| skip("the sink is not readable"))
}

async fn empty(cx: &Ctx<'_>) -> CaseResult {
    if let Some(s) = need_readable(cx) {
        return s;
    }
    let sink = cx.seed(&Fixture::empty()).await?;
    sink.check()
        .await
        .map_err(ctx_err("check() of an empty namespace"))?;
    let first = sink.accounts(PageRequest::first()).await?;
    ensure!(
        first.items.is_empty(),
        "the first account page of an empty namespace holds {} accounts",
        first.items.len()
    );
    if cx.caps.orgs {
        let first = sink.orgs(PageRequest::first()).await?;
        ensure!(
            first.items.is_empty(),
            "the first org page of an empty namespace holds {} orgs",
            first.items.len()
        );
    }
    let found = content_of(cx, &*sink).await?;
    expect_equal(cx, &found, &Content::default(), "empty namespace")?;
    Ok(Verdict::Passed)
}

async fn seeded_equals(cx: &Ctx<'_>, fx: &Fixture) -> CaseResult {
    if let Some(s) = need_readable(cx) {
        return s;
    }
    let fx = cx.fit(fx);
    let sink = cx.seed(&fx).await?;
    let found = content_of(cx, &*sink).await?;
    expect_equal(
        cx,
        &found,
        &Content::of(&fx.orgs, &fx.accounts),
        "after seeding",
    )?;
    Ok(Verdict::Passed)
}

async fn listing(cx: &Ctx<'_>) -> CaseResult {
    let fx = Fixture::org_chart(13, 40);
    let r = seeded_equals(cx, &fx).await?;
    if !matches!(r, Verdict::Passed) {
        return Ok(r);
    }
    // Point lookups agree with the listing.
    let fx = cx.fit(&fx);
    let sink = cx.seed(&fx).await?;
    let accounts = collect_accounts(&*sink).await?;
    let sample: Vec<Account> = accounts.iter().take(3).cloned().collect();
    for a in sample {
        let one = sink
            .account(&a.anchor)
            .await
            .map_err(ctx_err("account(anchor)"))?;
        ensure!(
            one.as_ref() == Some(&a),
            "account({}) returned {one:?}, the listing has {a:?}",
            a.anchor
        );
    }
    let with_email = accounts.iter().find(|a| a.email.is_some()).cloned();
    if let Some(a) = with_email {
        let email = a.email.clone().unwrap_or_default().to_uppercase();
        let found = sink
            .find_accounts("email", &email)
            .await
            .map_err(ctx_err("find_accounts(email)"))?;
        ensure!(
            found.len() == 1 && found[0].username == a.username,
            "find_accounts(\"email\", {email:?}) found {:?}, expected only {:?}",
            found.iter().map(|f| &f.username).collect::<Vec<_>>(),
            a.username
        );
    }
    if cx.caps.orgs {
        let orgs = collect_orgs(&*sink).await?;
        if let Some(o) = orgs.first().cloned() {
            let one = sink.org(&o.anchor).await.map_err(ctx_err("org(anchor)"))?;
            ensure!(
                one.as_ref() == Some(&o),
                "org({}) returned {one:?}, the listing has {o:?}",
                o.anchor
            );
        }
    }
    Ok(Verdict::Passed)
}

/// Which listing to page through.
#[derive(Clone, Copy)]
enum Listing {
    Orgs,
    Accounts,
}

/// Read a listing page by page with a fixed page size, checking the pages.
async fn read_pages(
    src: &dyn Source,
    listing: Listing,
    size: usize,
    expected_len: usize,
) -> Result<(Vec<Org>, Vec<Account>), Failure> {
    let what = match listing {
        Listing::Orgs => "orgs",
        Listing::Accounts => "accounts",
    };
    let mut req = PageRequest::sized(size);
    let mut orgs: Vec<Org> = Vec::new();
    let mut accounts: Vec<Account> = Vec::new();
    let mut seen = BTreeSet::new();
    let mut pages = 0usize;
    loop {
        pages += 1;
        ensure!(
            pages <= expected_len + 2,
            "{what} with page size {size}: more than {} pages for {expected_len} items",
            expected_len + 2
        );
        let fail =
            |e: idsync_core::Error| Failure(format!("{what} page {pages} (size {size}): {e}"));
        let (keys, next) = match listing {
            Listing::Orgs => {
                let page = src.orgs(req.clone()).await.map_err(fail)?;
                let keys: Vec<Anchor> = page.items.iter().map(|o| o.anchor.clone()).collect();
                orgs.extend(page.items);
                (keys, page.next)
            }
            Listing::Accounts => {
                let page = src.accounts(req.clone()).await.map_err(fail)?;
                let keys: Vec<Anchor> = page.items.iter().map(|a| a.anchor.clone()).collect();
                accounts.extend(page.items);
                (keys, page.next)
            }
        };
        ensure!(
            keys.len() <= size,
            "{what}: page {pages} holds {} items, more than the page size {size}",
            keys.len()
        );
        for k in keys {
            ensure!(
                seen.insert(k.clone()),
                "{what} with page size {size}: {k} listed twice"
            );
        }
        match next {
            Some(t) => req.token = Some(t),
            None => break,
        }
    }
    ensure!(
        seen.len() == expected_len,
        "{what} with page size {size}: {} items listed, {expected_len} seeded",
        seen.len()
    );
    Ok((orgs, accounts))
}

async fn page_boundaries(cx: &Ctx<'_>) -> CaseResult {
    if let Some(s) = need_readable(cx) {
        return s;
    }
    let mut sizes: Vec<usize> = cx
        .options
        .page_sizes
        .iter()
        .map(|s| cx.caps.max_page_size.map_or(*s, |m| (*s).min(m)).max(1))
        .collect();
    sizes.sort_unstable();
    sizes.dedup();
    for size in sizes {
        // An exact multiple (two full pages) and one more than a multiple.
        for n in [size * 2, size * 2 + 1] {
            let fx = cx.fit(&Fixture::flat(n));
            let sink = cx.seed(&fx).await?;
            let (_, accounts) =
                read_pages(&*sink, Listing::Accounts, size, fx.accounts.len()).await?;
            let orgs = if cx.caps.orgs {
                read_pages(&*sink, Listing::Orgs, size, fx.orgs.len())
                    .await?
                    .0
            } else {
                Vec::new()
            };
            expect_equal(
                cx,
                &Content::of(&orgs, &accounts),
                &Content::of(&fx.orgs, &fx.accounts),
                &format!("paged listing, page size {size}, {n} entities"),
            )?;
            // The stream built on pages sees the same.
            let streamed: Vec<Account> = sink.account_stream(Some(size)).try_collect().await?;
            ensure!(
                streamed.len() == n,
                "account_stream(Some({size})) yielded {} accounts, {n} seeded",
                streamed.len()
            );
        }
    }
    Ok(Verdict::Passed)
}

async fn deep_tree(cx: &Ctx<'_>) -> CaseResult {
    if !cx.caps.orgs {
        return skip("the adapter has no org tree");
    }
    let depth = cx.options.deep_tree_depth;
    let r = seeded_equals(cx, &Fixture::deep(depth)).await?;
    Ok(r)
}

async fn multi_org(cx: &Ctx<'_>) -> CaseResult {
    if !cx.caps.orgs {
        return skip("the adapter has no org tree");
    }
    if !cx.options.account_fields.contains(&"orgs") {
        return skip("the harness does not compare account memberships");
    }
    let fx = Fixture::multi_org();
    let sink = cx.seed(&fx).await?;
    let found = content_of(cx, &*sink).await?;
    let want = Content::of(&fx.orgs, &fx.accounts);
    for (u, w) in &want.accounts {
        let Some(g) = found.accounts.get(u) else {
            return Err(Failure(format!("account {u:?} missing")));
        };
        if !cx.caps.ordered_orgs {
            // no primary org to check: the memberships are compared as a set below
            continue;
        }
        ensure!(
            g.orgs.first() == w.orgs.first(),
            "account {u:?}: primary org is {:?}, expected {:?}",
            g.orgs.first(),
            w.orgs.first()
        );
    }
    expect_equal(cx, &found, &want, "accounts in several orgs")?;
    Ok(Verdict::Passed)
}

fn engine() -> Engine {
    Engine::new(Arc::new(MemoryStore::new()))
}

fn job(name: &str, source: Arc<dyn Source>, sink: Arc<dyn Sink>) -> Job {
    Job::new(name, source, sink).with_guard(Guard::off())
}

fn expect_succeeded(r: &Report, when: &str) -> Result<(), Failure> {
    if r.status == RunStatus::Succeeded && r.counts.failed == 0 && r.counts.skipped == 0 {
        return Ok(());
    }
    let mut msg = format!(
        "{when}: run ended {} ({} applied, {} failed, {} skipped)",
        r.status.as_str(),
        r.counts.applied,
        r.counts.failed,
        r.counts.skipped
    );
    for o in r.failures().take(10) {
        msg.push_str(&format!(
            "\n  {} {:?}: {}",
            o.op,
            o.anchor,
            o.error.as_ref().map_or("?", |e| e.message.as_str())
        ));
    }
    Err(Failure(msg))
}

async fn expect_nothing_planned(e: &Engine, j: &Job, when: &str) -> Result<(), Failure> {
    let plan = e.plan(j).await.map_err(ctx_err(when))?;
    if plan.ops.is_empty() {
        return Ok(());
    }
    let ops: Vec<String> = plan
        .ops
        .iter()
        .take(10)
        .map(|p| format!("{} {}", p.op.name(), p.op.anchor()))
        .collect();
    Err(Failure(format!(
        "{when}: {} op(s) planned, expected none: {}",
        plan.ops.len(),
        ops.join(", ")
    )))
}

fn need_writes(cx: &Ctx<'_>, needs: &[(&str, bool)]) -> Option<CaseResult> {
    if let Some(s) = need_readable(cx) {
        return Some(s);
    }
    needs
        .iter()
        .find(|(_, ok)| !ok)
        .map(|(what, _)| skip(format!("the sink cannot {what}")))
}

async fn engine_into_sink(cx: &Ctx<'_>) -> CaseResult {
    if let Some(s) = need_writes(
        cx,
        &[("create", cx.caps.create), ("update", cx.caps.update)],
    ) {
        return s;
    }
    let fx = cx.fit(&Fixture::org_chart(13, 30));
    let source = Arc::new(MemoryAdapter::with_data(
        "conformance-source",
        fx.orgs.clone(),
        fx.accounts.clone(),
    ));
    let sink = cx.seed(&Fixture::empty()).await?;
    let e = engine();
    let j = job("conformance-into-sink", source, sink.clone());
    let r = e.run(&j).await.map_err(ctx_err("first run"))?;
    expect_succeeded(&r, "first run")?;
    let found = content_of(cx, &*sink).await?;
    expect_equal(
        cx,
        &found,
        &Content::of(&fx.orgs, &fx.accounts),
        "after the first run",
    )?;
    expect_nothing_planned(&e, &j, "second run (applying the same data twice)").await?;
    Ok(Verdict::Passed)
}

/// Source anchor → target anchor, matched through content.
fn anchor_map(source: &Content, target: &Content) -> BTreeMap<Anchor, Anchor> {
    let mut m = BTreeMap::new();
    for (path, s) in &source.orgs {
        if let Some(t) = target.orgs.get(path) {
            m.insert(s.clone(), t.clone());
        }
    }
    for (u, s) in &source.account_anchors {
        if let Some(t) = target.account_anchors.get(u) {
            m.insert(s.clone(), t.clone());
        }
    }
    m
}

async fn moves_and_renames(cx: &Ctx<'_>) -> CaseResult {
    if !cx.caps.orgs {
        return skip("the adapter has no org tree");
    }
    if let Some(s) = need_writes(
        cx,
        &[
            ("create", cx.caps.create),
            ("update", cx.caps.update),
            ("move orgs", cx.caps.move_org),
        ],
    ) {
        return s;
    }
    let fx = Fixture::org_chart(7, 10);
    let source = Arc::new(MemoryAdapter::with_data(
        "conformance-source",
        fx.orgs.clone(),
        fx.accounts.clone(),
    ));
    let sink = cx.seed(&Fixture::empty()).await?;
    let e = engine();
    let j = job("conformance-moves", source.clone(), sink.clone());
    expect_succeeded(&e.run(&j).await.map_err(ctx_err("first run"))?, "first run")?;
    let before_src = content_of(cx, &*source).await?;
    let before = content_of(cx, &*sink).await?;
    let before_map = anchor_map(&before_src, &before);
    ensure!(
        before_map.len() == fx.orgs.len() + fx.accounts.len(),
        "after the first run only {} of {} entities are found in the sink",
        before_map.len(),
        fx.orgs.len() + fx.accounts.len()
    );

    // Rename o2, move o5 (under o1) to o3, change a title and a membership.
    source.edit(|d| {
        if let Some(o) = d.orgs.get_mut(&org_anchor(2)) {
            o.name = "改名 Renamed 2".into();
        }
        if let Some(o) = d.orgs.get_mut(&org_anchor(5)) {
            o.parent = Some(org_anchor(3));
        }
        if let Some(a) = d.accounts.get_mut(&account_anchor(3)) {
            a.title = Some("首席 Principal".into());
        }
        if let Some(a) = d.accounts.get_mut(&account_anchor(6)) {
            a.orgs = vec![org_anchor(4)];
        }
    })?;
    let r = e.run(&j).await.map_err(ctx_err("run after the moves"))?;
    expect_succeeded(&r, "run after the moves")?;
    let allowed = [OpKind::UpdateOrg, OpKind::MoveOrg, OpKind::UpdateAccount];
    for o in &r.outcomes {
        ensure!(
            allowed.contains(&o.op),
            "a rename/move produced {} {:?}; only update_org, move_org and update_account are allowed",
            o.op,
            o.anchor
        );
    }
    for want in allowed {
        ensure!(
            r.counts.by_op.get(&want).copied().unwrap_or(0) >= 1,
            "the run after the moves applied no {want} (applied: {:?})",
            r.counts.by_op
        );
    }
    let after_src = content_of(cx, &*source).await?;
    let after = content_of(cx, &*sink).await?;
    expect_equal(cx, &after, &after_src, "after the moves")?;
    let after_map = anchor_map(&after_src, &after);
    for (src, old) in &before_map {
        let new = after_map.get(src);
        ensure!(
            new == Some(old),
            "entity {src} had anchor {old} in the sink before the moves and {new:?} after"
        );
    }
    expect_nothing_planned(&e, &j, "run after the moves, again").await?;
    Ok(Verdict::Passed)
}

async fn deletions(cx: &Ctx<'_>) -> CaseResult {
    if let Some(s) = need_writes(
        cx,
        &[("create", cx.caps.create), ("disable", cx.caps.disable)],
    ) {
        return s;
    }
    let fx = cx.fit(&Fixture::org_chart(4, 6));
    let source = Arc::new(MemoryAdapter::with_data(
        "conformance-source",
        fx.orgs.clone(),
        fx.accounts.clone(),
    ));
    let sink = cx.seed(&Fixture::empty()).await?;
    let e = engine();
    let j = job("conformance-deletions", source.clone(), sink.clone());
    expect_succeeded(&e.run(&j).await.map_err(ctx_err("first run"))?, "first run")?;
    let gone = account_anchor(2);
    source.edit(|d| d.accounts.remove(&gone))?;
    let r = e.run(&j).await.map_err(ctx_err("run after the removal"))?;
    expect_succeeded(&r, "run after the removal")?;
    let ops: Vec<&str> = r.outcomes.iter().map(|o| o.op.as_str()).collect();
    ensure!(
        ops == ["disable_account"],
        "removing one account at the source applied {ops:?}, expected one disable_account"
    );
    let found = content_of(cx, &*sink).await?;
    let want = fx.clone().disable(&gone);
    expect_equal(
        cx,
        &found,
        &Content::of(&want.orgs, &want.accounts),
        "after the removal",
    )?;
    let user = fx
        .accounts
        .iter()
        .find(|a| a.anchor == gone)
        .map(|a| a.username.clone())
        .unwrap_or_default();
    ensure!(
        found.accounts.get(&user).map(|a| a.status) == Some(Status::Disabled),
        "account {user:?} is not disabled in the sink"
    );
    expect_nothing_planned(&e, &j, "run after the removal, again").await?;
    Ok(Verdict::Passed)
}

async fn engine_from_source(cx: &Ctx<'_>) -> CaseResult {
    if let Some(s) = need_readable(cx) {
        return s;
    }
    let fx = cx.fit(&Fixture::org_chart(13, 30));
    let adapter = cx.seed(&fx).await?;
    let memory = Arc::new(MemoryAdapter::new("conformance-sink"));
    let e = engine();
    let source: Arc<dyn Source> = adapter.clone();
    let j = job("conformance-from-source", source, memory.clone());
    let r = e.run(&j).await.map_err(ctx_err("first run"))?;
    expect_succeeded(&r, "first run")?;
    if cx.caps.changes {
        ensure!(
            r.cursor_committed,
            "the full run from a source that reports changes committed no cursor"
        );
    }
    let found = content_of(cx, &*memory).await?;
    expect_equal(
        cx,
        &found,
        &Content::of(&fx.orgs, &fx.accounts),
        "memory sink after the run",
    )?;
    expect_nothing_planned(&e, &j, "second run from the adapter").await?;

    // A change made in the adapter reaches the memory sink: incrementally when the
    // adapter reports changes, else through a full run.
    if cx.caps.update {
        let listed = content_of(cx, &*adapter).await?;
        let a1 = listed
            .account_anchors
            .get("user0001")
            .cloned()
            .ok_or_else(|| Failure("user0001 not listed by the adapter".into()))?;
        let mut patch = Patch::new();
        patch.insert("title".into(), Value::from("增量 Incremental"));
        cx.harness
            .mutate(
                &adapter,
                &Op::UpdateAccount {
                    anchor: a1,
                    changes: patch,
                },
            )
            .await
            .map_err(ctx_err("update in the adapter"))?;
        let (r, how) = if cx.caps.changes {
            (e.run_changes(&j).await, "incremental run")
        } else {
            (e.run(&j).await, "full run")
        };
        let r = r.map_err(ctx_err(how))?;
        expect_succeeded(&r, how)?;
        let ops: Vec<&str> = r.outcomes.iter().map(|o| o.op.as_str()).collect();
        ensure!(
            ops == ["update_account"],
            "{how} after one title change in the adapter applied {ops:?}, expected one update_account"
        );
        let now = content_of(cx, &*memory).await?;
        ensure!(
            now.accounts
                .get("user0001")
                .and_then(|a| a.title.as_deref())
                == Some("增量 Incremental"),
            "{how} did not carry the new title to the memory sink"
        );
    }

    // An account deleted in the adapter is disabled in the memory sink by a full run.
    if cx.caps.delete {
        let listed = content_of(cx, &*adapter).await?;
        let a2 = listed
            .account_anchors
            .get("user0002")
            .cloned()
            .ok_or_else(|| Failure("user0002 not listed by the adapter".into()))?;
        cx.harness
            .mutate(&adapter, &Op::DeleteAccount { anchor: a2 })
            .await
            .map_err(ctx_err("delete in the adapter"))?;
        let r = e.run(&j).await.map_err(ctx_err("run after a deletion"))?;
        expect_succeeded(&r, "run after a deletion in the adapter")?;
        let ops: Vec<&str> = r.outcomes.iter().map(|o| o.op.as_str()).collect();
        ensure!(
            ops == ["disable_account"],
            "a full run after one deletion in the adapter applied {ops:?}, expected one disable_account"
        );
        let now = content_of(cx, &*memory).await?;
        ensure!(
            now.accounts.get("user0002").map(|a| a.status) == Some(Status::Disabled),
            "the account deleted in the adapter is not disabled in the memory sink"
        );
    }
    Ok(Verdict::Passed)
}

async fn cursor_resume(cx: &Ctx<'_>) -> CaseResult {
    if !cx.caps.changes {
        return skip("the adapter does not report changes");
    }
    if let Some(s) = need_writes(cx, &[("update", cx.caps.update)]) {
        return s;
    }
    let fx = cx.fit(&Fixture::org_chart(4, 6));
    let sink = cx.seed(&fx).await?;
    let before = content_of(cx, &*sink).await?;
    let c0 = sink
        .current_cursor()
        .await
        .map_err(ctx_err("current_cursor"))?;

    let mut want_upserts: BTreeSet<String> = BTreeSet::new();
    let mut want_deletes: Vec<Anchor> = Vec::new();
    let h = cx.harness;
    let title_user = "user0001";
    let a1 = before
        .account_anchors
        .get(title_user)
        .cloned()
        .ok_or_else(|| Failure(format!("{title_user} not listed")))?;
    let mut patch = Patch::new();
    patch.insert("title".into(), Value::from("游标 Cursor"));
    h.mutate(
        &sink,
        &Op::UpdateAccount {
            anchor: a1,
            changes: patch,
        },
    )
    .await
    .map_err(ctx_err("update through the sink"))?;
    want_upserts.insert(title_user.into());
    if cx.caps.disable {
        let a2 = before
            .account_anchors
            .get("user0002")
            .cloned()
            .ok_or_else(|| Failure("user0002 not listed".into()))?;
        h.mutate(&sink, &Op::DisableAccount { anchor: a2 })
            .await
            .map_err(ctx_err("disable through the sink"))?;
        want_upserts.insert("user0002".into());
    }
    if cx.caps.create {
        let orgs = match before.orgs.keys().find(|p| p.len() == 1) {
            Some(root) if cx.caps.orgs => before.orgs.get(root).cloned().into_iter().collect(),
            _ => Vec::new(),
        };
        let new = account(100, orgs);
        let username = new.username.clone();
        h.mutate(&sink, &Op::CreateAccount { account: new })
            .await
            .map_err(ctx_err("create through the sink"))?;
        want_upserts.insert(username);
    }
    if cx.caps.delete {
        let a3 = before
            .account_anchors
            .get("user0003")
            .cloned()
            .ok_or_else(|| Failure("user0003 not listed".into()))?;
        h.mutate(&sink, &Op::DeleteAccount { anchor: a3.clone() })
            .await
            .map_err(ctx_err("delete through the sink"))?;
        want_deletes.push(a3);
    }

    let cs = sink
        .changes(&c0)
        .await
        .map_err(ctx_err("changes(cursor)"))?;
    ensure!(
        cs.complete,
        "changes(cursor) says the fresh cursor is stale"
    );
    let got: BTreeSet<String> = cs
        .account_upserts
        .iter()
        .map(|a| a.username.clone())
        .collect();
    ensure!(
        got == want_upserts,
        "changes(cursor) reported account upserts {got:?}, expected exactly {want_upserts:?}"
    );
    ensure!(
        cs.org_upserts.is_empty() && cs.org_deletes.is_empty(),
        "changes(cursor) reported org changes ({} upserts, {} deletes) though no org changed",
        cs.org_upserts.len(),
        cs.org_deletes.len()
    );
    let mut deletes = cs.account_deletes.clone();
    deletes.sort();
    ensure!(
        deletes == want_deletes,
        "changes(cursor) reported account deletes {deletes:?}, expected {want_deletes:?}"
    );
    if let Some(a) = cs.account_upserts.iter().find(|a| a.username == title_user) {
        ensure!(
            a.title.as_deref() == Some("游标 Cursor"),
            "the changed account is reported with title {:?}",
            a.title
        );
    }
    if let Some(a) = cs.account_upserts.iter().find(|a| a.username == "user0002") {
        ensure!(
            a.status == Status::Disabled,
            "the disabled account is reported {}",
            a.status.as_str()
        );
    }
    let Some(c1) = cs.cursor else {
        return Err(Failure("changes(cursor) returned no new cursor".into()));
    };
    let again = sink
        .changes(&c1)
        .await
        .map_err(ctx_err("changes(new cursor)"))?;
    ensure!(
        again.complete && again.is_empty(),
        "changes(new cursor) reported {} account and {} org upserts with nothing changed (complete: {})",
        again.account_upserts.len(),
        again.org_upserts.len(),
        again.complete
    );
    Ok(Verdict::Passed)
}

async fn bad_credentials(cx: &Ctx<'_>) -> CaseResult {
    let Some(src) = cx.harness.bad_credentials().await else {
        return skip("the harness offers no source with bad credentials");
    };
    let err = match src.check().await {
        Err(e) => e,
        Ok(()) => match src.accounts(PageRequest::first()).await {
            Err(e) => e,
            Ok(_) => {
                return Err(Failure(
                    "with bad credentials, check() and the first account page succeeded".into(),
                ));
            }
        },
    };
    ensure!(
        matches!(
            err.kind(),
            ErrorKind::Unauthenticated | ErrorKind::PermissionDenied
        ),
        "bad credentials gave kind {}, expected unauthenticated or permission_denied: {err}",
        err.kind()
    );
    ensure!(
        err.status() == ErrorStatus::Permanent,
        "bad credentials gave status {:?}, expected Permanent: {err}",
        err.status()
    );
    Ok(Verdict::Passed)
}

async fn throttled(cx: &Ctx<'_>) -> CaseResult {
    let Some(src) = cx.harness.throttled().await else {
        return skip("the harness offers no throttled source");
    };
    let Err(err) = src.accounts(PageRequest::first()).await else {
        return Err(Failure("the throttled source served a page".into()));
    };
    ensure!(
        err.kind() == ErrorKind::RateLimited,
        "throttling gave kind {}, expected rate_limited: {err}",
        err.kind()
    );
    ensure!(
        err.is_temporary(),
        "throttling gave status {:?}, expected Temporary: {err}",
        err.status()
    );
    Ok(Verdict::Passed)
}

async fn missing_entity(cx: &Ctx<'_>) -> CaseResult {
    if let Some(s) = need_writes(cx, &[("update", cx.caps.update)]) {
        return s;
    }
    let fx = cx.fit(&Fixture::flat(2));
    let sink = cx.seed(&fx).await?;
    let missing = cx.harness.missing_anchor(EntityKind::Account);
    let found = sink
        .account(&missing)
        .await
        .map_err(ctx_err("account(missing anchor)"))?;
    ensure!(found.is_none(), "account({missing}) found {found:?}");
    let mut patch = Patch::new();
    patch.insert("title".into(), Value::from("nobody"));
    let mut ops = vec![Op::UpdateAccount {
        anchor: missing.clone(),
        changes: patch,
    }];
    if cx.caps.disable {
        ops.push(Op::DisableAccount {
            anchor: missing.clone(),
        });
    }
    if cx.caps.orgs {
        let org = cx.harness.missing_anchor(EntityKind::Org);
        let mut p = Patch::new();
        p.insert("name".into(), Value::from("nowhere"));
        ops.push(Op::UpdateOrg {
            anchor: org,
            changes: p,
        });
    }
    for op in ops {
        match sink.apply(&op).await {
            Ok(a) => {
                return Err(Failure(format!(
                    "{} of a missing anchor succeeded ({a:?})",
                    op.name()
                )));
            }
            Err(e) => ensure!(
                e.kind() == ErrorKind::NotFound,
                "{} of a missing anchor gave kind {}, expected not_found: {e}",
                op.name(),
                e.kind()
            ),
        }
    }
    // Nothing was created by the failed ops.
    let after = content_of(cx, &*sink).await?;
    expect_equal(
        cx,
        &after,
        &Content::of(&fx.orgs, &fx.accounts),
        "after the failed ops",
    )?;
    Ok(Verdict::Passed)
}

/// `org`, `account` and `find_accounts` find single entities without listing.
async fn lookups(cx: &Ctx<'_>) -> CaseResult {
    if let Some(s) = need_readable(cx) {
        return s;
    }
    let fx = cx.fit(&Fixture::flat(5));
    let sink = cx.seed(&fx).await?;
    let accounts = collect_accounts(&*sink).await?;
    let orgs = if cx.caps.orgs {
        collect_orgs(&*sink).await?
    } else {
        Vec::new()
    };
    ensure!(
        accounts.len() == 5,
        "listed {} accounts, 5 seeded",
        accounts.len()
    );
    let before = cx.harness.listing_reads();
    for a in accounts.iter().take(2) {
        let got = sink
            .account(&a.anchor)
            .await
            .map_err(ctx_err("account(anchor)"))?;
        ensure!(
            got.as_ref().map(|g| (&g.anchor, &g.username)) == Some((&a.anchor, &a.username)),
            "account({}) found {got:?}, the listing has {a:?}",
            a.anchor
        );
        // Correlation values compare trimmed and case-folded.
        let asked = format!("  {}  ", a.username.to_uppercase());
        match sink.find_accounts("username", &asked).await {
            Ok(found) => {
                let anchors: Vec<&Anchor> = found.iter().map(|f| &f.anchor).collect();
                ensure!(
                    anchors == vec![&a.anchor],
                    "find_accounts(username, {asked:?}) found {anchors:?}, want [{}]",
                    a.anchor
                );
            }
            Err(e) if e.kind() == ErrorKind::Unsupported => {}
            Err(e) => return Err(Failure(format!("find_accounts(username): {e}"))),
        }
    }
    let missing = cx.harness.missing_anchor(EntityKind::Account);
    let got = sink
        .account(&missing)
        .await
        .map_err(ctx_err("account(missing)"))?;
    ensure!(got.is_none(), "account({missing}) found {got:?}");
    match sink
        .find_accounts("username", "idsync-nobody-has-this-name")
        .await
    {
        Ok(found) => ensure!(found.is_empty(), "find_accounts(nobody) found {found:?}"),
        Err(e) if e.kind() == ErrorKind::Unsupported => {}
        Err(e) => return Err(Failure(format!("find_accounts(username): {e}"))),
    }
    if let Some(o) = orgs.first() {
        let got = sink.org(&o.anchor).await.map_err(ctx_err("org(anchor)"))?;
        ensure!(
            got.as_ref().map(|g| (&g.anchor, &g.name)) == Some((&o.anchor, &o.name)),
            "org({}) found {got:?}, the listing has {o:?}",
            o.anchor
        );
        let missing = cx.harness.missing_anchor(EntityKind::Org);
        let got = sink.org(&missing).await.map_err(ctx_err("org(missing)"))?;
        ensure!(got.is_none(), "org({missing}) found {got:?}");
    }
    if let (Some(b), Some(a)) = (before, cx.harness.listing_reads()) {
        ensure!(
            a == b,
            "single-entity lookups read {} listing pages; they must look entities up directly",
            a - b
        );
    }
    Ok(Verdict::Passed)
}

/// A page token can be read again: the same items, the same next token.
async fn page_replay(cx: &Ctx<'_>) -> CaseResult {
    if let Some(s) = need_readable(cx) {
        return s;
    }
    let size = cx.caps.max_page_size.map_or(2, |m| m.clamp(1, 2));
    let fx = cx.fit(&Fixture::flat(5));
    let sink = cx.seed(&fx).await?;
    let first = sink.accounts(PageRequest::sized(size)).await?;
    let Some(token) = first.next.clone() else {
        return Err(Failure(format!(
            "5 accounts at page size {size} came back in one page"
        )));
    };
    let req = PageRequest {
        token: Some(token.clone()),
        size: Some(size),
    };
    let once = sink
        .accounts(req.clone())
        .await
        .map_err(ctx_err("page 2"))?;
    let twice = sink
        .accounts(req.clone())
        .await
        .map_err(ctx_err("page 2 read again"))?;
    let anchors = |p: &idsync_core::Page<Account>| {
        p.items.iter().map(|a| a.anchor.clone()).collect::<Vec<_>>()
    };
    ensure!(
        anchors(&once) == anchors(&twice),
        "page {token:?} read twice gave {:?} then {:?}",
        anchors(&once),
        anchors(&twice)
    );
    ensure!(
        once.next.is_some() == twice.next.is_some(),
        "page {token:?} read twice: next {:?} then {:?}",
        once.next,
        twice.next
    );
    // The listing goes on from the replayed page and ends complete, without duplicates.
    let mut seen: Vec<Anchor> = anchors(&first);
    seen.extend(anchors(&twice));
    let mut next = twice.next;
    while let Some(t) = next {
        let p = sink
            .accounts(PageRequest {
                token: Some(t),
                size: Some(size),
            })
            .await?;
        seen.extend(anchors(&p));
        next = p.next;
    }
    let n = seen.len();
    seen.sort();
    seen.dedup();
    ensure!(
        n == 5 && seen.len() == 5,
        "after a replayed page the listing had {n} accounts ({} distinct), 5 seeded",
        seen.len()
    );
    Ok(Verdict::Passed)
}
