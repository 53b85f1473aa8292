//! Encodings secrets hide in: base64 text that decodes to text, and the base64 forms of
//! the keywords that find a secret (so that the prefilter finds the encoded secret too).
//! Knows nothing of rules.

use base64::Engine as _;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};

/// How many times text found inside decoded text is decoded again (a
/// `.dockerconfigjson` holds base64 JSON whose `auth` is base64 again).
pub(crate) const MAX_DEPTH: u8 = 2;

/// Shorter base64 forms of a keyword find too much text that is not base64 of it.
const MIN_FRAGMENT: usize = 4;

/// The keywords' base64 forms are searched for by this many characters at most.
const MAX_FRAGMENT: usize = 12;

const CONFIG: GeneralPurposeConfig = GeneralPurposeConfig::new()
    .with_decode_padding_mode(DecodePaddingMode::Indifferent)
    .with_decode_allow_trailing_bits(true);
const STANDARD: GeneralPurpose = GeneralPurpose::new(&base64::alphabet::STANDARD, CONFIG);
const URL_SAFE: GeneralPurpose = GeneralPurpose::new(&base64::alphabet::URL_SAFE, CONFIG);

/// Text that secrets are often inside of, whose base64 forms also find base64 text
/// worth decoding (besides every rule's keywords): a short keyword such as `://` has no
/// base64 form at every alignment, a scheme name before it does.
pub(crate) const ENCODED_HINTS: &[&str] = &[
    "postgres",
    "postgresql://",
    "mysql://",
    "mongodb",
    "redis://",
    "rediss://",
    "amqp://",
    "amqps://",
    "https://",
    "http://",
    "jdbc:",
    "-----BEGIN",
    "PRIVATE KEY",
    "\"auth\"",
    "password",
    "Password",
    "PASSWORD",
    "secret",
    "Secret",
    "SECRET",
    "token",
    "Token",
    "TOKEN",
];

/// What base64 `encoded` (standard or URL-safe alphabet, padded or not) decodes to,
/// when that is text: UTF-8 without control characters other than tab and line breaks.
/// Binary (a random key, an image) is `None`: there is nothing to read in it.
pub(crate) fn base64_text(encoded: &[u8]) -> Option<Vec<u8>> {
    let url_safe = encoded.iter().any(|&b| b == b'-' || b == b'_');
    let standard = encoded.iter().any(|&b| b == b'+' || b == b'/');
    if url_safe && standard {
        return None;
    }
    let engine = if url_safe { &URL_SAFE } else { &STANDARD };
    let decoded = engine.decode(encoded).ok()?;
    let text = std::str::from_utf8(&decoded).ok()?;
    let readable = !text.is_empty()
        && text
            .chars()
            .all(|c| !c.is_control() || matches!(c, '\t' | '\n' | '\r'));
    readable.then_some(decoded)
}

/// `user:password` from base64 of HTTP basic credentials, when it is that.
pub(crate) fn basic_credentials(encoded: &[u8]) -> Option<(Vec<u8>, Vec<u8>)> {
    let decoded = base64_text(encoded)?;
    let colon = decoded.iter().position(|&b| b == b':')?;
    let (user, password) = (&decoded[..colon], &decoded[colon + 1..]);
    let printable = |part: &[u8]| part.iter().all(|b| b.is_ascii_graphic() || *b >= 0x80);
    (!user.is_empty() && user.len() <= 256 && printable(user) && printable(password))
        .then(|| (user.to_vec(), password.to_vec()))
}

/// The base64 forms of `keyword` as it appears inside longer encoded text: at each of
/// the first `alignments` byte alignments (three make every place it can start at), the characters that depend on the keyword's bytes only
/// (lowercase, as the case-insensitive prefilter wants them), in both alphabets. Forms
/// shorter than [`MIN_FRAGMENT`] are left out.
pub(crate) fn keyword_fragments(keyword: &[u8], alignments: usize) -> Vec<String> {
    let mut fragments = Vec::new();
    for alignment in 0..alignments.min(3) {
        let mut bytes = vec![0u8; alignment];
        bytes.extend_from_slice(keyword);
        for engine in [&STANDARD, &URL_SAFE] {
            let encoded = engine.encode(&bytes);
            let encoded = encoded.trim_end_matches('=').as_bytes();
            // Character i holds bits 6i..6i+6; the keyword holds bits
            // 8*alignment..8*(alignment + len).
            let (first_bit, end_bit) = (8 * alignment, 8 * (alignment + keyword.len()));
            let stable: Vec<u8> = (0..encoded.len())
                .filter(|&i| 6 * i >= first_bit && 6 * i + 6 <= end_bit)
                .map(|i| encoded[i].to_ascii_lowercase())
                .collect();
            if stable.len() < MIN_FRAGMENT {
                continue;
            }
            let fragment =
                String::from_utf8_lossy(&stable[..stable.len().min(MAX_FRAGMENT)]).into_owned();
            if !fragments.contains(&fragment) {
                fragments.push(fragment);
            }
        }
    }
    fragments
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_of_text_decodes_and_base64_of_binary_does_not() {
        let text = b"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\n";
        for engine in [
            base64::engine::general_purpose::STANDARD,
            base64::engine::general_purpose::STANDARD_NO_PAD,
            base64::engine::general_purpose::URL_SAFE_NO_PAD,
        ] {
            assert_eq!(
                base64_text(engine.encode(text).as_bytes()).as_deref(),
                Some(&text[..])
            );
        }
        let binary = [0x8f_u8, 0x00, 0x13, 0xfe, 0x7a, 0x01, 0x99, 0x02, 0xc3];
        let encoded = base64::engine::general_purpose::STANDARD.encode(binary);
        assert_eq!(base64_text(encoded.as_bytes()), None);
        assert_eq!(base64_text(b"not base64 at all!"), None);
        assert_eq!(base64_text(b"a+b_"), None, "two alphabets at once");
    }

    #[test]
    fn basic_credentials_need_a_user_and_a_colon() {
        let encode = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
        assert_eq!(
            basic_credentials(encode("deploy:s3cr3t!pass").as_bytes()),
            Some((b"deploy".to_vec(), b"s3cr3t!pass".to_vec()))
        );
        assert_eq!(basic_credentials(encode("no colon here").as_bytes()), None);
        assert_eq!(basic_credentials(encode(":nouser").as_bytes()), None);
    }

    #[test]
    fn a_keyword_s_fragments_are_found_in_any_encoding_of_text_holding_it() {
        let fragments = keyword_fragments(b"ghp_", 3);
        assert!(!fragments.is_empty());
        for before in ["", "x", "xy", "token=", "{\"t\": \""] {
            let text = format!("{before}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");
            for engine in [
                base64::engine::general_purpose::STANDARD,
                base64::engine::general_purpose::URL_SAFE,
            ] {
                let encoded = engine.encode(&text).to_ascii_lowercase();
                assert!(
                    fragments.iter().any(|f| encoded.contains(f.as_str())),
                    "{before:?}: {encoded} holds none of {fragments:?}"
                );
            }
        }
        // Too short to stand for a keyword.
        assert!(keyword_fragments(b"sk", 3).is_empty());
        // At the start of the encoded text only.
        let first = keyword_fragments(b"ghp_", 1);
        assert!(!first.is_empty() && first.iter().all(|f| fragments.contains(f)));
        assert!(first.len() < fragments.len());
    }
}
