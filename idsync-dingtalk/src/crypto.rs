//! DingTalk callback crypto: SHA-1 signatures and AES-256-CBC message encryption.
//!
//! The algorithm, as DingTalk's official helpers implement it:
//!
//! * `signature = hex(sha1(concat(sort([token, timestamp, nonce, encrypt]))))`;
//! * `aes_key = base64(EncodingAESKey + "=")` (32 bytes, decoded leniently: the official sample
//!   keys have non-zero trailing bits), `iv = aes_key[..16]`;
//! * plaintext = `random(16) || u32_be(len(msg)) || msg || owner_key`, PKCS#7-padded to a
//!   32-byte block (the Go helper pads to 16; both are accepted when decrypting).
//!
//! [`CallbackCrypto`] is checked byte for byte against the vendor's published vectors.

use aes::Aes256;
use aes::cipher::block_padding::NoPadding;
use aes::cipher::{BlockDecryptMut, BlockEncryptMut, KeyIvInit};
use base64::Engine as _;
use base64::engine::DecodePaddingMode;
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig, STANDARD};
use secrecy::{ExposeSecret, SecretString};
use sha1::{Digest, Sha1};

use idsync_core::Result;

use crate::error::DingTalkError;

fn crypto_err(msg: impl Into<String>) -> idsync_core::Error {
    DingTalkError::Crypto(msg.into()).into()
}

/// Block size DingTalk pads to when encrypting (PKCS#7 with up to 32 pad bytes).
const PAD_BLOCK: usize = 32;

/// Lenient base64 for EncodingAESKey: trailing bits allowed, padding optional.
const LENIENT: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    GeneralPurposeConfig::new()
        .with_decode_allow_trailing_bits(true)
        .with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// Keys for one callback subscription: the signing token, the AES key derived from the
/// EncodingAESKey, and the owner key (AppKey, CorpId or suiteKey) the plaintext must end with.
pub struct CallbackCrypto {
    token: SecretString,
    aes_key: [u8; 32],
    owner_key: String,
}

impl std::fmt::Debug for CallbackCrypto {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CallbackCrypto")
            .field("token", &"[redacted]")
            .field("aes_key", &"[redacted]")
            .field("owner_key", &self.owner_key)
            .finish()
    }
}

/// A decrypted callback message with the parts of its plaintext.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decrypted {
    /// The 16 random bytes that open the plaintext.
    pub random: [u8; 16],
    /// The message (UTF-8, usually JSON).
    pub message: String,
    /// The owner key that closes the plaintext (already checked against the expected one).
    pub owner_key: String,
    /// The PKCS#7 pad byte that was removed (1..=32).
    pub pad: u8,
}

impl CallbackCrypto {
    /// Builds the crypto from the subscription's `token`, 43-character `EncodingAESKey` and
    /// owner key (AppKey for app subscriptions, CorpId for `register_call_back`, suiteKey for
    /// ISV apps).
    pub fn new(
        token: SecretString,
        encoding_aes_key: &SecretString,
        owner_key: impl Into<String>,
    ) -> Result<Self> {
        let raw = encoding_aes_key.expose_secret();
        if raw.len() != 43 {
            return Err(crypto_err(format!(
                "EncodingAESKey must be 43 characters, got {}",
                raw.len()
            )));
        }
        let bytes = LENIENT
            .decode(format!("{raw}="))
            .map_err(|_| crypto_err("EncodingAESKey is not base64"))?;
        let aes_key: [u8; 32] = bytes
            .try_into()
            .map_err(|_| crypto_err("EncodingAESKey must decode to 32 bytes"))?;
        Ok(Self {
            token,
            aes_key,
            owner_key: owner_key.into(),
        })
    }

    /// The owner key the plaintext must end with.
    pub fn owner_key(&self) -> &str {
        &self.owner_key
    }

    /// `hex(sha1(concat(sort([token, timestamp, nonce, encrypt]))))` with this crypto's token.
    pub fn signature(&self, timestamp: &str, nonce: &str, encrypt: &str) -> String {
        signature(self.token.expose_secret(), timestamp, nonce, encrypt)
    }

    /// Checks `signature` against the expected one in constant time.
    pub fn verify(&self, signature: &str, timestamp: &str, nonce: &str, encrypt: &str) -> bool {
        let expected = self.signature(timestamp, nonce, encrypt);
        constant_time_eq(
            expected.as_bytes(),
            signature.to_ascii_lowercase().as_bytes(),
        )
    }

    /// Decrypts a base64 `encrypt` value and checks its layout and owner key.
    pub fn decrypt(&self, encrypt: &str) -> Result<Decrypted> {
        let bad = |what: &str| crypto_err(format!("callback payload: {what}"));
        let mut buf = STANDARD
            .decode(encrypt.trim())
            .map_err(|_| bad("encrypt is not base64"))?;
        if buf.is_empty() || buf.len() % 16 != 0 {
            return Err(bad("ciphertext length is not a multiple of 16"));
        }
        let dec = cbc::Decryptor::<Aes256>::new_from_slices(&self.aes_key, &self.aes_key[..16])
            .map_err(|_| bad("bad key length"))?;
        let plain = dec
            .decrypt_padded_mut::<NoPadding>(&mut buf)
            .map_err(|_| bad("cannot decrypt"))?;
        let pad = *plain.last().ok_or_else(|| bad("empty plaintext"))?;
        let pad_len = usize::from(pad);
        if pad_len == 0 || pad_len > PAD_BLOCK || pad_len > plain.len() {
            return Err(bad("invalid PKCS#7 padding"));
        }
        let body_len = plain.len() - pad_len;
        if plain[body_len..].iter().any(|b| *b != pad) {
            return Err(bad("invalid PKCS#7 padding"));
        }
        let body = &plain[..body_len];
        if body.len() < 20 {
            return Err(bad("plaintext too short"));
        }
        let mut random = [0u8; 16];
        random.copy_from_slice(&body[..16]);
        let mut len_bytes = [0u8; 4];
        len_bytes.copy_from_slice(&body[16..20]);
        let msg_len = u32::from_be_bytes(len_bytes) as usize;
        let rest = &body[20..];
        if msg_len > rest.len() {
            return Err(bad("message length exceeds plaintext"));
        }
        let message = std::str::from_utf8(&rest[..msg_len])
            .map_err(|_| bad("message is not UTF-8"))?
            .to_owned();
        let owner_key = std::str::from_utf8(&rest[msg_len..])
            .map_err(|_| bad("owner key is not UTF-8"))?
            .to_owned();
        if !constant_time_eq(owner_key.as_bytes(), self.owner_key.as_bytes()) {
            return Err(bad("owner key does not match"));
        }
        Ok(Decrypted {
            random,
            message,
            owner_key,
            pad,
        })
    }

    /// Encrypts `message` with the given 16 random bytes, padded to a 32-byte block.
    pub fn encrypt_with(&self, message: &str, random: [u8; 16]) -> Result<String> {
        self.encrypt_block(message, random, PAD_BLOCK)
    }

    /// Encrypts `message` with fresh random bytes.
    pub fn encrypt(&self, message: &str) -> Result<String> {
        let mut random = [0u8; 16];
        rand::Rng::fill(&mut rand::rng(), &mut random);
        self.encrypt_with(message, random)
    }

    /// Encrypts with a chosen padding block (16 like DingTalk's Go helper, or 32).
    pub fn encrypt_block(&self, message: &str, random: [u8; 16], block: usize) -> Result<String> {
        if block == 0 || block > PAD_BLOCK || block % 16 != 0 {
            return Err(crypto_err("padding block must be 16 or 32"));
        }
        let msg_len = u32::try_from(message.len()).map_err(|_| crypto_err("message too long"))?;
        let mut buf = Vec::with_capacity(20 + message.len() + self.owner_key.len() + block);
        buf.extend_from_slice(&random);
        buf.extend_from_slice(&msg_len.to_be_bytes());
        buf.extend_from_slice(message.as_bytes());
        buf.extend_from_slice(self.owner_key.as_bytes());
        let pad = block - buf.len() % block;
        // `pad` is in 1..=32, so the cast cannot truncate.
        buf.extend(std::iter::repeat_n(pad as u8, pad));
        let enc = cbc::Encryptor::<Aes256>::new_from_slices(&self.aes_key, &self.aes_key[..16])
            .map_err(|_| crypto_err("bad key length"))?;
        let out = enc.encrypt_padded_vec_mut::<NoPadding>(&buf);
        Ok(STANDARD.encode(out))
    }

    /// Builds the encrypted acknowledgement DingTalk expects (`success`, encrypted and signed):
    /// `{"msg_signature","timeStamp","nonce","encrypt"}`.
    pub fn reply(&self, message: &str, timestamp: &str, nonce: &str) -> Result<serde_json::Value> {
        let encrypt = self.encrypt(message)?;
        let msg_signature = self.signature(timestamp, nonce, &encrypt);
        Ok(serde_json::json!({
            "msg_signature": msg_signature,
            "timeStamp": timestamp,
            "nonce": nonce,
            "encrypt": encrypt,
        }))
    }
}

/// `hex(sha1(concat(sort([token, timestamp, nonce, encrypt]))))`, lowercase.
pub fn signature(token: &str, timestamp: &str, nonce: &str, encrypt: &str) -> String {
    let mut parts = [token, timestamp, nonce, encrypt];
    parts.sort_unstable();
    let mut hasher = Sha1::new();
    for p in parts {
        hasher.update(p.as_bytes());
    }
    hex(&hasher.finalize())
}

fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(char::from(DIGITS[usize::from(b >> 4)]));
        s.push(char::from(DIGITS[usize::from(b & 0x0f)]));
    }
    s
}

/// Compares two byte strings without an early exit on the first difference.
pub(crate) fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

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
            assert_eq!(d.owner_key, v.owner_key);
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
        let r = c.reply("success", "1700000000000", "abcd1234").unwrap();
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
