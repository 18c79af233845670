//! Tag lists from another registry (`{"name":…,"tags":[…]}`), filtered as they are parsed.
//!
//! A mirror relays an upstream's page of tags. Collecting it into strings first costs ~50 bytes of
//! heap per tag, so an 8 MiB page of one-letter tags took ~140 MB. Here each tag is looked at once,
//! as the JSON is read, and only the ones kept are written out: the output is never larger than
//! the input, and nothing else grows with it.

use std::borrow::Cow;
use std::fmt;

use serde::de::{DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};

use crate::Tag;

/// The tags of a page that were kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FilteredTags {
    /// The kept tags as a JSON array (`["a","b"]`), ready to be relayed.
    pub json: Vec<u8>,
    /// How many were kept.
    pub count: usize,
    /// The last tag kept (what a `Link` to the next page continues after).
    pub last: Option<String>,
    /// Whether tags were left out because `n` was reached.
    pub cut: bool,
}

/// Why a tag list could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("tag list is not valid JSON of the form {{\"tags\":[…]}}: {0}")]
pub struct TagListError(String);

/// Reads a registry's tag-list body, keeping the valid tags that sort after `last` (when given),
/// at most `n` of them. Invalid names are dropped: the list is relayed, not trusted.
pub fn filter_tag_list(
    body: &[u8],
    last: Option<&str>,
    n: Option<usize>,
) -> Result<FilteredTags, TagListError> {
    let mut out = FilteredTags {
        json: vec![b'['],
        count: 0,
        last: None,
        cut: false,
    };
    let mut de = serde_json::Deserializer::from_slice(body);
    de.deserialize_map(PageVisitor {
        out: &mut out,
        last,
        n,
    })
    .map_err(|e| TagListError(e.to_string()))?;
    de.end().map_err(|e| TagListError(e.to_string()))?;
    out.json.push(b']');
    Ok(out)
}

struct PageVisitor<'o, 'l> {
    out: &'o mut FilteredTags,
    last: Option<&'l str>,
    n: Option<usize>,
}

impl<'de> Visitor<'de> for PageVisitor<'_, '_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a tag list object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let mut seen_tags = false;
        while let Some(key) = map.next_key::<Cow<'de, str>>()? {
            if key == "tags" && !seen_tags {
                seen_tags = true;
                map.next_value_seed(TagsSeed {
                    out: &mut *self.out,
                    last: self.last,
                    n: self.n,
                })?;
            } else {
                map.next_value::<IgnoredAny>()?;
            }
        }
        Ok(())
    }
}

struct TagsSeed<'o, 'l> {
    out: &'o mut FilteredTags,
    last: Option<&'l str>,
    n: Option<usize>,
}

impl<'de> DeserializeSeed<'de> for TagsSeed<'_, '_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        // `null` is an empty list (Distribution sends it for a repository without tags).
        d.deserialize_option(self)
    }
}

impl<'de> Visitor<'de> for TagsSeed<'_, '_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an array of tags or null")
    }

    fn visit_none<E>(self) -> Result<(), E> {
        Ok(())
    }

    fn visit_unit<E>(self) -> Result<(), E> {
        Ok(())
    }

    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_seq(self)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let out = self.out;
        while let Some(tag) = seq.next_element::<Cow<'de, str>>()? {
            if !Tag::is_valid(&tag) || self.last.is_some_and(|l| tag.as_ref() <= l) {
                continue;
            }
            if self.n.is_some_and(|n| out.count >= n) {
                out.cut = true;
                continue;
            }
            if out.count > 0 {
                out.json.push(b',');
            }
            // A valid tag needs no JSON escaping.
            out.json.push(b'"');
            out.json.extend_from_slice(tag.as_bytes());
            out.json.push(b'"');
            out.count += 1;
            match &mut out.last {
                Some(l) => {
                    l.clear();
                    l.push_str(&tag);
                }
                None => out.last = Some(tag.into_owned()),
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn tags(f: &FilteredTags) -> Vec<String> {
        serde_json::from_slice(&f.json).unwrap()
    }

    #[test]
    fn keeps_valid_tags_after_last_up_to_n() {
        let body = br#"{"name":"x","tags":["a","b","../etc","c","d"],"extra":{"y":[1]}}"#;
        let f = filter_tag_list(body, Some("a"), Some(2)).unwrap();
        assert_eq!(tags(&f), ["b", "c"]);
        assert_eq!(f.last.as_deref(), Some("c"));
        assert!(f.cut);
        let f = filter_tag_list(br#"{"name":"x","tags":null}"#, None, None).unwrap();
        assert_eq!(f.count, 0);
        assert_eq!(f.json, b"[]");
        let f = filter_tag_list(br#"{"name":"x"}"#, None, None).unwrap();
        assert_eq!(f.count, 0);
        // Escaped strings are read (and, never being valid tags here, dropped).
        let f = filter_tag_list(br#"{"tags":["v\u0031","a\"b"]}"#, None, None).unwrap();
        assert_eq!(tags(&f), ["v1"]);
        assert!(filter_tag_list(b"[1,2]", None, None).is_err());
        assert!(filter_tag_list(br#"{"tags":[1]}"#, None, None).is_err());
        assert!(filter_tag_list(br#"{"tags":["a"]} trailing"#, None, None).is_err());
    }

    proptest! {
        /// Whatever the bytes, the output is valid JSON no larger than the input (so memory is
        /// bounded by the page size the caller already bounded), and holds only valid tags.
        #[test]
        fn output_is_bounded_by_the_input(body in proptest::collection::vec(any::<u8>(), 0..512)) {
            if let Ok(f) = filter_tag_list(&body, None, None) {
                prop_assert!(f.json.len() <= body.len() + 2);
                prop_assert!(tags(&f).iter().all(|t| Tag::is_valid(t)));
            }
        }

        #[test]
        fn filtering_matches_a_plain_filter(
            list in proptest::collection::vec("[a-z0-9._-]{0,6}", 0..40),
            last in proptest::option::of("[a-z0-9]{0,3}"),
            n in proptest::option::of(0usize..20),
        ) {
            let body = serde_json::to_vec(&serde_json::json!({"name": "r", "tags": list})).unwrap();
            let f = filter_tag_list(&body, last.as_deref(), n).unwrap();
            let mut want: Vec<&String> = list
                .iter()
                .filter(|t| Tag::is_valid(t) && last.as_deref().is_none_or(|l| t.as_str() > l))
                .collect();
            let cut = n.is_some_and(|n| want.len() > n);
            if let Some(n) = n {
                want.truncate(n);
            }
            prop_assert!(f.json.len() <= body.len());
            prop_assert_eq!(tags(&f), want.iter().map(|s| s.to_string()).collect::<Vec<_>>());
            prop_assert_eq!(f.cut, cut);
            prop_assert_eq!(f.last.as_ref(), want.last().copied());
        }
    }
}
