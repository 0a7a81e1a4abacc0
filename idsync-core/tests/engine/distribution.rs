//! Two-way distribution through the hub and field authority, on two memory spokes.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use idsync_core::engine::{Distribution, DistributionReport, JobOutcome};
use idsync_core::*;

use super::{org, person};

struct Spokes {
    a: Arc<MemoryAdapter>,
    b: Arc<MemoryAdapter>,
    b_pages: Arc<AtomicU64>,
    store: Arc<dyn Store>,
    dist: Distribution,
}

/// Spoke A holds the data (its anchors become the hub's); spoke B starts empty and assigns
/// anchors of its own. Four jobs: a-in, b-in, hub-a, hub-b.
fn spokes(authority: Option<FieldAuthority>) -> Spokes {
    let orgs = vec![
        org("corp", None, "Corp"),
        org("sales", Some("corp"), "Sales"),
        org("rd", Some("corp"), "RD"),
    ];
    let accounts = vec![
        person("1", "alice", &["sales"]),
        person("2", "bob", &["rd"]),
    ];
    let a = Arc::new(MemoryAdapter::with_data("a", orgs, accounts));
    let b_pages = Arc::new(AtomicU64::new(0));
    let b = Arc::new(
        MemoryAdapter::new("b")
            .assigning_anchors()
            .with_page_counter(b_pages.clone()),
    );
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let hub = Arc::new(Hub::new(store.clone()));
    let job = |name: &str, src: Arc<dyn Source>, tgt: Target| {
        Job::new(name, src, tgt).with_guard(Guard::off())
    };
    let mut dist = Distribution::new(Engine::new(store.clone()))
        .with_job(job("a-in", a.clone(), hub.clone().into()))
        .unwrap()
        .with_job(job("b-in", b.clone(), hub.clone().into()))
        .unwrap()
        .with_job(job("hub-a", hub.clone(), a.clone().into()))
        .unwrap()
        .with_job(job("hub-b", hub, b.clone().into()))
        .unwrap();
    if let Some(auth) = authority {
        dist = dist.with_authority(auth).unwrap();
    }
    Spokes {
        a,
        b,
        b_pages,
        store,
        dist,
    }
}

fn ran<'a>(r: &'a DistributionReport, job: &str) -> &'a Report {
    r.job(job)
        .and_then(|j| j.report())
        .unwrap_or_else(|| panic!("job {job} did not run: {r:#?}"))
}

fn b_account(s: &Spokes, username: &str) -> Account {
    s.b.snapshot()
        .unwrap()
        .accounts
        .into_values()
        .find(|a| a.username == username)
        .unwrap_or_else(|| panic!("no {username} in B"))
}

fn b_org(s: &Spokes, name: &str) -> Org {
    s.b.snapshot()
        .unwrap()
        .orgs
        .into_values()
        .find(|o| o.name == name)
        .unwrap_or_else(|| panic!("no org {name} in B"))
}

/// One cycle after a rename and a move in a spoke: `inbound` applies both, `outbound`
/// takes them to the other spoke, and `back` (to where they came from) plans nothing.
async fn travelled(s: &Spokes, inbound: &str, outbound: &str, back: &str) {
    let r = s.dist.cycle().await;
    assert_eq!(r.failed().count(), 0, "{r:#?}");
    assert_eq!(ran(&r, inbound).counts.applied, 2, "{r:#?}");
    let out = ran(&r, outbound);
    assert_eq!(
        out.counts.by_op.get(&OpKind::UpdateOrg),
        Some(&1),
        "{out:#?}"
    );
    assert_eq!(out.counts.by_op.get(&OpKind::UpdateAccount), Some(&1));
    assert_eq!(
        ran(&r, back).counts.planned,
        0,
        "{back} is where it came from"
    );
}

async fn settle(s: &Spokes) {
    let first = s.dist.cycle().await;
    assert_eq!(first.failed().count(), 0, "{first:#?}");
    assert_eq!(ran(&first, "a-in").counts.applied, 5, "{first:#?}");
    assert_eq!(
        ran(&first, "hub-b").counts.applied,
        5,
        "3 orgs and 2 accounts reach B"
    );
    assert_eq!(ran(&first, "hub-a").counts.planned, 0, "A already agrees");
    // B's echo of those creates comes back to b-in: links, no op; the feed does not move.
    let echo = s.dist.cycle().await;
    assert!(echo.is_quiet(), "{echo:#?}");
    assert!(ran(&echo, "b-in").counts.linked >= 2, "{echo:#?}");
    assert!(matches!(
        echo.job("hub-b").unwrap().outcome,
        JobOutcome::UpToDate
    ));
}

#[tokio::test]
async fn changes_travel_both_ways_through_the_hub_and_echoes_stop() {
    let s = spokes(None);
    settle(&s).await;

    // A: rename an org, move an account.
    let pages = s.b_pages.load(std::sync::atomic::Ordering::Relaxed);
    s.a.edit(|d| {
        d.orgs.get_mut(&Anchor::from("rd")).unwrap().name = "Research".into();
        d.accounts.get_mut(&Anchor::from("1")).unwrap().orgs = vec!["rd".into()];
    })
    .unwrap();
    travelled(&s, "a-in", "hub-b", "hub-a").await;
    let research = b_org(&s, "Research");
    assert_eq!(b_account(&s, "alice").orgs, vec![research.anchor.clone()]);
    // B's echo: nothing, and then a quiet hub.
    let echo = s.dist.cycle().await;
    assert!(echo.is_quiet(), "{echo:#?}");
    assert_eq!(ran(&echo, "b-in").counts.planned, 0);

    // B: rename an org, move an account (as an admin would in B's console).
    let sales_b = b_org(&s, "Sales").anchor;
    let bob_b = b_account(&s, "bob").anchor;
    s.b.edit(|d| {
        d.orgs.get_mut(&sales_b).unwrap().name = "Vertrieb".into();
        d.accounts.get_mut(&bob_b).unwrap().orgs = vec![sales_b.clone()];
    })
    .unwrap();
    travelled(&s, "b-in", "hub-a", "hub-b").await;
    let a = s.a.snapshot().unwrap();
    assert_eq!(a.orgs[&Anchor::from("sales")].name, "Vertrieb");
    assert_eq!(
        a.accounts[&Anchor::from("2")].orgs,
        vec![Anchor::from("sales")]
    );
    // Since the first pass B was never listed: b-in read B's changes, hub-b read the hub's
    // feed and looked B's linked orgs and accounts up by anchor.
    let listed = s.b_pages.load(std::sync::atomic::Ordering::Relaxed) - pages;
    assert_eq!(listed, 0, "B listed {listed} pages");

    // A's echo, then quiet; a further cycle plans nothing and runs no outbound job.
    let echo = s.dist.cycle().await;
    assert!(echo.is_quiet(), "{echo:#?}");
    let quiet = s.dist.cycle().await;
    assert!(quiet.is_quiet(), "{quiet:#?}");
    assert_eq!(quiet.planned(), 0);
    assert!(s.dist.outbound_due().await.unwrap().is_empty());
    let hub_sales = s.store.hub_org(&"sales".into()).await.unwrap().unwrap();
    assert_eq!(hub_sales.name, "Vertrieb");
}

#[tokio::test]
async fn a_non_owner_write_is_refused_and_reported_and_owned_fields_still_flow() {
    let mut auth = FieldAuthority::new();
    auth.set(EntityKind::Account, "display_name", "a-in")
        .unwrap();
    auth.set(EntityKind::Org, "parent", "a-in").unwrap();
    let s = spokes(Some(auth));
    settle(&s).await;

    // B changes a name A owns, a title nobody owns, and moves an org under another.
    let alice_b = b_account(&s, "alice").anchor;
    let rd_b = b_org(&s, "RD").anchor;
    let sales_b = b_org(&s, "Sales").anchor;
    s.b.edit(|d| {
        let a = d.accounts.get_mut(&alice_b).unwrap();
        a.display_name = Some("Alice from B".into());
        a.title = Some("Lead".into());
        d.orgs.get_mut(&rd_b).unwrap().parent = Some(sales_b.clone());
    })
    .unwrap();
    let r = s.dist.cycle().await;
    assert_eq!(r.failed().count(), 0, "{r:#?}");
    let b_in = ran(&r, "b-in");
    assert_eq!(b_in.counts.refused_fields, 2, "{b_in:#?}");
    assert_eq!(r.refused_fields(), 2);
    assert_eq!(b_in.refused.len(), 2, "{:#?}", b_in.refused);
    let acc = b_in
        .refused
        .iter()
        .find(|x| x.kind == EntityKind::Account)
        .unwrap();
    assert_eq!(acc.anchor, Anchor::from("1"));
    assert_eq!(
        acc.fields.get("display_name").map(String::as_str),
        Some("a-in")
    );
    assert_eq!(
        acc.values["display_name"],
        serde_json::json!("Alice from B")
    );
    let o = b_in
        .refused
        .iter()
        .find(|x| x.kind == EntityKind::Org)
        .unwrap();
    assert_eq!(o.anchor, Anchor::from("rd"));
    assert_eq!(o.fields.get("parent").map(String::as_str), Some("a-in"));
    // The unowned title went through, the rest did not.
    assert_eq!(b_in.counts.by_op.get(&OpKind::UpdateAccount), Some(&1));
    assert_eq!(b_in.counts.by_op.get(&OpKind::MoveOrg), None);
    let hub_alice = s.store.hub_account(&"1".into()).await.unwrap().unwrap();
    assert_eq!(hub_alice.display_name.as_deref(), Some("ALICE"));
    assert_eq!(hub_alice.title.as_deref(), Some("Lead"));
    let hub_rd = s.store.hub_org(&"rd".into()).await.unwrap().unwrap();
    assert_eq!(hub_rd.parent, Some("corp".into()));
    // The refusal is in the audit trail too.
    let audit = s
        .store
        .audit(EntityKind::Account, &"1".into())
        .await
        .unwrap();
    let refused = audit
        .iter()
        .find(|e| e.op.as_str() == idsync_core::authority::REFUSED_AUDIT)
        .unwrap_or_else(|| panic!("no refusal audited: {audit:#?}"));
    assert_eq!(refused.job, "b-in");
    assert_eq!(
        refused.before,
        Some(serde_json::json!({"display_name": "a-in"}))
    );
    // The title reached A.
    assert_eq!(
        s.a.snapshot().unwrap().accounts[&Anchor::from("1")]
            .title
            .as_deref(),
        Some("Lead")
    );

    // The owner's change of the same field goes through, and on to B.
    s.a.edit(|d| {
        d.accounts.get_mut(&Anchor::from("1")).unwrap().display_name = Some("Alice A.".into());
    })
    .unwrap();
    let r = s.dist.cycle().await;
    assert_eq!(ran(&r, "a-in").counts.applied, 1, "{r:#?}");
    assert_eq!(ran(&r, "a-in").counts.refused_fields, 0);
    assert_eq!(
        b_account(&s, "alice").display_name.as_deref(),
        Some("Alice A.")
    );
    let quiet = s.dist.cycle().await;
    assert!(quiet.is_quiet(), "{quiet:#?}");
}

#[tokio::test]
async fn distribution_rejects_point_to_point_jobs_and_unknown_owners() {
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let x = Arc::new(MemoryAdapter::new("x"));
    let y = Arc::new(MemoryAdapter::new("y"));
    let d = Distribution::new(Engine::new(store.clone()));
    let e = d.with_job(Job::new("x-to-y", x.clone(), y)).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::ConfigInvalid);
    assert!(
        e.message()
            .contains("neither writes into nor reads from the hub"),
        "{e}"
    );
    let hub = Arc::new(Hub::new(store.clone()));
    let d = Distribution::new(Engine::new(store))
        .with_job(Job::new("x-in", x.clone(), hub.clone()))
        .unwrap()
        .with_job(Job::new("hub-x", hub, x))
        .unwrap();
    let mut auth = FieldAuthority::new();
    auth.set(EntityKind::Account, "title", "hub-x").unwrap();
    let e = d.clone().with_authority(auth).unwrap_err();
    assert!(e.message().contains("\"hub-x\", which is not a job"), "{e}");
    let e = d.run_inbound("hub-x").await.unwrap_err();
    assert!(e.message().contains("no inbound job \"hub-x\""), "{e}");
}
