//! The fake's Stream mode gateway: `POST /v1.0/gateway/connections/open` issues a
//! single-use ticket and a `ws://127.0.0.1:<port>/connect` endpoint; the WebSocket server
//! sends event and system frames to the connected clients and records their acks.

use std::collections::HashSet;
use std::net::SocketAddr;

use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
use tokio_tungstenite::tungstenite::http::StatusCode;

use super::{Shared, lock};

/// One ack a Stream client sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamAck {
    /// `headers.messageId` of the acknowledged frame.
    pub message_id: String,
    /// `status` inside the ack's `data` (`SUCCESS`, `LATER`), if any.
    pub status: Option<String>,
    /// The ack's `data` string as sent.
    pub data: String,
}

/// What the fake gateway knows.
#[derive(Debug, Default)]
pub(crate) struct StreamHub {
    pub(crate) addr: Option<SocketAddr>,
    pub(crate) tickets: HashSet<String>,
    clients: Vec<(u64, mpsc::UnboundedSender<Message>)>,
    next_client: u64,
    pub(crate) connections: u64,
    pub(crate) acks: Vec<StreamAck>,
    next_message: u64,
}

impl StreamHub {
    /// A fresh ticket.
    pub(crate) fn ticket(&mut self) -> String {
        let mut r = [0u8; 12];
        rand::Rng::fill(&mut rand::rng(), &mut r);
        let t: String = r.iter().map(|b| format!("{b:02x}")).collect();
        self.tickets.insert(t.clone());
        t
    }

    pub(crate) fn message_id(&mut self) -> String {
        self.next_message += 1;
        format!("fakemsg{:08}", self.next_message)
    }

    /// Sends a frame to every connected client; returns how many got it.
    pub(crate) fn broadcast(&mut self, frame: &Value) -> usize {
        let text = frame.to_string();
        self.clients
            .retain(|(_, tx)| tx.send(Message::Text(text.clone().into())).is_ok());
        self.clients.len()
    }

    pub(crate) fn clients(&self) -> usize {
        self.clients.len()
    }
}

/// Accepts WebSocket connections until the task is aborted.
pub(crate) async fn serve(listener: TcpListener, inner: Shared) {
    loop {
        let Ok((tcp, _)) = listener.accept().await else {
            continue;
        };
        let inner = inner.clone();
        tokio::spawn(async move { connection(tcp, inner).await });
    }
}

// The handshake callback's signature is tungstenite's.
#[allow(clippy::result_large_err)]
async fn connection(tcp: tokio::net::TcpStream, inner: Shared) {
    let check = |req: &Request, resp: Response| -> Result<Response, ErrorResponse> {
        let ticket = req
            .uri()
            .query()
            .unwrap_or_default()
            .split('&')
            .find_map(|kv| kv.strip_prefix("ticket="))
            .unwrap_or_default()
            .to_owned();
        // single use
        if lock(&inner).stream.tickets.remove(&ticket) {
            Ok(resp)
        } else {
            let mut r = ErrorResponse::new(Some("invalid or used ticket".to_owned()));
            *r.status_mut() = StatusCode::UNAUTHORIZED;
            Err(r)
        }
    };
    let Ok(ws) = tokio_tungstenite::accept_hdr_async(tcp, check).await else {
        return;
    };
    let (mut tx, mut rx) = ws.split();
    let (out_tx, mut out_rx) = mpsc::unbounded_channel::<Message>();
    let id = {
        let mut g = lock(&inner);
        g.stream.connections += 1;
        g.stream.next_client += 1;
        let id = g.stream.next_client;
        g.stream.clients.push((id, out_tx));
        id
    };
    loop {
        tokio::select! {
            out = out_rx.recv() => match out {
                Some(m) => {
                    let close = matches!(m, Message::Close(_));
                    if tx.send(m).await.is_err() || close {
                        break;
                    }
                }
                None => break,
            },
            m = rx.next() => match m {
                Some(Ok(Message::Text(t))) => record_ack(&inner, t.as_str()),
                Some(Ok(Message::Close(_)) | Err(_)) | None => break,
                Some(Ok(_)) => {}
            },
        }
    }
    lock(&inner).stream.clients.retain(|(c, _)| *c != id);
}

fn record_ack(inner: &Shared, text: &str) {
    let Ok(v) = serde_json::from_str::<Value>(text) else {
        return;
    };
    let data = v
        .get("data")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned();
    let status = serde_json::from_str::<Value>(&data)
        .ok()
        .and_then(|d| d.get("status").and_then(Value::as_str).map(str::to_owned));
    let message_id = v
        .pointer("/headers/messageId")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned();
    lock(inner).stream.acks.push(StreamAck {
        message_id,
        status,
        data,
    });
}

/// An `EVENT` frame as DingTalk sends it: ids under `data` (a JSON string).
pub(crate) fn event_frame(
    message_id: &str,
    event_id: &str,
    event_type: &str,
    app_key: &str,
    data: &Value,
) -> Value {
    let now = chrono::Utc::now().timestamp_millis().to_string();
    json!({
        "specVersion": "1.0",
        "type": "EVENT",
        "headers": {
            "appId": app_key,
            "connectionId": "fakeconn",
            "contentType": "application/json",
            "messageId": message_id,
            "time": now,
            "topic": "*",
            "eventId": event_id,
            "eventType": event_type,
            "eventBornTime": now,
            "eventCorpId": "dingfakecorp",
            "eventUnifiedAppId": app_key,
        },
        "data": data.to_string(),
    })
}

/// A `SYSTEM` frame (`ping`, `disconnect`).
pub(crate) fn system_frame(message_id: &str, topic: &str, data: &Value) -> Value {
    json!({
        "specVersion": "1.0",
        "type": "SYSTEM",
        "headers": {
            "contentType": "application/json",
            "messageId": message_id,
            "time": chrono::Utc::now().timestamp_millis().to_string(),
            "topic": topic,
        },
        "data": data.to_string(),
    })
}
