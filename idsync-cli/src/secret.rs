//! Secrets come from environment variables or files named in the config, never from the
//! config itself, through the one reference type every provider shares,
//! [`idsync_core::secret::SecretRef`], and are held as [`SecretString`] so they never reach
//! `Debug` output, logs or error messages.

use std::path::Path;

use idsync_core::secret::SecretRef;
use secrecy::SecretString;

use crate::config::ConfigError;

/// Read a secret from the environment variable `env` or the file `file` (exactly one of
/// them). `what` names the setting in error messages, e.g. `provider ad: password`.
///
/// A file's content is used without its trailing line break. Errors name the variable or
/// the file, never the value.
pub fn resolve(
    what: &str,
    env: Option<&str>,
    file: Option<&Path>,
) -> Result<SecretString, ConfigError> {
    SecretRef::required(what, env, file)
        .and_then(|r| r.read(what))
        .map_err(|e| ConfigError::new(e.message().to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use secrecy::ExposeSecret;

    #[test]
    fn from_file_and_errors_without_values() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("pw");
        std::fs::write(&p, "s3cr3t-value\n").unwrap();
        let s = resolve("provider x: password", None, Some(&p)).unwrap();
        assert_eq!(s.expose_secret(), "s3cr3t-value");
        assert!(!format!("{s:?}").contains("s3cr3t"));

        let e = resolve(
            "provider x: password",
            Some("IDSYNC_TEST_SURELY_UNSET_VAR"),
            None,
        )
        .unwrap_err();
        assert!(e.message.contains("IDSYNC_TEST_SURELY_UNSET_VAR"));
        assert!(resolve("p", None, None).is_err());
        assert!(resolve("p", Some("A"), Some(&p)).is_err());
    }
}
