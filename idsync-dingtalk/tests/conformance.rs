//! The shared conformance suite against the stateful fake DingTalk, as source and as sink.
//!
//! Each seeded namespace is a fresh fake tenant (its own server on 127.0.0.1:0) with the
//! fixture written straight into its state, an event callback router registered with it
//! (so `changes(cursor)` works from real, encrypted pushes), and a `DingTalkSink` over it.
//! The sink reads with `fetch_user_details` (managers) and without extra attrs (an identity
//! mapping owns `attrs.*`, and DingTalk assigns `unionid` itself), and creates people
//! without a mobile number as exclusive accounts.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use idsync_conformance::{Harness, Options, provider_stack, run_all};
use idsync_core::{Account, Anchor, EntityKind, Error, Org, Result, Sink, Source, Status};
use idsync_dingtalk::fake::{FakeConfig, FakeDingTalk, FakeUser};
use idsync_dingtalk::{
    CallbackConfig, CallbackCrypto, DingTalkSink, DingTalkSource, EventLog, callback_router,
};
use idsync_http::fake::FakeServer;
use secrecy::SecretString;

const CB_TOKEN: &str = "conformance-token";
const CB_AES_KEY: &str = "o1w0aum42yaptlz8alnhwikjd3jenzt9cb9wmzptgus";

#[derive(Default)]
struct DingTalkHarness {
    /// Seeded fakes stay alive until the test ends.
    fakes: Mutex<Vec<FakeDingTalk>>,
    /// Fakes for the bad-credentials and throttled cases.
    others: Mutex<Vec<FakeDingTalk>>,
    /// The callback endpoints the fakes push to.
    servers: Mutex<Vec<FakeServer>>,
    /// Inject throttling (every n-th call) inside the retry layer.
    chaos_every: Option<u64>,
}

impl DingTalkHarness {
    async fn fresh(&self, cfg: FakeConfig) -> Result<FakeDingTalk> {
        FakeDingTalk::start(cfg).await
    }

    fn keep(&self, fake: FakeDingTalk) {
        self.fakes.lock().unwrap().push(fake);
    }

    fn keep_other(&self, fake: FakeDingTalk) {
        self.others.lock().unwrap().push(fake);
    }
}

fn seed_state(fake: &FakeDingTalk, orgs: &[Org], accounts: &[Account]) -> Result<()> {
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
        fake.put_user(FakeUser {
            userid: a.username.clone(),
            unionid: format!("union-{}", a.username),
            name: a.display_name.clone().unwrap_or_else(|| a.username.clone()),
            mobile: a.phone.clone(),
            email: a.email.clone(),
            job_number: a.employee_id.clone(),
            title: a.title.clone(),
            manager_userid: a
                .manager
                .as_ref()
                .and_then(|m| usernames.get(m))
                .map(|u| (*u).to_owned()),
            dept_id_list: depts,
            active: a.status == Status::Active,
            exclusive_account: a.phone.is_none(),
            login_id: a.phone.is_none().then(|| a.username.clone()),
            ..FakeUser::default()
        });
    }
    Ok(())
}

#[async_trait]
impl Harness for DingTalkHarness {
    fn name(&self) -> String {
        match self.chaos_every {
            Some(n) => format!("dingtalk (fake, layers, chaos throttling every {n}th call)"),
            None => "dingtalk (fake, timeout + rate limit + retry + tracing layers)".into(),
        }
    }

    async fn seed(&self, orgs: Vec<Org>, accounts: Vec<Account>) -> Result<Arc<dyn Sink>> {
        // DingTalk's standard limit: 20 requests per second per API.
        let fake = self
            .fresh(FakeConfig {
                qps: Some(20),
                ..FakeConfig::default()
            })
            .await?;
        seed_state(&fake, &orgs, &accounts)?;
        let mut cfg = fake.client_config();
        cfg.fetch_user_details = true;
        cfg.extra_attrs = false;
        cfg.exclusive_accounts = true;
        let cb = CallbackConfig::new(
            SecretString::from(CB_TOKEN.to_owned()),
            SecretString::from(CB_AES_KEY.to_owned()),
        );
        let log = Arc::new(EventLog::new(1000));
        let server =
            FakeServer::start("callback", callback_router(&cb, &cfg.app_key, log.clone())?).await?;
        let url = format!("{}/", server.base_url());
        self.servers.lock().unwrap().push(server);
        fake.register_callback(
            url,
            CallbackCrypto::new(
                idsync_dingtalk::PROVIDER,
                cb.token.clone(),
                &cb.aes_key,
                cfg.app_key.clone(),
            )?,
        );
        let sink: Arc<dyn Sink> = Arc::new(DingTalkSink::from_source(DingTalkSource::with_events(
            cfg, log,
        )?));
        self.keep(fake);
        Ok(provider_stack(self.chaos_every).sink(sink))
    }

    async fn bad_credentials(&self) -> Option<Arc<dyn Source>> {
        let fake = self.fresh(FakeConfig::default()).await.ok()?;
        let mut cfg = fake.client_config();
        cfg.app_secret = SecretString::from("not-the-secret".to_owned());
        self.keep_other(fake);
        Some(Arc::new(DingTalkSource::new(cfg).ok()?))
    }

    async fn throttled(&self) -> Option<Arc<dyn Source>> {
        let fake = self
            .fresh(FakeConfig {
                qps: Some(0),
                ..FakeConfig::default()
            })
            .await
            .ok()?;
        let cfg = fake.client_config();
        self.keep_other(fake);
        Some(Arc::new(DingTalkSource::new(cfg).ok()?))
    }

    fn missing_anchor(&self, kind: EntityKind) -> Anchor {
        match kind {
            EntityKind::Org => Anchor::new("987654321"),
            EntityKind::Account => Anchor::new("idsync-missing-user-0042"),
        }
    }

    fn options(&self) -> Options {
        Options::default()
    }
}

#[tokio::test]
async fn conformance_suite_against_the_fake() {
    let h = DingTalkHarness::default();
    let report = run_all(&h).await;
    println!("{report}");
    report.assert_passed();
    // DingTalk has no disabled state: the deletions case is the only capability skip.
    assert_eq!(report.skipped_cases(), vec!["deletions"], "{report}");
    assert!(report.passed_cases().contains(&"cursor_resume"));
    assert!(report.passed_cases().contains(&"engine_into_sink"));
    assert!(report.passed_cases().contains(&"engine_from_source"));
    let fakes = h.fakes.lock().unwrap();
    let delivered: u64 = fakes.iter().map(|f| f.stats().events_delivered).sum();
    assert!(delivered > 0, "writes were pushed as events");
    // The client keeps to the per-API limit: the fakes never had to throttle.
    let throttled: u64 = fakes.iter().map(|f| f.stats().total().throttled).sum();
    let calls: u64 = fakes.iter().map(|f| f.stats().total().calls).sum();
    println!(
        "{calls} calls to {} fake tenants, {throttled} throttled",
        fakes.len()
    );
    assert_eq!(throttled, 0);
}

#[tokio::test]
async fn conformance_suite_with_chaos_inside_retry() {
    let h = DingTalkHarness {
        chaos_every: Some(7),
        ..DingTalkHarness::default()
    };
    let report = run_all(&h).await;
    println!("{report}");
    report.assert_passed();
    assert_eq!(report.skipped_cases(), vec!["deletions"], "{report}");
}
