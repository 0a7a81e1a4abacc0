//! DingTalk → hub → a second DingTalk tenant, against two fake tenants.
//!
//! 1. Tenant A (a fake with 6 departments and 40 people) is read into the hub.
//! 2. The hub is written out to an empty tenant B (departments first, then people).
//! 3. A change made in tenant A through its API is pushed as an encrypted event to A's
//!    callback router; an incremental inbound run picks it up, and the outbound run takes
//!    it to tenant B.
//!
//! ```text
//! cargo run -p idsync-dingtalk --example dingtalk_roundtrip
//! ```
//!
//! Against real tenants, build the configs with `DingTalkConfig::from_env()` (or from
//! TOML) instead of `fake.client_config()`, and mount `callback_router` in your service.

#![allow(clippy::print_stdout)]

use std::sync::Arc;

use idsync_core::source::{collect_accounts, collect_orgs};
use idsync_core::{Engine, Hub, Job, MemoryStore, Op, Patch, Report, Sink, Store};
use idsync_dingtalk::fake::{FakeConfig, FakeDingTalk};
use idsync_dingtalk::{
    CallbackConfig, CallbackCrypto, DingTalkConfig, DingTalkSink, DingTalkSource, EventLog,
    callback_router,
};
use secrecy::SecretString;

fn show(what: &str, r: &Report) {
    println!(
        "{what:<28} {:<18} applied {:>3}, failed {}, by op {:?}",
        r.status.as_str(),
        r.counts.applied,
        r.counts.failed,
        r.counts.by_op
    );
    for f in r.failures().take(5) {
        if let Some(e) = &f.error {
            println!("    failed {} {:?}: {}", f.op, f.anchor, e.message);
        }
    }
}

/// Reads with managers, without DingTalk-assigned attrs (`unionid` differs per tenant).
fn tuned(mut cfg: DingTalkConfig) -> DingTalkConfig {
    cfg.fetch_user_details = true;
    cfg.extra_attrs = false;
    cfg
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> idsync_core::Result<()> {
    // Tenant A, with data and an event subscription; tenant B, empty.
    let tenant_a = FakeDingTalk::start(FakeConfig::default()).await?;
    let depts = tenant_a.seed(6, 40);
    tenant_a.set_leader(depts[0], "user00000");
    let tenant_b = FakeDingTalk::start(FakeConfig {
        app_key: "dingtenantbkey".into(),
        ..FakeConfig::default()
    })
    .await?;

    let cfg_a = tuned(tenant_a.client_config());
    let cb = CallbackConfig::new(
        SecretString::from("callback-token".to_owned()),
        SecretString::from("o1w0aum42yaptlz8alnhwikjd3jenzt9cb9wmzptgus".to_owned()),
    );
    let events = Arc::new(EventLog::new(10_000));
    let router = callback_router(&cb, &cfg_a.app_key, events.clone())?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(|e| idsync_core::Error::unexpected("cannot listen").with_source(e))?;
    let callback_url = format!(
        "http://{}/",
        listener
            .local_addr()
            .map_err(|e| idsync_core::Error::unexpected("no address").with_source(e))?
    );
    tokio::spawn(async move {
        let _ = axum::serve(listener, router).await;
    });
    tenant_a.register_callback(
        callback_url,
        CallbackCrypto::new(
            idsync_dingtalk::PROVIDER,
            cb.token.clone(),
            &cb.aes_key,
            cfg_a.app_key.clone(),
        )?,
    );

    let source_a = DingTalkSource::with_events(cfg_a, events)?;
    let sink_a = DingTalkSink::from_source(source_a.clone());
    let sink_b = Arc::new(DingTalkSink::new(tuned(tenant_b.client_config()))?);

    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let hub = Arc::new(Hub::new(store.clone()));
    let engine = Engine::new(store);
    let inbound = Job::new("dingtalk-a-to-hub", Arc::new(source_a), hub.clone());
    let outbound = Job::new("hub-to-dingtalk-b", hub, sink_b.clone());

    show("inbound A -> hub", &engine.run(&inbound).await?);
    show("outbound hub -> B", &engine.run(&outbound).await?);
    show("inbound again (no change)", &engine.run(&inbound).await?);
    show("outbound again (no change)", &engine.run(&outbound).await?);

    // Someone changes a title in tenant A; DingTalk pushes user_modify_org.
    let mut patch = Patch::new();
    patch.insert("title".into(), "首席架构师".into());
    sink_a
        .apply(&Op::UpdateAccount {
            anchor: "user00007".into(),
            changes: patch,
        })
        .await?;
    show(
        "inbound changes (events)",
        &engine.run_changes(&inbound).await?,
    );
    show("outbound hub -> B", &engine.run(&outbound).await?);

    let orgs_b = collect_orgs(&*sink_b).await?;
    let people_b = collect_accounts(&*sink_b).await?;
    let moved = people_b
        .iter()
        .find(|a| a.username == "user00007")
        .and_then(|a| a.title.clone());
    println!(
        "tenant B now holds {} departments and {} people; user00007's title: {:?}",
        orgs_b.len(),
        people_b.len(),
        moved
    );
    println!(
        "fake A served {} calls ({} events pushed), fake B {} calls",
        tenant_a.stats().total().calls,
        tenant_a.stats().events_delivered,
        tenant_b.stats().total().calls
    );
    Ok(())
}
