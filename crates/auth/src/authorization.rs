//! The `Authorization` request header: `Basic` credentials or a `Bearer` token.

use base64::Engine as _;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};

use crate::Secret;

/// Longest header value accepted; a token from ferry's own issuer is well under 2 KiB.
pub const MAX_AUTHORIZATION_LEN: usize = 8 * 1024;

/// Standard alphabet, padding optional: some clients strip the `=`.
const BASIC_BASE64: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// Credentials a client presented.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Presented {
    /// `Basic base64(user:password)`.
    Basic {
        /// The user name: non-empty, no control characters, no `:`.
        user: String,
        /// Everything after the first `:`.
        password: Secret,
    },
    /// `Bearer <token>` (RFC 6750's b64token).
    Bearer(Secret),
}

/// Why an `Authorization` value was not understood. Its text never contains the value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Malformed {
    /// Longer than [`MAX_AUTHORIZATION_LEN`].
    #[error("authorization value is longer than 8 KiB")]
    TooLong,
    /// Neither `Basic` nor `Bearer`.
    #[error("authorization scheme is neither Basic nor Bearer")]
    UnknownScheme,
    /// A scheme and nothing after it.
    #[error("authorization value has a scheme but no credentials")]
    MissingCredentials,
    /// Basic credentials that are not standard base64.
    #[error("basic credentials are not valid base64")]
    BadBase64,
    /// Decoded basic credentials without a `:`.
    #[error("basic credentials have no ':' between user and password")]
    NoColon,
    /// An empty user name.
    #[error("basic credentials have an empty user name")]
    EmptyUser,
    /// User or password not UTF-8.
    #[error("basic credentials are not UTF-8")]
    NotUtf8,
    /// A control character in the user name.
    #[error("basic credentials' user name contains a control character")]
    ControlCharacter,
    /// A bearer token outside RFC 6750's b64token characters.
    #[error("bearer token has characters outside the b64token set")]
    BadToken,
}

/// Parses an `Authorization` header value: the scheme case-insensitively, one or more spaces,
/// then the credentials.
pub fn parse_authorization(value: &[u8]) -> Result<Presented, Malformed> {
    if value.len() > MAX_AUTHORIZATION_LEN {
        return Err(Malformed::TooLong);
    }
    let value = value.trim_ascii();
    let scheme_end = value.iter().position(|&b| b == b' ').unwrap_or(value.len());
    let (scheme, rest) = value.split_at(scheme_end);
    let credentials = rest.trim_ascii_start();
    let basic = scheme.eq_ignore_ascii_case(b"basic");
    if !basic && !scheme.eq_ignore_ascii_case(b"bearer") {
        return Err(Malformed::UnknownScheme);
    }
    if credentials.is_empty() {
        return Err(Malformed::MissingCredentials);
    }
    if basic {
        parse_basic(credentials)
    } else {
        parse_bearer(credentials)
    }
}

fn parse_basic(encoded: &[u8]) -> Result<Presented, Malformed> {
    let decoded = BASIC_BASE64
        .decode(encoded)
        .map_err(|_| Malformed::BadBase64)?;
    let colon = decoded
        .iter()
        .position(|&b| b == b':')
        .ok_or(Malformed::NoColon)?;
    let (user, password) = (&decoded[..colon], &decoded[colon + 1..]);
    let user = std::str::from_utf8(user).map_err(|_| Malformed::NotUtf8)?;
    let password = std::str::from_utf8(password).map_err(|_| Malformed::NotUtf8)?;
    if user.is_empty() {
        return Err(Malformed::EmptyUser);
    }
    if user.chars().any(char::is_control) {
        return Err(Malformed::ControlCharacter);
    }
    Ok(Presented::Basic {
        user: user.to_owned(),
        password: Secret::new(password),
    })
}

fn parse_bearer(token: &[u8]) -> Result<Presented, Malformed> {
    // b64token = 1*( ALPHA / DIGIT / "-" / "." / "_" / "~" / "+" / "/" ) *"="
    let body_end = token.iter().position(|&b| b == b'=').unwrap_or(token.len());
    let (body, padding) = token.split_at(body_end);
    let body_ok = !body.is_empty()
        && body
            .iter()
            .all(|&b| b.is_ascii_alphanumeric() || b"-._~+/".contains(&b));
    if !body_ok || padding.iter().any(|&b| b != b'=') {
        return Err(Malformed::BadToken);
    }
    // Only ASCII passed the check above.
    let token = String::from_utf8(token.to_vec()).map_err(|_| Malformed::BadToken)?;
    Ok(Presented::Bearer(Secret::new(token)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD};
    use proptest::prelude::*;

    fn basic(user: &str, password: &str) -> Presented {
        Presented::Basic {
            user: user.to_owned(),
            password: Secret::new(password),
        }
    }

    #[test]
    fn basic_forms() {
        // "alice:pa:ss" — the password keeps its colon.
        let encoded = STANDARD.encode("alice:pa:ss");
        for value in [
            format!("Basic {encoded}"),
            format!("basic   {encoded}"),
            format!("BASIC {}", STANDARD_NO_PAD.encode("alice:pa:ss")),
        ] {
            assert_eq!(
                parse_authorization(value.as_bytes()),
                Ok(basic("alice", "pa:ss"))
            );
        }
        assert_eq!(
            parse_authorization(format!("Basic {}", STANDARD.encode("bob:")).as_bytes()),
            Ok(basic("bob", ""))
        );
    }

    #[test]
    fn basic_errors() {
        let cases: [(&[u8], Malformed); 9] = [
            (b"Basic", Malformed::MissingCredentials),
            (b"Basic    ", Malformed::MissingCredentials),
            (b"Basic !!!", Malformed::BadBase64),
            (b"Basic YWxpY2U=", Malformed::NoColon),
            (b"Basic OnB3", Malformed::EmptyUser),
            (b"Basic YQljOnB3", Malformed::ControlCharacter),
            (b"Basic /w==", Malformed::NoColon),
            (b"Digest abc", Malformed::UnknownScheme),
            (b"", Malformed::UnknownScheme),
        ];
        for (value, expected) in cases {
            assert_eq!(
                parse_authorization(value),
                Err(expected),
                "{}",
                String::from_utf8_lossy(value)
            );
        }
        let not_utf8 = format!("Basic {}", STANDARD.encode(b"\xff:pw"));
        assert_eq!(
            parse_authorization(not_utf8.as_bytes()),
            Err(Malformed::NotUtf8)
        );
    }

    #[test]
    fn bearer_forms() {
        assert_eq!(
            parse_authorization(b"bearer abc.DEF-_~+/=="),
            Ok(Presented::Bearer(Secret::new("abc.DEF-_~+/==")))
        );
        for bad in [
            &b"Bearer a b"[..],
            b"Bearer ==",
            b"Bearer a=b",
            b"Bearer \xc3\xa9",
            b"Bearer a,b",
        ] {
            assert_eq!(parse_authorization(bad), Err(Malformed::BadToken));
        }
        let long = format!("Bearer {}", "a".repeat(MAX_AUTHORIZATION_LEN));
        assert_eq!(
            parse_authorization(long.as_bytes()),
            Err(Malformed::TooLong)
        );
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic_nor_echo(value in proptest::collection::vec(any::<u8>(), 0..300)) {
            if let Err(e) = parse_authorization(&value) {
                let text = String::from_utf8_lossy(&value);
                if value.len() >= 8 {
                    prop_assert!(!e.to_string().contains(text.as_ref()));
                }
            }
        }

        #[test]
        fn basic_round_trip(
            user in "[^:\\p{Cc}]{1,40}",
            password in any::<String>(),
            padded in any::<bool>(),
            scheme in "[Bb][Aa][Ss][Ii][Cc]",
            spaces in " {1,3}",
        ) {
            let plain = format!("{user}:{password}");
            let encoded = if padded { STANDARD.encode(&plain) } else { STANDARD_NO_PAD.encode(&plain) };
            let value = format!("{scheme}{spaces}{encoded}");
            prop_assume!(value.len() <= MAX_AUTHORIZATION_LEN);
            prop_assert_eq!(parse_authorization(value.as_bytes()), Ok(basic(&user, &password)));
        }

        #[test]
        fn bearer_round_trip(token in "[A-Za-z0-9._~+/-]{1,200}={0,2}") {
            prop_assert_eq!(
                parse_authorization(format!("Bearer {token}").as_bytes()),
                Ok(Presented::Bearer(Secret::new(token.clone())))
            );
        }
    }
}
