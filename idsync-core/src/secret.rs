//! References to secrets kept outside a configuration file.
//!
//! Provider configurations never hold a secret: they name an environment variable
//! (`KEY_env`) or a file (`KEY_file`). [`SecretRef`] is that reference, shared by every
//! provider's config, and [`SecretRef::read`] turns it into a [`SecretString`] that never
//! reaches `Debug` output, logs or error messages.
//!
//! ```
//! use idsync_core::secret::SecretRef;
//! use secrecy::ExposeSecret;
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let dir = std::env::temp_dir().join(format!("idsync-secret-doc-{}", std::process::id()));
//! std::fs::create_dir_all(&dir)?;
//! let path = dir.join("secret");
//! std::fs::write(&path, "s3cr3t\n")?;
//! // As a provider config holds it: `app_secret_env` / `app_secret_file`.
//! let r = SecretRef::required("app_secret", None, Some(path.as_path()))?;
//! assert_eq!(r.read("app_secret")?.expose_secret(), "s3cr3t");
//! assert!(SecretRef::from_keys("app_secret", Some("A"), Some(path.as_path())).is_err());
//! # std::fs::remove_dir_all(&dir)?;
//! # Ok(())
//! # }
//! ```

use std::path::{Path, PathBuf};

pub use secrecy::SecretString;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// Where a secret is read from: an environment variable or a file.
///
/// In TOML it is usually written as two optional keys, `KEY_env` and `KEY_file`, of which
/// exactly one is given; [`SecretRef::from_keys`] checks that. As a value of its own it is
/// `{ env = "VAR" }` or `{ file = "path" }`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum SecretRef {
    /// The value of this environment variable.
    Env(String),
    /// The content of this file, without its trailing line break.
    File(PathBuf),
}

impl SecretRef {
    /// The reference given by the keys `{key}_env` and `{key}_file`: `None` when neither is
    /// set, an error naming both keys when both are.
    pub fn from_keys(key: &str, env: Option<&str>, file: Option<&Path>) -> Result<Option<Self>> {
        match (env, file) {
            (Some(_), Some(_)) => Err(Error::config(format!(
                "{key}: give either `{key}_env` or `{key}_file`, not both"
            ))),
            (Some(""), None) => Err(Error::config(format!(
                "{key}: `{key}_env` names no environment variable"
            ))),
            (Some(v), None) => Ok(Some(SecretRef::Env(v.to_owned()))),
            (None, Some(p)) => Ok(Some(SecretRef::File(p.to_owned()))),
            (None, None) => Ok(None),
        }
    }

    /// Like [`from_keys`](Self::from_keys), but one of the keys must be set.
    pub fn required(key: &str, env: Option<&str>, file: Option<&Path>) -> Result<Self> {
        SecretRef::from_keys(key, env, file)?.ok_or_else(|| {
            Error::config(format!(
                "{key}: missing; set `{key}_env` (an environment variable name) or \
                 `{key}_file` (a file path)"
            ))
        })
    }

    /// The secret the keys `{key}_env` / `{key}_file` name, read now: `None` when neither
    /// is set. Errors name the key and the variable or file, never the value.
    pub fn read_keys(
        key: &str,
        env: Option<&str>,
        file: Option<&Path>,
    ) -> Result<Option<SecretString>> {
        SecretRef::from_keys(key, env, file)?
            .map(|r| r.read(key))
            .transpose()
    }

    /// A file reference resolved against `base` when relative (the config file's folder).
    pub fn relative_to(self, base: &Path) -> Self {
        match self {
            SecretRef::File(p) if p.is_relative() => SecretRef::File(base.join(p)),
            other => other,
        }
    }

    /// Read the secret. `what` names the setting in error messages; errors name the
    /// variable or the file, never the value. An empty secret is an error.
    pub fn read(&self, what: &str) -> Result<SecretString> {
        match self {
            SecretRef::Env(var) => match std::env::var(var) {
                Ok(v) if !v.is_empty() => Ok(SecretString::from(v)),
                Ok(_) => Err(Error::config(format!(
                    "{what}: environment variable {var} is empty"
                ))),
                Err(std::env::VarError::NotPresent) => Err(Error::config(format!(
                    "{what}: environment variable {var} is not set"
                ))),
                Err(std::env::VarError::NotUnicode(_)) => Err(Error::config(format!(
                    "{what}: environment variable {var} is not valid UTF-8"
                ))),
            },
            SecretRef::File(path) => {
                // io errors carry no file content
                let text = std::fs::read_to_string(path).map_err(|e| {
                    Error::config(format!("{what}: cannot read {}: {e}", path.display()))
                })?;
                let v = text.trim_end_matches(['\r', '\n']);
                if v.is_empty() {
                    return Err(Error::config(format!(
                        "{what}: file {} is empty",
                        path.display()
                    )));
                }
                Ok(SecretString::from(v.to_owned()))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use secrecy::ExposeSecret;

    #[test]
    fn keys_and_reading() {
        let dir = std::env::temp_dir().join(format!("idsync-secret-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("pw");
        std::fs::write(&p, "s3cr3t-value\r\n").unwrap();
        let r = SecretRef::required("pw", None, Some(&p)).unwrap();
        let s = r.read("provider x: pw").unwrap();
        assert_eq!(s.expose_secret(), "s3cr3t-value");
        assert!(!format!("{s:?}").contains("s3cr3t"));

        let e = SecretRef::Env("IDSYNC_TEST_SURELY_UNSET_VAR".into())
            .read("provider x: pw")
            .unwrap_err();
        assert!(e.message().contains("IDSYNC_TEST_SURELY_UNSET_VAR"), "{e}");
        assert!(SecretRef::required("pw", None, None).is_err());
        assert!(SecretRef::from_keys("pw", None, None).unwrap().is_none());
        assert!(SecretRef::read_keys("pw", None, None).unwrap().is_none());
        let read = SecretRef::read_keys("pw", None, Some(&p)).unwrap().unwrap();
        assert_eq!(read.expose_secret(), "s3cr3t-value");
        assert!(SecretRef::read_keys("pw", Some("A"), Some(&p)).is_err());
        let both = SecretRef::from_keys("pw", Some("A"), Some(&p)).unwrap_err();
        assert!(both.message().contains("pw_env"), "{both}");
        std::fs::write(&p, "\n").unwrap();
        assert!(SecretRef::File(p).read("pw").is_err());
        assert_eq!(
            SecretRef::File("s".into()).relative_to(Path::new("/etc/idsync")),
            SecretRef::File("/etc/idsync/s".into())
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
