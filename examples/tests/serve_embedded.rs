//! The `serve_embedded` example's `--once` run: the routers mounted in a user's own axum
//! app answer as documented over HTTP (tokens and scopes, the import, the feed's cursor).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

// The example itself, so the test runs exactly its code (its `main` is not used here).
#[allow(dead_code)]
#[path = "../serve_embedded.rs"]
mod serve_embedded;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_embedded_routers_answer_with_tokens_and_scopes() {
    let o = serve_embedded::run_once().await.unwrap();
    let (orgs, accounts) = idsync_examples::sample_org_chart();
    let records = orgs.len() + accounts.len();

    assert_eq!(o.no_token, 401, "the feed without a token");
    assert_eq!(o.healthz, 200, "the ops router needs no token");

    let (status, before) = &o.feed_before;
    assert_eq!(*status, 200, "{before}");
    assert!(
        before["next_cursor"]
            .as_str()
            .is_some_and(|c| !c.is_empty()),
        "next_cursor on an empty page: {before}"
    );
    assert_eq!(
        before["entries"].as_array().map(Vec::len),
        Some(0),
        "{before}"
    );

    assert_eq!(
        o.import_with_read_token, 403,
        "the read token lacks the import scope"
    );
    let (status, import) = &o.import;
    assert_eq!(*status, 200, "{import}");
    assert_eq!(import["status"], "succeeded", "{import}");
    assert_eq!(import["received"], records, "{import}");
    assert_eq!(import["counts"]["applied"], records, "{import}");
    assert_eq!(import["counts"]["failed"], 0, "{import}");

    let (status, after) = &o.feed_after;
    assert_eq!(*status, 200, "{after}");
    let entries = after["entries"].as_array().unwrap();
    assert_eq!(
        entries
            .iter()
            .map(|e| e["seq"].as_u64().unwrap())
            .collect::<Vec<_>>(),
        vec![1, 2, 3, 4, 5],
        "the imported changes, from the cursor of the empty feed: {after}"
    );
    assert!(entries.iter().all(|e| e["op"] == "upsert"), "{after}");
    assert_eq!(after["has_more"], true, "{after}");
    assert_ne!(after["next_cursor"], before["next_cursor"], "{after}");

    let (status, who) = &o.whoami;
    assert_eq!(*status, 200, "{who}");
    assert_eq!(who["token"], "reader", "{who}");
    assert_eq!(who["scopes"], serde_json::json!(["read"]), "{who}");
}
