//! Opening the configured store.

use std::sync::Arc;

use idsync_core::{MemoryStore, Store};
use secrecy::ExposeSecret;

use crate::config::{ConfigError, StoreConfig, StoreKind};
use crate::error::CliError;

/// An opened store and a description of it that holds no secret.
#[derive(Debug, Clone)]
pub struct OpenedStore {
    /// The store.
    pub store: Arc<dyn Store>,
    /// e.g. `sqlite idsync.db`, `postgres (URL from $DATABASE_URL)`.
    pub description: String,
}

/// Open the store a config names (default: SQLite `idsync.db` in the working folder).
pub async fn open(cfg: &StoreConfig) -> Result<OpenedStore, CliError> {
    let kind = cfg.kind().map_err(CliError::config_msg)?;
    match kind {
        StoreKind::Memory => Ok(OpenedStore {
            store: Arc::new(MemoryStore::new()),
            description: "memory (nothing is kept after this command)".into(),
        }),
        StoreKind::Sqlite(path) => {
            let store = open_sqlite(&path).await?;
            Ok(OpenedStore {
                store,
                description: format!("sqlite {}", path.display()),
            })
        }
        StoreKind::PostgresEnv(var) => {
            let url = crate::secret::resolve("store: postgres", Some(&var), None)?;
            let store = open_postgres(url.expose_secret()).await?;
            Ok(OpenedStore {
                store,
                description: format!("postgres (URL from ${var})"),
            })
        }
        StoreKind::PostgresFile(path) => {
            let url = crate::secret::resolve("store: postgres", None, Some(&path))?;
            let store = open_postgres(url.expose_secret()).await?;
            Ok(OpenedStore {
                store,
                description: format!("postgres (URL from {})", path.display()),
            })
        }
    }
}

async fn open_sqlite(path: &std::path::Path) -> Result<Arc<dyn Store>, CliError> {
    if let Some(parent) = path.parent()
        && !parent.as_os_str().is_empty()
        && !parent.exists()
    {
        return Err(CliError::config(ConfigError::new(format!(
            "store: the folder of {} does not exist",
            path.display()
        ))));
    }
    let s = idsync_store::SqliteStore::open(path)
        .await
        .map_err(|e| CliError::Core(e.with_context("store", path.display().to_string())))?;
    Ok(Arc::new(s))
}

async fn open_postgres(url: &str) -> Result<Arc<dyn Store>, CliError> {
    if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
        return Err(CliError::config(ConfigError::new(
            "store: the PostgreSQL URL must start with postgres:// or postgresql://",
        )));
    }
    let s = idsync_store::PgStore::connect(url).await.map_err(|e| {
        // sqlx errors do not repeat the URL, but make sure the password never shows.
        CliError::Core(redact_error(e, url))
    })?;
    Ok(Arc::new(s))
}

/// Replace a secret's text in an error message, should a library have put it there.
fn redact_error(e: idsync_core::Error, secret: &str) -> idsync_core::Error {
    let text = e.to_string();
    let password = url_password(secret);
    let leaks = text.contains(secret) || password.is_some_and(|p| text.contains(p));
    if !leaks {
        return e;
    }
    let mut clean = text.replace(secret, "[redacted URL]");
    if let Some(p) = password {
        clean = clean.replace(p, "[redacted]");
    }
    idsync_core::Error::new(e.kind(), clean).with_status(e.status())
}

fn url_password(url: &str) -> Option<&str> {
    let rest = url.split_once("://")?.1;
    let userinfo = rest.split('@').next().filter(|_| rest.contains('@'))?;
    let (_, pw) = userinfo.split_once(':')?;
    (!pw.is_empty()).then_some(pw)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redaction() {
        assert_eq!(url_password("postgres://u:pw@h/db"), Some("pw"));
        assert_eq!(url_password("postgres://h/db"), None);
        let e = idsync_core::Error::unexpected("cannot reach postgres://u:pw123@h/db (pw123)");
        let r = redact_error(e, "postgres://u:pw123@h/db").to_string();
        assert!(!r.contains("pw123"), "{r}");
    }
}
