//! The check digits and structures of the token formats that carry one (Base58Check,
//! bech32, PyPI's macaroons), which [`super::rules::Checksum`] checks.

use base64::Engine as _;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use sha2::{Digest, Sha256};

/// A Bitcoin WIF private key: Base58Check of version 0x80 (mainnet) or 0xEF (testnet),
/// a key in secp256k1's range, then the 0x01 compression flag or nothing.
pub(crate) fn bitcoin_wif(text: &[u8]) -> bool {
    base58check(text).is_some_and(|payload| match payload.as_slice() {
        [0x80 | 0xef, key @ .., 0x01] if key.len() == 32 => secp256k1_key(key),
        [0x80 | 0xef, key @ ..] => secp256k1_key(key),
        _ => false,
    })
}

/// The version bytes of BIP-32 extended private keys: `xprv` and `tprv`, and SLIP-132's
/// `yprv`, `Yprv`, `zprv`, `Zprv`, `uprv`, `Uprv`, `vprv`, `Vprv`.
const EXTENDED_PRIVATE_VERSIONS: [[u8; 4]; 10] = [
    [0x04, 0x88, 0xad, 0xe4],
    [0x04, 0x35, 0x83, 0x94],
    [0x04, 0x9d, 0x78, 0x78],
    [0x02, 0x95, 0xb0, 0x05],
    [0x04, 0xb2, 0x43, 0x0c],
    [0x02, 0xaa, 0x7a, 0x99],
    [0x04, 0x4a, 0x4e, 0x28],
    [0x02, 0x42, 0x85, 0xb5],
    [0x04, 0x5f, 0x18, 0xbc],
    [0x02, 0x57, 0x50, 0x48],
];

/// A BIP-32 extended private key: Base58Check of 78 bytes, a private key version, a depth
/// (a master key, at depth 0, has no parent fingerprint and child number), a chain code,
/// then 0x00 and a key in secp256k1's range.
pub(crate) fn bip32_private_key(text: &[u8]) -> bool {
    let Some(payload) = base58check(text) else {
        return false;
    };
    let Some([version, depth, parent, child, _chain, marker, key]) =
        split(&payload, [4, 1, 4, 4, 32, 1, 32])
    else {
        return false;
    };
    EXTENDED_PRIVATE_VERSIONS.iter().any(|v| v == version)
        && (depth != [0] || parent.iter().chain(child).all(|&b| b == 0))
        && marker == [0]
        && secp256k1_key(key)
}

/// `bytes` cut into pieces of the given lengths, when that is all of them.
fn split<const N: usize>(mut bytes: &[u8], lengths: [usize; N]) -> Option<[&[u8]; N]> {
    let mut pieces = [&bytes[..0]; N];
    for (piece, length) in pieces.iter_mut().zip(lengths) {
        (*piece, bytes) = bytes.split_at_checked(length)?;
    }
    bytes.is_empty().then_some(pieces)
}

/// The order of secp256k1's group, big-endian: a private key is below it and not zero.
const SECP256K1_ORDER: [u8; 32] = [
    0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xfe,
    0xba, 0xae, 0xdc, 0xe6, 0xaf, 0x48, 0xa0, 0x3b, 0xbf, 0xd2, 0x5e, 0x8c, 0xd0, 0x36, 0x41, 0x41,
];

fn secp256k1_key(key: &[u8]) -> bool {
    key.len() == 32 && key < &SECP256K1_ORDER[..] && key.iter().any(|&b| b != 0)
}

const BASE58: &[u8; 58] = b"123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz";

/// Longer text is not decoded (the work grows with the square of the length), and no
/// format checked here is that long.
const MAX_BASE58: usize = 256;

/// The payload of Base58Check text (Bitcoin's alphabet): its bytes but the last 4, when
/// those are the first 4 of the double SHA-256 of the rest.
pub(crate) fn base58check(text: &[u8]) -> Option<Vec<u8>> {
    if text.len() > MAX_BASE58 {
        return None;
    }
    // The number, little-endian, multiplied by 58 and added to digit by digit.
    let mut number: Vec<u8> = Vec::with_capacity(text.len());
    for &c in text {
        let mut carry = u32::try_from(BASE58.iter().position(|&d| d == c)?).ok()?;
        for byte in &mut number {
            carry += u32::from(*byte) * 58;
            *byte = carry.to_le_bytes()[0];
            carry >>= 8;
        }
        while carry > 0 {
            number.push(carry.to_le_bytes()[0]);
            carry >>= 8;
        }
    }
    // Each leading `1` is a leading zero byte.
    let zeros = text.iter().take_while(|&&c| c == b'1').count();
    number.extend(std::iter::repeat_n(0, zeros));
    number.reverse();
    let at = number.len().checked_sub(4)?;
    let (payload, check) = number.split_at(at);
    let digest = Sha256::digest(Sha256::digest(payload));
    (digest[..4] == *check).then(|| payload.to_vec())
}

const BECH32: &[u8; 32] = b"qpzry9x8gf2tvdw0s3jn54khce6mua7l";

/// The data of bech32 text (BIP-173, either case but not both) whose human-readable part
/// is `hrp` (lowercase), as bytes: its checksum must hold and its padding bits be zero.
pub(crate) fn bech32(text: &[u8], hrp: &str) -> Option<Vec<u8>> {
    let lower = text.to_ascii_lowercase();
    if text != lower && *text != text.to_ascii_uppercase() {
        return None;
    }
    let (human, data) = lower.split_at(lower.iter().rposition(|&b| b == b'1')?);
    let data = &data[1..];
    if human != hrp.as_bytes() || data.len() < 6 {
        return None;
    }
    let values = (data.iter())
        .map(|c| {
            BECH32
                .iter()
                .position(|d| d == c)
                .and_then(|v| u8::try_from(v).ok())
        })
        .collect::<Option<Vec<u8>>>()?;
    let expanded = (human.iter().map(|c| c >> 5))
        .chain([0])
        .chain(human.iter().map(|c| c & 31))
        .chain(values.iter().copied());
    if expanded.fold(1, bech32_polymod) != 1 {
        return None;
    }
    // Groups of 5 bits to bytes; what is left over (under 5 bits) is zero padding.
    let (mut bits, mut width, mut bytes) = (0u32, 0, Vec::with_capacity(data.len() * 5 / 8));
    for &v in &values[..values.len() - 6] {
        bits = (bits << 5 | u32::from(v)) & 0xfff;
        width += 5;
        if width >= 8 {
            width -= 8;
            bytes.push((bits >> width).to_le_bytes()[0]);
        }
    }
    (width < 5 && bits & ((1 << width) - 1) == 0).then_some(bytes)
}

/// One step of bech32's checksum (a BCH code over 5-bit values).
fn bech32_polymod(check: u32, value: u8) -> u32 {
    const GENERATOR: [u32; 5] = [0x3b6a57b2, 0x26508e6d, 0x1ea119fa, 0x3d4233dd, 0x2a1462b3];
    let top = check >> 25;
    let mut check = (check & 0x1ff_ffff) << 5 ^ u32::from(value);
    for (i, g) in GENERATOR.iter().enumerate() {
        if (top >> i) & 1 == 1 {
            check ^= g;
        }
    }
    check
}

/// An age X25519 secret key: bech32 with the `age-secret-key-` prefix, of 32 bytes.
pub(crate) fn age_secret_key(text: &[u8]) -> bool {
    bech32(text, "age-secret-key-").is_some_and(|key| key.len() == 32)
}

const URL_SAFE: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::URL_SAFE,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// A PyPI API token: `pypi-` then URL-safe base64 of a v2 macaroon located at `pypi.org`
/// or `test.pypi.org`.
pub(crate) fn pypi_token(text: &[u8]) -> bool {
    text.strip_prefix(b"pypi-")
        .and_then(|encoded| URL_SAFE.decode(encoded).ok())
        .is_some_and(|bytes| {
            matches!(
                macaroon_v2_location(&bytes),
                Some(b"pypi.org" | b"test.pypi.org")
            )
        })
}

// The field types of the v2 binary macaroon format.
const EOS: u64 = 0;
const LOCATION: u64 = 1;
const IDENTIFIER: u64 = 2;
const VID: u64 = 4;
const SIGNATURE: u64 = 6;

/// The location of a macaroon in the v2 binary format, when `bytes` are one and nothing
/// more: version 2, a section of a location and an identifier, a section per caveat, an
/// empty section, and a 32-byte signature.
pub(crate) fn macaroon_v2_location(bytes: &[u8]) -> Option<&[u8]> {
    let ([2], mut data) = bytes.split_at_checked(1)? else {
        return None;
    };
    let header = macaroon_section(&mut data, &[LOCATION, IDENTIFIER])?;
    while !data.starts_with(&[0]) {
        macaroon_section(&mut data, &[LOCATION, IDENTIFIER, VID])?;
    }
    data = &data[1..];
    let (kind, signature) = macaroon_field(&mut data)?;
    if kind != SIGNATURE || signature.len() != 32 || !data.is_empty() {
        return None;
    }
    Some(
        (header.iter())
            .find(|(kind, _)| *kind == LOCATION)
            .map_or(&[][..], |f| f.1),
    )
}

/// The fields of a macaroon's section, up to the end of the section: of the `allowed`
/// types, in ascending order, each at most once, an identifier among them.
fn macaroon_section<'a>(data: &mut &'a [u8], allowed: &[u64]) -> Option<Vec<(u64, &'a [u8])>> {
    let mut fields: Vec<(u64, &[u8])> = Vec::new();
    loop {
        let (kind, field) = macaroon_field(data)?;
        if kind == EOS {
            break;
        }
        if !allowed.contains(&kind) || fields.last().is_some_and(|&(last, _)| last >= kind) {
            return None;
        }
        fields.push((kind, field));
    }
    fields
        .iter()
        .any(|&(kind, _)| kind == IDENTIFIER)
        .then_some(fields)
}

/// One field of a macaroon: its type and its content (none for the end of a section).
fn macaroon_field<'a>(data: &mut &'a [u8]) -> Option<(u64, &'a [u8])> {
    let kind = varint(data)?;
    if kind == EOS {
        return Some((EOS, &[]));
    }
    let length = usize::try_from(varint(data)?).ok()?;
    let (field, rest) = data.split_at_checked(length)?;
    *data = rest;
    Some((kind, field))
}

/// An unsigned LEB128 number (7 bits a byte, the low ones first).
fn varint(data: &mut &[u8]) -> Option<u64> {
    let mut number = 0u64;
    for shift in (0..64).step_by(7) {
        let (&byte, rest) = data.split_first()?;
        *data = rest;
        number |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return Some(number);
        }
    }
    None
}
