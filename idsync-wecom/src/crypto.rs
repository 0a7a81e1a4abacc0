//! WeCom callback crypto (WXBizMsgCrypt): the toolkit's shared
//! [`CallbackCrypto`] with the CorpID as
//! receive id, and the XML envelope WeCom posts.
//!
//! The algorithm (SHA-1 `msg_signature` over the sorted token, timestamp, nonce and
//! ciphertext; AES-256-CBC with the EncodingAESKey; `random(16) || len || msg || CorpID`,
//! PKCS#7 to 32 bytes) lives once in [`idsync_http::callback_crypto`], shared with DingTalk.
//! It is checked here byte for byte against WeCom's official vectors
//! (`tests/fixtures/crypto_vectors.json`).

use idsync_core::Result;
pub use idsync_http::callback_crypto::{CallbackCrypto, Decrypted, signature};

/// The POST body WeCom sends for an event, with its `msg_signature`:
/// `<xml><ToUserName/><Encrypt/><AgentID/></xml>` (the fake's side of a callback).
pub fn seal_event(
    crypto: &CallbackCrypto,
    message: &str,
    timestamp: &str,
    nonce: &str,
    agent_id: &str,
) -> Result<(String, String)> {
    let encrypt = crypto.encrypt(message)?;
    let msg_signature = crypto.signature(timestamp, nonce, &encrypt);
    let body = format!(
        "<xml><ToUserName><![CDATA[{}]]></ToUserName><Encrypt><![CDATA[{encrypt}]]></Encrypt><AgentID><![CDATA[{agent_id}]]></AgentID></xml>",
        crypto.receive_id()
    );
    Ok((body, msg_signature))
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
        receive_id: String,
        timestamp: String,
        nonce: String,
        encrypt: String,
        msg_signature: String,
        plaintext: String,
        pkcs7_pad_byte: u8,
    }

    fn vectors() -> Vec<Vector> {
        let raw = include_str!("../tests/fixtures/crypto_vectors.json");
        let v: Vectors = serde_json::from_str(raw).unwrap();
        assert_eq!(v.official.len(), 2);
        v.official
    }

    fn crypto_for(v: &Vector, receive_id: &str) -> CallbackCrypto {
        CallbackCrypto::new(
            crate::PROVIDER,
            SecretString::from(v.token.clone()),
            &SecretString::from(v.encoding_aes_key.clone()),
            receive_id,
        )
        .unwrap()
    }

    #[test]
    fn official_signatures() {
        for v in vectors() {
            let c = crypto_for(&v, &v.receive_id);
            assert_eq!(
                c.signature(&v.timestamp, &v.nonce, &v.encrypt),
                v.msg_signature,
                "{}",
                v.name
            );
            assert!(c.verify(&v.msg_signature, &v.timestamp, &v.nonce, &v.encrypt));
            assert!(c.verify(
                &v.msg_signature.to_ascii_uppercase(),
                &v.timestamp,
                &v.nonce,
                &v.encrypt
            ));
            // any of the four values changed: refused
            assert!(!c.verify(&v.msg_signature, &v.timestamp, "1", &v.encrypt));
            assert!(!c.verify(&v.msg_signature, "1476416374", &v.nonce, &v.encrypt));
        }
    }

    #[test]
    fn official_decrypt_and_reencrypt_byte_exact() {
        for v in vectors() {
            let c = crypto_for(&v, &v.receive_id);
            let d = c
                .verify_and_decrypt(&v.msg_signature, &v.timestamp, &v.nonce, &v.encrypt)
                .unwrap();
            assert_eq!(d.message, v.plaintext, "{}", v.name);
            assert_eq!(d.pad, v.pkcs7_pad_byte, "{}", v.name);
            assert_eq!(c.encrypt_with(&v.plaintext, d.random).unwrap(), v.encrypt);
        }
    }

    #[test]
    fn forged_signature_and_other_corp_are_refused() {
        let v = &vectors()[1];
        let c = crypto_for(v, &v.receive_id);
        let forged = "0c3914025cb4b4d68103f6bfc8db550f79dcf48f";
        assert!(
            c.verify_and_decrypt(forged, &v.timestamp, &v.nonce, &v.encrypt)
                .is_err()
        );
        let other = crypto_for(v, "wwSOMEOTHERCORP");
        let e = other.decrypt(&v.encrypt).unwrap_err();
        assert!(e.message().contains("receive id"), "{e}");
    }

    #[test]
    fn tampered_ciphertext_and_bad_keys_are_errors() {
        let v = &vectors()[0];
        let c = crypto_for(v, &v.receive_id);
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
    fn sealed_events_roundtrip_and_debug_redacts() {
        let v = &vectors()[1];
        let c = crypto_for(v, &v.receive_id);
        let (body, sig) = seal_event(&c, "<xml>hi</xml>", "1700000000", "n1", "1000002").unwrap();
        let env = crate::event::parse_envelope(&body).unwrap();
        assert_eq!(env.to_user_name.as_deref(), Some(v.receive_id.as_str()));
        let d = c
            .verify_and_decrypt(&sig, "1700000000", "n1", &env.encrypt)
            .unwrap();
        assert_eq!(d.message, "<xml>hi</xml>");
        assert!((1..=32).contains(&d.pad));
        let dbg = format!("{c:?}");
        assert!(!dbg.contains(&v.token));
        assert!(!dbg.contains(&v.encoding_aes_key));
    }
}
