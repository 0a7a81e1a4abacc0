//! Serving a router on a loopback port for a test.

use axum::Router;

/// Serves `router` on 127.0.0.1 (a free port); the base URL. The server lives as long as
/// the test's runtime.
pub(crate) async fn serve(router: Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        axum::serve(listener, router).await.unwrap();
    });
    format!("http://{addr}")
}

/// GET `url`: status and JSON body.
pub(crate) async fn get(url: &str) -> (u16, serde_json::Value) {
    let r = reqwest::get(url).await.unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap())
}
