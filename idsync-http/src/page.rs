//! JSON page tokens: a listing's resumable state as a small JSON document.

use idsync_core::{Error, PageToken, Result};
use serde::Serialize;
use serde::de::DeserializeOwned;

/// Encodes a listing state as a page token.
pub fn encode_token<T: Serialize>(state: &T) -> Result<PageToken> {
    Ok(PageToken(serde_json::to_string(state)?))
}

/// Decodes a page token made by [`encode_token`]; a token that is not `provider`'s is
/// [`ErrorKind::InvalidData`](idsync_core::ErrorKind::InvalidData).
pub fn decode_token<T: DeserializeOwned>(provider: &str, token: &PageToken) -> Result<T> {
    serde_json::from_str(&token.0).map_err(|e| {
        Error::invalid_data(format!("not a {provider} page token"))
            .with_provider(provider.to_owned())
            .with_source(e)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::VecDeque;

    #[test]
    fn roundtrip_and_garbage() {
        let q: VecDeque<i64> = [1, 2, 3].into();
        let t = encode_token(&q).unwrap();
        let back: VecDeque<i64> = decode_token("demo", &t).unwrap();
        assert_eq!(back, q);
        let e = decode_token::<VecDeque<i64>>("demo", &PageToken("garbage".into())).unwrap_err();
        assert_eq!(e.kind(), idsync_core::ErrorKind::InvalidData);
        assert!(e.message().contains("demo"));
    }
}
