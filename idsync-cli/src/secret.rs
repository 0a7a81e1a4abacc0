//! Secrets come from environment variables or files named in the config, never from the
//! config itself, and are held as [`SecretString`] so they never reach `Debug` output,
//! logs or error messages.

use std::path::Path;

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
    match (env, file) {
        (Some(_), Some(_)) => Err(ConfigError::new(format!(
            "{what}: give either the `_env` or the `_file` setting, not both"
        ))),
        (None, None) => Err(ConfigError::new(format!(
            "{what}: missing; set the `_env` (an environment variable name) or the `_file` \
             (a file path) setting"
        ))),
        (Some(var), None) => match std::env::var(var) {
            Ok(v) if !v.is_empty() => Ok(SecretString::from(v)),
            Ok(_) => Err(ConfigError::new(format!(
                "{what}: environment variable {var} is empty"
            ))),
            Err(std::env::VarError::NotPresent) => Err(ConfigError::new(format!(
                "{what}: environment variable {var} is not set"
            ))),
            Err(std::env::VarError::NotUnicode(_)) => Err(ConfigError::new(format!(
                "{what}: environment variable {var} is not valid UTF-8"
            ))),
        },
        (None, Some(path)) => {
            let text = std::fs::read_to_string(path).map_err(|e| {
                // io errors carry no file content
                ConfigError::new(format!("{what}: cannot read {}: {e}", path.display()))
            })?;
            let v = text.trim_end_matches(['\r', '\n']);
            if v.is_empty() {
                return Err(ConfigError::new(format!(
                    "{what}: file {} is empty",
                    path.display()
                )));
            }
            Ok(SecretString::from(v.to_owned()))
        }
    }
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
