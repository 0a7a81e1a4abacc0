//! DingTalk callback crypto: the toolkit's shared
//! [`CallbackCrypto`] with the owner key
//! (AppKey, CorpId or suiteKey) as receive id, and the JSON reply DingTalk expects.
//!
//! The algorithm (SHA-1 signature over the sorted token, timestamp, nonce and ciphertext;
//! AES-256-CBC with the EncodingAESKey; `random(16) || len || msg || owner key`, PKCS#7 to 32
//! bytes, 16 from the Go helper accepted) lives once in [`idsync_http::callback_crypto`],
//! shared with WeCom. It is checked here byte for byte against DingTalk's published vectors.

use idsync_core::Result;
pub use idsync_http::callback_crypto::{CallbackCrypto, Decrypted, signature};

/// Builds the encrypted acknowledgement DingTalk expects (`success`, encrypted and signed):
/// `{"msg_signature","timeStamp","nonce","encrypt"}`.
pub fn reply(
    crypto: &CallbackCrypto,
    message: &str,
    timestamp: &str,
    nonce: &str,
) -> Result<serde_json::Value> {
    let encrypt = crypto.encrypt(message)?;
    let msg_signature = crypto.signature(timestamp, nonce, &encrypt);
    Ok(serde_json::json!({
        "msg_signature": msg_signature,
        "timeStamp": timestamp,
        "nonce": nonce,
        "encrypt": encrypt,
    }))
}

/// The POST DingTalk sends for an event (the fake's and tests' side of a callback): the query
/// (`signature`, `timestamp`, `nonce`) and the JSON body `{"encrypt": …}`.
pub fn seal_event(
    crypto: &CallbackCrypto,
    message: &str,
    timestamp: &str,
    nonce: &str,
) -> Result<(Vec<(String, String)>, serde_json::Value)> {
    let encrypt = crypto.encrypt(message)?;
    let signature = crypto.signature(timestamp, nonce, &encrypt);
    Ok((
        vec![
            ("signature".into(), signature),
            ("timestamp".into(), timestamp.to_owned()),
            ("nonce".into(), nonce.to_owned()),
        ],
        serde_json::json!({ "encrypt": encrypt }),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine as _;
    use base64::engine::general_purpose::STANDARD;
    use secrecy::SecretString;

    #[derive(serde::Deserialize)]
    struct Vectors {
        official: Vec<Vector>,
    }

    #[derive(serde::Deserialize)]
    struct Vector {
        name: String,
        token: String,
        encoding_aes_key: String,
        owner_key: String,
        timestamp: String,
        nonce: String,
        encrypt: String,
        signature: String,
        plaintext: String,
        pkcs7_pad_byte: u8,
    }

    fn vectors() -> Vec<Vector> {
        let raw = include_str!("../tests/fixtures/crypto_vectors.json");
        let v: Vectors = serde_json::from_str(raw).unwrap();
        assert_eq!(v.official.len(), 3);
        v.official
    }

    fn crypto_for(v: &Vector) -> CallbackCrypto {
        CallbackCrypto::new(
            crate::PROVIDER,
            SecretString::from(v.token.clone()),
            &SecretString::from(v.encoding_aes_key.clone()),
            v.owner_key.clone(),
        )
        .unwrap()
    }

    #[test]
    fn official_vectors_signature() {
        for v in vectors() {
            let c = crypto_for(&v);
            assert_eq!(
                c.signature(&v.timestamp, &v.nonce, &v.encrypt),
                v.signature,
                "{}",
                v.name
            );
            assert!(c.verify(&v.signature, &v.timestamp, &v.nonce, &v.encrypt));
            assert!(!c.verify(&v.signature, &v.timestamp, "other", &v.encrypt));
        }
    }

    #[test]
    fn official_vectors_decrypt_and_reencrypt_byte_exact() {
        for v in vectors() {
            let c = crypto_for(&v);
            let d = c.decrypt(&v.encrypt).unwrap();
            assert_eq!(d.message, v.plaintext, "{}", v.name);
            assert_eq!(d.receive_id, v.owner_key);
            assert_eq!(d.pad, v.pkcs7_pad_byte, "{}", v.name);
            let again = c.encrypt_with(&v.plaintext, d.random).unwrap();
            assert_eq!(again, v.encrypt, "{}", v.name);
        }
    }

    #[test]
    fn sixteen_byte_padding_is_accepted() {
        let v = &vectors()[1];
        let c = crypto_for(v);
        let random = *b"0123456789abcdef";
        let enc16 = c.encrypt_block("hello 16", random, 16).unwrap();
        let d = c.decrypt(&enc16).unwrap();
        assert_eq!(d.message, "hello 16");
        assert!(d.pad <= 16);
        let enc32 = c.encrypt_block("hello 16", random, 32).unwrap();
        assert_ne!(enc16, enc32);
        assert_eq!(c.decrypt(&enc32).unwrap().message, "hello 16");
    }

    #[test]
    fn wrong_owner_key_is_rejected() {
        let v = &vectors()[0];
        let c = CallbackCrypto::new(
            crate::PROVIDER,
            SecretString::from(v.token.clone()),
            &SecretString::from(v.encoding_aes_key.clone()),
            "dingSOMEONEELSE",
        )
        .unwrap();
        assert!(c.decrypt(&v.encrypt).is_err());
    }

    #[test]
    fn tampered_ciphertext_and_bad_keys_are_errors() {
        let v = &vectors()[0];
        let c = crypto_for(v);
        assert!(c.decrypt("not base64 !!").is_err());
        assert!(c.decrypt("AAAA").is_err());
        let mut bytes = STANDARD.decode(&v.encrypt).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 0x55;
        assert!(c.decrypt(&STANDARD.encode(bytes)).is_err());
        let short = CallbackCrypto::new(
            crate::PROVIDER,
            SecretString::from("t".to_owned()),
            &SecretString::from("abc".to_owned()),
            "x",
        );
        assert!(short.is_err());
    }

    #[test]
    fn reply_roundtrips_and_debug_redacts() {
        let v = &vectors()[0];
        let c = crypto_for(v);
        let r = reply(&c, "success", "1700000000000", "abcd1234").unwrap();
        let enc = r["encrypt"].as_str().unwrap();
        assert_eq!(c.decrypt(enc).unwrap().message, "success");
        assert!(c.verify(
            r["msg_signature"].as_str().unwrap(),
            "1700000000000",
            "abcd1234",
            enc
        ));
        let dbg = format!("{c:?}");
        assert!(!dbg.contains(&v.token));
        assert!(!dbg.contains(&v.encoding_aes_key));
    }
}
