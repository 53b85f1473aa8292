//! Encodings secrets hide in: base64, hex, percent-encoding, backslash escapes (JSON's
//! `\u0041` and `\/`, C's and Python's `\x41`) and UTF-16 text, each decoded only when
//! the result is text; and the encoded forms of the keywords that find a secret (so that
//! the prefilter finds the encoded secret too). Knows nothing of rules.

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

/// Token prefixes whose hex forms find hex text worth decoding besides
/// [`ENCODED_HINTS`]: the providers whose tokens leak most.
pub(crate) const HEX_PREFIXES: &[&str] = &[
    "ghp_",
    "gho_",
    "ghs_",
    "github_pat_",
    "glpat-",
    "AKIA",
    "ASIA",
    "AIza",
    "sk_live_",
    "rk_live_",
    "xoxb-",
    "xoxp-",
    "sk-proj-",
    "sk-ant-",
    "npm_",
    "pypi-",
    "hf_",
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
    is_text(&decoded).then_some(decoded)
}

/// Whether decoded bytes are text worth scanning: UTF-8 with no control characters
/// other than tab and line breaks.
fn is_text(decoded: &[u8]) -> bool {
    std::str::from_utf8(decoded).is_ok_and(|text| {
        !text.is_empty()
            && text
                .chars()
                .all(|c| !c.is_control() || matches!(c, '\t' | '\n' | '\r'))
    })
}

/// What hex text decodes to, when that is text (a hash or a random key is not).
pub(crate) fn hex_text(encoded: &[u8]) -> Option<Vec<u8>> {
    if !encoded.len().is_multiple_of(2) {
        return None;
    }
    // Most hex is a hash: its first bytes already say it is not text.
    let probe = encoded.len().min(8);
    let head = hex::decode(&encoded[..probe]).ok()?;
    if !head
        .iter()
        .all(|b| b.is_ascii_graphic() || b.is_ascii_whitespace())
    {
        return None;
    }
    let decoded = hex::decode(encoded).ok()?;
    is_text(&decoded).then_some(decoded)
}

/// Text decoded from an encoding that leaves most characters as they are, with where
/// each decoded byte came from: `from[i]` is the encoded offset of decoded byte `i`, and
/// `from[len]` the encoded text's length. So a secret inside decoded text is removed by
/// removing exactly the encoded text that spells it.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Spelled {
    pub text: Vec<u8>,
    pub from: Vec<usize>,
}

impl Spelled {
    fn with_capacity(n: usize) -> Self {
        Self {
            text: Vec::with_capacity(n),
            from: Vec::with_capacity(n + 1),
        }
    }

    fn push(&mut self, bytes: &[u8], at: usize) {
        self.text.extend_from_slice(bytes);
        self.from.extend(std::iter::repeat_n(at, bytes.len()));
    }

    /// The decoded text, when something was decoded and the result is text.
    fn finish(mut self, len: usize, changed: bool) -> Option<Self> {
        self.from.push(len);
        (changed && is_text(&self.text)).then_some(self)
    }

    /// The encoded span of decoded bytes `start..end`.
    pub(crate) fn source(&self, start: usize, end: usize) -> (usize, usize) {
        let at = |i: usize| self.from[i.min(self.from.len() - 1)];
        (at(start), at(end))
    }
}

fn hex_value(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

fn hex_number(digits: &[u8]) -> Option<u32> {
    digits
        .iter()
        .try_fold(0u32, |n, &b| Some(n * 16 + u32::from(hex_value(b)?)))
}

/// Percent-encoded text (`wJalr%2FK7MD%2BbPx`): `%XX` decoded, everything else kept
/// (`+` too: in a query it may mean a space, in a key it is itself).
pub(crate) fn percent_text(encoded: &[u8]) -> Option<Spelled> {
    let mut out = Spelled::with_capacity(encoded.len());
    let mut changed = false;
    let mut i = 0;
    while i < encoded.len() {
        let escaped = (encoded[i] == b'%')
            .then(|| encoded.get(i + 1..i + 3))
            .flatten()
            .and_then(hex_number);
        match escaped {
            Some(byte) => {
                out.push(&[byte as u8], i);
                changed = true;
                i += 3;
            }
            None => {
                out.push(&encoded[i..=i], i);
                i += 1;
            }
        }
    }
    out.finish(encoded.len(), changed)
}

/// Backslash-escaped text: `\uXXXX` (surrogate pairs joined), `\xXX` and `\/`.
/// `\n`, `\"` and the like stay as written: the rules read keys written so (a PEM key
/// in JSON), and decoding them would report the same key twice. `\\` stays too, so
/// that `\\u0041` is a backslash before `u0041`. An unpaired surrogate is kept as written.
pub(crate) fn unescape_text(encoded: &[u8]) -> Option<Spelled> {
    let mut out = Spelled::with_capacity(encoded.len());
    let mut changed = false;
    let mut i = 0;
    let unit = |at: usize| -> Option<u32> {
        (encoded.get(at) == Some(&b'\\') && encoded.get(at + 1) == Some(&b'u'))
            .then(|| encoded.get(at + 2..at + 6))
            .flatten()
            .and_then(hex_number)
    };
    let mut utf8 = [0u8; 4];
    while i < encoded.len() {
        let (decoded, width): (Option<char>, usize) = match encoded[i..] {
            [b'\\', b'u', ..] => match unit(i) {
                Some(high @ 0xD800..=0xDBFF) => match unit(i + 6) {
                    Some(low @ 0xDC00..=0xDFFF) => (
                        char::from_u32(0x10000 + ((high - 0xD800) << 10) + (low - 0xDC00)),
                        12,
                    ),
                    _ => (None, 1),
                },
                Some(code) => (char::from_u32(code), 6),
                None => (None, 1),
            },
            [b'\\', b'x', ..] => {
                let byte = encoded.get(i + 2..i + 4).and_then(hex_number);
                // A `\xXX` above 0x7F is a byte of some encoding, not a character.
                (byte.filter(|&b| b < 0x80).and_then(char::from_u32), 4)
            }
            [b'\\', b'/', ..] => (Some('/'), 2),
            [b'\\', b'\\', ..] => {
                out.push(&encoded[i..i + 2], i);
                i += 2;
                continue;
            }
            _ => (None, 1),
        };
        match decoded {
            Some(c) => {
                out.push(c.encode_utf8(&mut utf8).as_bytes(), i);
                changed = true;
                i += width;
            }
            None => {
                out.push(&encoded[i..=i], i);
                i += 1;
            }
        }
    }
    out.finish(encoded.len(), changed)
}

/// Byte order of UTF-16 text.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Utf16 {
    Little,
    Big,
}

impl Utf16 {
    /// How `text` is written in this byte order.
    pub(crate) fn encode(self, text: &[u8]) -> Vec<u8> {
        let text = String::from_utf8_lossy(text);
        let mut out = Vec::with_capacity(text.len() * 2);
        for unit in text.encode_utf16() {
            match self {
                Utf16::Little => out.extend_from_slice(&unit.to_le_bytes()),
                Utf16::Big => out.extend_from_slice(&unit.to_be_bytes()),
            }
        }
        out
    }
}

/// UTF-16 text (Windows tools write `.reg` exports, PowerShell output and some config
/// files so) as UTF-8, with its byte order: by its byte-order mark, or, without one,
/// when nearly every other byte of its start is NUL as ASCII text makes it. Invalid
/// sequences (a lone surrogate, an odd last byte) are replaced, never a reason to fail.
pub(crate) fn utf16_text(data: &[u8]) -> Option<(Vec<u8>, Utf16)> {
    let (order, body) = match data {
        [0xFF, 0xFE, rest @ ..] => (Utf16::Little, rest),
        [0xFE, 0xFF, rest @ ..] => (Utf16::Big, rest),
        _ => {
            let probe = &data[..data.len().min(super::BINARY_PROBE) & !1];
            if probe.len() < 16 {
                return None;
            }
            let pairs = probe.len() / 2;
            let zero_at = |parity: usize| {
                probe
                    .iter()
                    .skip(parity)
                    .step_by(2)
                    .filter(|&&b| b == 0)
                    .count()
            };
            let (even, odd) = (zero_at(0), zero_at(1));
            // ASCII in UTF-16: the high byte of (nearly) every unit is zero, the low
            // byte (nearly) never.
            let mostly = |n: usize| n * 10 >= pairs * 9;
            let rarely = |n: usize| n * 10 <= pairs;
            if mostly(odd) && rarely(even) {
                (Utf16::Little, data)
            } else if mostly(even) && rarely(odd) {
                (Utf16::Big, data)
            } else {
                return None;
            }
        }
    };
    let units = body.chunks_exact(2).map(|pair| match order {
        Utf16::Little => u16::from_le_bytes([pair[0], pair[1]]),
        Utf16::Big => u16::from_be_bytes([pair[0], pair[1]]),
    });
    let text: String = char::decode_utf16(units)
        .map(|c| c.unwrap_or(char::REPLACEMENT_CHARACTER))
        .collect();
    // Binary that happens to look so (a table of small integers) decodes to controls.
    let controls = text
        .chars()
        .filter(|c| c.is_control() && !matches!(c, '\t' | '\n' | '\r'))
        .count();
    (!text.is_empty() && controls * 20 <= text.chars().count()).then(|| (text.into_bytes(), order))
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
    #[test]
    fn hex_decodes_text_and_refuses_hashes_and_odd_lengths() {
        assert_eq!(
            hex_text(b"6768705f414243").as_deref(),
            Some(&b"ghp_ABC"[..])
        );
        assert_eq!(
            hex_text(b"6768705F414243").as_deref(),
            Some(&b"ghp_ABC"[..])
        );
        assert_eq!(hex_text(b"9f2c4e1a7b3d5f60"), None, "a hash is not text");
        assert_eq!(hex_text(b"6768705f41424"), None, "odd length");
        assert_eq!(hex_text(b"67687g5f"), None);
    }

    #[test]
    fn percent_and_escaped_text_map_each_decoded_byte_to_the_text_that_spells_it() {
        let encoded = b"key=wJalr%2FK7MD%2bbPx%zz%4";
        let spelled = percent_text(encoded).unwrap();
        assert_eq!(spelled.text, b"key=wJalr/K7MD+bPx%zz%4");
        let at = |needle: &[u8]| {
            let i = spelled
                .text
                .windows(needle.len())
                .position(|w| w == needle)
                .unwrap();
            let (a, b) = spelled.source(i, i + needle.len());
            &encoded[a..b]
        };
        assert_eq!(at(b"wJalr/K7MD+bPx"), b"wJalr%2FK7MD%2bbPx");
        assert_eq!(at(b"/"), b"%2F");
        assert_eq!(percent_text(b"nothing-escaped"), None);
        assert_eq!(
            percent_text(b"%00%01"),
            None,
            "control characters are not text"
        );

        let encoded = br#"https:\/\/h\/\u0067\u0068p_\x41\\u0041 \uD83D\uDE00 \uD800x \n"#;
        let spelled = unescape_text(encoded).unwrap();
        assert_eq!(
            String::from_utf8(spelled.text.clone()).unwrap(),
            "https://h/ghp_A\\\\u0041 \u{1F600} \\uD800x \\n"
        );
        let i = spelled.text.windows(4).position(|w| w == b"ghp_").unwrap();
        let (a, b) = spelled.source(i, i + 4);
        assert_eq!(&encoded[a..b], br"\u0067\u0068p_");
        assert_eq!(unescape_text(br"C:\\Users\\me"), None, "nothing decoded");
        assert_eq!(unescape_text(br"\xff\x80"), None, "bytes, not characters");
    }

    #[test]
    fn utf16_text_is_found_by_its_byte_order_mark_or_its_zeros() {
        let text = "user=admin\r\npassword=Tq8#vLm2!Rz9Kw4p\r\n";
        let le: Vec<u8> = text.encode_utf16().flat_map(u16::to_le_bytes).collect();
        let be: Vec<u8> = text.encode_utf16().flat_map(u16::to_be_bytes).collect();
        for (bytes, order) in [
            ([&[0xFF, 0xFE][..], &le].concat(), Utf16::Little),
            ([&[0xFE, 0xFF][..], &be].concat(), Utf16::Big),
            (le.clone(), Utf16::Little),
            (be.clone(), Utf16::Big),
        ] {
            let (decoded, found) = utf16_text(&bytes).unwrap();
            assert_eq!((decoded.as_slice(), found), (text.as_bytes(), order));
            assert_eq!(order.encode(b"password"), {
                let body = if order == Utf16::Little { &le } else { &be };
                let at = text.find("password").unwrap() * 2;
                body[at..at + 16].to_vec()
            });
        }
        // Binary with zeros in it (an image, a table of integers) is not text.
        let table: Vec<u8> = (0u16..4000).flat_map(|n| (n % 7).to_le_bytes()).collect();
        assert_eq!(utf16_text(&table), None);
        assert_eq!(utf16_text(&[0x89, b'P', b'N', b'G', 0, 0, 0, 13]), None);
    }

    #[test]
    fn invalid_utf16_is_read_with_replacements_never_a_panic() {
        // A lone high surrogate, a lone low one, and an odd last byte.
        let mut bytes = vec![0xFF, 0xFE];
        for unit in [0x0041u16, 0xD800, 0x0042, 0xDC00, 0x0043] {
            bytes.extend(unit.to_le_bytes());
        }
        bytes.push(0x44);
        let (text, _) = utf16_text(&bytes).unwrap();
        assert_eq!(String::from_utf8(text).unwrap(), "A\u{FFFD}B\u{FFFD}C");
        assert_eq!(utf16_text(&[0xFF, 0xFE]), None, "nothing in it");
    }

    #[test]
    fn decoders_take_any_bytes_without_panicking_and_map_within_their_input() {
        let mut rng = fastrand::Rng::with_seed(21);
        let alphabet = b"%\\ux/0123456789abcdefABCDEF:@+=DXZ\x00\xff\xd8";
        for _ in 0..20_000 {
            let len = rng.usize(0..40);
            let bytes: Vec<u8> = (0..len)
                .map(|_| alphabet[rng.usize(0..alphabet.len())])
                .collect();
            for spelled in [percent_text(&bytes), unescape_text(&bytes)]
                .into_iter()
                .flatten()
            {
                assert_eq!(spelled.from.len(), spelled.text.len() + 1);
                assert!(spelled.from.windows(2).all(|w| w[0] <= w[1]));
                assert_eq!(spelled.from.last(), Some(&bytes.len()));
                let (a, b) = spelled.source(0, spelled.text.len() + 5);
                assert!(a <= b && b <= bytes.len());
            }
            let _ = hex_text(&bytes);
            let _ = base64_text(&bytes);
            let _ = basic_credentials(&bytes);
            let _ = utf16_text(&bytes);
        }
    }
}
