//! The shared conformance suite against the stateful fake WeCom, as source and as sink.
//!
//! Each seeded namespace is a fresh fake corp (its own server on 127.0.0.1:0) at WeCom's
//! documented limit (10,000 calls per API per minute), with a separate contact-sync secret
//! for writes, the fixture written straight into its state, and a `change_contact`
//! callback router registered with it (so `changes(cursor)` works from real, encrypted
//! pushes). The sink reads without extra attrs (an identity mapping owns `attrs.*`).
//!
//! WeCom has no employee-number field: the corps keep it in the custom attribute `工号`
//! (`employee_id_attr`). Trees are kept to WeCom's 15 levels.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use idsync_conformance::{Harness, Options, provider_stack, run_all};
use idsync_core::{Account, Anchor, EntityKind, Error, Org, Result, Sink, Source, Status};
use idsync_http::fake::FakeServer;
use idsync_wecom::fake::{FakeConfig, FakeUser, FakeWeCom};
use idsync_wecom::{
    CallbackCrypto, CallbackKeys, WeComEventLog, WeComSink, WeComSource, callback_router,
};
use secrecy::SecretString;

/// The custom attribute the test corps keep employee numbers in.
const EMPLOYEE_ID_ATTR: &str = "工号";
const CB_TOKEN: &str = "conformance-token";
const CB_AES_KEY: &str = "o1w0aum42yaptlz8alnhwikjd3jenzt9cb9wmzptgus";

#[derive(Default)]
struct WeComHarness {
    fakes: Mutex<Vec<FakeWeCom>>,
    others: Mutex<Vec<FakeWeCom>>,
    servers: Mutex<Vec<FakeServer>>,
    chaos_every: Option<u64>,
}

fn fake_config() -> FakeConfig {
    FakeConfig {
        contact_secret: Some("contact-sync-secret".into()),
        limit: Some(10_000),
        ..FakeConfig::default()
    }
}

fn seed_state(fake: &FakeWeCom, orgs: &[Org], accounts: &[Account]) -> Result<()> {
    let mut ids: HashMap<Anchor, i64> = HashMap::new();
    for o in orgs {
        let parent = match &o.parent {
            None => 1,
            Some(p) => *ids.get(p).ok_or_else(|| {
                Error::invalid_data(format!("parent {p} comes after {}", o.anchor))
            })?,
        };
        ids.insert(o.anchor.clone(), fake.add_dept(parent, &o.name));
    }
    let usernames: HashMap<&Anchor, &str> = accounts
        .iter()
        .map(|a| (&a.anchor, a.username.as_str()))
        .collect();
    for a in accounts {
        let mut depts: Vec<i64> = a.orgs.iter().filter_map(|o| ids.get(o).copied()).collect();
        if depts.is_empty() {
            depts.push(1);
        }
        let mut u = FakeUser::new(
            a.username.clone(),
            a.display_name.clone().unwrap_or_else(|| a.username.clone()),
            &depts,
        );
        u.mobile.clone_from(&a.phone);
        u.email.clone_from(&a.email);
        u.position.clone_from(&a.title);
        if let Some(id) = &a.employee_id {
            u.extattr.insert(EMPLOYEE_ID_ATTR.to_owned(), id.clone());
        }
        u.direct_leader = a
            .manager
            .as_ref()
            .and_then(|m| usernames.get(m))
            .map(|u| vec![(*u).to_owned()])
            .unwrap_or_default();
        u.status = if a.status == Status::Active { 1 } else { 2 };
        fake.with_state(|s| s.put_user(u));
    }
    Ok(())
}

#[async_trait]
impl Harness for WeComHarness {
    fn name(&self) -> String {
        match self.chaos_every {
            Some(n) => format!("wecom (fake, layers, chaos throttling every {n}th call)"),
            None => "wecom (fake, timeout + rate limit + retry + tracing layers)".into(),
        }
    }

    async fn seed(&self, orgs: Vec<Org>, accounts: Vec<Account>) -> Result<Arc<dyn Sink>> {
        let fake = FakeWeCom::start(fake_config()).await?;
        seed_state(&fake, &orgs, &accounts)?;
        let mut conn = fake.connection();
        conn.extra_attrs = false;
        conn.employee_id_attr = Some(EMPLOYEE_ID_ATTR.to_owned());
        let keys = CallbackKeys {
            token: SecretString::from(CB_TOKEN.to_owned()),
            aes_key: SecretString::from(CB_AES_KEY.to_owned()),
            replay_window: Duration::from_secs(300),
            event_log_capacity: 1000,
        };
        let log = Arc::new(WeComEventLog::new(1000));
        let server = FakeServer::start(
            "callback",
            callback_router(&keys, &conn.corp_id, log.clone())?,
        )
        .await?;
        let url = format!("{}/", server.base_url());
        self.servers.lock().unwrap().push(server);
        fake.register_callback(
            url,
            CallbackCrypto::new(
                idsync_wecom::PROVIDER,
                keys.token.clone(),
                &keys.aes_key,
                conn.corp_id.clone(),
            )?,
        );
        let sink: Arc<dyn Sink> =
            Arc::new(WeComSink::from_source(WeComSource::with_events(conn, log)?));
        self.fakes.lock().unwrap().push(fake);
        Ok(provider_stack(self.chaos_every).sink(sink))
    }

    async fn bad_credentials(&self) -> Option<Arc<dyn Source>> {
        let fake = FakeWeCom::start(fake_config()).await.ok()?;
        let mut conn = fake.connection();
        conn.secret = SecretString::from("not-the-secret".to_owned());
        self.others.lock().unwrap().push(fake);
        Some(Arc::new(WeComSource::new(conn).ok()?))
    }

    async fn throttled(&self) -> Option<Arc<dyn Source>> {
        let fake = FakeWeCom::start(FakeConfig {
            limit: Some(0),
            ..fake_config()
        })
        .await
        .ok()?;
        let conn = fake.connection();
        self.others.lock().unwrap().push(fake);
        Some(Arc::new(WeComSource::new(conn).ok()?))
    }

    fn missing_anchor(&self, kind: EntityKind) -> Anchor {
        match kind {
            EntityKind::Org => Anchor::new("987654321"),
            EntityKind::Account => Anchor::new("idsync-missing-user-0042"),
        }
    }

    fn options(&self) -> Options {
        Options {
            // WeCom: at most 15 department levels, the corp's own root being the first
            deep_tree_depth: 14,
            ..Options::default()
        }
    }
}

#[tokio::test]
async fn conformance_suite_against_the_fake() {
    let h = WeComHarness::default();
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
    assert!(delivered > 0, "writes were pushed as callbacks");
    assert_eq!(failed, 0, "every callback was accepted");
    // the client keeps to the per-API limit: the fakes never had to throttle
    let throttled: u64 = fakes.iter().map(|f| f.stats().total().throttled).sum();
    let calls: u64 = fakes.iter().map(|f| f.stats().total().calls).sum();
    println!(
        "{calls} calls to {} fake corps, {throttled} throttled",
        fakes.len()
    );
    assert_eq!(throttled, 0);
}

#[tokio::test]
async fn conformance_suite_with_chaos_inside_retry() {
    let h = WeComHarness {
        chaos_every: Some(7),
        ..WeComHarness::default()
    };
    let report = run_all(&h).await;
    println!("{report}");
    report.assert_passed();
    assert!(report.skipped_cases().is_empty(), "{report}");
}
