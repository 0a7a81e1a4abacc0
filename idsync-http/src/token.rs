//! Access-token cache with single-flight refresh and invalidation on a token error.

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use idsync_core::Result;
use secrecy::{ExposeSecret, SecretString};
use tokio::sync::Mutex;
use tokio::time::Instant;

/// A token as the provider issued it.
#[derive(Debug, Clone)]
pub struct IssuedToken {
    /// The token.
    pub value: SecretString,
    /// Its lifetime from now.
    pub expires_in: Duration,
}

/// A cached token handed to a caller; give it back to [`TokenCache::invalidate`] when the
/// provider rejects it. Its `Debug` output never shows the value.
#[derive(Clone)]
pub struct Token {
    value: SecretString,
    generation: u64,
}

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Token")
            .field("value", &"[redacted]")
            .field("generation", &self.generation)
            .finish()
    }
}

impl Token {
    /// The secret value (put it in the request, nowhere else).
    pub fn expose(&self) -> &str {
        self.value.expose_secret()
    }

    /// The secret, as a [`SecretString`].
    pub fn secret(&self) -> &SecretString {
        &self.value
    }

    /// Which fetch this token came from (1, 2, ...).
    pub fn generation(&self) -> u64 {
        self.generation
    }
}

struct Cached {
    token: Token,
    /// When the token should be replaced (expiry minus the refresh margin).
    refresh_at: Instant,
}

/// Caches one access token (one per app, or per (corp id, secret) for WeCom).
///
/// * The token is refreshed `margin` before it expires (at most a quarter of its lifetime
///   early).
/// * **Single flight**: the lock is held across the fetch, so concurrent callers wait for
///   one refresh instead of each fetching.
/// * [`invalidate`](TokenCache::invalidate) forgets the token a failed call used, but not a
///   newer one another caller fetched meanwhile.
pub struct TokenCache {
    margin: Duration,
    state: Mutex<Option<Cached>>,
    generation: AtomicU64,
    fetches: AtomicU64,
}

impl std::fmt::Debug for TokenCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenCache")
            .field("margin", &self.margin)
            .field("fetches", &self.fetches())
            .finish_non_exhaustive()
    }
}

impl TokenCache {
    /// An empty cache refreshing `margin` before expiry.
    pub fn new(margin: Duration) -> Self {
        TokenCache {
            margin,
            state: Mutex::new(None),
            generation: AtomicU64::new(0),
            fetches: AtomicU64::new(0),
        }
    }

    /// How many times `fetch` was called.
    pub fn fetches(&self) -> u64 {
        self.fetches.load(Ordering::Relaxed)
    }

    /// The cached token, or a new one from `fetch` when there is none or it is due.
    pub async fn get<F, Fut>(&self, fetch: F) -> Result<Token>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<IssuedToken>>,
    {
        let mut guard = self.state.lock().await;
        if let Some(c) = guard.as_ref()
            && Instant::now() < c.refresh_at
        {
            return Ok(c.token.clone());
        }
        self.fetches.fetch_add(1, Ordering::Relaxed);
        let issued = fetch().await?;
        let ttl = issued.expires_in.max(Duration::from_secs(1));
        let margin = self.margin.min(ttl / 4);
        let generation = self.generation.fetch_add(1, Ordering::Relaxed) + 1;
        let token = Token {
            value: issued.value,
            generation,
        };
        *guard = Some(Cached {
            token: token.clone(),
            refresh_at: Instant::now() + ttl - margin,
        });
        Ok(token)
    }

    /// Forgets `token` if it is still the cached one.
    pub async fn invalidate(&self, token: &Token) {
        let mut guard = self.state.lock().await;
        if guard
            .as_ref()
            .is_some_and(|c| c.token.generation == token.generation)
        {
            *guard = None;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn issued(v: &str, secs: u64) -> IssuedToken {
        IssuedToken {
            value: SecretString::from(v.to_owned()),
            expires_in: Duration::from_secs(secs),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn single_flight_refresh_and_invalidation() {
        let cache = Arc::new(TokenCache::new(Duration::from_secs(300)));
        let mut handles = Vec::new();
        for _ in 0..10 {
            let c = cache.clone();
            handles.push(tokio::spawn(async move {
                c.get(|| async {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    Ok(issued("t1", 7200))
                })
                .await
            }));
        }
        for h in handles {
            assert_eq!(h.await.unwrap().unwrap().expose(), "t1");
        }
        assert_eq!(cache.fetches(), 1);
        let old = cache
            .get(|| async { Ok(issued("never", 1)) })
            .await
            .unwrap();
        assert_eq!(old.expose(), "t1");
        cache.invalidate(&old).await;
        let new = cache
            .get(|| async { Ok(issued("t2", 7200)) })
            .await
            .unwrap();
        assert_eq!(new.expose(), "t2");
        // invalidating the old token again does not drop the new one
        cache.invalidate(&old).await;
        let same = cache
            .get(|| async { Ok(issued("t3", 7200)) })
            .await
            .unwrap();
        assert_eq!(same.expose(), "t2");
        assert_eq!(cache.fetches(), 2);
        assert!(!format!("{same:?}").contains("t2"));
        // refreshed before expiry: 7200 s - 300 s margin
        tokio::time::advance(Duration::from_secs(6950)).await;
        let later = cache
            .get(|| async { Ok(issued("t4", 7200)) })
            .await
            .unwrap();
        assert_eq!(later.expose(), "t4");
    }

    #[tokio::test]
    async fn a_failed_fetch_is_not_cached() {
        let cache = TokenCache::new(Duration::from_secs(1));
        let r = cache
            .get(|| async { Err(idsync_core::Error::unexpected("down")) })
            .await;
        assert!(r.is_err());
        let t = cache.get(|| async { Ok(issued("ok", 60)) }).await.unwrap();
        assert_eq!(t.expose(), "ok");
    }
}
