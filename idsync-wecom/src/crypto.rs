//! WeCom callback crypto (WXBizMsgCrypt): SHA-1 `msg_signature` and AES-256-CBC messages.
//!
//! The algorithm, as WeCom's official callback samples implement it:
//!
//! * `msg_signature = hex(sha1(concat(sort([token, timestamp, nonce, encrypt]))))`, where
//!   `encrypt` is the `<Encrypt>` value of a POST body or the URL-decoded `echostr` of the
//!   GET URL verification;
//! * `aes_key = base64(EncodingAESKey + "=")` (32 bytes; decoded leniently, the official
//!   sample key has non-zero trailing bits), `iv = aes_key[..16]`;
//! * plaintext = `random(16) || u32_be(len(msg)) || msg || receive_id`, PKCS#7-padded to a
//!   **32-byte** block (pad byte 1..=32);
//! * `receive_id` is the CorpID for self-built apps and the contact-sync assistant (the
//!   SuiteID for third-party suite callbacks) and must match.
//!
//! [`MsgCrypt`] is checked byte for byte against the official vectors
//! (`tests/fixtures/crypto_vectors.json`).

use aes::Aes256;
use aes::cipher::block_padding::NoPadding;
use aes::cipher::{BlockDecryptMut, BlockEncryptMut, KeyIvInit};
use base64::Engine as _;
use base64::engine::DecodePaddingMode;
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig, STANDARD};
use idsync_core::Result;
use secrecy::{ExposeSecret, SecretString};
use sha1::{Digest, Sha1};

use crate::error::WeComError;

fn crypto_err(msg: impl Into<String>) -> idsync_core::Error {
    WeComError::Crypto(msg.into()).into()
}

/// The PKCS#7 block WeCom pads to.
const PAD_BLOCK: usize = 32;

/// Lenient base64 for the EncodingAESKey: trailing bits allowed, padding optional.
const LENIENT: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    GeneralPurposeConfig::new()
        .with_decode_allow_trailing_bits(true)
        .with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// The keys of one callback configuration: the signing Token, the AES key derived from the
/// EncodingAESKey, and the receive id (CorpID) every plaintext must end with.
pub struct MsgCrypt {
    token: SecretString,
    aes_key: [u8; 32],
    receive_id: String,
}

impl std::fmt::Debug for MsgCrypt {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MsgCrypt")
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
    /// The message: the XML of an event, or the echo string of a URL verification.
    pub message: String,
    /// The PKCS#7 pad byte that was removed (1..=32).
    pub pad: u8,
}

impl MsgCrypt {
    /// Builds the crypto from the callback's Token, its 43-character EncodingAESKey and the
    /// receive id (the CorpID; the SuiteID for third-party suites).
    pub fn new(
        token: SecretString,
        encoding_aes_key: &SecretString,
        receive_id: impl Into<String>,
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
        Ok(MsgCrypt {
            token,
            aes_key,
            receive_id: receive_id.into(),
        })
    }

    /// The receive id (CorpID) plaintexts must end with.
    pub fn receive_id(&self) -> &str {
        &self.receive_id
    }

    /// `msg_signature` of `encrypt` with this configuration's token.
    pub fn signature(&self, timestamp: &str, nonce: &str, encrypt: &str) -> String {
        signature(self.token.expose_secret(), timestamp, nonce, encrypt)
    }

    /// Checks a `msg_signature` (hex, any case) in constant time.
    pub fn verify(&self, msg_signature: &str, timestamp: &str, nonce: &str, encrypt: &str) -> bool {
        let expected = self.signature(timestamp, nonce, encrypt);
        constant_time_eq(
            expected.as_bytes(),
            msg_signature.to_ascii_lowercase().as_bytes(),
        )
    }

    /// Verifies the signature, then decrypts: the URL verification's `echostr` (already
    /// URL-decoded) or an event's `<Encrypt>` value.
    pub fn verify_and_decrypt(
        &self,
        msg_signature: &str,
        timestamp: &str,
        nonce: &str,
        encrypt: &str,
    ) -> Result<Decrypted> {
        if !self.verify(msg_signature, timestamp, nonce, encrypt) {
            return Err(crypto_err("msg_signature does not match"));
        }
        self.decrypt(encrypt)
    }

    /// Decrypts a base64 ciphertext and checks padding, layout and receive id.
    pub fn decrypt(&self, encrypt: &str) -> Result<Decrypted> {
        let bad = |what: &str| crypto_err(format!("callback payload: {what}"));
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
            return Err(bad("receive id (CorpID) does not match"));
        }
        Ok(Decrypted {
            random,
            message,
            pad,
        })
    }

    /// Encrypts `message` with the given 16 random bytes (deterministic; tests and the fake).
    pub fn encrypt_with(&self, message: &str, random: [u8; 16]) -> Result<String> {
        let msg_len = u32::try_from(message.len()).map_err(|_| crypto_err("message too long"))?;
        let mut buf = Vec::with_capacity(20 + message.len() + self.receive_id.len() + PAD_BLOCK);
        buf.extend_from_slice(&random);
        buf.extend_from_slice(&msg_len.to_be_bytes());
        buf.extend_from_slice(message.as_bytes());
        buf.extend_from_slice(self.receive_id.as_bytes());
        let pad = PAD_BLOCK - buf.len() % PAD_BLOCK;
        // `pad` is in 1..=32, so the cast cannot truncate.
        buf.extend(std::iter::repeat_n(pad as u8, pad));
        let enc = cbc::Encryptor::<Aes256>::new_from_slices(&self.aes_key, &self.aes_key[..16])
            .map_err(|_| crypto_err("bad key length"))?;
        Ok(STANDARD.encode(enc.encrypt_padded_vec_mut::<NoPadding>(&buf)))
    }

    /// Encrypts `message` with fresh random bytes.
    pub fn encrypt(&self, message: &str) -> Result<String> {
        let mut random = [0u8; 16];
        rand::Rng::fill(&mut rand::rng(), &mut random);
        self.encrypt_with(message, random)
    }

    /// The POST body WeCom sends for an event, with its `msg_signature`:
    /// `<xml><ToUserName/><Encrypt/><AgentID/></xml>`.
    pub fn seal_event(
        &self,
        message: &str,
        timestamp: &str,
        nonce: &str,
        agent_id: &str,
    ) -> Result<(String, String)> {
        let encrypt = self.encrypt(message)?;
        let msg_signature = self.signature(timestamp, nonce, &encrypt);
        let body = format!(
            "<xml><ToUserName><![CDATA[{}]]></ToUserName><Encrypt><![CDATA[{encrypt}]]></Encrypt><AgentID><![CDATA[{agent_id}]]></AgentID></xml>",
            self.receive_id
        );
        Ok((body, msg_signature))
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
    hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
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

    fn crypto_for(v: &Vector, receive_id: &str) -> MsgCrypt {
        MsgCrypt::new(
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
        let short = MsgCrypt::new(
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
        let (body, sig) = c
            .seal_event("<xml>hi</xml>", "1700000000", "n1", "1000002")
            .unwrap();
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
