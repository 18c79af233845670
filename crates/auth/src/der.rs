//! A minimal, bounded DER reader: the subject common name of a client certificate (mutual TLS
//! maps it to a user), and the SubjectPublicKeyInfo of a token issuer's public key. Plus the PEM
//! armour both come in.
//!
//! Only what these two structures need: single-byte tags, definite lengths of at most four length
//! bytes, every length checked against what is left. Input is never trusted: any inconsistency
//! gives `None`, never a panic.

use base64::Engine as _;

const SEQUENCE: u8 = 0x30;
const SET: u8 = 0x31;
const INTEGER: u8 = 0x02;
const BIT_STRING: u8 = 0x03;
const OID: u8 = 0x06;
const UTF8_STRING: u8 = 0x0c;
const PRINTABLE_STRING: u8 = 0x13;
const T61_STRING: u8 = 0x14;
const IA5_STRING: u8 = 0x16;
const BMP_STRING: u8 = 0x1e;
const CONTEXT_0: u8 = 0xa0;

/// id-at-commonName, 2.5.4.3.
const OID_COMMON_NAME: &[u8] = &[0x55, 0x04, 0x03];
/// rsaEncryption, 1.2.840.113549.1.1.1.
const OID_RSA: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01];
/// id-ecPublicKey, 1.2.840.10045.2.1.
const OID_EC: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01];
/// prime256v1, 1.2.840.10045.3.1.7.
const OID_P256: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];
/// secp384r1, 1.3.132.0.34.
const OID_P384: &[u8] = &[0x2b, 0x81, 0x04, 0x00, 0x22];
/// id-Ed25519, 1.3.101.112.
const OID_ED25519: &[u8] = &[0x2b, 0x65, 0x70];

/// Reads one TLV at a time from a slice; every read is bounds-checked.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Reader<'a> {
    rest: &'a [u8],
}

impl<'a> Reader<'a> {
    pub(crate) fn new(data: &'a [u8]) -> Self {
        Reader { rest: data }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.rest.is_empty()
    }

    fn peek_tag(&self) -> Option<u8> {
        self.rest.first().copied()
    }

    /// The next element's tag and contents.
    pub(crate) fn read(&mut self) -> Option<(u8, &'a [u8])> {
        let (&tag, rest) = self.rest.split_first()?;
        // High-tag-number form (low five bits all set) appears in neither structure.
        if tag & 0x1f == 0x1f {
            return None;
        }
        let (&first, mut rest) = rest.split_first()?;
        let len = if first < 0x80 {
            usize::from(first)
        } else {
            // 0x80 is the indefinite form, which DER forbids; more than four bytes is absurd here.
            let n = usize::from(first & 0x7f);
            if n == 0 || n > 4 || rest.len() < n {
                return None;
            }
            let (bytes, after) = rest.split_at(n);
            rest = after;
            bytes
                .iter()
                .fold(0usize, |acc, &b| (acc << 8) | usize::from(b))
        };
        if rest.len() < len {
            return None;
        }
        let (value, after) = rest.split_at(len);
        self.rest = after;
        Some((tag, value))
    }

    /// The next element's contents if it has `tag`.
    pub(crate) fn expect(&mut self, tag: u8) -> Option<&'a [u8]> {
        match self.read()? {
            (t, value) if t == tag => Some(value),
            _ => None,
        }
    }
}

/// The subject's first common name (OID 2.5.4.3) of a DER X.509 certificate, decoded from
/// UTF8String, PrintableString, IA5String, T61String (read as Latin-1) or BMPString.
///
/// The certificate must already have been verified (rustls does that during the handshake); this
/// only walks the structure. `None` when there is no common name, the encoding is not understood,
/// or the name is empty or holds control characters (it becomes a user name, and ends up in logs).
pub fn certificate_subject_common_name(der: &[u8]) -> Option<String> {
    let certificate = Reader::new(der).expect(SEQUENCE)?;
    let mut tbs = Reader::new(Reader::new(certificate).expect(SEQUENCE)?);
    if tbs.peek_tag() == Some(CONTEXT_0) {
        tbs.read()?; // version
    }
    tbs.expect(INTEGER)?; // serialNumber
    tbs.expect(SEQUENCE)?; // signature AlgorithmIdentifier
    tbs.expect(SEQUENCE)?; // issuer
    tbs.expect(SEQUENCE)?; // validity
    let mut subject = Reader::new(tbs.expect(SEQUENCE)?);
    while !subject.is_empty() {
        let mut rdn = Reader::new(subject.expect(SET)?);
        while !rdn.is_empty() {
            let mut attribute = Reader::new(rdn.expect(SEQUENCE)?);
            if attribute.expect(OID)? == OID_COMMON_NAME {
                let (tag, value) = attribute.read()?;
                return decode_directory_string(tag, value)
                    .filter(|name| !name.is_empty() && !name.chars().any(char::is_control));
            }
        }
    }
    None
}

fn decode_directory_string(tag: u8, value: &[u8]) -> Option<String> {
    match tag {
        UTF8_STRING => String::from_utf8(value.to_vec()).ok(),
        PRINTABLE_STRING | IA5_STRING => value
            .is_ascii()
            .then(|| value.iter().map(|&b| char::from(b)).collect()),
        // Latin-1: every byte is the code point of the same number.
        T61_STRING => Some(value.iter().map(|&b| char::from(b)).collect()),
        BMP_STRING => {
            if !value.len().is_multiple_of(2) {
                return None;
            }
            let units = value
                .chunks_exact(2)
                .map(|pair| u16::from_be_bytes([pair[0], pair[1]]));
            char::decode_utf16(units)
                .collect::<Result<String, _>>()
                .ok()
        }
        _ => None,
    }
}

/// A public key from a DER SubjectPublicKeyInfo, in the forms ring verifies with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum SpkiKey {
    /// Modulus and exponent, big-endian without leading zeros.
    Rsa { n: Vec<u8>, e: Vec<u8> },
    /// Uncompressed point `04 ‖ x ‖ y`, 65 bytes.
    P256(Vec<u8>),
    /// Uncompressed point `04 ‖ x ‖ y`, 97 bytes.
    P384(Vec<u8>),
    /// The 32-byte public key.
    Ed25519(Vec<u8>),
}

/// Parses a SubjectPublicKeyInfo holding an RSA, P-256, P-384 or Ed25519 key.
pub(crate) fn parse_spki(der: &[u8]) -> Option<SpkiKey> {
    let mut outer = Reader::new(der);
    let mut spki = Reader::new(outer.expect(SEQUENCE)?);
    if !outer.is_empty() {
        return None;
    }
    let mut algorithm = Reader::new(spki.expect(SEQUENCE)?);
    let bits = spki.expect(BIT_STRING)?;
    if !spki.is_empty() {
        return None;
    }
    // The first byte of a BIT STRING counts unused bits; keys are whole bytes.
    let key = match bits.split_first()? {
        (0, key) => key,
        _ => return None,
    };
    let oid = algorithm.expect(OID)?;
    if oid == OID_RSA {
        // Parameters are NULL (or, from some encoders, absent); either way ignored.
        let mut rsa = Reader::new(key);
        let mut fields = Reader::new(rsa.expect(SEQUENCE)?);
        let n = strip_leading_zeros(fields.expect(INTEGER)?);
        let e = strip_leading_zeros(fields.expect(INTEGER)?);
        if !rsa.is_empty() || !fields.is_empty() || n.is_empty() || e.is_empty() {
            return None;
        }
        Some(SpkiKey::Rsa {
            n: n.to_vec(),
            e: e.to_vec(),
        })
    } else if oid == OID_EC {
        let curve = algorithm.expect(OID)?;
        let point_len = if curve == OID_P256 {
            65
        } else if curve == OID_P384 {
            97
        } else {
            return None;
        };
        if key.len() != point_len || key.first() != Some(&0x04) {
            return None;
        }
        Some(if point_len == 65 {
            SpkiKey::P256(key.to_vec())
        } else {
            SpkiKey::P384(key.to_vec())
        })
    } else if oid == OID_ED25519 {
        (algorithm.is_empty() && key.len() == 32).then(|| SpkiKey::Ed25519(key.to_vec()))
    } else {
        None
    }
}

pub(crate) fn strip_leading_zeros(bytes: &[u8]) -> &[u8] {
    let start = bytes.iter().position(|&b| b != 0).unwrap_or(bytes.len());
    &bytes[start..]
}

/// The body of the first `-----BEGIN {label}-----` … `-----END {label}-----` block, decoded.
pub(crate) fn pem_decode(text: &[u8], label: &str) -> Option<Vec<u8>> {
    let begin = format!("-----BEGIN {label}-----");
    let end = format!("-----END {label}-----");
    let start = find(text, begin.as_bytes())? + begin.len();
    let len = find(&text[start..], end.as_bytes())?;
    let body: Vec<u8> = text[start..start + len]
        .iter()
        .copied()
        .filter(|b| !b.is_ascii_whitespace())
        .collect();
    base64::engine::general_purpose::STANDARD.decode(body).ok()
}

/// A PEM block with 64-character lines, as OpenSSL writes it.
pub(crate) fn pem_encode(label: &str, der: &[u8]) -> String {
    let body = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for line in body.as_bytes().chunks(64) {
        // Base64 output is ASCII, so each chunk is valid UTF-8.
        out.push_str(&String::from_utf8_lossy(line));
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack
        .windows(needle.len())
        .position(|window| window == needle)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const CERT: &[u8] = include_bytes!("../tests/data/cert-alice.pem");

    fn cert_der() -> Vec<u8> {
        pem_decode(CERT, "CERTIFICATE").expect("test certificate")
    }

    #[test]
    fn common_name_of_an_openssl_certificate() {
        // Subject is /O=ferry/CN=alice: the CN is in the second RDN.
        assert_eq!(
            certificate_subject_common_name(&cert_der()).as_deref(),
            Some("alice")
        );
    }

    #[test]
    fn truncated_certificates_give_none() {
        let der = cert_der();
        for len in 0..der.len() {
            assert_eq!(certificate_subject_common_name(&der[..len]), None, "{len}");
        }
    }

    #[test]
    fn directory_string_forms() {
        assert_eq!(
            decode_directory_string(T61_STRING, b"caf\xe9").as_deref(),
            Some("café")
        );
        assert_eq!(
            decode_directory_string(BMP_STRING, &[0, b'h', 0, b'i']).as_deref(),
            Some("hi")
        );
        assert_eq!(decode_directory_string(BMP_STRING, &[0, b'h', 0]), None);
        assert_eq!(decode_directory_string(PRINTABLE_STRING, b"\xff"), None);
        assert_eq!(decode_directory_string(0x04, b"octets"), None);
    }

    #[test]
    fn spki_of_each_supported_kind() {
        let rsa = pem_decode(
            include_bytes!("../tests/data/rsa2048.pub.pem"),
            "PUBLIC KEY",
        )
        .expect("rsa pem");
        match parse_spki(&rsa) {
            Some(SpkiKey::Rsa { n, e }) => {
                assert_eq!(n.len(), 256);
                assert_eq!(e, [1, 0, 1]);
            }
            other => panic!("{other:?}"),
        }
        let p384 = pem_decode(include_bytes!("../tests/data/p384.pub.pem"), "PUBLIC KEY")
            .expect("p384 pem");
        assert!(matches!(parse_spki(&p384), Some(SpkiKey::P384(p)) if p.len() == 97));
        let ed = pem_decode(
            include_bytes!("../tests/data/ed25519.pub.pem"),
            "PUBLIC KEY",
        )
        .expect("ed25519 pem");
        assert!(matches!(parse_spki(&ed), Some(SpkiKey::Ed25519(k)) if k.len() == 32));
        let mut trailing = ed.clone();
        trailing.push(0);
        assert_eq!(parse_spki(&trailing), None);
    }

    #[test]
    fn pem_round_trip() {
        let der = cert_der();
        let pem = pem_encode("CERTIFICATE", &der);
        assert_eq!(pem_decode(pem.as_bytes(), "CERTIFICATE"), Some(der));
        assert_eq!(pem_decode(pem.as_bytes(), "PUBLIC KEY"), None);
    }

    #[test]
    fn long_and_indefinite_lengths() {
        assert_eq!(Reader::new(&[0x30, 0x80, 0, 0]).read(), None);
        assert_eq!(
            Reader::new(&[0x04, 0x82, 0x00, 0x01, 7]).read(),
            Some((0x04, &[7u8][..]))
        );
        assert_eq!(Reader::new(&[0x04, 0x85, 0, 0, 0, 0, 1, 7]).read(), None);
        assert_eq!(Reader::new(&[0x1f, 0x01, 0]).read(), None);
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = certificate_subject_common_name(&bytes);
            let _ = parse_spki(&bytes);
        }

        #[test]
        fn mutated_certificates_never_panic(index in any::<proptest::sample::Index>(), byte in any::<u8>()) {
            let mut der = cert_der();
            let i = index.index(der.len());
            der[i] = byte;
            let _ = certificate_subject_common_name(&der);
        }
    }
}
