//! Which platforms of a multi-platform image (an index) a copy takes.

use std::fmt;
use std::str::FromStr;

use ferry_oci::{Descriptor, Platform};

/// One platform as written on the command line: `os/arch[/variant]`, e.g. `linux/arm64/v8`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlatformSpec {
    /// `linux`, `windows`, …
    pub os: String,
    /// `amd64`, `arm64`, …
    pub architecture: String,
    /// `v7`, `v8`, … if given.
    pub variant: Option<String>,
}

/// Why a `--platform` value was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("platform {0:?} must be os/arch or os/arch/variant, e.g. linux/amd64 or linux/arm64/v8")]
pub struct PlatformSpecError(String);

impl FromStr for PlatformSpec {
    type Err = PlatformSpecError;

    fn from_str(s: &str) -> Result<PlatformSpec, PlatformSpecError> {
        let parts: Vec<&str> = s.split('/').collect();
        let ok = |p: &str| {
            !p.is_empty()
                && p.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || b == b'.')
        };
        match parts.as_slice() {
            [os, arch] if ok(os) && ok(arch) => Ok(PlatformSpec {
                os: (*os).to_owned(),
                architecture: (*arch).to_owned(),
                variant: None,
            }),
            [os, arch, variant] if ok(os) && ok(arch) && ok(variant) => Ok(PlatformSpec {
                os: (*os).to_owned(),
                architecture: (*arch).to_owned(),
                variant: Some((*variant).to_owned()),
            }),
            _ => Err(PlatformSpecError(s.to_owned())),
        }
    }
}

impl fmt::Display for PlatformSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        if let Some(v) = &self.variant {
            write!(f, "/{v}")?;
        }
        Ok(())
    }
}

impl PlatformSpec {
    /// The platform this program runs on, named as OCI names platforms.
    pub fn host() -> PlatformSpec {
        let architecture = match std::env::consts::ARCH {
            "x86_64" => "amd64",
            "aarch64" => "arm64",
            "x86" => "386",
            "powerpc64" => "ppc64le",
            other => other,
        };
        PlatformSpec {
            os: "linux".to_owned(),
            architecture: architecture.to_owned(),
            variant: None,
        }
    }

    /// Whether `p` is this platform. A spec without a variant matches any variant (as containerd's
    /// matcher does for `linux/arm64` against `linux/arm64/v8`).
    pub fn matches(&self, p: &Platform) -> bool {
        p.os == self.os
            && p.architecture == self.architecture
            && (self.variant.is_none() || p.variant == self.variant)
    }
}

/// `os/arch[/variant]` of a descriptor's platform, or `unknown`.
pub(crate) fn descriptor_platform(d: &Descriptor) -> String {
    match &d.platform {
        Some(p) => match &p.variant {
            Some(v) => format!("{}/{}/{v}", p.os, p.architecture),
            None => format!("{}/{}", p.os, p.architecture),
        },
        None => "unknown".to_owned(),
    }
}

/// What to take from an index.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum PlatformChoice {
    /// The image for the platform ferry runs on (skopeo's default): the destination gets that
    /// image's manifest, not the index.
    #[default]
    Host,
    /// The whole index, byte for byte (its digest is kept).
    All,
    /// These platforms: one gives that image, several give a new index of just them (a new digest,
    /// unless they are all the index has).
    Only(Vec<PlatformSpec>),
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn specs_parse_and_match_like_containerd() {
        let spec: PlatformSpec = "linux/arm64".parse().unwrap();
        let p = |arch: &str, variant: Option<&str>| Platform {
            architecture: arch.to_owned(),
            os: "linux".to_owned(),
            variant: variant.map(str::to_owned),
            ..serde_json::from_str(r#"{"architecture":"x","os":"y"}"#).unwrap()
        };
        assert!(spec.matches(&p("arm64", Some("v8"))));
        assert!(spec.matches(&p("arm64", None)));
        assert!(!spec.matches(&p("amd64", None)));
        let v7: PlatformSpec = "linux/arm/v7".parse().unwrap();
        assert!(v7.matches(&p("arm", Some("v7"))));
        assert!(!v7.matches(&p("arm", Some("v6"))));
        for bad in ["linux", "linux/", "/amd64", "a/b/c/d", "linux/amd 64", ""] {
            assert!(bad.parse::<PlatformSpec>().is_err(), "{bad:?} accepted");
        }
    }

    proptest! {
        #[test]
        fn a_spec_prints_back_to_itself(s in "[a-z0-9]{1,8}/[a-z0-9_]{1,8}(/[a-z0-9]{1,4})?") {
            let spec: PlatformSpec = s.parse().unwrap();
            prop_assert_eq!(spec.to_string(), s);
        }

        #[test]
        fn arbitrary_input_never_panics(s in ".{0,40}") {
            let _ = s.parse::<PlatformSpec>();
        }
    }
}
