//! Writing: formula injection, RFC 4180 output, atomic sink writes, lossless round trips
//! through the engine (memory → CSV → memory, hub → CSV → hub).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests may unwrap

use std::sync::Arc;

use futures::TryStreamExt;
use idsync_core::{
    Account, Anchor, Engine, Hub, Job, MemoryAdapter, MemoryStore, Org, SourceExt, Status, Store,
};
use idsync_csv::{CsvConfig, CsvSink, CsvSource, FlushPolicy, OrgLayout, export, sample_source};
use serde_json::Value;

fn tricky_data() -> (Vec<Org>, Vec<Account>) {
    let mut root = Org::new("r", None, "示例科技");
    root.order = Some(1);
    let mut rd = Org::new("rd", Some("r".into()), "=研发中心");
    rd.attrs.insert("cost_center".into(), Value::from("-42"));
    let be = Org::new("be", Some("rd".into()), "后端组, \"Backend\"\nteam");
    let mut a = Account::new("u1", "zhang.san");
    a.display_name = Some("张三".into());
    a.email = Some("zhang.san@example.com".into());
    a.phone = Some("+86 138 0000 0001".into());
    a.employee_id = Some("E0001".into());
    a.title = Some("@channel lead".into());
    a.orgs = vec!["be".into(), "rd".into()];
    a.attrs
        .insert("note".into(), Value::from("=HYPERLINK(\"http://x\")"));
    let mut b = Account::new("u2", "li.si");
    b.display_name = Some("'=already quoted".into());
    b.title = Some("\ttabbed".into());
    b.orgs = vec!["r".into()];
    b.manager = Some("u1".into());
    b.status = Status::Disabled;
    let mut c = Account::new("u3", "bob");
    c.display_name = Some("Bob \"the builder\", Jr.\r\nsecond line".into());
    c.phone = Some("\r\n".into());
    (vec![be, rd, root], vec![c, b, a])
}

#[tokio::test]
async fn formula_injection_is_neutralized_and_reversed() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = CsvConfig::new(
        dir.path().join("accounts.csv"),
        Some(dir.path().join("orgs.csv")),
    );
    let (orgs, accounts) = tricky_data();
    let src = MemoryAdapter::with_data("m", orgs, accounts);
    let summary = export(&src, &cfg).await.unwrap();
    assert_eq!((summary.orgs, summary.accounts), (3, 3));

    let text = String::from_utf8(std::fs::read(&cfg.accounts).unwrap()).unwrap();
    assert!(text.starts_with('\u{feff}'), "BOM for Excel");
    assert!(text.contains(",'+86 138 0000 0001,"), "{text}");
    assert!(text.contains(",'@channel lead,"), "{text}");
    assert!(text.contains("\"'=HYPERLINK(\"\"http://x\"\")\""), "{text}");
    assert!(text.contains("''=already quoted"), "{text}");
    assert!(text.contains("'\ttabbed"), "{text}");
    assert!(
        text.contains("\"'\r\n\""),
        "a cell starting with CR: {text:?}"
    );
    // No cell of the file starts with a formula character.
    let mut r = csv::ReaderBuilder::new()
        .has_headers(false)
        .from_reader(text.trim_start_matches('\u{feff}').as_bytes());
    for rec in r.records() {
        for cell in rec.unwrap().iter() {
            let c = cell.chars().next();
            assert!(
                !matches!(c, Some('=' | '+' | '-' | '@' | '\t' | '\r')),
                "unsafe cell {cell:?}"
            );
        }
    }
    let orgs_text = std::fs::read_to_string(cfg.orgs.as_ref().unwrap()).unwrap();
    assert!(orgs_text.contains(",'=研发中心,"), "{orgs_text}");
    assert!(orgs_text.contains(",'-42"), "{orgs_text}");
    // RFC 4180: CRLF records, sorted by anchor.
    let lines: Vec<&str> = orgs_text.split("\r\n").collect();
    assert!(
        lines[1].starts_with("be,") && lines[2].starts_with("r,") && lines[3].starts_with("rd,")
    );

    // Import gives back exactly what was exported.
    let back = CsvSource::open(cfg.clone()).unwrap();
    let mut got: Vec<Account> = back.account_stream(None).try_collect().await.unwrap();
    let (orgs, mut want) = tricky_data();
    want.sort_by(|a, b| a.anchor.cmp(&b.anchor));
    got.sort_by(|a, b| a.anchor.cmp(&b.anchor));
    assert_eq!(got, want);
    let mut got_orgs: Vec<Org> = back.org_stream(None).try_collect().await.unwrap();
    got_orgs.sort_by(|a, b| a.anchor.cmp(&b.anchor));
    let mut want_orgs = orgs;
    want_orgs.sort_by(|a, b| a.anchor.cmp(&b.anchor));
    assert_eq!(got_orgs, want_orgs);

    // With the guard off, cells are written as they are and read as they are.
    let mut raw = cfg.clone();
    raw.neutralize_formulas = false;
    raw.bom = false;
    export(&src, &raw).await.unwrap();
    let text = std::fs::read_to_string(&raw.accounts).unwrap();
    assert!(text.starts_with("id,"));
    assert!(text.contains(",+86 138 0000 0001,"));
}

#[tokio::test]
async fn memory_to_csv_to_memory_is_lossless_and_replans_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = CsvConfig::new(
        dir.path().join("accounts.csv"),
        Some(dir.path().join("orgs.csv")),
    );
    let (orgs, accounts) = tricky_data();
    let m1 = Arc::new(MemoryAdapter::with_data("m1", orgs, accounts));
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let engine = Engine::new(store);

    // memory → CSV sink
    let sink = Arc::new(CsvSink::open(cfg.clone()).unwrap());
    let out = Job::new("to-csv", m1.clone(), sink.clone());
    let report = engine.run(&out).await.unwrap();
    assert_eq!(report.counts.failed, 0);
    assert!(engine.plan(&out).await.unwrap().is_empty());
    // every op was flushed: the files on disk hold everything
    let src = Arc::new(CsvSource::open(cfg.clone()).unwrap());
    assert_eq!(src.account_count(), 3);

    // CSV source → a fresh memory
    let m2 = Arc::new(MemoryAdapter::new("m2"));
    let back = Job::new("from-csv", src.clone(), m2.clone());
    let report = engine.run(&back).await.unwrap();
    assert_eq!(report.counts.failed, 0);
    let again = engine.plan(&back).await.unwrap();
    assert!(again.is_empty(), "second plan: {:?}", again.ops);
    assert_eq!(m2.snapshot().unwrap(), m1.snapshot().unwrap());

    // CSV source → the original memory: already equal, nothing but links.
    let onto = Job::new("csv-onto-m1", src, m1.clone());
    let plan = engine.plan(&onto).await.unwrap();
    assert!(plan.ops.is_empty(), "{:?}", plan.ops);
}

#[tokio::test]
async fn hub_to_csv_to_hub_replans_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = CsvConfig::new(
        dir.path().join("accounts.csv"),
        Some(dir.path().join("orgs.csv")),
    );
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let hub = Arc::new(Hub::new(store.clone()));
    let engine = Engine::new(store);
    // Fill the hub from the sample data.
    let sample = Arc::new(sample_source().unwrap());
    engine
        .run(&Job::new("sample-in", sample, hub.clone()))
        .await
        .unwrap();
    let before: Vec<Account> = hub.account_stream(None).try_collect().await.unwrap();
    assert_eq!(before.len(), 200);

    // hub → CSV (manual flush: one write at the end)
    let sink = Arc::new(
        CsvSink::open(cfg.clone())
            .unwrap()
            .with_flush(FlushPolicy::Manual),
    );
    let out = Job::new("hub-out", hub.clone(), sink.clone());
    let report = engine.run(&out).await.unwrap();
    assert_eq!(report.counts.failed, 0);
    assert!(
        !cfg.accounts.exists(),
        "manual: nothing written before flush"
    );
    sink.flush().unwrap();
    assert!(cfg.accounts.exists());

    // CSV → the same hub: equal content, no operations.
    let src = Arc::new(CsvSource::open(cfg.clone()).unwrap());
    let back = Job::new("hub-in", src, hub.clone());
    let plan = engine.plan(&back).await.unwrap();
    assert!(plan.ops.is_empty(), "{:?}", plan.ops);
    engine.apply(&back, &plan).await.unwrap();
    assert!(engine.plan(&back).await.unwrap().is_empty());
    let after: Vec<Account> = hub.account_stream(None).try_collect().await.unwrap();
    assert_eq!(after, before);

    // CSV → a fresh hub holds the same.
    let store2: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let hub2 = Arc::new(Hub::new(store2.clone()));
    let engine2 = Engine::new(store2);
    let src = Arc::new(CsvSource::open(cfg).unwrap());
    let job = Job::new("hub2-in", src, hub2.clone());
    engine2.run(&job).await.unwrap();
    assert!(engine2.plan(&job).await.unwrap().is_empty());
    let copy: Vec<Account> = hub2.account_stream(None).try_collect().await.unwrap();
    assert_eq!(copy, before);
}

#[tokio::test]
async fn sink_writes_atomically_and_reloads() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = CsvConfig::new(
        dir.path().join("accounts.csv"),
        Some(dir.path().join("orgs.csv")),
    );
    let sink = CsvSink::open(cfg.clone()).unwrap();
    use idsync_core::{Op, Sink};
    sink.apply(&Op::CreateOrg {
        org: Org::new("r", None, "Root"),
    })
    .await
    .unwrap();
    let mut a = Account::new("u1", "a");
    a.orgs = vec!["r".into()];
    sink.apply(&Op::CreateAccount { account: a }).await.unwrap();
    // Each apply left complete files and no temp files behind.
    let names: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names.len(), 2, "{names:?}");
    sink.apply(&Op::DisableAccount {
        anchor: "u1".into(),
    })
    .await
    .unwrap();
    drop(sink);
    let again = CsvSink::open(cfg.clone()).unwrap();
    let d = again.snapshot().unwrap();
    assert_eq!(d.accounts[&Anchor::from("u1")].status, Status::Disabled);

    // A sink does not open over a file with bad rows (it would drop them when rewriting).
    std::fs::write(&cfg.accounts, "id,username,email\nu1,a,broken\n").unwrap();
    let err = CsvSink::open(cfg.clone()).unwrap_err();
    assert!(err.message().contains("accounts.csv:2:"), "{err}");

    // Manual policy flushes on drop.
    std::fs::remove_file(&cfg.accounts).unwrap();
    std::fs::remove_file(cfg.orgs.as_ref().unwrap()).unwrap();
    let sink = CsvSink::open(cfg.clone())
        .unwrap()
        .with_flush(FlushPolicy::Manual);
    sink.apply(&Op::CreateOrg {
        org: Org::new("r", None, "Root"),
    })
    .await
    .unwrap();
    assert!(!cfg.accounts.exists());
    drop(sink);
    assert!(cfg.accounts.exists());
}

#[tokio::test]
async fn path_layout_export_round_trips_through_paths() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = CsvConfig::new(
        dir.path().join("accounts.csv"),
        Some(dir.path().join("orgs.csv")),
    )
    .with_layout(OrgLayout::Paths);
    let sample = sample_source().unwrap();
    export(&sample, &cfg).await.unwrap();
    let text = std::fs::read_to_string(cfg.orgs.as_ref().unwrap()).unwrap();
    assert!(
        text.contains("示例科技 Example Tech/研发中心 R&D/后端组 Backend"),
        "{text}"
    );
    let back = CsvSource::open(cfg).unwrap();
    assert!(back.row_errors().is_empty(), "{:?}", back.row_errors());
    let orgs: Vec<Org> = back.org_stream(None).try_collect().await.unwrap();
    assert_eq!(orgs.len(), 20);
    let accounts: Vec<Account> = back.account_stream(None).try_collect().await.unwrap();
    assert_eq!(accounts.len(), 200);
    let two = accounts.iter().find(|a| a.orgs.len() == 2).unwrap();
    assert!(two.orgs[0].as_str().starts_with("示例科技 Example Tech/"));
    idsync_core::model::validate(&orgs, &accounts).unwrap();
}
