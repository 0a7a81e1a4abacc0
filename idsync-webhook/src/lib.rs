#![doc = include_str!("../README.md")]
#![deny(missing_docs)]
#![forbid(unsafe_code)]
#![warn(unreachable_pub, missing_debug_implementations)]

mod config;
mod signer;
mod sink;

pub use config::{PayloadMode, WebhookConfig, default_schedule, parse_duration};
pub use idsync_core::secret::SecretRef;
pub use idsync_http::breaker::BreakerConfig;
pub use signer::{SECRET_PREFIX, Signer};
pub use sink::{DeliveryObserver, DeliveryOutcome, DeliveryStats, PROVIDER, WebhookSink};
