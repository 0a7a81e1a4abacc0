//! The callback crypto DingTalk and WeCom share (WeCom's `WXBizMsgCrypt`, DingTalk's
//! `DingCallbackCrypto`): a SHA-1 signature and AES-256-CBC messages.
//!
//! The algorithm, as both vendors' official samples implement it:
//!
//! * `signature = hex(sha1(concat(sort([token, timestamp, nonce, encrypt]))))` (WeCom calls it
//!   `msg_signature`; `encrypt` is the ciphertext of an event, or the URL-decoded `echostr`
//!   of WeCom's GET URL verification);
//! * `aes_key = base64(EncodingAESKey + "=")` (32 bytes; decoded leniently, the official
//!   sample keys have non-zero trailing bits), `iv = aes_key[..16]`;
//! * plaintext = `random(16) || u32_be(len(msg)) || msg || receive_id`, PKCS#7-padded to a
//!   **32-byte** block (pad byte 1..=32; DingTalk's Go helper pads to 16, which decrypts too);
//! * `receive_id` closes every plaintext and must match: WeCom's CorpID (a third-party
//!   suite's SuiteID), DingTalk's owner key (AppKey, CorpId or suiteKey).
//!
//! The envelopes differ (WeCom XML, DingTalk JSON) and stay in the provider crates. Each
//! provider checks [`CallbackCrypto`] byte for byte against its vendor's official vectors.
//! Lark's callback encryption is a different scheme (SHA-256 key, no framing) and is not
//! this one.
//!
//! ```
//! use idsync_http::callback_crypto::CallbackCrypto;
//! use secrecy::SecretString;
//!
//! let key = SecretString::from("jWmYm7qr5nMoAUwZRjGtBxmz3KA1tkAj3ykkR6q2B2C".to_owned());
//! let crypto = CallbackCrypto::new(
//!     "wecom",
//!     SecretString::from("QDG6eK".to_owned()),
//!     &key,
//!     "wx5823bf96d3bd56c7",
//! )?;
//! let encrypt = crypto.encrypt("<xml>hi</xml>")?;
//! let sig = crypto.signature("1409659813", "1372623149", &encrypt);
//! let plain = crypto.verify_and_decrypt(&sig, "1409659813", "1372623149", &encrypt)?;
//! assert_eq!(plain.message, "<xml>hi</xml>");
//! assert!(!format!("{crypto:?}").contains("jWmYm7"));
//! # Ok::<(), idsync_core::Error>(())
//! ```

use aes::Aes256;
use aes::cipher::block_padding::NoPadding;
use aes::cipher::{BlockDecryptMut, BlockEncryptMut, KeyIvInit};
use base64::Engine as _;
use base64::engine::DecodePaddingMode;
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig, STANDARD};
use idsync_core::{Error, ErrorKind, ErrorStatus, Result};
use secrecy::{ExposeSecret, SecretString};
use sha1::{Digest, Sha1};

/// The largest PKCS#7 block: both vendors pad to 32 bytes.
pub const PAD_BLOCK: usize = 32;

/// Lenient base64 for the EncodingAESKey: trailing bits allowed, padding optional.
const LENIENT: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    GeneralPurposeConfig::new()
        .with_decode_allow_trailing_bits(true)
        .with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// The keys of one callback configuration: the signing token, the AES key derived from
/// the EncodingAESKey, and the receive id every plaintext must end with.
pub struct CallbackCrypto {
    provider: &'static str,
    token: SecretString,
    aes_key: [u8; 32],
    receive_id: String,
}

impl std::fmt::Debug for CallbackCrypto {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CallbackCrypto")
            .field("provider", &self.provider)
            .field("token", &"[redacted]")
            .field("aes_key", &"[redacted]")
            .field("receive_id", &self.receive_id)
            .finish()
    }
}

/// A decrypted message with the parts of its plaintext.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decrypted {
    /// The 16 random bytes that open the plaintext.
    pub random: [u8; 16],
    /// The message: an event (WeCom XML, DingTalk JSON) or an echo string.
    pub message: String,
    /// The receive id that closes the plaintext (already checked against the expected one).
    pub receive_id: String,
    /// The PKCS#7 pad byte that was removed (1..=32).
    pub pad: u8,
}

impl CallbackCrypto {
    /// Builds the crypto of `provider` (its name in errors) from the callback's token, its
    /// 43-character EncodingAESKey and the receive id (WeCom CorpID, DingTalk owner key).
    pub fn new(
        provider: &'static str,
        token: SecretString,
        encoding_aes_key: &SecretString,
        receive_id: impl Into<String>,
    ) -> Result<Self> {
        let err = |msg: String| crypto_error(provider, ErrorKind::ConfigInvalid, msg);
        let raw = encoding_aes_key.expose_secret();
        if raw.len() != 43 {
            return Err(err(format!(
                "EncodingAESKey must be 43 characters, got {}",
                raw.len()
            )));
        }
        let bytes = LENIENT
            .decode(format!("{raw}="))
            .map_err(|_| err("EncodingAESKey is not base64".into()))?;
        let aes_key: [u8; 32] = bytes
            .try_into()
            .map_err(|_| err("EncodingAESKey must decode to 32 bytes".into()))?;
        Ok(CallbackCrypto {
            provider,
            token,
            aes_key,
            receive_id: receive_id.into(),
        })
    }

    /// The provider name errors carry.
    pub fn provider(&self) -> &'static str {
        self.provider
    }

    /// The receive id plaintexts must end with.
    pub fn receive_id(&self) -> &str {
        &self.receive_id
    }

    fn err(&self, msg: impl Into<String>) -> Error {
        crypto_error(self.provider, ErrorKind::InvalidData, msg)
    }

    /// The signature of `encrypt` with this configuration's token.
    pub fn signature(&self, timestamp: &str, nonce: &str, encrypt: &str) -> String {
        signature(self.token.expose_secret(), timestamp, nonce, encrypt)
    }

    /// Checks a signature (hex, any case) in constant time.
    pub fn verify(&self, signature: &str, timestamp: &str, nonce: &str, encrypt: &str) -> bool {
        let expected = self.signature(timestamp, nonce, encrypt);
        constant_time_eq(
            expected.as_bytes(),
            signature.to_ascii_lowercase().as_bytes(),
        )
    }

    /// Verifies the signature, then decrypts.
    pub fn verify_and_decrypt(
        &self,
        signature: &str,
        timestamp: &str,
        nonce: &str,
        encrypt: &str,
    ) -> Result<Decrypted> {
        if !self.verify(signature, timestamp, nonce, encrypt) {
            return Err(self.err("signature does not match"));
        }
        self.decrypt(encrypt)
    }

    /// Decrypts a base64 ciphertext and checks padding, layout and receive id.
    pub fn decrypt(&self, encrypt: &str) -> Result<Decrypted> {
        let bad = |what: &str| self.err(format!("callback payload: {what}"));
        let mut buf = STANDARD
            .decode(encrypt.trim())
            .map_err(|_| bad("not base64"))?;
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
            return Err(bad("message length exceeds the plaintext"));
        }
        let message = std::str::from_utf8(&rest[..msg_len])
            .map_err(|_| bad("message is not UTF-8"))?
            .to_owned();
        if !constant_time_eq(&rest[msg_len..], self.receive_id.as_bytes()) {
            return Err(bad("receive id (CorpID / owner key) does not match"));
        }
        Ok(Decrypted {
            random,
            message,
            receive_id: self.receive_id.clone(),
            pad,
        })
    }

    /// Encrypts `message` with the given 16 random bytes, padded to a 32-byte block
    /// (deterministic; tests and fakes).
    pub fn encrypt_with(&self, message: &str, random: [u8; 16]) -> Result<String> {
        self.encrypt_block(message, random, PAD_BLOCK)
    }

    /// Encrypts `message` with fresh random bytes.
    pub fn encrypt(&self, message: &str) -> Result<String> {
        let mut random = [0u8; 16];
        rand::Rng::fill(&mut rand::rng(), &mut random);
        self.encrypt_with(message, random)
    }

    /// Encrypts with a chosen PKCS#7 block: 32 as both vendors' servers, or 16 as
    /// DingTalk's Go helper.
    pub fn encrypt_block(&self, message: &str, random: [u8; 16], block: usize) -> Result<String> {
        if block == 0 || block > PAD_BLOCK || block % 16 != 0 {
            return Err(self.err("padding block must be 16 or 32"));
        }
        let msg_len = u32::try_from(message.len()).map_err(|_| self.err("message too long"))?;
        let mut buf = Vec::with_capacity(20 + message.len() + self.receive_id.len() + block);
        buf.extend_from_slice(&random);
        buf.extend_from_slice(&msg_len.to_be_bytes());
        buf.extend_from_slice(message.as_bytes());
        buf.extend_from_slice(self.receive_id.as_bytes());
        let pad = block - buf.len() % block;
        // `pad` is in 1..=32, so the cast cannot truncate.
        buf.extend(std::iter::repeat_n(pad as u8, pad));
        let enc = cbc::Encryptor::<Aes256>::new_from_slices(&self.aes_key, &self.aes_key[..16])
            .map_err(|_| self.err("bad key length"))?;
        Ok(STANDARD.encode(enc.encrypt_padded_vec_mut::<NoPadding>(&buf)))
    }
}

/// A permanent error of `provider`'s callback crypto.
fn crypto_error(provider: &'static str, kind: ErrorKind, msg: impl Into<String>) -> Error {
    Error::new(kind, format!("callback crypto: {}", msg.into()))
        .with_status(ErrorStatus::Permanent)
        .with_provider(provider)
}

/// `hex(sha1(concat(sort([token, timestamp, nonce, encrypt]))))`, lowercase.
pub fn signature(token: &str, timestamp: &str, nonce: &str, encrypt: &str) -> String {
    let mut parts = [token, timestamp, nonce, encrypt];
    parts.sort_unstable();
    let mut hasher = Sha1::new();
    for p in parts {
        hasher.update(p.as_bytes());
    }
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let digest = hasher.finalize();
    let mut s = String::with_capacity(digest.len() * 2);
    for b in digest {
        s.push(char::from(DIGITS[usize::from(b >> 4)]));
        s.push(char::from(DIGITS[usize::from(b & 0x0f)]));
    }
    s
}

/// Compares two byte strings without an early exit on the first difference.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn crypto(receive_id: &str) -> CallbackCrypto {
        CallbackCrypto::new(
            "test",
            SecretString::from("QDG6eK".to_owned()),
            &SecretString::from("jWmYm7qr5nMoAUwZRjGtBxmz3KA1tkAj3ykkR6q2B2C".to_owned()),
            receive_id,
        )
        .unwrap()
    }

    #[test]
    fn roundtrip_both_blocks_and_receive_id_check() {
        let c = crypto("corp1");
        for block in [16, 32] {
            let enc = c
                .encrypt_block("héllo", *b"0123456789abcdef", block)
                .unwrap();
            let d = c.decrypt(&enc).unwrap();
            assert_eq!(d.message, "héllo");
            assert_eq!(d.receive_id, "corp1");
            assert!(usize::from(d.pad) <= block);
        }
        assert!(
            c.encrypt_block("x", [0; 16], 48)
                .unwrap_err()
                .message()
                .contains("16 or 32")
        );
        let enc = c.encrypt("x").unwrap();
        let e = crypto("corp2").decrypt(&enc).unwrap_err();
        assert!(e.message().contains("receive id"), "{e}");
        assert_eq!(e.kind(), ErrorKind::InvalidData);
        assert_eq!(e.provider(), Some("test"));
    }

    #[test]
    fn signature_is_checked_and_errors_name_the_provider() {
        let c = crypto("corp1");
        let enc = c.encrypt("x").unwrap();
        let sig = c.signature("1", "2", &enc);
        assert_eq!(sig.len(), 40);
        assert!(c.verify(&sig.to_ascii_uppercase(), "1", "2", &enc));
        let e = c.verify_and_decrypt(&sig, "1", "3", &enc).unwrap_err();
        assert!(e.message().contains("signature"), "{e}");
        let bad = CallbackCrypto::new(
            "wecom",
            SecretString::from("t".to_owned()),
            &SecretString::from("abc".to_owned()),
            "x",
        )
        .unwrap_err();
        assert_eq!(bad.kind(), ErrorKind::ConfigInvalid);
        assert_eq!(bad.provider(), Some("wecom"));
        assert!(!bad.message().contains("abc"));
    }
}
