#![doc = include_str!("../README.md")]
#![deny(missing_docs)]
#![forbid(unsafe_code)]
#![warn(unreachable_pub, missing_debug_implementations)]

pub mod breaker;
#[cfg(feature = "callback-crypto")]
pub mod callback_crypto;
mod client;
mod error;
mod events;
#[cfg(feature = "fake")]
pub mod fake;
mod link;
mod oauth2;
mod pace;
mod page;
mod token;
mod tree;
mod url;

pub use breaker::{Breaker, BreakerConfig};
pub use client::{
    Answer, BodyCheck, DEFAULT_MAX_BODY_BYTES, HttpSettings, JsonClient, RawAnswer, Request,
    TokenAuth, TokenPlacement, TokenSource,
};
pub use error::{ApiError, Class, HttpError, classify_status, parse_retry_after};
pub use events::{Batch, Event, EventKey, EventLog, Events, Incoming, STORE_BATCH, StoreEventLog};
pub use link::find_rel;
pub use oauth2::ClientCredentials;
pub use pace::{Limit, Pacer, Ticket};
pub use page::{decode_token, encode_token};
pub use token::{IssuedToken, Token, TokenCache};
pub use tree::TreeWalk;
pub use url::{SECRET_PARAMS, check_base_url, is_loopback, redact_url};

/// Re-exported so providers name methods and headers without depending on reqwest.
pub use reqwest::{Method, header};

/// Reads an integer that a provider may send as a number or a string (`"10"`).
pub fn int_of(v: &serde_json::Value) -> Option<i64> {
    match v {
        serde_json::Value::Number(n) => n.as_i64(),
        serde_json::Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}
