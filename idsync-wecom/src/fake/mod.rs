//! A stateful fake WeCom for tests, benches and examples.

pub mod state;

pub use state::{FakeDept, FakeUser, State};
