#![doc = include_str!("../README.md")]
#![deny(missing_docs)]
#![forbid(unsafe_code)]
#![warn(unreachable_pub, missing_debug_implementations)]

pub mod config;
mod connector;
mod error;
mod map;

pub use config::{
    AuthConfig, EntityConfig, FieldSpec, Incremental, Pagination, RestConfig, StatusSpec,
    TimeFormat, WriteSpec,
};
pub use connector::{RestDirectory, escape_segment};

/// The provider name in errors and descriptors.
pub const PROVIDER: &str = "rest";
