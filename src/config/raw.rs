//! The helpers every section of the configuration shares, one copy each: how scalars and lists are read (`lenient`, `string_list`), booleans, unknown keys, the problem type, and how values are written back (`ser_display`).

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Deserializer, Serializer};

/// Serializes a value by its `Display` form (URLs, addresses) for `dinggate check`'s output.
pub fn ser_display<T: fmt::Display, S: Serializer>(v: &T, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(v)
}

/// One problem found in the configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigIssue {
    /// Dotted key path, e.g. `dingtalk.client_id`.
    pub key: String,
    /// What is wrong with it.
    pub problem: String,
}

impl fmt::Display for ConfigIssue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.key, self.problem)
    }
}

/// Keys of a section that no field claims (`#[serde(flatten)]`).
pub type Unknown = BTreeMap<String, figment::value::Value>;

/// The problem reported for a key no section knows.
pub const UNKNOWN_KEY: &str = "unknown key (check the spelling; see gateway.yaml)";

/// One problem per key in `unknown`, named under `section` (`""` for the top level).
pub fn unknown_keys<'a>(
    section: &'a str,
    unknown: &'a Unknown,
) -> impl Iterator<Item = ConfigIssue> + 'a {
    unknown.keys().map(move |key| ConfigIssue {
        key: if section.is_empty() {
            key.clone()
        } else {
            format!("{section}.{key}")
        },
        problem: UNKNOWN_KEY.to_owned(),
    })
}

/// The problem reported for a boolean that is neither `true` nor `false`.
pub const NOT_A_BOOL: &str = "must be true or false";

/// A boolean as written (`true` / `false`, surrounding spaces ignored): `Ok(None)` when absent,
/// `Err` for anything else ([`NOT_A_BOOL`]).
pub fn parse_bool(v: Option<&str>) -> Result<Option<bool>, &'static str> {
    match v.map(str::trim) {
        None => Ok(None),
        Some("true") => Ok(Some(true)),
        Some("false") => Ok(Some(false)),
        Some(_) => Err(NOT_A_BOOL),
    }
}

/// One scalar setting as written: text, a number or a boolean, kept as text (an env var like
/// `DINGGATE_X=123` arrives as a number); absent or null is `None`. The type every raw section
/// uses for its scalars, so each field is read the same way without an attribute of its own.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Text(pub Option<String>);

impl<'de> Deserialize<'de> for Text {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        lenient(d).map(Text)
    }
}

impl std::ops::Deref for Text {
    type Target = Option<String>;
    fn deref(&self) -> &Option<String> {
        &self.0
    }
}

impl From<Text> for Option<String> {
    fn from(t: Text) -> Self {
        t.0
    }
}

/// Accepts strings, numbers and booleans as a string (env vars like `DINGGATE_X=123` arrive as numbers).
fn lenient<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    d.deserialize_option(OptionalScalar)
}

/// Reads one scalar as text; a list or a map is a type error that names neither value nor enum.
struct Scalar;

impl<'de> serde::de::Visitor<'de> for Scalar {
    type Value = String;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a single value (text, a number or true/false)")
    }
    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<String, E> {
        Ok(v.to_owned())
    }
    fn visit_string<E: serde::de::Error>(self, v: String) -> Result<String, E> {
        Ok(v)
    }
    fn visit_char<E: serde::de::Error>(self, v: char) -> Result<String, E> {
        Ok(v.to_string())
    }
    fn visit_bool<E: serde::de::Error>(self, v: bool) -> Result<String, E> {
        Ok(v.to_string())
    }
    fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<String, E> {
        Ok(v.to_string())
    }
    fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<String, E> {
        Ok(v.to_string())
    }
    fn visit_i128<E: serde::de::Error>(self, v: i128) -> Result<String, E> {
        Ok(v.to_string())
    }
    fn visit_u128<E: serde::de::Error>(self, v: u128) -> Result<String, E> {
        Ok(v.to_string())
    }
    fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<String, E> {
        Ok(v.to_string())
    }
}

struct OptionalScalar;

impl<'de> serde::de::Visitor<'de> for OptionalScalar {
    type Value = Option<String>;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        Scalar.expecting(f)
    }
    fn visit_none<E: serde::de::Error>(self) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_unit<E: serde::de::Error>(self) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_any(Scalar).map(Some)
    }
}

/// One scalar of a list, read like [`lenient`].
struct ListItem(String);

impl<'de> Deserialize<'de> for ListItem {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(Scalar).map(ListItem)
    }
}

/// A list of scalars, written as a YAML list (`[a, b]`, also in an env var) or as one text of
/// comma-separated entries (`a,b`, the natural form of an env var). Blank entries are dropped.
pub fn string_list<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Vec<String>>, D::Error> {
    struct List;
    impl<'de> serde::de::Visitor<'de> for List {
        type Value = Option<Vec<String>>;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a list, or text of comma-separated entries")
        }
        fn visit_none<E: serde::de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_unit<E: serde::de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
            d.deserialize_any(List)
        }
        fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Self::Value, E> {
            Ok(Some(split_list(v)))
        }
        fn visit_seq<A: serde::de::SeqAccess<'de>>(
            self,
            mut seq: A,
        ) -> Result<Self::Value, A::Error> {
            let mut out = Vec::new();
            while let Some(ListItem(item)) = seq.next_element()? {
                out.push(item);
            }
            Ok(Some(out))
        }
    }
    d.deserialize_option(List)
}

/// `a, b,,c` → `[a, b, c]`.
fn split_list(v: &str) -> Vec<String> {
    v.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect()
}
