//! The conformance suite against json-server, as source and as sink, with the layer
//! stack (timeout, rate limit, retry, tracing). One json-server instance of this test's
//! own holds 64 empty namespaces (`/nK_orgs`, `/nK_people`); each seeded namespace is a
//! fresh pair, filled by POSTs, so cases never see each other's data. json-server assigns
//! the ids of entities the sink creates (`create.id = "/id"`).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use idsync_conformance::{Harness, run_all};
use idsync_core::layers::{RateLimitLayer, RetryLayer, Stack, TimeoutLayer, TracingLayer};
use idsync_core::{Account, Org, Result, Sink, Source, Status};
use idsync_http::{HttpSettings, JsonClient, Request};
use serde_json::{Value, json};

use crate::rest::axum_server;
use crate::rest::server::{JsonServer, connector};

const NAMESPACES: usize = 64;

struct RestHarness {
    server: JsonServer,
    next: AtomicUsize,
    other: String,
}

fn config(url: &str, ns: usize) -> String {
    format!(
        r#"
base_url = "{url}"
requests_per_second = 500
[orgs]
path = "/n{ns}_orgs"
page_size = 50
pagination = {{ style = "page", param = "_page", size_param = "_limit", total_header = "X-Total-Count" }}
item_path = "/n{ns}_orgs/{{anchor}}"
create = {{ path = "/n{ns}_orgs", id = "/id" }}
update = {{ path = "/n{ns}_orgs/{{anchor}}" }}
delete = {{ path = "/n{ns}_orgs/{{anchor}}" }}
[orgs.fields]
anchor = "/id"
name = "/name"
parent = "/parent_id"
order = "/sort"
[accounts]
path = "/n{ns}_people"
page_size = 50
pagination = {{ style = "link_header", size_param = "_limit", first_query = {{ _page = "1" }} }}
item_path = "/n{ns}_people/{{anchor}}"
create = {{ path = "/n{ns}_people", id = "/id" }}
update = {{ path = "/n{ns}_people/{{anchor}}", method = "PATCH" }}
delete = {{ path = "/n{ns}_people/{{anchor}}" }}
[accounts.fields]
anchor = "/id"
username = "/login"
display_name = "/name"
email = "/email"
phone = "/phone"
employee_id = "/employee_no"
title = "/title"
orgs = "/department_ids"
manager = "/manager_id"
[accounts.status]
pointer = "/active"
active = true
disabled = false
"#
    )
}

fn stack() -> Stack {
    Stack::new()
        .push(TimeoutLayer::new(Duration::from_secs(30)))
        .push(RateLimitLayer::from_capabilities())
        .push(
            RetryLayer::new()
                .with_max_attempts(5)
                .with_backoff(Duration::from_millis(10), Duration::from_millis(200))
                .with_max_retry_after(Duration::from_millis(100)),
        )
        .push(TracingLayer::new())
}

fn org_json(o: &Org) -> Value {
    json!({"id": o.anchor.as_str(), "name": o.name, "parent_id": o.parent.as_ref().map(|p| p.as_str()), "sort": o.order})
}

fn account_json(a: &Account) -> Value {
    json!({
        "id": a.anchor.as_str(), "login": a.username, "name": a.display_name, "email": a.email,
        "phone": a.phone, "employee_no": a.employee_id, "title": a.title,
        "department_ids": a.orgs.iter().map(|o| o.as_str()).collect::<Vec<_>>(),
        "manager_id": a.manager.as_ref().map(|m| m.as_str()),
        "active": a.status == Status::Active,
    })
}

#[async_trait]
impl Harness for RestHarness {
    fn name(&self) -> String {
        "rest (json-server 0.17.4, timeout + rate limit + retry + tracing layers)".into()
    }

    async fn seed(&self, orgs: Vec<Org>, accounts: Vec<Account>) -> Result<Arc<dyn Sink>> {
        let ns = self.next.fetch_add(1, Ordering::SeqCst);
        assert!(ns < NAMESPACES, "more namespaces seeded than the db holds");
        let raw = JsonClient::new("seed", &HttpSettings::new(&self.server.url), |_, b| Ok(b))?;
        for o in &orgs {
            raw.send(&Request::post(format!("/n{ns}_orgs"), org_json(o)))
                .await?;
        }
        for a in &accounts {
            raw.send(&Request::post(format!("/n{ns}_people"), account_json(a)))
                .await?;
        }
        let sink: Arc<dyn Sink> = Arc::new(connector(&config(&self.server.url, ns)));
        Ok(stack().sink(sink))
    }

    async fn bad_credentials(&self) -> Option<Arc<dyn Source>> {
        let f = std::env::temp_dir().join(format!("idsync-rest-bad-{}", std::process::id()));
        std::fs::write(&f, "not-the-token").ok()?;
        let extra = format!("[auth]\ntype = \"bearer\"\ntoken_file = {f:?}");
        Some(Arc::new(connector(&axum_server::config(
            &self.other,
            "/auth/people",
            "/data",
            r#"{ style = "none" }"#,
            &extra,
        ))))
    }

    async fn throttled(&self) -> Option<Arc<dyn Source>> {
        Some(Arc::new(connector(&axum_server::config(
            &self.other,
            "/throttled/people",
            "/data",
            r#"{ style = "none" }"#,
            "",
        ))))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_suite_against_json_server() {
    let mut db = serde_json::Map::new();
    for k in 0..NAMESPACES {
        db.insert(format!("n{k}_orgs"), json!([]));
        db.insert(format!("n{k}_people"), json!([]));
    }
    let server = JsonServer::start(Some(&Value::Object(db).to_string()));
    let (other, _) = axum_server::serve().await;
    let h = RestHarness {
        server,
        next: AtomicUsize::new(0),
        other,
    };
    let report = run_all(&h).await;
    println!("{report}");
    report.assert_passed();
    for case in [
        "listing",
        "page_boundaries",
        "engine_into_sink",
        "moves_and_renames",
        "deletions",
        "engine_from_source",
        "missing_entity",
        "lookups",
        "page_replay",
        "bad_credentials",
        "throttled",
    ] {
        assert!(report.passed_cases().contains(&case), "{case}: {report}");
    }
}
