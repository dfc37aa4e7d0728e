//! The input document, parsed once, and its projection onto what each rule reads.

use crate::bindings::types::{Fact, Value};
use crate::error::{ConfigError, InputError};
use std::sync::{Arc, OnceLock};

/// One input document, parsed once and shared by every rule that evaluates it.
#[derive(Clone, Debug)]
pub struct Input {
    inner: Arc<InputInner>,
}

#[derive(Debug)]
struct InputInner {
    value: serde_json::Value,
    /// The document as JSON text, for rules that read `*`: kept from parsing, or made once.
    text: OnceLock<String>,
}

impl Input {
    /// The size limit [`Input::from_json`] applies: 16 MiB.
    pub const DEFAULT_MAX_BYTES: usize = 16 << 20;

    /// Parses JSON text of at most [`Input::DEFAULT_MAX_BYTES`]. The document must be a JSON
    /// object without duplicate keys (a proxy and the engine must not read different values
    /// from one document). A leading UTF-8 byte-order mark is skipped. Pass a `String` to
    /// keep it without a copy (rules that read `*` get this text).
    pub fn from_json(text: impl Into<String>) -> Result<Input, InputError> {
        Self::from_json_limited(text, Self::DEFAULT_MAX_BYTES)
    }

    /// [`Input::from_json`] with another size limit.
    pub fn from_json_limited(
        text: impl Into<String>,
        max_bytes: usize,
    ) -> Result<Input, InputError> {
        let mut text = text.into();
        if text.len() > max_bytes {
            return Err(InputError(format!(
                "the document is {} bytes, over the limit of {max_bytes}",
                text.len()
            )));
        }
        if text.starts_with('\u{feff}') {
            text.drain(..'\u{feff}'.len_utf8());
        }
        let mut de = serde_json::Deserializer::from_str(&text);
        let value = serde::de::DeserializeSeed::deserialize(Strict, &mut de)
            .and_then(|v| de.end().map(|()| v))
            .map_err(|e| InputError(e.to_string()))?;
        let input = Input::from_value(value)?;
        let _ = input.inner.text.set(text);
        Ok(input)
    }

    /// Reads and parses a document from `reader`, reading at most `max_bytes` (a larger
    /// document is refused without being read whole).
    pub fn from_reader(reader: impl std::io::Read, max_bytes: usize) -> Result<Input, InputError> {
        use std::io::Read;
        let mut bytes = Vec::new();
        reader
            .take(max_bytes as u64 + 1)
            .read_to_end(&mut bytes)
            .map_err(|e| InputError(format!("cannot read the document: {e}")))?;
        if bytes.len() > max_bytes {
            return Err(InputError(format!(
                "the document is larger than the limit of {max_bytes} bytes"
            )));
        }
        let text = String::from_utf8(bytes).map_err(|e| {
            InputError(format!(
                "the document is not UTF-8 (invalid byte at offset {})",
                e.utf8_error().valid_up_to()
            ))
        })?;
        Self::from_json_limited(text, max_bytes)
    }

    /// Wraps an already parsed document. It must be a JSON object.
    pub fn from_value(value: serde_json::Value) -> Result<Input, InputError> {
        if !value.is_object() {
            return Err(InputError(format!(
                "the document must be a JSON object, not {}",
                json_type(&value)
            )));
        }
        Ok(Input {
            inner: Arc::new(InputInner {
                value,
                text: OnceLock::new(),
            }),
        })
    }

    /// The parsed document.
    pub fn value(&self) -> &serde_json::Value {
        &self.inner.value
    }

    /// The document as JSON text.
    pub fn text(&self) -> &str {
        self.inner.text.get_or_init(|| self.inner.value.to_string())
    }

    /// The value at `path`, if present.
    pub fn get(&self, path: &FactPath) -> Option<&serde_json::Value> {
        let mut at = &self.inner.value;
        for seg in &path.segments {
            at = match at {
                serde_json::Value::Object(map) => map.get(seg.as_str())?,
                serde_json::Value::Array(items) => items.get(seg.parse::<usize>().ok()?)?,
                _ => return None,
            };
        }
        Some(at)
    }

    /// The facts of `reads` present in this document, in declaration order.
    pub(crate) fn facts(&self, reads: &Reads) -> Vec<Fact> {
        match reads {
            Reads::All => Vec::new(),
            Reads::Paths(paths) => paths
                .iter()
                .filter_map(|p| {
                    self.get(p).map(|v| Fact {
                        path: p.text.clone(),
                        value: to_wit_value(v),
                    })
                })
                .collect(),
        }
    }
}

/// Deserializes a JSON value like `serde_json::Value` does, but refuses duplicate keys
/// (`Value` keeps the last one silently).
struct Strict;

impl<'de> serde::de::DeserializeSeed<'de> for Strict {
    type Value = serde_json::Value;
    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> serde::de::Visitor<'de> for Strict {
    type Value = serde_json::Value;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_bool<E>(self, v: bool) -> Result<Self::Value, E> {
        Ok(v.into())
    }
    fn visit_i64<E>(self, v: i64) -> Result<Self::Value, E> {
        Ok(v.into())
    }
    fn visit_u64<E>(self, v: u64) -> Result<Self::Value, E> {
        Ok(v.into())
    }
    fn visit_f64<E>(self, v: f64) -> Result<Self::Value, E> {
        Ok(serde_json::Number::from_f64(v).map_or(serde_json::Value::Null, Into::into))
    }
    fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
        Ok(v.into())
    }
    fn visit_string<E>(self, v: String) -> Result<Self::Value, E> {
        Ok(v.into())
    }
    fn visit_unit<E>(self) -> Result<Self::Value, E> {
        Ok(serde_json::Value::Null)
    }
    fn visit_none<E>(self) -> Result<Self::Value, E> {
        Ok(serde_json::Value::Null)
    }
    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut items = Vec::new();
        while let Some(v) = seq.next_element_seed(Strict)? {
            items.push(v);
        }
        Ok(serde_json::Value::Array(items))
    }
    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut obj = serde_json::Map::new();
        while let Some(key) = map.next_key::<String>()? {
            if obj.contains_key(&key) {
                return Err(serde::de::Error::custom(format!("duplicate key `{key}`")));
            }
            let value = map.next_value_seed(Strict)?;
            obj.insert(key, value);
        }
        Ok(serde_json::Value::Object(obj))
    }
}

fn json_type(v: &serde_json::Value) -> &'static str {
    match v {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "a boolean",
        serde_json::Value::Number(_) => "a number",
        serde_json::Value::String(_) => "a string",
        serde_json::Value::Array(_) => "an array",
        serde_json::Value::Object(_) => "an object",
    }
}

fn to_wit_value(v: &serde_json::Value) -> Value {
    match v {
        serde_json::Value::Null => Value::Null,
        serde_json::Value::Bool(b) => Value::Boolean(*b),
        serde_json::Value::Number(n) => match n.as_i64() {
            Some(i) => Value::Integer(i),
            // u64 above i64::MAX and non-integers: f64 loses nothing JSON promised.
            None => Value::Float(n.as_f64().unwrap_or(f64::NAN)),
        },
        serde_json::Value::String(s) => Value::Text(s.clone()),
        other => Value::Json(other.to_string()),
    }
}

/// A dotted JSON path such as `order.amount` or `items.0.sku` (numbers index arrays).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct FactPath {
    text: String,
    segments: Vec<String>,
}

impl FactPath {
    /// Parses a dotted path; empty segments are refused.
    pub fn parse(text: &str) -> Result<FactPath, ConfigError> {
        let segments: Vec<String> = text.split('.').map(str::to_owned).collect();
        if text.is_empty() || segments.iter().any(|s| s.is_empty()) {
            return Err(ConfigError::new(
                "reads",
                format!("`{text}` is not a dotted JSON path (e.g. `order.amount`)"),
            ));
        }
        Ok(FactPath {
            text: text.to_owned(),
            segments,
        })
    }

    /// The path as written.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The path's keys, in order.
    pub(crate) fn segments(&self) -> &[String] {
        &self.segments
    }
}

/// What part of the input a rule is handed.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Reads {
    /// The whole document (`reads = ["*"]`), as `request.document`.
    All,
    /// Only these paths, as `request.facts`.
    Paths(Vec<FactPath>),
}

impl Reads {
    /// Parses a `reads` list: either `["*"]` or dotted paths, without duplicates.
    pub fn parse<S: AsRef<str>>(items: &[S]) -> Result<Reads, ConfigError> {
        if items.iter().any(|s| s.as_ref() == "*") {
            if items.len() > 1 {
                return Err(ConfigError::new(
                    "reads",
                    "`*` already reads the whole document; list it alone",
                ));
            }
            return Ok(Reads::All);
        }
        let mut paths: Vec<FactPath> = Vec::with_capacity(items.len());
        let mut seen = std::collections::HashSet::with_capacity(items.len());
        for item in items {
            let path = FactPath::parse(item.as_ref())?;
            if !seen.insert(path.text.clone()) {
                return Err(ConfigError::new(
                    "reads",
                    format!("`{}` is listed twice", path.text),
                ));
            }
            paths.push(path);
        }
        Ok(Reads::Paths(paths))
    }

    /// The paths as written (`["*"]` for the whole document).
    pub fn to_strings(&self) -> Vec<String> {
        match self {
            Reads::All => vec!["*".to_owned()],
            Reads::Paths(p) => p.iter().map(|p| p.text.clone()).collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn input() -> Input {
        Input::from_json(
            r#"{"order":{"amount":12.5,"qty":3,"big":18446744073709551615,"tags":["a"],"id":"x"},
                "items":[{"sku":"s1"},{"sku":"s2"}],"flag":true,"none":null}"#,
        )
        .unwrap()
    }

    #[test]
    fn projects_declared_present_paths_in_order() {
        let reads = Reads::parse(&[
            "order.qty",
            "order.missing",
            "order.amount",
            "items.1.sku",
            "order.tags",
            "flag",
            "none",
            "order.big",
        ])
        .unwrap();
        let facts = input().facts(&reads);
        let got: Vec<(&str, &Value)> = facts.iter().map(|f| (f.path.as_str(), &f.value)).collect();
        assert_eq!(got.len(), 7, "{got:?}");
        assert!(matches!(got[0], ("order.qty", Value::Integer(3))));
        assert!(matches!(got[1], ("order.amount", Value::Float(f)) if *f == 12.5));
        assert!(matches!(got[2], ("items.1.sku", Value::Text(s)) if s == "s2"));
        assert!(matches!(got[3], ("order.tags", Value::Json(s)) if s == r#"["a"]"#));
        assert!(matches!(got[4], ("flag", Value::Boolean(true))));
        assert!(matches!(got[5], ("none", Value::Null)));
        assert!(matches!(got[6], ("order.big", Value::Float(f)) if *f == 18446744073709551615.0));
    }

    #[test]
    fn path_through_a_scalar_is_absent() {
        let p = FactPath::parse("order.amount.cents").unwrap();
        assert!(input().get(&p).is_none());
    }

    #[test]
    fn bad_reads_are_named() {
        assert!(
            Reads::parse(&["a..b"])
                .unwrap_err()
                .message
                .contains("`a..b`")
        );
        assert!(Reads::parse(&["*", "a"]).is_err());
        assert!(
            Reads::parse(&["a", "a"])
                .unwrap_err()
                .message
                .contains("twice")
        );
        assert_eq!(Reads::parse(&["*"]).unwrap(), Reads::All);
    }

    #[test]
    fn non_object_documents_are_refused() {
        let err = Input::from_json("[1,2]").unwrap_err();
        assert!(
            err.to_string()
                .contains("must be a JSON object, not an array")
        );
        assert!(Input::from_json("{").is_err());
    }

    #[test]
    fn duplicate_keys_are_refused_at_any_depth() {
        let err =
            Input::from_json(r#"{"amount": 999999, "currency": "EUR", "amount": 20}"#).unwrap_err();
        assert!(err.to_string().contains("duplicate key `amount`"), "{err}");
        let err = Input::from_json(r#"{"o": [{"a": 1, "a": 2}]}"#).unwrap_err();
        assert!(err.to_string().contains("duplicate key `a`"), "{err}");
        // The same key in different objects is fine, and values come through as serde_json's.
        let ok = Input::from_json(r#"{"a": {"a": 1.5}, "b": [null, true, -3, "x"]}"#).unwrap();
        assert_eq!(
            ok.value(),
            &serde_json::json!({"a": {"a": 1.5}, "b": [null, true, -3, "x"]})
        );
    }

    #[test]
    fn size_is_capped_and_a_bom_is_skipped() {
        let err =
            Input::from_json_limited(format!(r#"{{"a":"{}"}}"#, "x".repeat(100)), 64).unwrap_err();
        assert!(
            err.to_string().contains("bytes, over the limit of 64"),
            "{err}"
        );
        let input = Input::from_json("\u{feff}{\"a\": 1}").unwrap();
        assert_eq!(input.value(), &serde_json::json!({"a": 1}));
        assert_eq!(input.text(), "{\"a\": 1}");
        assert!(Input::from_json("{\"a\": 1} trailing").is_err());
    }

    #[test]
    fn text_is_kept_or_made() {
        assert_eq!(input().text().len(), input().text().len());
        let v = Input::from_value(serde_json::json!({"a":1})).unwrap();
        assert_eq!(v.text(), r#"{"a":1}"#);
    }
}
