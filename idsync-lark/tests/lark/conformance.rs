//! The shared conformance suite against the stateful fake Lark, as source and as sink.
//!
//! Each seeded namespace is a fresh fake tenant (its own server on 127.0.0.1:0) at Lark's
//! documented limit (50 contact calls per second per app), the fixture written straight
//! into its state, and an event endpoint registered with it (so `changes(cursor)` works
//! from real, encrypted and signed schema 2.0 pushes). The sink reads without extra
//! attrs (an identity mapping owns `attrs.*`).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use idsync_conformance::{Harness, Options, run_all};
use idsync_core::{Account, Anchor, EntityKind, Error, Org, Result, Sink, Source, Status};
use idsync_lark::fake::{FakeConfig, FakeLark, FakeUser};
use idsync_lark::{LarkEventLog, LarkSink, LarkSource, callback_router};
use secrecy::SecretString;

use crate::common::{serve, stack};

#[derive(Default)]
struct LarkHarness {
    fakes: Mutex<Vec<FakeLark>>,
    others: Mutex<Vec<FakeLark>>,
    chaos_every: Option<u64>,
}

fn seed_state(fake: &FakeLark, orgs: &[Org], accounts: &[Account]) -> Result<()> {
    let mut ids: HashMap<Anchor, String> = HashMap::new();
    for o in orgs {
        let parent = match &o.parent {
            None => "0".to_owned(),
            Some(p) => ids.get(p).cloned().ok_or_else(|| {
                Error::invalid_data(format!("parent {p} comes after {}", o.anchor))
            })?,
        };
        ids.insert(o.anchor.clone(), fake.add_dept(&parent, &o.name));
    }
    let mut unions: HashMap<Anchor, String> = HashMap::new();
    let mut users = Vec::new();
    for a in accounts {
        let depts: Vec<String> = a.orgs.iter().filter_map(|o| ids.get(o).cloned()).collect();
        let mut u = FakeUser::new(
            a.username.clone(),
            a.display_name.clone().unwrap_or_else(|| a.username.clone()),
            &depts,
        );
        u.primary = depts.first().cloned();
        u.mobile.clone_from(&a.phone);
        u.email.clone_from(&a.email);
        u.job_title.clone_from(&a.title);
        u.employee_no.clone_from(&a.employee_id);
        u.is_frozen = a.status != Status::Active;
        unions.insert(a.anchor.clone(), u.union_id.clone());
        users.push((u, a.manager.clone()));
    }
    for (mut u, manager) in users {
        u.leader = manager.and_then(|m| unions.get(&m).cloned());
        fake.with_state(|s| s.put_user(u));
    }
    Ok(())
}

#[async_trait]
impl Harness for LarkHarness {
    fn name(&self) -> String {
        match self.chaos_every {
            Some(n) => format!("lark (fake, layers, chaos throttling every {n}th call)"),
            None => "lark (fake, timeout + rate limit + retry + tracing layers)".into(),
        }
    }

    async fn seed(&self, orgs: Vec<Org>, accounts: Vec<Account>) -> Result<Arc<dyn Sink>> {
        let fake = FakeLark::start(FakeConfig::default()).await?;
        seed_state(&fake, &orgs, &accounts)?;
        let mut conn = fake.connection();
        conn.extra_attrs = false;
        let keys = fake.event_keys();
        let log = Arc::new(LarkEventLog::new(1000));
        let url = serve(callback_router(&keys, conn.user_id_type, log.clone())?).await;
        fake.register_callback(url);
        let sink: Arc<dyn Sink> =
            Arc::new(LarkSink::from_source(LarkSource::with_events(conn, log)?));
        self.fakes.lock().unwrap().push(fake);
        Ok(stack(self.chaos_every).sink(sink))
    }

    async fn bad_credentials(&self) -> Option<Arc<dyn Source>> {
        let fake = FakeLark::start(FakeConfig::default()).await.ok()?;
        let mut conn = fake.connection();
        conn.app_secret = SecretString::from("not-the-secret".to_owned());
        self.others.lock().unwrap().push(fake);
        Some(Arc::new(LarkSource::new(conn).ok()?))
    }

    async fn throttled(&self) -> Option<Arc<dyn Source>> {
        let fake = FakeLark::start(FakeConfig {
            qps: Some(0),
            ..FakeConfig::default()
        })
        .await
        .ok()?;
        let conn = fake.connection();
        self.others.lock().unwrap().push(fake);
        Some(Arc::new(LarkSource::new(conn).ok()?))
    }

    fn missing_anchor(&self, kind: EntityKind) -> Anchor {
        match kind {
            EntityKind::Org => Anchor::new("od-00000000000000000000000000000000"),
            EntityKind::Account => Anchor::new("on_00000000000000000000000000000000"),
        }
    }

    fn options(&self) -> Options {
        Options::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_suite_against_the_fake() {
    let h = LarkHarness::default();
    let report = run_all(&h).await;
    println!("{report}");
    report.assert_passed();
    assert!(report.skipped_cases().is_empty(), "{report}");
    for case in [
        "cursor_resume",
        "engine_into_sink",
        "engine_from_source",
        "deletions",
    ] {
        assert!(report.passed_cases().contains(&case), "{case}: {report}");
    }
    let fakes = h.fakes.lock().unwrap();
    let delivered: u64 = fakes.iter().map(|f| f.stats().events_delivered).sum();
    let failed: u64 = fakes.iter().map(|f| f.stats().events_failed).sum();
    assert!(delivered > 0, "writes were pushed as events");
    assert_eq!(failed, 0, "every event was accepted");
    let throttled: u64 = fakes.iter().map(|f| f.stats().total().throttled).sum();
    let calls: u64 = fakes.iter().map(|f| f.stats().total().calls).sum();
    println!(
        "{calls} calls to {} fake tenants, {throttled} throttled",
        fakes.len()
    );
    assert_eq!(throttled, 0, "the client keeps to 50 calls/s per app");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_suite_with_chaos_inside_retry() {
    let h = LarkHarness {
        chaos_every: Some(7),
        ..LarkHarness::default()
    };
    let report = run_all(&h).await;
    println!("{report}");
    report.assert_passed();
    assert!(report.skipped_cases().is_empty(), "{report}");
}
