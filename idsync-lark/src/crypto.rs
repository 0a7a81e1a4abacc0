//! Lark's event crypto (private; the toolkit will hold the shared AES-CBC part):
//! `key = SHA-256(encrypt_key)`, the ciphertext is `base64(IV(16) || AES-256-CBC(PKCS#7))`,
//! and `X-Lark-Signature = hex(SHA-256(timestamp + nonce + encrypt_key + raw_body))`.

#[cfg(any(test, feature = "fake"))]
use aes::cipher::BlockEncryptMut;
use aes::cipher::{BlockDecryptMut, KeyIvInit, block_padding::Pkcs7};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use sha2::{Digest, Sha256};

use crate::error::LarkError;

type Dec = cbc::Decryptor<aes::Aes256>;
#[cfg(any(test, feature = "fake"))]
type Enc = cbc::Encryptor<aes::Aes256>;

fn key_of(encrypt_key: &str) -> [u8; 32] {
    Sha256::digest(encrypt_key.as_bytes()).into()
}

/// Decrypts an `encrypt` value into its UTF-8 plaintext.
pub(crate) fn decrypt(encrypt_key: &str, encrypt: &str) -> Result<String, LarkError> {
    let buf = STANDARD
        .decode(encrypt.trim())
        .map_err(|_| LarkError::Callback("encrypt is not base64".into()))?;
    if buf.len() < 32 || (buf.len() - 16) % 16 != 0 {
        return Err(LarkError::Callback(
            "encrypt is not IV + whole AES blocks".into(),
        ));
    }
    let (iv, body) = buf.split_at(16);
    let key = key_of(encrypt_key);
    let plain = Dec::new_from_slices(&key, iv)
        .map_err(|_| LarkError::Callback("bad key or IV length".into()))?
        .decrypt_padded_vec_mut::<Pkcs7>(body)
        .map_err(|_| LarkError::Callback("decryption failed (wrong Encrypt Key?)".into()))?;
    String::from_utf8(plain)
        .map_err(|_| LarkError::Callback("the decrypted event is not UTF-8".into()))
}

/// Encrypts `plain` with `iv` (what Lark does; the fake and tests use it).
#[cfg(any(test, feature = "fake"))]
pub(crate) fn encrypt(encrypt_key: &str, plain: &str, iv: [u8; 16]) -> String {
    let key = key_of(encrypt_key);
    let mut out = iv.to_vec();
    out.extend(Enc::new(&key.into(), &iv.into()).encrypt_padded_vec_mut::<Pkcs7>(plain.as_bytes()));
    STANDARD.encode(out)
}

/// `lowercase_hex(SHA-256(timestamp + nonce + encrypt_key + raw_body))`.
pub(crate) fn signature(timestamp: &str, nonce: &str, encrypt_key: &str, body: &[u8]) -> String {
    let mut h = Sha256::new();
    h.update(timestamp.as_bytes());
    h.update(nonce.as_bytes());
    h.update(encrypt_key.as_bytes());
    h.update(body);
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

/// Constant-time comparison of two signatures.
pub(crate) fn same(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn official_vector() {
        let v: serde_json::Value = serde_json::from_str(include_str!(
            "../tests/fixtures/lark-official-crypto-vectors.json"
        ))
        .unwrap();
        let ov = &v["official_vector"];
        assert_eq!(
            decrypt(
                ov["encrypt_key"].as_str().unwrap(),
                ov["encrypt"].as_str().unwrap()
            )
            .unwrap(),
            ov["plaintext"].as_str().unwrap()
        );
        assert_eq!(
            decrypt("test key", "P37w+VZImNgPEO1RBhJ6RtKl7n6zymIbEG1pReEzghk=").unwrap(),
            "hello world"
        );
        assert!(decrypt("other key", "P37w+VZImNgPEO1RBhJ6RtKl7n6zymIbEG1pReEzghk=").is_err());
        let key = v["encrypt_key"].as_str().unwrap();
        let sealed = encrypt(key, r#"{"a":"飞书"}"#, [7u8; 16]);
        assert_eq!(decrypt(key, &sealed).unwrap(), r#"{"a":"飞书"}"#);
        assert!(decrypt(key, "not base64!").is_err());
        assert!(decrypt(key, &STANDARD.encode([0u8; 20])).is_err());
    }

    #[test]
    fn signature_over_raw_bytes() {
        let s = signature("1716171245", "n0nce", "k", b"{\"encrypt\":\"x\"}");
        assert_eq!(s.len(), 64);
        assert!(same(&s, &s.clone()));
        assert!(!same(&s, &s.to_uppercase()));
        assert_ne!(
            s,
            signature("1716171245", "n0nce", "k", b"{\"encrypt\": \"x\"}")
        );
        assert!(!same(&s, &s[..63]));
    }
}
