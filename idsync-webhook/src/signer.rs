//! The Standard Webhooks signature: `v1,` and the base64 HMAC-SHA256 of
//! `"{webhook-id}.{webhook-timestamp}.{body}"`, one per secret, space-separated.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, Mac};
use secrecy::{ExposeSecret, SecretSlice, SecretString};
use sha2::Sha256;

use idsync_core::{Error, Result};

/// The prefix of a Standard Webhooks secret: `whsec_<base64 of the key bytes>`.
pub const SECRET_PREFIX: &str = "whsec_";

/// Signs deliveries with one or more secrets (several while a secret is rotated: the
/// receiver accepts a delivery when any one signature verifies). The keys never reach
/// `Debug` output, logs or errors.
pub struct Signer {
    keys: Vec<SecretSlice<u8>>,
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Signer")
            .field("secrets", &self.keys.len())
            .finish_non_exhaustive()
    }
}

impl Signer {
    /// A signer of `secrets`, each written `whsec_<base64>` (the prefix is optional, as the
    /// reference libraries take it). At least one is needed; `what` names the config key
    /// in errors (the value never appears).
    pub fn new(secrets: &[SecretString], what: &str) -> Result<Self> {
        if secrets.is_empty() {
            return Err(Error::config(format!(
                "{what}: no secret given; a webhook endpoint needs at least one `whsec_...` secret"
            )));
        }
        let mut keys = Vec::with_capacity(secrets.len());
        for (i, s) in secrets.iter().enumerate() {
            let text = s.expose_secret().trim();
            let b64 = text.strip_prefix(SECRET_PREFIX).unwrap_or(text);
            // the reference libraries accept unpadded base64 too
            let padded = match b64.len() % 4 {
                2 => format!("{b64}=="),
                3 => format!("{b64}="),
                _ => b64.to_owned(),
            };
            let key = STANDARD.decode(padded.as_bytes()).map_err(|_| {
                Error::config(format!(
                    "{what}[{i}]: not a Standard Webhooks secret (`whsec_` and base64)"
                ))
            })?;
            if key.is_empty() {
                return Err(Error::config(format!("{what}[{i}]: the secret is empty")));
            }
            keys.push(SecretSlice::from(key));
        }
        Ok(Signer { keys })
    }

    /// How many secrets sign.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// Never true (a signer has at least one secret); for clippy's `len_without_is_empty`.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// The `webhook-signature` header value of `body` sent as message `id` at `timestamp`
    /// (Unix seconds): `v1,<base64>` per secret, space-separated, in the secrets' order.
    pub fn sign(&self, id: &str, timestamp: i64, body: &[u8]) -> String {
        let mut out = String::new();
        for key in &self.keys {
            // HMAC takes keys of any length: new_from_slice cannot fail for it
            let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(key.expose_secret()) else {
                continue;
            };
            mac.update(id.as_bytes());
            mac.update(b".");
            mac.update(timestamp.to_string().as_bytes());
            mac.update(b".");
            mac.update(body);
            if !out.is_empty() {
                out.push(' ');
            }
            out.push_str("v1,");
            out.push_str(&STANDARD.encode(mac.finalize().into_bytes()));
        }
        out
    }

    /// A new random secret, written `whsec_<base64 of 24 bytes>` (for tests and setup).
    pub fn generate_secret() -> SecretString {
        let bytes: [u8; 24] = rand::random();
        SecretString::from(format!("{SECRET_PREFIX}{}", STANDARD.encode(bytes)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &str) -> SecretString {
        SecretString::from(v.to_owned())
    }

    /// The example of the Standard Webhooks reference libraries' tests.
    #[test]
    fn signs_the_reference_example() {
        let signer =
            Signer::new(&[s("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")], "secrets").unwrap();
        assert_eq!(
            signer.sign(
                "msg_p5jXN8AQM9LWM0D4loKWxJek",
                1614265330,
                br#"{"test": 2432232314}"#
            ),
            "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
        );
        // the prefix is optional
        let bare = Signer::new(&[s("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")], "secrets").unwrap();
        assert_eq!(
            bare.sign(
                "msg_p5jXN8AQM9LWM0D4loKWxJek",
                1614265330,
                br#"{"test": 2432232314}"#
            ),
            "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
        );
    }

    #[test]
    fn several_secrets_give_one_signature_each() {
        let new = Signer::generate_secret();
        let old = s("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw");
        let both = Signer::new(&[new, old], "secrets").unwrap();
        let sig = both.sign(
            "msg_p5jXN8AQM9LWM0D4loKWxJek",
            1614265330,
            br#"{"test": 2432232314}"#,
        );
        let parts: Vec<&str> = sig.split(' ').collect();
        assert_eq!(parts.len(), 2);
        assert!(parts[0].starts_with("v1,"));
        assert_ne!(parts[0], parts[1]);
        assert_eq!(parts[1], "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
    }

    #[test]
    fn bad_secrets_are_refused_without_echoing_them() {
        let e = Signer::new(&[s("whsec_not base64!!")], "secrets").unwrap_err();
        assert!(!e.to_string().contains("not base64!!"), "{e}");
        assert!(e.to_string().contains("secrets[0]"), "{e}");
        assert!(Signer::new(&[], "secrets").is_err());
        let signer =
            Signer::new(&[s("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")], "secrets").unwrap();
        assert!(!format!("{signer:?}").contains("MfKQ9r8"));
    }
}
