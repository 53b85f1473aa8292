//! Encryption of stored scan reports (the only place full secret values are kept):
//! AES-256-GCM with a key ring from configuration, so keys can rotate.
//!
//! An envelope is `DGENC1`, one byte giving the key id's length, the key id, a 12-byte
//! random nonce, then the ciphertext with its 16-byte tag. The caller's context (the
//! job id and the object's role) is authenticated as associated data, so an envelope
//! moved to another job or another key does not decrypt.

use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use base64::Engine;

const MAGIC: &[u8] = b"DGENC1";

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CryptoError {
    #[error("not an encrypted DeployGuard object")]
    NotAnEnvelope,
    #[error("encrypted with key {0:?}, which is not in REPORT_KEYS")]
    UnknownKey(String),
    #[error("the object does not decrypt: it was altered, or belongs elsewhere")]
    Tampered,
    #[error("encryption failed")]
    Failed,
}

/// The keys reports are encrypted with; the first encrypts, all decrypt.
#[derive(Clone)]
pub struct KeyRing {
    keys: Vec<(String, [u8; 32])>,
}

impl std::fmt::Debug for KeyRing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let ids: Vec<&str> = self.keys.iter().map(|(id, _)| id.as_str()).collect();
        f.debug_struct("KeyRing").field("ids", &ids).finish()
    }
}

impl KeyRing {
    /// `id:base64,id:base64,…`; each key is 32 bytes. Messages never quote a key.
    pub fn parse(raw: &str) -> Result<Self, String> {
        let mut keys: Vec<(String, [u8; 32])> = Vec::new();
        for (n, entry) in raw.split(',').map(str::trim).enumerate() {
            let position = n + 1;
            let Some((id, encoded)) = entry.split_once(':') else {
                return Err(format!("entry {position} is not id:base64-key"));
            };
            let id = id.trim();
            if id.is_empty()
                || id.len() > 64
                || !id
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
            {
                return Err(format!(
                    "entry {position}: a key id is 1 to 64 letters, digits, '-', '_' or '.'"
                ));
            }
            if keys.iter().any(|(known, _)| known == id) {
                return Err(format!("key id {id:?} appears twice"));
            }
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(encoded.trim())
                .map_err(|_| format!("key {id:?} is not valid base64"))?;
            let key: [u8; 32] = bytes
                .try_into()
                .map_err(|_| format!("key {id:?} must be 32 bytes (base64 of 32 random bytes)"))?;
            keys.push((id.to_owned(), key));
        }
        if keys.is_empty() {
            return Err("no key given".into());
        }
        Ok(Self { keys })
    }

    /// The id of the key new envelopes are made with.
    pub fn current_id(&self) -> &str {
        &self.keys[0].0
    }

    fn key(&self, id: &str) -> Option<LessSafeKey> {
        let (_, bytes) = self.keys.iter().find(|(known, _)| known == id)?;
        let unbound = UnboundKey::new(&AES_256_GCM, bytes).ok()?;
        Some(LessSafeKey::new(unbound))
    }

    /// Encrypts `plaintext` under the current key, binding `context` to it.
    pub fn seal(&self, context: &[u8], plaintext: &[u8]) -> Result<Vec<u8>, CryptoError> {
        let id = self.current_id();
        let key = self.key(id).ok_or(CryptoError::Failed)?;
        let mut nonce = [0u8; NONCE_LEN];
        aws_lc_rs::rand::fill(&mut nonce).map_err(|_| CryptoError::Failed)?;
        let mut out =
            Vec::with_capacity(MAGIC.len() + 1 + id.len() + NONCE_LEN + plaintext.len() + 16);
        out.extend_from_slice(MAGIC);
        out.push(id.len() as u8);
        out.extend_from_slice(id.as_bytes());
        out.extend_from_slice(&nonce);
        let header = out.len();
        out.extend_from_slice(plaintext);
        let mut body = out.split_off(header);
        key.seal_in_place_append_tag(
            Nonce::assume_unique_for_key(nonce),
            Aad::from(aad(id, context)),
            &mut body,
        )
        .map_err(|_| CryptoError::Failed)?;
        out.extend_from_slice(&body);
        Ok(out)
    }

    /// The key id an envelope names, without decrypting it.
    pub fn key_id(envelope: &[u8]) -> Result<&str, CryptoError> {
        let rest = envelope
            .strip_prefix(MAGIC)
            .ok_or(CryptoError::NotAnEnvelope)?;
        let (&len, rest) = rest.split_first().ok_or(CryptoError::NotAnEnvelope)?;
        let id = rest
            .get(..usize::from(len))
            .ok_or(CryptoError::NotAnEnvelope)?;
        std::str::from_utf8(id).map_err(|_| CryptoError::NotAnEnvelope)
    }

    /// Decrypts an envelope made by [`KeyRing::seal`] with the same `context`.
    pub fn open(&self, context: &[u8], envelope: &[u8]) -> Result<Vec<u8>, CryptoError> {
        let id = Self::key_id(envelope)?;
        let key = self
            .key(id)
            .ok_or_else(|| CryptoError::UnknownKey(id.to_owned()))?;
        let start = MAGIC.len() + 1 + id.len();
        let nonce: [u8; NONCE_LEN] = envelope
            .get(start..start + NONCE_LEN)
            .and_then(|n| n.try_into().ok())
            .ok_or(CryptoError::NotAnEnvelope)?;
        let mut body = envelope[start + NONCE_LEN..].to_vec();
        let plain = key
            .open_in_place(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(aad(id, context)),
                &mut body,
            )
            .map_err(|_| CryptoError::Tampered)?;
        Ok(plain.to_vec())
    }
}

fn aad(id: &str, context: &[u8]) -> Vec<u8> {
    let mut aad = Vec::with_capacity(id.len() + context.len() + 1);
    aad.extend_from_slice(id.as_bytes());
    aad.push(0);
    aad.extend_from_slice(context);
    aad
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ring(spec: &str) -> KeyRing {
        KeyRing::parse(spec).expect("key ring")
    }

    const K1: &str = "k1:AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";
    const K2: &str = "k2:ICEiIyQlJicoKSorLC0uLzAxMjM0NTY3ODk6Ozw9Pj8=";

    #[test]
    fn an_envelope_opens_with_its_context_and_after_the_key_rotates() {
        let old = ring(K1);
        let sealed = old.seal(b"job-1/report", b"the report").expect("seal");
        assert_eq!(KeyRing::key_id(&sealed), Ok("k1"));
        assert!(!sealed.windows(10).any(|w| w == b"the report"));
        let rotated = ring(&format!("{K2},{K1}"));
        assert_eq!(
            rotated.open(b"job-1/report", &sealed).expect("open"),
            b"the report"
        );
        assert_eq!(
            KeyRing::key_id(&rotated.seal(b"x", b"y").expect("seal")),
            Ok("k2")
        );
    }

    #[test]
    fn altered_moved_or_foreign_envelopes_are_refused() {
        let keys = ring(K1);
        let mut sealed = keys.seal(b"job-1/report", b"the report").expect("seal");
        assert_eq!(
            keys.open(b"job-2/report", &sealed),
            Err(CryptoError::Tampered)
        );
        let last = sealed.len() - 1;
        sealed[last] ^= 1;
        assert_eq!(
            keys.open(b"job-1/report", &sealed),
            Err(CryptoError::Tampered)
        );
        assert_eq!(
            ring(K2).open(b"job-1/report", &keys.seal(b"c", b"d").expect("seal")),
            Err(CryptoError::UnknownKey("k1".into()))
        );
        assert_eq!(
            keys.open(b"c", b"{\"plain\": 1}"),
            Err(CryptoError::NotAnEnvelope)
        );
        assert_eq!(
            keys.open(b"c", b"DGENC1\x09k1"),
            Err(CryptoError::NotAnEnvelope)
        );
    }

    #[test]
    fn bad_key_rings_are_refused_without_quoting_keys() {
        for bad in [
            "",
            "k1",
            "k1:not-base64!",
            "k1:AAAA",
            &format!("{K1},{K1}"),
            "a b:AAAA",
        ] {
            let err = KeyRing::parse(bad).expect_err(bad);
            assert!(!err.contains("AAEC"), "{err}");
        }
    }
}
