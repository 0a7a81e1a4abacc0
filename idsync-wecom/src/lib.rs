#![doc = include_str!("../README.md")]
#![deny(missing_docs)]
#![forbid(unsafe_code)]
#![warn(unreachable_pub, missing_debug_implementations)]

pub mod crypto;
mod error;
pub mod event;
#[cfg(feature = "fake")]
pub mod fake;
pub mod mapping;

pub use crypto::MsgCrypt;

/// The provider name in descriptors and errors.
pub const PROVIDER: &str = "wecom";
