//! `--platform os/arch[/variant]`: which platforms of a multi-platform image to take.

use std::fmt;

/// A platform asked for: `os/arch[/variant]` (no variant: any variant matches).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Platform {
    os: String,
    arch: String,
    variant: Option<String>,
}

/// A `--platform` value that is not `os/arch[/variant]`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "invalid platform {0:?}: use os/arch or os/arch/variant, e.g. linux/amd64 or linux/arm64/v8"
)]
pub struct PlatformError(String);

impl std::str::FromStr for Platform {
    type Err = PlatformError;
    fn from_str(s: &str) -> Result<Platform, PlatformError> {
        let parts: Vec<&str> = s.split('/').collect();
        let ok = |p: &str| {
            !p.is_empty()
                && p.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        };
        match parts.as_slice() {
            [os, arch] if ok(os) && ok(arch) => Ok(Platform {
                os: (*os).into(),
                arch: (*arch).into(),
                variant: None,
            }),
            [os, arch, v] if ok(os) && ok(arch) && ok(v) => Ok(Platform {
                os: (*os).into(),
                arch: (*arch).into(),
                variant: Some((*v).into()),
            }),
            _ => Err(PlatformError(s.to_owned())),
        }
    }
}

impl fmt::Display for Platform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.os, self.arch)?;
        if let Some(v) = &self.variant {
            write!(f, "/{v}")?;
        }
        Ok(())
    }
}

impl Platform {
    /// The platform this program runs on, named as OCI names platforms.
    pub fn host() -> Platform {
        let arch = match std::env::consts::ARCH {
            "x86_64" => "amd64",
            "aarch64" => "arm64",
            "x86" => "386",
            "powerpc64" => "ppc64le",
            other => other,
        };
        Platform {
            os: "linux".to_owned(),
            arch: arch.to_owned(),
            variant: None,
        }
    }

    /// The operating system, e.g. `linux`.
    pub fn os(&self) -> &str {
        &self.os
    }

    /// The architecture, e.g. `arm64`.
    pub fn arch(&self) -> &str {
        &self.arch
    }

    /// The variant, e.g. `v8`, if one was given.
    pub fn variant(&self) -> Option<&str> {
        self.variant.as_deref()
    }

    /// Whether index entry `child` is wanted: any platform when `filters` is empty, else one that
    /// some filter matches.
    pub fn wanted(filters: &[Platform], child: &ferry_oci::Descriptor) -> bool {
        filters.is_empty()
            || child
                .platform
                .as_ref()
                .is_some_and(|p| filters.iter().any(|f| f.matches(p)))
    }

    /// Whether `p` is this platform (any variant when none was given).
    pub fn matches(&self, p: &ferry_oci::Platform) -> bool {
        p.os == self.os
            && p.architecture == self.arch
            && (self.variant.is_none() || p.variant == self.variant)
    }
}

/// `os/arch[/variant]` of a descriptor's platform, or `unknown`.
pub(crate) fn descriptor_platform(d: &ferry_oci::Descriptor) -> String {
    match &d.platform {
        Some(p) => match &p.variant {
            Some(v) => format!("{}/{}/{v}", p.os, p.architecture),
            None => format!("{}/{}", p.os, p.architecture),
        },
        None => "unknown".to_owned(),
    }
}

/// What a copy takes from an index.
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
    Only(Vec<Platform>),
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn platforms() {
        let p: Platform = "linux/arm64/v8".parse().unwrap();
        assert_eq!(p.variant.as_deref(), Some("v8"));
        assert_eq!(p.to_string(), "linux/arm64/v8");
        for bad in ["", "linux", "linux/", "/amd64", "a/b/c/d", "linux/amd 64"] {
            assert!(bad.parse::<Platform>().is_err(), "{bad}");
        }
    }

    #[test]
    fn a_platform_without_a_variant_matches_any_variant_like_containerd() {
        let p = |arch: &str, variant: Option<&str>| ferry_oci::Platform {
            architecture: arch.to_owned(),
            os: "linux".to_owned(),
            variant: variant.map(str::to_owned),
            ..serde_json::from_str(r#"{"architecture":"x","os":"y"}"#).unwrap()
        };
        let arm64: Platform = "linux/arm64".parse().unwrap();
        assert!(arm64.matches(&p("arm64", Some("v8"))));
        assert!(arm64.matches(&p("arm64", None)));
        assert!(!arm64.matches(&p("amd64", None)));
        let v7: Platform = "linux/arm/v7".parse().unwrap();
        assert!(v7.matches(&p("arm", Some("v7"))));
        assert!(!v7.matches(&p("arm", Some("v6"))));
    }

    proptest! {
        #[test]
        fn a_platform_prints_back_to_itself(s in "[a-z0-9]{1,8}/[a-z0-9_]{1,8}(/[a-z0-9]{1,4})?") {
            let p: Platform = s.parse().unwrap();
            prop_assert_eq!(p.to_string(), s);
        }

        #[test]
        fn platform_parse_never_panics(s in "\\PC{0,40}") {
            let _ = s.parse::<Platform>();
        }
    }
}
