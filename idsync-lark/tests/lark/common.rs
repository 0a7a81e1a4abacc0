//! Helpers shared by the test modules.

/// The recommended stack with optional chaos throttling: the conformance crate's one.
pub(crate) use idsync_conformance::provider_stack as stack;

/// Serves `router` on 127.0.0.1; its URL.
pub(crate) async fn serve(router: axum::Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("the callback server must listen");
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        axum::serve(listener, router).await.unwrap();
    });
    format!("http://{addr}/")
}
