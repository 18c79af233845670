//! A trace record's fields, as JSON and CSV files hold them, made into a [`Request`].

use std::borrow::Cow;
use std::fmt;
use std::sync::Arc;

use serde::de::{self, Deserializer, IgnoredAny, Visitor};

use crate::request::{Method, Request};
use ferry_oci::timestamp::parse_timestamp;

/// One field's value: text (borrowed from the record where it has no escapes) or a JSON number.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Field<'a> {
    Text(Cow<'a, str>),
    Whole(u64),
    Number(f64),
    /// `null`, booleans, arrays and objects: not a value any field takes, read as absent.
    Other,
}

impl Field<'_> {
    /// As written, for messages and text fields.
    fn text(&self) -> Cow<'_, str> {
        match self {
            Field::Text(t) => Cow::Borrowed(t.as_ref()),
            Field::Whole(n) => Cow::Owned(n.to_string()),
            Field::Number(f) => Cow::Owned(f.to_string()),
            Field::Other => Cow::Borrowed("(not a string or number)"),
        }
    }

    /// Empty text and [`Field::Other`] count as absent.
    fn is_absent(&self) -> bool {
        match self {
            Field::Text(t) => t.is_empty(),
            Field::Whole(_) | Field::Number(_) => false,
            Field::Other => true,
        }
    }

    /// A non-negative whole number: an integer, a float with no fraction (`72626.0`, as the CSV
    /// export has it) or a string of either.
    fn whole(&self) -> Option<u64> {
        match self {
            Field::Text(t) => whole_number(t),
            Field::Whole(n) => Some(*n),
            Field::Number(f) => whole_float(*f),
            Field::Other => None,
        }
    }

    /// A finite, non-negative number.
    fn seconds(&self) -> Option<f64> {
        let f = match self {
            Field::Text(t) => t.trim().parse().ok()?,
            Field::Whole(n) => *n as f64,
            Field::Number(f) => *f,
            Field::Other => return None,
        };
        (f.is_finite() && f >= 0.0).then_some(f)
    }
}

/// A non-negative whole number written as an integer or as a float with no fraction.
pub(crate) fn whole_number(s: &str) -> Option<u64> {
    let s = s.trim();
    if let Ok(n) = s.parse::<u64>() {
        return Some(n);
    }
    whole_float(s.parse().ok()?)
}

fn whole_float(f: f64) -> Option<u64> {
    (f.is_finite() && f >= 0.0 && f.fract() == 0.0 && f < 2f64.powi(63)).then_some(f as u64)
}

impl<'de> de::Deserialize<'de> for Field<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct FieldVisitor;
        impl<'de> Visitor<'de> for FieldVisitor {
            type Value = Field<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a JSON value")
            }
            fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Field<'de>, E> {
                Ok(Field::Text(Cow::Borrowed(v)))
            }
            fn visit_str<E>(self, v: &str) -> Result<Field<'de>, E> {
                Ok(Field::Text(Cow::Owned(v.to_owned())))
            }
            fn visit_string<E>(self, v: String) -> Result<Field<'de>, E> {
                Ok(Field::Text(Cow::Owned(v)))
            }
            fn visit_u64<E>(self, v: u64) -> Result<Field<'de>, E> {
                Ok(Field::Whole(v))
            }
            fn visit_i64<E>(self, v: i64) -> Result<Field<'de>, E> {
                Ok(u64::try_from(v)
                    .map_or_else(|_| Field::Text(v.to_string().into()), Field::Whole))
            }
            fn visit_f64<E>(self, v: f64) -> Result<Field<'de>, E> {
                Ok(Field::Number(v))
            }
            fn visit_bool<E>(self, _: bool) -> Result<Field<'de>, E> {
                Ok(Field::Other)
            }
            fn visit_unit<E>(self) -> Result<Field<'de>, E> {
                Ok(Field::Other)
            }
            fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<Field<'de>, A::Error> {
                while seq.next_element::<IgnoredAny>()?.is_some() {}
                Ok(Field::Other)
            }
            fn visit_map<A: de::MapAccess<'de>>(self, mut map: A) -> Result<Field<'de>, A::Error> {
                while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
                Ok(Field::Other)
            }
        }
        d.deserialize_any(FieldVisitor)
    }
}

/// The fields of a record that make a request, by their names in the trace; the rest are skipped
/// unread. A key given twice keeps its last value, as a JSON object read into a map would.
#[derive(Debug, Default)]
pub(crate) struct Fields<'a> {
    pub(crate) uri: Option<Field<'a>>,
    pub(crate) method: Option<Field<'a>>,
    pub(crate) timestamp: Option<Field<'a>>,
    pub(crate) written: Option<Field<'a>>,
    pub(crate) status: Option<Field<'a>>,
    pub(crate) duration: Option<Field<'a>>,
    pub(crate) client: Option<Field<'a>>,
    pub(crate) host: Option<Field<'a>>,
}

impl<'a> Fields<'a> {
    /// Where the field the trace names `key` goes, if it is one a request takes.
    pub(crate) fn slot(&mut self, key: &str) -> Option<&mut Option<Field<'a>>> {
        Some(match key {
            "http.request.uri" => &mut self.uri,
            "http.request.method" => &mut self.method,
            "timestamp" => &mut self.timestamp,
            "http.response.written" => &mut self.written,
            "http.response.status" => &mut self.status,
            "http.request.duration" => &mut self.duration,
            "http.request.remoteaddr" => &mut self.client,
            "host" => &mut self.host,
            _ => return None,
        })
    }

    /// The request these fields make, or why they make none: the URI and method are required,
    /// the rest is checked when present and not empty.
    pub(crate) fn request(&self) -> Result<Request, String> {
        fn present<'f, 'a>(f: &'f Option<Field<'a>>) -> Option<&'f Field<'a>> {
            f.as_ref().filter(|f| !f.is_absent())
        }
        let uri = match &self.uri {
            Some(Field::Other) | None => return Err("no http.request.uri".to_owned()),
            Some(u) => u.text().into_owned(),
        };
        let method = match present(&self.method) {
            Some(m) => Method::parse(&m.text()),
            None => return Err("no http.request.method".to_owned()),
        };
        let mut r = Request::new(method, uri);
        if let Some(t) = present(&self.timestamp) {
            r.time_us = Some(
                match t {
                    Field::Text(t) => parse_timestamp(t),
                    _ => None,
                }
                .ok_or_else(|| {
                    format!("timestamp {:?} is not YYYY-MM-DDTHH:MM:SS[.fff]Z", t.text())
                })?,
            );
        }
        if let Some(w) = present(&self.written) {
            r.size = Some(w.whole().ok_or_else(|| {
                format!("http.response.written {:?} is not a byte count", w.text())
            })?);
        }
        if let Some(s) = present(&self.status) {
            r.status = Some(
                s.whole()
                    .filter(|n| (100..=599).contains(n))
                    .ok_or_else(|| {
                        format!("http.response.status {:?} is not an HTTP status", s.text())
                    })? as u16,
            );
        }
        if let Some(d) = present(&self.duration) {
            r.duration_s = Some(d.seconds().ok_or_else(|| {
                format!(
                    "http.request.duration {:?} is not a number of seconds",
                    d.text()
                )
            })?);
        }
        r.client = present(&self.client).map(|c| Arc::from(c.text().as_ref()));
        r.host = present(&self.host).map(|h| Arc::from(h.text().as_ref()));
        Ok(r)
    }
}

impl<'de> de::Deserialize<'de> for Fields<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct FieldsVisitor;
        impl<'de> Visitor<'de> for FieldsVisitor {
            type Value = Fields<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: de::MapAccess<'de>>(self, mut map: A) -> Result<Fields<'de>, A::Error> {
                let mut fields = Fields::default();
                while let Some(key) = map.next_key::<Cow<'de, str>>()? {
                    match fields.slot(&key) {
                        Some(slot) => *slot = Some(map.next_value::<Field<'de>>()?),
                        None => {
                            map.next_value::<IgnoredAny>()?;
                        }
                    }
                }
                Ok(fields)
            }
        }
        d.deserialize_map(FieldsVisitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_borrow_plain_strings_and_keep_numbers() {
        let json = r#"{"http.request.uri":"v2/a/blobs/b","http.request.method":"GET",
            "http.response.written":72626,"http.request.duration":0.5,"other":{"x":[1,2]},
            "http.response.status":"200","host":"h\u0041"}"#;
        let f: Fields = serde_json::from_str(json).unwrap();
        assert!(matches!(
            f.uri,
            Some(Field::Text(Cow::Borrowed("v2/a/blobs/b")))
        ));
        assert_eq!(f.written, Some(Field::Whole(72626)));
        assert_eq!(f.duration, Some(Field::Number(0.5)));
        assert_eq!(f.host, Some(Field::Text(Cow::Owned("hA".to_owned()))));
        let r = f.request().unwrap();
        assert_eq!(
            (r.size, r.status, r.duration_s),
            (Some(72626), Some(200), Some(0.5))
        );
        assert_eq!(r.host.as_deref(), Some("hA"));
    }

    #[test]
    fn wrong_types_are_reported_with_what_was_written() {
        let f: Fields = serde_json::from_str(
            r#"{"http.request.uri":"v2/a/blobs/b","http.request.method":"GET","http.response.status":-3}"#,
        )
        .unwrap();
        assert_eq!(
            f.request().unwrap_err(),
            "http.response.status \"-3\" is not an HTTP status"
        );
        let f: Fields =
            serde_json::from_str(r#"{"http.request.uri":"v2/","http.request.method":null}"#)
                .unwrap();
        assert_eq!(f.request().unwrap_err(), "no http.request.method");
    }
}
