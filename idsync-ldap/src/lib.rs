#![doc = include_str!("../README.md")]
#![deny(missing_docs)]
#![forbid(unsafe_code)]
#![warn(unreachable_pub, missing_debug_implementations)]

mod ber;
mod changes;
mod client;
pub mod config;
pub mod dn;
mod error;
mod lookup;
pub mod mapping;
mod sink;
mod source;

pub use config::{Dialect, DisableMarker, IncrementalMode, LdapConfig};
pub use dn::{Dn, Rdn, escape_filter_bytes, escape_filter_value};
pub use error::PROVIDER;
pub use mapping::{guid_from_string, guid_to_string};
pub use source::LdapDirectory;
