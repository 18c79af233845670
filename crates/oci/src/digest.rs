//! Content digests (`algorithm:encoded`), validated and algorithm-agile.

use std::fmt;
use std::str::FromStr;

use sha2::Digest as _;

/// A digest algorithm ferry can verify.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Algorithm {
    /// SHA-256, the algorithm of nearly all content in the wild.
    Sha256,
    /// SHA-512, allowed by the OCI image spec.
    Sha512,
}

impl Algorithm {
    /// The name used in digest strings and on disk.
    pub fn as_str(self) -> &'static str {
        match self {
            Algorithm::Sha256 => "sha256",
            Algorithm::Sha512 => "sha512",
        }
    }

    /// Length of the lowercase hex encoding.
    pub fn hex_len(self) -> usize {
        match self {
            Algorithm::Sha256 => 64,
            Algorithm::Sha512 => 128,
        }
    }

    /// A fresh hasher for this algorithm.
    pub fn hasher(self) -> Hasher {
        match self {
            Algorithm::Sha256 => Hasher::Sha256(sha2::Sha256::new()),
            Algorithm::Sha512 => Hasher::Sha512(sha2::Sha512::new()),
        }
    }

    fn from_name(name: &str) -> Option<Algorithm> {
        match name {
            "sha256" => Some(Algorithm::Sha256),
            "sha512" => Some(Algorithm::Sha512),
            _ => None,
        }
    }
}

/// Why a digest string was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DigestError {
    /// Not of the form `algorithm:encoded` at all.
    #[error("digest {0:?} is not of the form algorithm:hex (e.g. sha256:<64 hex digits>)")]
    Malformed(String),
    /// Well-formed, but an algorithm ferry does not verify.
    #[error("digest algorithm {0:?} is not supported (use sha256 or sha512)")]
    UnsupportedAlgorithm(String),
    /// Known algorithm but the encoded part has the wrong length or characters.
    #[error("digest {0:?} has an invalid encoding: expected {1} lowercase hex digits")]
    BadEncoding(String, usize),
}

/// A validated content digest such as `sha256:e3b0c442…`.
///
/// The string form is kept so that displaying and hashing are free; construction guarantees it is
/// `algorithm ":" lowercase-hex` of the right length, which also makes it safe as a file name.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Digest {
    algorithm: Algorithm,
    text: String,
}

impl Digest {
    /// Hashes `bytes` with `algorithm`.
    pub fn of(algorithm: Algorithm, bytes: &[u8]) -> Digest {
        let mut h = algorithm.hasher();
        h.update(bytes);
        h.finish()
    }

    /// SHA-256 of `bytes`: the digest of choice for new content.
    pub fn sha256(bytes: &[u8]) -> Digest {
        Digest::of(Algorithm::Sha256, bytes)
    }

    /// The algorithm.
    pub fn algorithm(&self) -> Algorithm {
        self.algorithm
    }

    /// The lowercase hex part after the colon.
    pub fn hex(&self) -> &str {
        &self.text[self.algorithm.as_str().len() + 1..]
    }

    /// The full `algorithm:hex` string.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The 32 bytes of a SHA-256 digest (`None` for other algorithms): what an index keeps, a
    /// third of the string's size.
    pub fn sha256_bytes(&self) -> Option<[u8; 32]> {
        if self.algorithm != Algorithm::Sha256 {
            return None;
        }
        let mut out = [0u8; 32];
        hex::decode_to_slice(self.hex(), &mut out).ok()?;
        Some(out)
    }

    /// The SHA-256 digest whose bytes are `bytes` (the inverse of [`Digest::sha256_bytes`]).
    pub fn from_sha256_bytes(bytes: [u8; 32]) -> Digest {
        Digest::from_parts(Algorithm::Sha256, &hex::encode(bytes))
    }

    fn from_parts(algorithm: Algorithm, hex: &str) -> Digest {
        Digest {
            algorithm,
            text: format!("{}:{hex}", algorithm.as_str()),
        }
    }
}

impl FromStr for Digest {
    type Err = DigestError;

    fn from_str(s: &str) -> Result<Digest, DigestError> {
        let Some((alg, enc)) = s.split_once(':') else {
            return Err(DigestError::Malformed(s.to_owned()));
        };
        // Grammar from the image spec: algorithm-component ([+._-] algorithm-component)* and
        // encoded [a-zA-Z0-9=_-]+. Anything outside it is malformed rather than merely unsupported.
        let alg_ok = !alg.is_empty()
            && alg.split(['+', '.', '_', '-']).all(|c| {
                !c.is_empty()
                    && c.bytes()
                        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
            });
        let enc_ok = !enc.is_empty()
            && enc
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'=' | b'_' | b'-'));
        if !alg_ok || !enc_ok {
            return Err(DigestError::Malformed(s.to_owned()));
        }
        let Some(algorithm) = Algorithm::from_name(alg) else {
            return Err(DigestError::UnsupportedAlgorithm(alg.to_owned()));
        };
        let hex_ok = enc.len() == algorithm.hex_len()
            && enc
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
        if !hex_ok {
            return Err(DigestError::BadEncoding(s.to_owned(), algorithm.hex_len()));
        }
        Ok(Digest::from_parts(algorithm, enc))
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Digest({})", self.text)
    }
}

impl serde::Serialize for Digest {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.text)
    }
}

impl<'de> serde::Deserialize<'de> for Digest {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Digest, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// An incremental hasher for any supported [`Algorithm`]; used to hash while writing.
#[derive(Clone)]
pub enum Hasher {
    /// SHA-256 state.
    Sha256(sha2::Sha256),
    /// SHA-512 state.
    Sha512(sha2::Sha512),
}

impl fmt::Debug for Hasher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Hasher({})", self.algorithm().as_str())
    }
}

impl Hasher {
    /// Feeds bytes.
    pub fn update(&mut self, bytes: &[u8]) {
        match self {
            Hasher::Sha256(h) => h.update(bytes),
            Hasher::Sha512(h) => h.update(bytes),
        }
    }

    /// The algorithm this hasher computes.
    pub fn algorithm(&self) -> Algorithm {
        match self {
            Hasher::Sha256(_) => Algorithm::Sha256,
            Hasher::Sha512(_) => Algorithm::Sha512,
        }
    }

    /// The digest of everything fed so far.
    pub fn finish(self) -> Digest {
        match self {
            Hasher::Sha256(h) => Digest::from_parts(Algorithm::Sha256, &hex::encode(h.finalize())),
            Hasher::Sha512(h) => Digest::from_parts(Algorithm::Sha512, &hex::encode(h.finalize())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn sha256_bytes_round_trip(bytes in proptest::array::uniform32(any::<u8>())) {
            let d = Digest::from_sha256_bytes(bytes);
            prop_assert_eq!(d.sha256_bytes(), Some(bytes));
            prop_assert_eq!(d.as_str().parse::<Digest>().unwrap(), d.clone());
            prop_assert_eq!(Digest::of(Algorithm::Sha512, &bytes).sha256_bytes(), None);
        }
    }

    #[test]
    fn known_vectors() {
        assert_eq!(
            Digest::sha256(b"").as_str(),
            "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        let d = Digest::of(Algorithm::Sha512, b"abc");
        assert!(d.hex().starts_with("ddaf35a193617aba"));
        assert_eq!(d.hex().len(), 128);
    }

    #[test]
    fn refusals_are_typed() {
        let cases = [
            ("", "Malformed"),
            ("sha256", "Malformed"),
            ("sha256:", "Malformed"),
            (":abc", "Malformed"),
            ("SHA256:abc", "Malformed"),
            ("sha256:../../etc", "Malformed"),
            (
                "md5:d41d8cd98f00b204e9800998ecf8427e",
                "UnsupportedAlgorithm",
            ),
            ("sha256:abc", "BadEncoding"),
            (
                "sha256:E3B0C44298FC1C149AFBF4C8996FB92427AE41E4649B934CA495991B7852B855",
                "BadEncoding",
            ),
        ];
        for (input, kind) in cases {
            let err = input.parse::<Digest>().unwrap_err();
            assert!(
                format!("{err:?}").starts_with(kind),
                "{input:?} gave {err:?}"
            );
        }
    }

    proptest! {
        #[test]
        fn parse_never_panics_and_roundtrips(s in "\\PC{0,200}") {
            if let Ok(d) = s.parse::<Digest>() {
                prop_assert_eq!(d.as_str(), s.as_str());
                prop_assert!(!d.as_str().contains('/'));
            }
        }

        #[test]
        fn valid_digests_roundtrip(bytes in proptest::collection::vec(any::<u8>(), 0..256), sha512 in any::<bool>()) {
            let alg = if sha512 { Algorithm::Sha512 } else { Algorithm::Sha256 };
            let d = Digest::of(alg, &bytes);
            let back: Digest = d.as_str().parse().unwrap();
            prop_assert_eq!(&back, &d);
            prop_assert_eq!(back.hex().len(), alg.hex_len());
        }

        #[test]
        fn near_misses_are_rejected(hex in "[0-9a-f]{0,130}", alg in "sha256|sha512|sha384|Sha256") {
            let s = format!("{alg}:{hex}");
            let ok = (alg == "sha256" && hex.len() == 64) || (alg == "sha512" && hex.len() == 128);
            prop_assert_eq!(s.parse::<Digest>().is_ok(), ok);
        }
    }
}
