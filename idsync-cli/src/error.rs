//! Errors of the command line and their exit codes.

use std::fmt;
use std::process::ExitCode;

use crate::config::ConfigError;

/// Exit codes. Documented in `idsync --help` and the crate README.
pub mod exit {
    /// Success.
    pub const OK: u8 = 0;
    /// Any other error: a provider or the store failed, a run or entity was not found.
    pub const ERROR: u8 = 1;
    /// The configuration is invalid (syntax, unknown field, bad reference, missing secret).
    pub const CONFIG: u8 = 2;
    /// The guard stopped the run: nothing was applied, it waits for `idsync approve RUN`.
    pub const GUARD: u8 = 3;
    /// Some operations failed or were skipped; the others were applied.
    pub const PARTIAL: u8 = 4;
    /// Another worker holds the job's lease.
    pub const BUSY: u8 = 5;
    /// The run stopped because another worker took the job's lease over mid-run (its
    /// writes are fenced; nothing was written after the lease was lost).
    pub const LEASE_LOST: u8 = 6;
}

/// An error that ends a command.
#[derive(Debug)]
pub enum CliError {
    /// The configuration is invalid.
    Config(Vec<ConfigError>),
    /// The engine, the store or a provider failed.
    Core(idsync_core::Error),
    /// Another worker holds the job's lease.
    Busy(String),
    /// Anything else (I/O on an output file, a bad argument).
    Other(String),
}

impl CliError {
    /// One configuration error.
    pub fn config(e: ConfigError) -> Self {
        CliError::Config(vec![e])
    }

    /// A configuration error without a position.
    pub fn config_msg(m: impl Into<String>) -> Self {
        CliError::Config(vec![ConfigError::new(m)])
    }

    /// The exit code.
    pub fn exit_code(&self) -> u8 {
        match self {
            CliError::Config(_) => exit::CONFIG,
            CliError::Core(e) if e.kind() == idsync_core::ErrorKind::ConfigInvalid => exit::CONFIG,
            CliError::Core(e) if e.kind() == idsync_core::ErrorKind::NeedsApproval => exit::GUARD,
            CliError::Busy(_) => exit::BUSY,
            CliError::Core(_) | CliError::Other(_) => exit::ERROR,
        }
    }

    /// The exit code as a process exit code.
    pub fn exit(&self) -> ExitCode {
        ExitCode::from(self.exit_code())
    }
}

impl fmt::Display for CliError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CliError::Config(errs) => {
                for (i, e) in errs.iter().enumerate() {
                    if i > 0 {
                        writeln!(f)?;
                    }
                    write!(f, "config error: {e}")?;
                }
                Ok(())
            }
            CliError::Core(e) => write!(f, "{e}"),
            CliError::Busy(m) | CliError::Other(m) => write!(f, "{m}"),
        }
    }
}

impl std::error::Error for CliError {}

impl From<idsync_core::Error> for CliError {
    fn from(e: idsync_core::Error) -> Self {
        CliError::Core(e)
    }
}

impl From<ConfigError> for CliError {
    fn from(e: ConfigError) -> Self {
        CliError::config(e)
    }
}

impl From<std::io::Error> for CliError {
    fn from(e: std::io::Error) -> Self {
        CliError::Other(format!("I/O error: {e}"))
    }
}
