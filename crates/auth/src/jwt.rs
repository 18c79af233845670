//! Docker-token-spec bearer tokens: compact JWS (JWT) signed by ferry's own ES256 key or by an
//! external issuer's RSA, ECDSA or Ed25519 key, on ring, written by hand.
//!
//! Verification is closed by design: a fixed list of asymmetric algorithms, each tied to its key
//! type; `none` and HMAC are never accepted (so a public key can never be used as an HMAC
//! secret); keys come only from configuration — `jku`/`x5u` are never fetched, an embedded
//! `jwk` only selects a configured key by thumbprint, `x5c` chains are refused; `crit` is
//! refused. Claims are typed strictly: `exp` is a required integer, and a string or float
//! `exp`/`nbf` makes the token invalid rather than unbounded.

use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ring::rand::SystemRandom;
use ring::signature::{self, EcdsaKeyPair, KeyPair as _};
use serde::de::IgnoredAny;
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::{Value, json};

use crate::der::{SpkiKey, parse_spki, pem_decode, pem_encode, strip_leading_zeros};
use crate::scope::{Access, null_as_empty};

/// Longest token accepted.
pub const MAX_TOKEN_LEN: usize = 8 * 1024;
/// Clock skew tolerated on `exp` and `nbf`, in seconds.
pub const LEEWAY_SECS: u64 = 60;
/// Largest JWKS or PEM document accepted.
const MAX_KEY_DOCUMENT: usize = 1024 * 1024;

/// The claims of a Docker registry token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// Issuer; must equal the configured issuer.
    pub iss: String,
    /// Subject: the user name (empty for anonymous tokens).
    #[serde(default)]
    pub sub: String,
    /// Audience: must contain the configured service name.
    pub aud: Audience,
    /// Expiry, unix seconds. Required, and an integer.
    pub exp: u64,
    /// Not before, unix seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nbf: Option<u64>,
    /// Issued at, unix seconds (informational).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iat: Option<u64>,
    /// Token id (informational).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jti: Option<String>,
    /// What the token grants.
    #[serde(default, deserialize_with = "null_as_empty")]
    pub access: Vec<Access>,
}

/// `aud`: one string or an array of strings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Audience {
    /// `"aud": "registry"`.
    One(String),
    /// `"aud": ["registry", …]`.
    Many(Vec<String>),
}

impl Audience {
    /// Whether `service` is among the audience.
    pub fn contains(&self, service: &str) -> bool {
        match self {
            Audience::One(aud) => aud == service,
            Audience::Many(auds) => auds.iter().any(|aud| aud == service),
        }
    }
}

impl Claims {
    /// Whether the token grants `action` on the resource (`kind` `repository`, `name`
    /// `library/alpine`); a granted `*` is every action.
    pub fn allows(&self, kind: &str, name: &str, action: &str) -> bool {
        self.access.iter().any(|access| {
            access.kind == kind
                && access.name == name
                && access.actions.iter().any(|a| a == action || a == "*")
        })
    }
}

/// Why a token was refused. Never includes the token.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// Not a compact JWS, over-long, or a part that is not base64url JSON.
    #[error("token is malformed: {0}")]
    Malformed(&'static str),
    /// `alg` outside RS256/384/512, PS256/384/512, ES256, ES384 and EdDSA (`none` and HMAC
    /// included).
    #[error("token algorithm is not accepted")]
    UnsupportedAlg,
    /// A `crit` header: no extension is understood.
    #[error("token header has critical extensions, which are not supported")]
    Critical,
    /// An `x5c` header.
    #[error(
        "token header carries an x5c certificate chain, which is not supported; configure the issuer's public key or JWKS"
    )]
    X5cUnsupported,
    /// No configured key has the token's `kid` (or embedded key), or there is no `kid` and
    /// several keys.
    #[error("token is signed by an unknown key")]
    UnknownKey,
    /// The algorithm does not fit the chosen key's type, curve or declared `alg`.
    #[error("token algorithm does not match its key")]
    KeyMismatch,
    /// The signature does not verify.
    #[error("token signature is invalid")]
    BadSignature,
    /// The claims are not an object of the expected types.
    #[error("token claims are invalid (exp is required; exp, nbf and iat must be integers)")]
    InvalidClaims,
    /// `now > exp + leeway`.
    #[error("token has expired")]
    Expired,
    /// `now + leeway < nbf`.
    #[error("token is not valid yet")]
    NotYetValid,
    /// `iss` is not the configured issuer.
    #[error("token issuer is not trusted")]
    WrongIssuer,
    /// `aud` does not name this service.
    #[error("token audience does not include this service")]
    WrongAudience,
}

/// A key could not be read, generated or used.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    /// No PEM block with the expected label, or its body is not base64.
    #[error("no PEM block \"-----BEGIN {0}-----\" found")]
    Pem(&'static str),
    /// ring refused the private key.
    #[error(
        "the token signing key is not an unencrypted PKCS#8 P-256 key (convert with `openssl pkcs8 -topk8 -nocrypt`)"
    )]
    PrivateKey,
    /// Not a SubjectPublicKeyInfo of a supported type.
    #[error("the public key is not an RSA, P-256, P-384 or Ed25519 SubjectPublicKeyInfo")]
    PublicKey,
    /// RSA modulus outside 2048..=8192 bits.
    #[error("RSA keys must have 2048 to 8192 bits")]
    RsaSize,
    /// A JWKS that is not JSON, has no `keys`, or a key with malformed members.
    #[error("the JWKS is invalid: {0}")]
    Jwks(&'static str),
    /// Nothing usable among the configured keys.
    #[error("no usable verification key (RSA, EC P-256/P-384, OKP Ed25519)")]
    NoKeys,
    /// Larger than 1 MiB.
    #[error("the key document is larger than 1 MiB")]
    TooLarge,
    /// The system random number generator failed.
    #[error("the system random number generator failed")]
    Random,
    /// A token could not be signed (the random nonce could not be drawn).
    #[error("the token could not be signed")]
    Sign,
}

/// The algorithms accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Alg {
    Rs256,
    Rs384,
    Rs512,
    Ps256,
    Ps384,
    Ps512,
    Es256,
    Es384,
    EdDsa,
}

impl Alg {
    fn parse(name: &str) -> Option<Alg> {
        Some(match name {
            "RS256" => Alg::Rs256,
            "RS384" => Alg::Rs384,
            "RS512" => Alg::Rs512,
            "PS256" => Alg::Ps256,
            "PS384" => Alg::Ps384,
            "PS512" => Alg::Ps512,
            "ES256" => Alg::Es256,
            "ES384" => Alg::Es384,
            "EdDSA" => Alg::EdDsa,
            _ => return None,
        })
    }
}

/// A public key, in the forms of its JWK members.
#[derive(Clone, PartialEq, Eq)]
enum PublicKey {
    /// Big-endian, no leading zeros.
    Rsa {
        n: Vec<u8>,
        e: Vec<u8>,
    },
    P256 {
        x: Vec<u8>,
        y: Vec<u8>,
    },
    P384 {
        x: Vec<u8>,
        y: Vec<u8>,
    },
    Ed25519(Vec<u8>),
}

impl PublicKey {
    fn rsa(n: &[u8], e: &[u8]) -> Result<PublicKey, KeyError> {
        let (n, e) = (strip_leading_zeros(n), strip_leading_zeros(e));
        if !(256..=1024).contains(&n.len()) || e.is_empty() || e.len() > 8 {
            return Err(KeyError::RsaSize);
        }
        Ok(PublicKey::Rsa {
            n: n.to_vec(),
            e: e.to_vec(),
        })
    }

    fn from_spki(key: SpkiKey) -> Result<PublicKey, KeyError> {
        Ok(match key {
            SpkiKey::Rsa { n, e } => PublicKey::rsa(&n, &e)?,
            SpkiKey::P256(point) => PublicKey::P256 {
                x: point[1..33].to_vec(),
                y: point[33..].to_vec(),
            },
            SpkiKey::P384(point) => PublicKey::P384 {
                x: point[1..49].to_vec(),
                y: point[49..].to_vec(),
            },
            SpkiKey::Ed25519(key) => PublicKey::Ed25519(key),
        })
    }

    /// `Ok(None)` for key types and curves that are not supported, so a JWKS may list them.
    fn from_jwk(jwk: &Value) -> Result<Option<PublicKey>, KeyError> {
        let member = |name: &'static str| -> Result<Vec<u8>, KeyError> {
            let text = jwk
                .get(name)
                .and_then(Value::as_str)
                .ok_or(KeyError::Jwks("a key lacks a required member"))?;
            URL_SAFE_NO_PAD
                .decode(text)
                .map_err(|_| KeyError::Jwks("a key member is not base64url"))
        };
        let coordinates = |len: usize| -> Result<(Vec<u8>, Vec<u8>), KeyError> {
            let (x, y) = (member("x")?, member("y")?);
            if x.len() != len || y.len() != len {
                return Err(KeyError::Jwks("an EC coordinate has the wrong length"));
            }
            Ok((x, y))
        };
        let crv = jwk.get("crv").and_then(Value::as_str);
        Ok(match (jwk.get("kty").and_then(Value::as_str), crv) {
            (Some("RSA"), _) => Some(PublicKey::rsa(&member("n")?, &member("e")?)?),
            (Some("EC"), Some("P-256")) => {
                let (x, y) = coordinates(32)?;
                Some(PublicKey::P256 { x, y })
            }
            (Some("EC"), Some("P-384")) => {
                let (x, y) = coordinates(48)?;
                Some(PublicKey::P384 { x, y })
            }
            (Some("OKP"), Some("Ed25519")) => {
                let x = member("x")?;
                if x.len() != 32 {
                    return Err(KeyError::Jwks("an Ed25519 key is not 32 bytes"));
                }
                Some(PublicKey::Ed25519(x))
            }
            _ => None,
        })
    }

    /// The RFC 7638 canonical JSON (members in lexical order, no whitespace). Every value is
    /// base64url or a fixed name, so nothing needs escaping.
    fn canonical_jwk(&self) -> String {
        let b = |bytes: &[u8]| URL_SAFE_NO_PAD.encode(bytes);
        match self {
            PublicKey::Rsa { n, e } => format!(r#"{{"e":"{}","kty":"RSA","n":"{}"}}"#, b(e), b(n)),
            PublicKey::P256 { x, y } => format!(
                r#"{{"crv":"P-256","kty":"EC","x":"{}","y":"{}"}}"#,
                b(x),
                b(y)
            ),
            PublicKey::P384 { x, y } => format!(
                r#"{{"crv":"P-384","kty":"EC","x":"{}","y":"{}"}}"#,
                b(x),
                b(y)
            ),
            PublicKey::Ed25519(x) => format!(r#"{{"crv":"Ed25519","kty":"OKP","x":"{}"}}"#, b(x)),
        }
    }

    /// RFC 7638 JWK thumbprint: base64url(SHA-256(canonical JWK)).
    fn thumbprint(&self) -> String {
        let digest = ring::digest::digest(&ring::digest::SHA256, self.canonical_jwk().as_bytes());
        URL_SAFE_NO_PAD.encode(digest.as_ref())
    }

    fn fits(&self, alg: Alg) -> bool {
        matches!(
            (self, alg),
            (
                PublicKey::Rsa { .. },
                Alg::Rs256 | Alg::Rs384 | Alg::Rs512 | Alg::Ps256 | Alg::Ps384 | Alg::Ps512
            ) | (PublicKey::P256 { .. }, Alg::Es256)
                | (PublicKey::P384 { .. }, Alg::Es384)
                | (PublicKey::Ed25519(_), Alg::EdDsa)
        )
    }

    fn verify(&self, alg: Alg, message: &[u8], sig: &[u8]) -> bool {
        let point = |x: &[u8], y: &[u8]| [&[0x04], x, y].concat();
        match self {
            PublicKey::Rsa { n, e } => {
                let params = match alg {
                    Alg::Rs256 => &signature::RSA_PKCS1_2048_8192_SHA256,
                    Alg::Rs384 => &signature::RSA_PKCS1_2048_8192_SHA384,
                    Alg::Rs512 => &signature::RSA_PKCS1_2048_8192_SHA512,
                    Alg::Ps256 => &signature::RSA_PSS_2048_8192_SHA256,
                    Alg::Ps384 => &signature::RSA_PSS_2048_8192_SHA384,
                    Alg::Ps512 => &signature::RSA_PSS_2048_8192_SHA512,
                    _ => return false,
                };
                signature::RsaPublicKeyComponents { n, e }
                    .verify(params, message, sig)
                    .is_ok()
            }
            PublicKey::P256 { x, y } if alg == Alg::Es256 => {
                signature::UnparsedPublicKey::new(&signature::ECDSA_P256_SHA256_FIXED, point(x, y))
                    .verify(message, sig)
                    .is_ok()
            }
            PublicKey::P384 { x, y } if alg == Alg::Es384 => {
                signature::UnparsedPublicKey::new(&signature::ECDSA_P384_SHA384_FIXED, point(x, y))
                    .verify(message, sig)
                    .is_ok()
            }
            PublicKey::Ed25519(key) if alg == Alg::EdDsa => {
                signature::UnparsedPublicKey::new(&signature::ED25519, key)
                    .verify(message, sig)
                    .is_ok()
            }
            _ => false,
        }
    }
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match self {
            PublicKey::Rsa { n, .. } => format!("RSA-{}", n.len() * 8),
            PublicKey::P256 { .. } => "P-256".to_owned(),
            PublicKey::P384 { .. } => "P-384".to_owned(),
            PublicKey::Ed25519(_) => "Ed25519".to_owned(),
        };
        f.write_str(&kind)
    }
}

/// ferry's own token issuer key: ECDSA P-256 (ES256), as Distribution's token issuers use.
pub struct TokenSigner {
    pair: EcdsaKeyPair,
    public: PublicKey,
    kid: String,
    rng: SystemRandom,
}

impl TokenSigner {
    /// A new random key, and its PKCS#8 DER to store (see [`TokenSigner::pkcs8_pem`]).
    pub fn generate() -> Result<(TokenSigner, Vec<u8>), KeyError> {
        let rng = SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&signature::ECDSA_P256_SHA256_FIXED_SIGNING, &rng)
            .map_err(|_| KeyError::Random)?;
        let der = pkcs8.as_ref().to_vec();
        Ok((TokenSigner::from_pkcs8(&der)?, der))
    }

    /// Loads an unencrypted PKCS#8 P-256 private key.
    pub fn from_pkcs8(der: &[u8]) -> Result<TokenSigner, KeyError> {
        let rng = SystemRandom::new();
        let pair = EcdsaKeyPair::from_pkcs8(&signature::ECDSA_P256_SHA256_FIXED_SIGNING, der, &rng)
            .map_err(|_| KeyError::PrivateKey)?;
        // ring gives the uncompressed point 04 ‖ x ‖ y.
        let point = pair.public_key().as_ref();
        if point.len() != 65 {
            return Err(KeyError::PrivateKey);
        }
        let public = PublicKey::P256 {
            x: point[1..33].to_vec(),
            y: point[33..].to_vec(),
        };
        Ok(TokenSigner {
            kid: public.thumbprint(),
            public,
            pair,
            rng,
        })
    }

    /// Loads a `-----BEGIN PRIVATE KEY-----` PEM (PKCS#8).
    pub fn from_pem(pem: &[u8]) -> Result<TokenSigner, KeyError> {
        if pem.len() > MAX_KEY_DOCUMENT {
            return Err(KeyError::TooLarge);
        }
        let der = pem_decode(pem, "PRIVATE KEY").ok_or(KeyError::Pem("PRIVATE KEY"))?;
        TokenSigner::from_pkcs8(&der)
    }

    /// PKCS#8 DER as a `PRIVATE KEY` PEM, to write a generated key to a file.
    pub fn pkcs8_pem(der: &[u8]) -> String {
        pem_encode("PRIVATE KEY", der)
    }

    /// The key id: the RFC 7638 thumbprint of the public key.
    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// The public key as a JWKS (`{"keys":[…]}`), for `/token/jwks.json` and for registries
    /// that verify ferry's tokens.
    pub fn jwks(&self) -> Value {
        let (x, y) = match &self.public {
            PublicKey::P256 { x, y } => (URL_SAFE_NO_PAD.encode(x), URL_SAFE_NO_PAD.encode(y)),
            _ => (String::new(), String::new()),
        };
        json!({"keys": [{
            "kty": "EC", "crv": "P-256", "x": x, "y": y,
            "kid": self.kid, "alg": "ES256", "use": "sig",
        }]})
    }

    /// A compact ES256 JWT of `claims`, with `kid` in the header.
    pub fn sign(&self, claims: &Claims) -> Result<String, KeyError> {
        let header = json!({"alg": "ES256", "typ": "JWT", "kid": self.kid});
        let claims = serde_json::to_vec(claims).map_err(|_| KeyError::Sign)?;
        let mut token = URL_SAFE_NO_PAD.encode(header.to_string());
        token.push('.');
        token.push_str(&URL_SAFE_NO_PAD.encode(claims));
        let sig = self
            .pair
            .sign(&self.rng, token.as_bytes())
            .map_err(|_| KeyError::Sign)?;
        token.push('.');
        token.push_str(&URL_SAFE_NO_PAD.encode(sig.as_ref()));
        Ok(token)
    }
}

impl fmt::Debug for TokenSigner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenSigner")
            .field("kid", &self.kid)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Clone)]
struct TrustedKey {
    /// Names a token's `kid` may use: the JWKS `kid`, the RFC 7638 thumbprint, and for PEM keys
    /// the libtrust key id older Docker token servers put in `kid`.
    ids: Vec<String>,
    thumbprint: String,
    /// A JWK's declared `alg`: then only that one.
    alg: Option<Alg>,
    key: PublicKey,
}

/// The keys whose tokens are trusted.
#[derive(Debug, Clone)]
pub struct TokenVerifier {
    keys: Vec<TrustedKey>,
}

impl TokenVerifier {
    /// Keys from a JWKS document (`{"keys":[…]}`). RSA (2048–8192 bits), EC P-256/P-384 and
    /// OKP Ed25519 keys are used; other types, and keys marked `"use":"enc"`, are skipped; a
    /// supported key with malformed members is an error, and so is a set with no usable key.
    pub fn from_jwks(json: &[u8]) -> Result<TokenVerifier, KeyError> {
        if json.len() > MAX_KEY_DOCUMENT {
            return Err(KeyError::TooLarge);
        }
        let doc: Value =
            serde_json::from_slice(json).map_err(|_| KeyError::Jwks("not valid JSON"))?;
        let jwks = doc
            .get("keys")
            .and_then(Value::as_array)
            .ok_or(KeyError::Jwks("no \"keys\" array"))?;
        let mut keys = Vec::new();
        for jwk in jwks {
            if jwk.get("use").and_then(Value::as_str) == Some("enc") {
                continue;
            }
            let Some(key) = PublicKey::from_jwk(jwk)? else {
                continue;
            };
            let alg = match jwk.get("alg").and_then(Value::as_str) {
                None => None,
                Some(name) => match Alg::parse(name) {
                    Some(alg) if key.fits(alg) => Some(alg),
                    Some(_) => return Err(KeyError::Jwks("a key's alg does not fit its type")),
                    None => continue,
                },
            };
            let thumbprint = key.thumbprint();
            let mut ids = vec![thumbprint.clone()];
            if let Some(kid) = jwk.get("kid").and_then(Value::as_str) {
                // Which key a token meant must never depend on the order of the set.
                if keys
                    .iter()
                    .any(|k: &TrustedKey| k.ids.iter().any(|id| id == kid))
                {
                    return Err(KeyError::Jwks("two keys share a kid"));
                }
                ids.push(kid.to_owned());
            }
            keys.push(TrustedKey {
                ids,
                thumbprint,
                alg,
                key,
            });
        }
        if keys.is_empty() {
            return Err(KeyError::NoKeys);
        }
        Ok(TokenVerifier { keys })
    }

    /// One `-----BEGIN PUBLIC KEY-----` PEM (SubjectPublicKeyInfo: RSA, EC P-256/P-384 or
    /// Ed25519). Its ids are the RFC 7638 thumbprint and the libtrust key id.
    pub fn from_public_key_pem(pem: &[u8]) -> Result<TokenVerifier, KeyError> {
        if pem.len() > MAX_KEY_DOCUMENT {
            return Err(KeyError::TooLarge);
        }
        let der = pem_decode(pem, "PUBLIC KEY").ok_or(KeyError::Pem("PUBLIC KEY"))?;
        let key = PublicKey::from_spki(parse_spki(&der).ok_or(KeyError::PublicKey)?)?;
        let thumbprint = key.thumbprint();
        Ok(TokenVerifier {
            keys: vec![TrustedKey {
                ids: vec![thumbprint.clone(), libtrust_key_id(&der)],
                thumbprint,
                alg: None,
                key,
            }],
        })
    }

    /// Trusts ferry's own issuer key.
    pub fn from_signer(signer: &TokenSigner) -> TokenVerifier {
        TokenVerifier {
            keys: vec![TrustedKey {
                ids: vec![signer.kid.clone()],
                thumbprint: signer.kid.clone(),
                alg: Some(Alg::Es256),
                key: signer.public.clone(),
            }],
        }
    }

    /// Trusts the keys of both (ferry's own and an external issuer's, or several PEM files).
    pub fn merge(mut self, other: TokenVerifier) -> TokenVerifier {
        self.keys.extend(other.keys);
        self
    }

    /// The RFC 7638 thumbprints of the trusted keys.
    pub fn thumbprints(&self) -> impl Iterator<Item = &str> {
        self.keys.iter().map(|k| k.thumbprint.as_str())
    }

    /// Verifies a compact JWT and its claims: signature by a trusted key, `iss == issuer`, `aud`
    /// containing `service`, and `now` (unix seconds) within `nbf`..=`exp` give or take
    /// [`LEEWAY_SECS`].
    pub fn verify(
        &self,
        token: &str,
        issuer: &str,
        service: &str,
        now: u64,
    ) -> Result<Claims, TokenError> {
        if token.len() > MAX_TOKEN_LEN {
            return Err(TokenError::Malformed("longer than 8 KiB"));
        }
        let mut parts = token.split('.');
        let (Some(header_b64), Some(claims_b64), Some(sig_b64), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(TokenError::Malformed("not three dot-separated parts"));
        };
        let decode = |part: &str, what: &'static str| {
            URL_SAFE_NO_PAD
                .decode(part)
                .map_err(|_| TokenError::Malformed(what))
        };
        let header: Header =
            serde_json::from_slice(&decode(header_b64, "header is not base64url")?).map_err(
                |_| TokenError::Malformed("header is not a JSON object of the expected types"),
            )?;
        if header
            .typ
            .as_deref()
            .is_some_and(|typ| !typ.eq_ignore_ascii_case("JWT"))
        {
            return Err(TokenError::Malformed("typ is not JWT"));
        }
        if header.crit {
            return Err(TokenError::Critical);
        }
        if header.x5c {
            return Err(TokenError::X5cUnsupported);
        }
        let alg = Alg::parse(&header.alg).ok_or(TokenError::UnsupportedAlg)?;
        let key = self.select_key(&header)?;
        if !key.key.fits(alg) || key.alg.is_some_and(|declared| declared != alg) {
            return Err(TokenError::KeyMismatch);
        }
        let sig = decode(sig_b64, "signature is not base64url")?;
        let signed = &token.as_bytes()[..header_b64.len() + 1 + claims_b64.len()];
        if !key.key.verify(alg, signed, &sig) {
            return Err(TokenError::BadSignature);
        }
        let claims: Claims =
            serde_json::from_slice(&decode(claims_b64, "claims are not base64url")?)
                .map_err(|_| TokenError::InvalidClaims)?;
        if claims.iss != issuer {
            return Err(TokenError::WrongIssuer);
        }
        if !claims.aud.contains(service) {
            return Err(TokenError::WrongAudience);
        }
        if now > claims.exp.saturating_add(LEEWAY_SECS) {
            return Err(TokenError::Expired);
        }
        if claims
            .nbf
            .is_some_and(|nbf| now.saturating_add(LEEWAY_SECS) < nbf)
        {
            return Err(TokenError::NotYetValid);
        }
        Ok(claims)
    }

    fn select_key(&self, header: &Header) -> Result<&TrustedKey, TokenError> {
        if let Some(kid) = &header.kid {
            return self
                .keys
                .iter()
                .find(|k| k.ids.iter().any(|id| id == kid))
                .ok_or(TokenError::UnknownKey);
        }
        if let Some(jwk) = &header.jwk {
            // Never trusted by itself: only its thumbprint picks a configured key.
            let thumbprint = PublicKey::from_jwk(jwk)
                .ok()
                .flatten()
                .ok_or(TokenError::UnknownKey)?
                .thumbprint();
            return self
                .keys
                .iter()
                .find(|k| k.thumbprint == thumbprint)
                .ok_or(TokenError::UnknownKey);
        }
        match self.keys.as_slice() {
            [only] => Ok(only),
            _ => Err(TokenError::UnknownKey),
        }
    }
}

/// The JOSE header members that matter; `jku` and `x5u` are deliberately not read.
#[derive(Deserialize)]
struct Header {
    alg: String,
    #[serde(default)]
    typ: Option<String>,
    #[serde(default)]
    kid: Option<String>,
    #[serde(default)]
    jwk: Option<Value>,
    #[serde(default, deserialize_with = "present")]
    crit: bool,
    #[serde(default, deserialize_with = "present")]
    x5c: bool,
}

fn present<'de, D: Deserializer<'de>>(d: D) -> Result<bool, D::Error> {
    IgnoredAny::deserialize(d).map(|_| true)
}

/// libtrust's key id: the first 240 bits of SHA-256 over the DER SubjectPublicKeyInfo, in
/// unpadded base32, in `:`-separated groups of four.
fn libtrust_key_id(spki_der: &[u8]) -> String {
    const ALPHABET: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    let digest = ring::digest::digest(&ring::digest::SHA256, spki_der);
    // 30 bytes = 240 bits = 48 base32 characters exactly.
    let mut chars = Vec::with_capacity(48);
    for chunk in digest.as_ref()[..30].chunks(5) {
        let bits = chunk.iter().fold(0u64, |acc, &b| (acc << 8) | u64::from(b));
        for i in (0..8).rev() {
            chars.push(ALPHABET[((bits >> (i * 5)) & 31) as usize]);
        }
    }
    chars
        .chunks(4)
        .map(|group| String::from_utf8_lossy(group).into_owned())
        .collect::<Vec<_>>()
        .join(":")
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use ring::signature::{Ed25519KeyPair, RsaKeyPair};
    use std::sync::LazyLock;

    const ISS: &str = "ferry";
    const SVC: &str = "registry.example";
    const NOW: u64 = 1_700_000_000;
    const RSA_PUB: &[u8] = include_bytes!("../tests/data/rsa2048.pub.pem");
    const RSA_KEY: &[u8] = include_bytes!("../tests/data/rsa2048.pkcs8.pem");
    const ED_PUB: &[u8] = include_bytes!("../tests/data/ed25519.pub.pem");
    const ED_KEY: &[u8] = include_bytes!("../tests/data/ed25519.pkcs8.pem");
    const P384_PUB: &[u8] = include_bytes!("../tests/data/p384.pub.pem");
    const P384_KEY: &[u8] = include_bytes!("../tests/data/p384.pkcs8.pem");

    static SIGNER: LazyLock<TokenSigner> =
        LazyLock::new(|| TokenSigner::generate().expect("generate").0);
    static RSA: LazyLock<RsaKeyPair> = LazyLock::new(|| {
        RsaKeyPair::from_pkcs8(&pem_decode(RSA_KEY, "PRIVATE KEY").expect("pem")).expect("rsa")
    });

    fn claims() -> Claims {
        Claims {
            iss: ISS.into(),
            sub: "alice".into(),
            aud: Audience::One(SVC.into()),
            exp: NOW + 300,
            nbf: Some(NOW),
            iat: Some(NOW),
            jti: Some("j1".into()),
            access: vec![Access {
                kind: "repository".into(),
                name: "a/b".into(),
                actions: vec!["pull".into()],
            }],
        }
    }

    fn b64(bytes: &[u8]) -> String {
        URL_SAFE_NO_PAD.encode(bytes)
    }

    /// A token of any header and claims text, signed by `sign`.
    fn forge(header: &Value, claims: &str, sign: impl Fn(&[u8]) -> Vec<u8>) -> String {
        let input = format!(
            "{}.{}",
            b64(header.to_string().as_bytes()),
            b64(claims.as_bytes())
        );
        let sig = sign(input.as_bytes());
        format!("{input}.{}", b64(&sig))
    }

    fn es256(message: &[u8]) -> Vec<u8> {
        SIGNER
            .pair
            .sign(&SIGNER.rng, message)
            .expect("sign")
            .as_ref()
            .to_vec()
    }

    fn rsa_sign(padding: &'static dyn signature::RsaEncoding) -> impl Fn(&[u8]) -> Vec<u8> {
        move |message| {
            let mut sig = vec![0; RSA.public().modulus_len()];
            RSA.sign(padding, &SystemRandom::new(), message, &mut sig)
                .expect("rsa sign");
            sig
        }
    }

    fn own_header() -> Value {
        json!({"alg": "ES256", "typ": "JWT", "kid": SIGNER.kid()})
    }

    fn claims_text() -> String {
        serde_json::to_string(&claims()).expect("json")
    }

    fn verify(verifier: &TokenVerifier, token: &str) -> Result<Claims, TokenError> {
        let result = verifier.verify(token, ISS, SVC, NOW);
        if let Err(e) = &result {
            // No error text ever carries the token or a part of it.
            for part in token.split('.').filter(|p| p.len() >= 8) {
                assert!(!e.to_string().contains(part), "{e}");
            }
        }
        result
    }

    #[test]
    fn sign_and_verify() {
        let verifier = TokenVerifier::from_signer(&SIGNER);
        let token = SIGNER.sign(&claims()).expect("sign");
        let verified = verify(&verifier, &token).expect("valid");
        assert_eq!(verified, claims());
        assert!(verified.allows("repository", "a/b", "pull"));
        assert!(!verified.allows("repository", "a/b", "push"));
        assert!(!verified.allows("repository", "a/c", "pull"));
        assert_eq!(SIGNER.kid().len(), 43);
        assert!(format!("{:?}", *SIGNER).contains(SIGNER.kid()));
    }

    #[test]
    fn verify_with_the_published_jwks() {
        let jwks = SIGNER.jwks();
        assert_eq!(jwks["keys"][0]["kid"], SIGNER.kid());
        assert_eq!(jwks["keys"][0]["alg"], "ES256");
        let verifier = TokenVerifier::from_jwks(jwks.to_string().as_bytes()).expect("jwks");
        assert_eq!(verifier.thumbprints().collect::<Vec<_>>(), [SIGNER.kid()]);
        let token = SIGNER.sign(&claims()).expect("sign");
        assert_eq!(verify(&verifier, &token), Ok(claims()));
    }

    #[test]
    fn signer_from_pem() {
        let (signer, der) = TokenSigner::generate().expect("generate");
        let pem = TokenSigner::pkcs8_pem(&der);
        assert!(pem.starts_with("-----BEGIN PRIVATE KEY-----\n"));
        let loaded = TokenSigner::from_pem(pem.as_bytes()).expect("pem");
        assert_eq!(loaded.kid(), signer.kid());
        assert_eq!(
            TokenSigner::from_pem(RSA_KEY).map(|s| s.kid),
            Err(KeyError::PrivateKey)
        );
        assert_eq!(
            TokenSigner::from_pem(b"junk").map(|s| s.kid),
            Err(KeyError::Pem("PRIVATE KEY"))
        );
    }

    #[test]
    fn rsa_tokens_against_an_openssl_public_key() {
        let verifier = TokenVerifier::from_public_key_pem(RSA_PUB).expect("pem");
        // Computed independently (Python over `openssl rsa -modulus`).
        let thumbprint = "Z9JuYK3aO0o8HioIBe_ZlbrwLg_JkdmVPfrEjG2CuoI";
        assert_eq!(verifier.thumbprints().collect::<Vec<_>>(), [thumbprint]);
        let libtrust = "DTV2:EXYE:FJWB:WCAF:RN6U:YTCS:ISU5:CH7P:K3N7:PWYI:B2RY:EU2J";
        let cases: [(&str, &'static dyn signature::RsaEncoding); 4] = [
            ("RS256", &signature::RSA_PKCS1_SHA256),
            ("RS512", &signature::RSA_PKCS1_SHA512),
            ("PS256", &signature::RSA_PSS_SHA256),
            ("PS384", &signature::RSA_PSS_SHA384),
        ];
        for (alg, padding) in cases {
            for header in [
                json!({"alg": alg}),
                json!({"alg": alg, "kid": thumbprint}),
                json!({"alg": alg, "kid": libtrust, "typ": "jwt"}),
            ] {
                let token = forge(&header, &claims_text(), rsa_sign(padding));
                assert_eq!(verify(&verifier, &token), Ok(claims()), "{header}");
            }
        }
        // PKCS#1 signature presented as PSS.
        let token = forge(
            &json!({"alg": "PS256"}),
            &claims_text(),
            rsa_sign(&signature::RSA_PKCS1_SHA256),
        );
        assert_eq!(verify(&verifier, &token), Err(TokenError::BadSignature));
        let token = forge(&json!({"alg": "ES256"}), &claims_text(), es256);
        assert_eq!(verify(&verifier, &token), Err(TokenError::KeyMismatch));
    }

    #[test]
    fn ed25519_and_p384_keys() {
        let ed_der = pem_decode(ED_KEY, "PRIVATE KEY").expect("pem");
        let ed = Ed25519KeyPair::from_pkcs8_maybe_unchecked(&ed_der).expect("ed25519");
        let verifier = TokenVerifier::from_public_key_pem(ED_PUB).expect("pem");
        assert_eq!(
            verifier.thumbprints().collect::<Vec<_>>(),
            ["TluegB3BV1nxAM9h76mbwsesmd8ZAGdjjPnmMVl35ro"]
        );
        let sign = |m: &[u8]| ed.sign(m).as_ref().to_vec();
        let token = forge(&json!({"alg": "EdDSA"}), &claims_text(), sign);
        assert_eq!(verify(&verifier, &token), Ok(claims()));
        let token = forge(&json!({"alg": "ES256"}), &claims_text(), sign);
        assert_eq!(verify(&verifier, &token), Err(TokenError::KeyMismatch));

        // A ring-generated Ed25519 key, trusted through a hand-written JWKS.
        let pkcs8 = Ed25519KeyPair::generate_pkcs8(&SystemRandom::new()).expect("generate");
        let fresh = Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).expect("ed25519");
        let jwks = json!({"keys": [
            {"kty": "oct", "k": "c2VjcmV0"},
            {"kty": "OKP", "crv": "X25519", "x": b64(&[0; 32])},
            {"kty": "OKP", "crv": "Ed25519", "x": b64(fresh.public_key().as_ref()), "kid": "ed", "alg": "EdDSA"},
        ]});
        let verifier = TokenVerifier::from_jwks(jwks.to_string().as_bytes()).expect("jwks");
        let token = forge(&json!({"alg": "EdDSA", "kid": "ed"}), &claims_text(), |m| {
            fresh.sign(m).as_ref().to_vec()
        });
        assert_eq!(verify(&verifier, &token), Ok(claims()));

        let p384_der = pem_decode(P384_KEY, "PRIVATE KEY").expect("pem");
        let p384 = EcdsaKeyPair::from_pkcs8(
            &signature::ECDSA_P384_SHA384_FIXED_SIGNING,
            &p384_der,
            &SystemRandom::new(),
        )
        .expect("p384");
        let verifier = TokenVerifier::from_public_key_pem(P384_PUB).expect("pem");
        assert_eq!(
            verifier.thumbprints().collect::<Vec<_>>(),
            ["IvST0__odOkDJ82ZESQu3ERnhwl1E5EkgMEtg8UgpfE"]
        );
        let sign = |m: &[u8]| {
            p384.sign(&SystemRandom::new(), m)
                .expect("sign")
                .as_ref()
                .to_vec()
        };
        let token = forge(&json!({"alg": "ES384"}), &claims_text(), sign);
        assert_eq!(verify(&verifier, &token), Ok(claims()));
    }

    #[test]
    fn time_and_audience_checks() {
        let verifier = TokenVerifier::from_signer(&SIGNER);
        let with = |change: &dyn Fn(&mut Claims)| {
            let mut c = claims();
            change(&mut c);
            verify(&verifier, &SIGNER.sign(&c).expect("sign"))
        };
        assert!(with(&|c| c.exp = NOW - 60).is_ok());
        assert_eq!(with(&|c| c.exp = NOW - 61), Err(TokenError::Expired));
        assert!(with(&|c| c.nbf = Some(NOW + 60)).is_ok());
        assert_eq!(
            with(&|c| c.nbf = Some(NOW + 61)),
            Err(TokenError::NotYetValid)
        );
        assert!(with(&|c| c.nbf = None).is_ok());
        assert_eq!(
            with(&|c| c.iss = "other".into()),
            Err(TokenError::WrongIssuer)
        );
        assert_eq!(
            with(&|c| c.aud = Audience::One("other".into())),
            Err(TokenError::WrongAudience)
        );
        assert!(with(&|c| c.aud = Audience::Many(vec!["x".into(), SVC.into()])).is_ok());
        assert_eq!(
            with(&|c| c.aud = Audience::Many(vec![])),
            Err(TokenError::WrongAudience)
        );
        assert!(with(&|c| c.exp = u64::MAX).is_ok());
    }

    #[test]
    fn claims_are_typed_strictly() {
        let verifier = TokenVerifier::from_signer(&SIGNER);
        let base = r#""iss":"ferry","aud":"registry.example""#;
        let cases = [
            format!(r#"{{{base},"exp":"1700000300"}}"#),
            format!(r#"{{{base},"exp":1700000300.0}}"#),
            format!(r#"{{{base},"exp":1.7000003e9}}"#),
            format!(r#"{{{base},"exp":-1}}"#),
            format!(r#"{{{base},"exp":null}}"#),
            format!(r#"{{{base}}}"#),
            format!(r#"{{{base},"exp":1700000300,"nbf":"0"}}"#),
            format!(r#"{{{base},"exp":1700000300,"iat":1.5}}"#),
            format!(r#"{{{base},"exp":1,"exp":1700000300}}"#),
            format!(r#"{{{base},"exp":1700000300,"aud":3}}"#),
            format!(r#"{{{base},"exp":1700000300,"access":{{}}}}"#),
            r#"{"aud":"registry.example","exp":1700000300}"#.to_owned(),
            "[]".to_owned(),
        ];
        for text in cases {
            let token = forge(&own_header(), &text, es256);
            assert_eq!(
                verify(&verifier, &token),
                Err(TokenError::InvalidClaims),
                "{text}"
            );
        }
        let minimal = format!(r#"{{{base},"exp":1700000300,"access":null,"extra":{{"x":1}}}}"#);
        let claims = verify(&verifier, &forge(&own_header(), &minimal, es256)).expect("minimal");
        assert!(claims.access.is_empty() && claims.sub.is_empty() && claims.nbf.is_none());
    }

    #[test]
    fn header_attacks() {
        let verifier = TokenVerifier::from_signer(&SIGNER);
        let body = claims_text();
        let unsigned = |header: Value| forge(&header, &body, |_| Vec::new());
        for alg in ["none", "None", "NONE", "HS256", "es256", ""] {
            assert_eq!(
                verify(&verifier, &unsigned(json!({"alg": alg}))),
                Err(TokenError::UnsupportedAlg),
                "{alg}"
            );
        }
        // The public key as an HMAC secret, in each form an attacker might pick.
        let jwk = &SIGNER.jwks()["keys"][0];
        let point = [
            &[4u8][..],
            &URL_SAFE_NO_PAD
                .decode(jwk["x"].as_str().unwrap_or(""))
                .unwrap_or_default(),
            &URL_SAFE_NO_PAD
                .decode(jwk["y"].as_str().unwrap_or(""))
                .unwrap_or_default(),
        ]
        .concat();
        for secret in [point, jwk.to_string().into_bytes(), RSA_PUB.to_vec()] {
            let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &secret);
            let token = forge(&json!({"alg": "HS256", "kid": SIGNER.kid()}), &body, |m| {
                ring::hmac::sign(&key, m).as_ref().to_vec()
            });
            assert_eq!(verify(&verifier, &token), Err(TokenError::UnsupportedAlg));
            let rsa = TokenVerifier::from_public_key_pem(RSA_PUB).expect("pem");
            assert_eq!(verify(&rsa, &token), Err(TokenError::UnsupportedAlg));
        }
        let cases = [
            (
                json!({"alg": "ES256", "kid": SIGNER.kid(), "crit": ["exp"]}),
                TokenError::Critical,
            ),
            (
                json!({"alg": "ES256", "x5c": ["MIIB"]}),
                TokenError::X5cUnsupported,
            ),
            (
                json!({"alg": "ES256", "kid": "someone-else"}),
                TokenError::UnknownKey,
            ),
            (
                json!({"alg": "RS256", "kid": SIGNER.kid()}),
                TokenError::KeyMismatch,
            ),
            (
                json!({"alg": "ES384", "kid": SIGNER.kid()}),
                TokenError::KeyMismatch,
            ),
            (
                json!({"alg": "ES256", "typ": "JOSE"}),
                TokenError::Malformed("typ is not JWT"),
            ),
            (
                json!({"alg": 256}),
                TokenError::Malformed("header is not a JSON object of the expected types"),
            ),
            (
                json!({"alg": "ES256", "kid": 7}),
                TokenError::Malformed("header is not a JSON object of the expected types"),
            ),
        ];
        for (header, expected) in cases {
            assert_eq!(
                verify(&verifier, &forge(&header, &body, es256)),
                Err(expected),
                "{header}"
            );
        }
        // jku is never fetched nor trusted: with a valid signature it changes nothing.
        let header = json!({"alg": "ES256", "kid": SIGNER.kid(), "jku": "http://127.0.0.1:1/jwks"});
        assert!(verify(&verifier, &forge(&header, &body, es256)).is_ok());
        // An embedded jwk picks the configured key by thumbprint …
        let header = json!({"alg": "ES256", "jwk": jwk});
        assert!(verify(&verifier, &forge(&header, &body, es256)).is_ok());
        // … and never makes an unknown key trusted.
        let (attacker, _) = TokenSigner::generate().expect("generate");
        let header = json!({"alg": "ES256", "jwk": attacker.jwks()["keys"][0]});
        let token = forge(&header, &body, |m| {
            attacker
                .pair
                .sign(&attacker.rng, m)
                .expect("sign")
                .as_ref()
                .to_vec()
        });
        assert_eq!(verify(&verifier, &token), Err(TokenError::UnknownKey));
        // No kid: fine with one key, ambiguous with two.
        let no_kid = forge(&json!({"alg": "ES256"}), &body, es256);
        assert!(verify(&verifier, &no_kid).is_ok());
        let two = TokenVerifier::from_signer(&SIGNER).merge(TokenVerifier::from_signer(&attacker));
        assert_eq!(verify(&two, &no_kid), Err(TokenError::UnknownKey));
        assert!(verify(&two, &SIGNER.sign(&claims()).expect("sign")).is_ok());
    }

    #[test]
    fn structural_damage() {
        let verifier = TokenVerifier::from_signer(&SIGNER);
        let token = SIGNER.sign(&claims()).expect("sign");
        for len in 0..token.len() {
            assert!(verify(&verifier, &token[..len]).is_err(), "{len}");
        }
        assert!(verify(&verifier, &format!("{token}.")).is_err());
        assert!(verify(&verifier, &format!("{token}.e30")).is_err());
        assert!(verify(&verifier, &format!("{token}=")).is_err());
        let (head, sig) = token.rsplit_once('.').expect("three parts");
        let mut raw = URL_SAFE_NO_PAD.decode(sig).expect("b64");
        raw[10] ^= 1;
        let flipped = format!("{head}.{}", b64(&raw));
        assert_eq!(verify(&verifier, &flipped), Err(TokenError::BadSignature));
        let huge = format!("{token}{}", "A".repeat(MAX_TOKEN_LEN));
        assert_eq!(
            verify(&verifier, &huge),
            Err(TokenError::Malformed("longer than 8 KiB"))
        );
    }

    #[test]
    fn jwks_errors() {
        let cases: [(Value, KeyError); 7] = [
            (json!({}), KeyError::Jwks("no \"keys\" array")),
            (json!({"keys": []}), KeyError::NoKeys),
            (
                json!({"keys": [{"kty": "oct", "k": "AAAA"}]}),
                KeyError::NoKeys,
            ),
            (
                json!({"keys": [{"kty": "EC", "crv": "P-256", "x": "!!", "y": "AA"}]}),
                KeyError::Jwks("a key member is not base64url"),
            ),
            (
                json!({"keys": [
                    {"kty": "OKP", "crv": "Ed25519", "x": b64(&[1; 32]), "kid": "k"},
                    {"kty": "OKP", "crv": "Ed25519", "x": b64(&[2; 32]), "kid": "k"},
                ]}),
                KeyError::Jwks("two keys share a kid"),
            ),
            (
                json!({"keys": [{"kty": "RSA", "n": b64(&[0xc5; 128]), "e": "AQAB"}]}),
                KeyError::RsaSize,
            ),
            (
                json!({"keys": [{"kty": "OKP", "crv": "Ed25519", "x": b64(&[1; 32]), "alg": "ES256"}]}),
                KeyError::Jwks("a key's alg does not fit its type"),
            ),
        ];
        for (jwks, expected) in cases {
            assert_eq!(
                TokenVerifier::from_jwks(jwks.to_string().as_bytes()).map(|_| ()),
                Err(expected),
                "{jwks}"
            );
        }
        assert_eq!(
            TokenVerifier::from_jwks(b"{").map(|_| ()),
            Err(KeyError::Jwks("not valid JSON"))
        );
        assert_eq!(
            TokenVerifier::from_public_key_pem(include_bytes!("../tests/data/cert-alice.pem"))
                .map(|_| ()),
            Err(KeyError::Pem("PUBLIC KEY"))
        );
    }

    fn arb_claims() -> impl Strategy<Value = Claims> {
        let access = proptest::collection::vec(
            (
                "[a-z]{1,10}",
                "\\PC{0,20}",
                proptest::collection::vec("\\PC{0,8}", 0..3),
            )
                .prop_map(|(kind, name, actions)| Access {
                    kind,
                    name,
                    actions,
                }),
            0..3,
        );
        let aud = prop_oneof![
            "\\PC{0,10}".prop_map(Audience::One),
            proptest::collection::vec("\\PC{0,10}", 0..3).prop_map(Audience::Many),
        ];
        (
            ("\\PC{0,20}", "\\PC{0,20}", aud, any::<u64>()),
            (
                any::<Option<u64>>(),
                any::<Option<u64>>(),
                proptest::option::of("\\PC{0,20}"),
                access,
            ),
        )
            .prop_map(|((iss, sub, aud, exp), (nbf, iat, jti, access))| Claims {
                iss,
                sub,
                aud,
                exp,
                nbf,
                iat,
                jti,
                access,
            })
    }

    proptest! {
        #[test]
        fn any_changed_character_is_refused(index in any::<proptest::sample::Index>(), replacement in "[A-Za-z0-9_.=+/-]") {
            static TOKEN: LazyLock<String> = LazyLock::new(|| SIGNER.sign(&claims()).expect("sign"));
            let verifier = TokenVerifier::from_signer(&SIGNER);
            let i = index.index(TOKEN.len());
            prop_assume!(TOKEN[i..i + 1] != replacement);
            let mut changed = TOKEN.clone();
            changed.replace_range(i..i + 1, &replacement);
            prop_assert!(verifier.verify(&changed, ISS, SVC, NOW).is_err());
        }

        #[test]
        fn arbitrary_text_never_panics(text in "\\PC{0,300}") {
            let _ = TokenVerifier::from_signer(&SIGNER).verify(&text, ISS, SVC, NOW);
        }

        #[test]
        fn arbitrary_parts_never_panic(
            header in prop_oneof![Just(own_header().to_string()), "\\PC{0,60}"],
            body in prop_oneof![Just(claims_text()), "\\PC{0,60}"],
            sig in proptest::collection::vec(any::<u8>(), 0..80),
        ) {
            let token = format!("{}.{}.{}", b64(header.as_bytes()), b64(body.as_bytes()), b64(&sig));
            prop_assert!(TokenVerifier::from_signer(&SIGNER).verify(&token, ISS, SVC, NOW).is_err());
        }

        #[test]
        fn arbitrary_jwks_never_panic(text in "\\PC{0,200}", x in proptest::collection::vec(any::<u8>(), 0..100)) {
            let _ = TokenVerifier::from_jwks(text.as_bytes());
            for kty in [json!({"kty": "RSA", "n": b64(&x), "e": b64(&x)}), json!({"kty": "EC", "crv": "P-256", "x": b64(&x), "y": b64(&x)})] {
                let _ = TokenVerifier::from_jwks(json!({"keys": [kty]}).to_string().as_bytes());
            }
        }

        #[test]
        fn claims_round_trip(claims in arb_claims()) {
            let token = SIGNER.sign(&claims).expect("sign");
            let service = match &claims.aud {
                Audience::One(aud) => Some(aud.clone()),
                Audience::Many(auds) => auds.first().cloned(),
            };
            let result = TokenVerifier::from_signer(&SIGNER).verify(&token, &claims.iss, service.as_deref().unwrap_or("-"), 0);
            match (token.len() > MAX_TOKEN_LEN, service, claims.nbf) {
                (true, _, _) => prop_assert!(result.is_err()),
                (false, None, _) => prop_assert_eq!(result, Err(TokenError::WrongAudience)),
                (false, Some(_), Some(nbf)) if nbf > LEEWAY_SECS => prop_assert_eq!(result, Err(TokenError::NotYetValid)),
                (false, Some(_), _) => prop_assert_eq!(result, Ok(claims)),
            }
        }

        #[test]
        fn validity_window(exp in NOW - 1000..NOW + 1000, nbf in proptest::option::of(NOW - 1000..NOW + 1000), now in NOW - 1200..NOW + 1200) {
            let mut c = claims();
            c.exp = exp;
            c.nbf = nbf;
            let token = SIGNER.sign(&c).expect("sign");
            let result = TokenVerifier::from_signer(&SIGNER).verify(&token, ISS, SVC, now);
            let valid = now <= exp + LEEWAY_SECS && nbf.is_none_or(|nbf| now + LEEWAY_SECS >= nbf);
            prop_assert_eq!(result.is_ok(), valid);
        }
    }
}
