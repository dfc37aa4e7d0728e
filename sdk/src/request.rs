//! What a rule receives, with typed access.

use crate::{Decision, Value};
use serde::de::DeserializeOwned;
use std::fmt;

/// Why a rule could not decide; becomes the WIT `rule-error`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RuleError {
    /// The input lacks or mistypes something the rule needs.
    InvalidInput(String),
    /// The rule could not reach a decision (bad settings, missing data file, ...).
    Failed(String),
}

impl RuleError {
    /// An [`RuleError::InvalidInput`].
    pub fn invalid_input(message: impl Into<String>) -> RuleError {
        RuleError::InvalidInput(message.into())
    }
    /// A [`RuleError::Failed`].
    pub fn failed(message: impl Into<String>) -> RuleError {
        RuleError::Failed(message.into())
    }
}

impl fmt::Display for RuleError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RuleError::InvalidInput(m) => write!(f, "invalid input: {m}"),
            RuleError::Failed(m) => write!(f, "failed: {m}"),
        }
    }
}

impl std::error::Error for RuleError {}

/// One evaluation's request: the facts the rule declared it reads, the document (for rules
/// that read `*`), upstream decisions and settings.
#[derive(Clone, Debug, PartialEq)]
pub struct Request {
    facts: Vec<(String, Value)>,
    document: Option<String>,
    upstream: Vec<(String, Decision)>,
    settings: String,
}

impl Default for Request {
    fn default() -> Self {
        Request::new()
    }
}

impl Request {
    /// An empty request (no facts, settings `{}`): start here in unit tests.
    pub fn new() -> Request {
        Request {
            facts: Vec::new(),
            document: None,
            upstream: Vec::new(),
            settings: "{}".to_owned(),
        }
    }

    /// Adds a fact, or replaces the fact at the same path (for tests).
    pub fn with_fact(mut self, path: impl Into<String>, value: impl Into<Value>) -> Request {
        let (path, value) = (path.into(), value.into());
        match self.facts.iter_mut().find(|(p, _)| *p == path) {
            Some(slot) => slot.1 = value,
            None => self.facts.push((path, value)),
        }
        self
    }

    /// Sets the settings (for tests).
    pub fn with_settings(mut self, settings: serde_json::Value) -> Request {
        self.settings = settings.to_string();
        self
    }

    /// Adds an upstream decision (for tests).
    pub fn with_upstream(mut self, rule: impl Into<String>, decision: Decision) -> Request {
        self.upstream.push((rule.into(), decision));
        self
    }

    /// Sets the whole document (for tests of rules that read `*`).
    pub fn with_document(mut self, document: serde_json::Value) -> Request {
        self.document = Some(document.to_string());
        self
    }

    #[doc(hidden)]
    pub fn from_parts(
        facts: Vec<(String, Value)>,
        document: Option<String>,
        upstream: Vec<(String, Decision)>,
        settings: String,
    ) -> Request {
        Request {
            facts,
            document,
            upstream,
            settings,
        }
    }

    /// The raw value of a fact, if the input has it.
    pub fn raw_fact(&self, path: &str) -> Option<&Value> {
        self.facts.iter().find(|(p, _)| p == path).map(|(_, v)| v)
    }

    /// All facts present, in declaration order.
    pub fn facts(&self) -> impl Iterator<Item = (&str, &Value)> {
        self.facts.iter().map(|(p, v)| (p.as_str(), v))
    }

    /// A fact as `T`. Missing or mistyped facts are [`RuleError::InvalidInput`] naming the
    /// path and what was expected.
    pub fn fact<T: DeserializeOwned>(&self, path: &str) -> Result<T, RuleError> {
        match self.fact_opt(path)? {
            Some(v) => Ok(v),
            None => Err(RuleError::invalid_input(format!("missing fact `{path}`"))),
        }
    }

    /// A fact as `T`, or `None` when absent or `null`; mistyped is still an error.
    pub fn fact_opt<T: DeserializeOwned>(&self, path: &str) -> Result<Option<T>, RuleError> {
        let Some(value) = self.raw_fact(path) else {
            return Ok(None);
        };
        if *value == Value::Null {
            return Ok(None);
        }
        // The direct route first; the general one only to find out why it failed, so the
        // error is the same whichever route a value took.
        if let Some(v) = direct(value) {
            return Ok(Some(v));
        }
        let json = value
            .to_json()
            .map_err(|e| RuleError::invalid_input(format!("fact `{path}`: {e}")))?;
        serde_json::from_value(json)
            .map(Some)
            .map_err(|e| RuleError::invalid_input(format!("fact `{path}`: {e}")))
    }

    fn settings_value(&self) -> Result<serde_json::Value, RuleError> {
        serde_json::from_str(&self.settings)
            .map_err(|e| RuleError::failed(format!("settings are not JSON: {e}")))
    }

    /// All settings as `T` (a `#[derive(Deserialize)]` struct, say). Errors are
    /// [`RuleError::Failed`]: settings come from the bundle, not the input.
    pub fn settings<T: DeserializeOwned>(&self) -> Result<T, RuleError> {
        serde_path_to_error::deserialize(self.settings_value()?).map_err(|e| {
            let path = e.path().to_string();
            let at = if path == "." {
                String::new()
            } else {
                format!(" `{path}`")
            };
            RuleError::failed(format!("setting{at}: {}", e.into_inner()))
        })
    }

    /// All settings as `T`, parsed once per rule instance and shared after that: the first
    /// call parses (as [`Request::settings`]), later calls with the same settings return the
    /// same `Arc`. Export the rule with `export_rule!(MyRule, settings = T)` and the parse
    /// happens at load, in `init`, before the host snapshots the instance: every evaluation,
    /// fresh instance or not, then starts with the settings parsed, and settings that do not
    /// parse refuse the load with the same message instead of failing every evaluation.
    pub fn settings_shared<T>(&self) -> Result<std::sync::Arc<T>, RuleError>
    where
        T: DeserializeOwned + Send + Sync + 'static,
    {
        use std::any::{Any, TypeId};
        type Entry = (TypeId, String, std::sync::Arc<dyn Any + Send + Sync>);
        /// Parsed settings by type and text. In a rule instance the text never changes, so
        /// this holds one entry per type; native unit tests use many settings, hence a bound.
        static PARSED: std::sync::Mutex<Vec<Entry>> = std::sync::Mutex::new(Vec::new());
        const KEEP: usize = 16;

        let key = TypeId::of::<T>();
        let mut parsed = PARSED.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((_, _, any)) = parsed
            .iter()
            .find(|(t, text, _)| *t == key && *text == self.settings)
            && let Ok(hit) = any.clone().downcast::<T>()
        {
            return Ok(hit);
        }
        // Kept for the instance's life: out of the per-evaluation arena.
        crate::persistent(|| {
            let fresh = std::sync::Arc::new(self.settings::<T>()?);
            if parsed.len() >= KEEP {
                parsed.remove(0);
            }
            parsed.push((key, self.settings.clone(), fresh.clone()));
            Ok(fresh)
        })
    }

    /// One setting as `T`; missing or mistyped is [`RuleError::Failed`].
    pub fn setting<T: DeserializeOwned>(&self, key: &str) -> Result<T, RuleError> {
        self.setting_opt(key)?
            .ok_or_else(|| RuleError::failed(format!("missing setting `{key}`")))
    }

    /// One setting as `T`, or `default` when absent; mistyped is still an error.
    pub fn setting_or<T: DeserializeOwned>(&self, key: &str, default: T) -> Result<T, RuleError> {
        Ok(self.setting_opt(key)?.unwrap_or(default))
    }

    fn setting_opt<T: DeserializeOwned>(&self, key: &str) -> Result<Option<T>, RuleError> {
        match self
            .settings_value()?
            .get_mut(key)
            .map(serde_json::Value::take)
        {
            None | Some(serde_json::Value::Null) => Ok(None),
            Some(v) => serde_json::from_value(v)
                .map(Some)
                .map_err(|e| RuleError::failed(format!("setting `{key}`: {e}"))),
        }
    }

    /// The decision of an upstream rule, if this rule depends on it and it decided.
    pub fn upstream(&self, rule: &str) -> Option<&Decision> {
        self.upstream
            .iter()
            .find(|(r, _)| r == rule)
            .map(|(_, d)| d)
    }

    /// All upstream decisions.
    pub fn upstreams(&self) -> impl Iterator<Item = (&str, &Decision)> {
        self.upstream.iter().map(|(r, d)| (r.as_str(), d))
    }

    /// The whole document as `T`; only rules that read `*` get it.
    pub fn document<T: DeserializeOwned>(&self) -> Result<T, RuleError> {
        let text = self.document.as_deref().ok_or_else(|| {
            RuleError::failed("no document: a rule must declare reads = [\"*\"] to get it")
        })?;
        serde_json::from_str(text).map_err(|e| RuleError::invalid_input(format!("document: {e}")))
    }
}

/// `value` as `T` without building a `serde_json::Value` first: scalars go straight to `T`'s
/// visitor and JSON text is parsed into `T` directly. `None` when that fails (the caller
/// then takes the general route, which reports why); for a value that succeeds here the
/// general route gives the same `T`, since `T` sees the same visitor call either way.
fn direct<T: DeserializeOwned>(value: &Value) -> Option<T> {
    use serde::de::IntoDeserializer;
    type E = serde::de::value::Error;
    match value {
        Value::Null => None,
        Value::Bool(b) => T::deserialize(IntoDeserializer::<E>::into_deserializer(*b)).ok(),
        Value::Integer(i) => T::deserialize(IntoDeserializer::<E>::into_deserializer(*i)).ok(),
        Value::Float(f) => T::deserialize(IntoDeserializer::<E>::into_deserializer(*f)).ok(),
        Value::Text(s) => T::deserialize(IntoDeserializer::<E>::into_deserializer(s.as_str())).ok(),
        Value::Json(s) => serde_json::from_str(s).ok(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[test]
    fn typed_facts_and_clear_errors() {
        let req = Request::new()
            .with_fact("order.amount", 12)
            .with_fact("order.currency", "EUR")
            .with_fact("order.tags", serde_json::json!(["a", "b"]))
            .with_fact("order.note", Value::Null);
        assert_eq!(req.fact::<f64>("order.amount").unwrap(), 12.0);
        let replaced = req.clone().with_fact("order.amount", 13);
        assert_eq!(replaced.fact::<i64>("order.amount").unwrap(), 13);
        assert_eq!(replaced.facts().count(), req.facts().count());
        assert_eq!(req.fact::<String>("order.currency").unwrap(), "EUR");
        assert_eq!(req.fact::<Vec<String>>("order.tags").unwrap(), ["a", "b"]);
        assert_eq!(req.fact_opt::<String>("order.note").unwrap(), None);
        assert_eq!(
            req.fact::<f64>("order.missing").unwrap_err(),
            RuleError::invalid_input("missing fact `order.missing`")
        );
        let err = req.fact::<f64>("order.currency").unwrap_err().to_string();
        assert!(
            err.contains("fact `order.currency`") && err.contains("expected f64"),
            "{err}"
        );
    }

    #[test]
    fn settings_typed_defaulted_and_checked() {
        #[derive(Debug, Deserialize)]
        struct S {
            max: u32,
        }
        let req = Request::new().with_settings(serde_json::json!({"max": 10, "name": "x"}));
        assert_eq!(req.settings::<S>().unwrap().max, 10);
        let bad = Request::new().with_settings(serde_json::json!({"max": "ten"}));
        let err = bad.settings::<S>().unwrap_err().to_string();
        assert!(
            err.starts_with("failed: setting `max`: invalid type"),
            "{err}"
        );
        assert_eq!(req.setting::<u32>("max").unwrap(), 10);
        assert_eq!(req.setting_or::<u32>("min", 3).unwrap(), 3);
        assert!(
            matches!(req.setting::<u32>("min"), Err(RuleError::Failed(m)) if m.contains("`min`"))
        );
        assert!(
            matches!(req.setting_or::<u32>("name", 1), Err(RuleError::Failed(m)) if m.contains("`name`"))
        );
    }

    /// The general route: what `fact_opt` did before the direct one.
    fn general<T: DeserializeOwned>(value: &Value) -> Option<T> {
        serde_json::from_value(value.to_json().ok()?).ok()
    }

    #[test]
    fn direct_facts_decode_as_the_general_route_does() {
        #[derive(Debug, PartialEq, Deserialize)]
        #[serde(rename_all = "lowercase")]
        enum Kind {
            Card,
            Wire,
        }
        #[derive(Debug, PartialEq, Deserialize)]
        struct Order {
            amount: f64,
            tags: Vec<String>,
        }
        let values = [
            Value::Bool(true),
            Value::Integer(-3),
            Value::Integer(7),
            Value::Integer(300),
            Value::Float(2.5),
            Value::Float(4.0),
            Value::Text("card".into()),
            Value::Text("7".into()),
            Value::Json(r#"{"amount": 3, "tags": ["a"]}"#.into()),
            Value::Json("[1, 2]".into()),
            Value::Json("{not json".into()),
        ];
        fn check<T: DeserializeOwned + PartialEq + std::fmt::Debug>(v: &Value) -> usize {
            let (fast, slow) = (direct::<T>(v), general::<T>(v));
            if fast.is_some() {
                assert_eq!(fast, slow, "{v:?} as {}", std::any::type_name::<T>());
            }
            usize::from(fast.is_some())
        }
        let mut direct_hits = 0;
        for v in &values {
            direct_hits += check::<bool>(v)
                + check::<i64>(v)
                + check::<u8>(v)
                + check::<f64>(v)
                + check::<String>(v)
                + check::<Kind>(v)
                + check::<Order>(v)
                + check::<Vec<i64>>(v)
                + check::<serde_json::Value>(v)
                + check::<Option<f64>>(v);
        }
        // The direct route does take most of them (else it would save nothing).
        assert!(direct_hits >= 20, "{direct_hits}");
        // And every failure still reads as before.
        let req = Request::new().with_fact("x", "card").with_fact("n", -3);
        let err = req.fact::<u8>("n").unwrap_err().to_string();
        assert!(
            err.contains("fact `n`") && err.contains("invalid value"),
            "{err}"
        );
        assert!(req.fact::<Kind>("x").is_ok());
    }

    #[test]
    fn shared_settings_parse_once_per_text() {
        #[derive(Debug, Deserialize)]
        struct Limits {
            max: u32,
        }
        let a = Request::new().with_settings(serde_json::json!({"max": 10}));
        let first = a.settings_shared::<Limits>().unwrap();
        let again = a.clone().settings_shared::<Limits>().unwrap();
        assert!(std::sync::Arc::ptr_eq(&first, &again), "parsed twice");
        let b = Request::new().with_settings(serde_json::json!({"max": 11}));
        assert_eq!(b.settings_shared::<Limits>().unwrap().max, 11);
        assert_eq!(a.settings_shared::<Limits>().unwrap().max, 10);
        // Another type over the same text is its own entry.
        #[derive(Debug, Deserialize)]
        struct Loose {
            max: f64,
        }
        assert_eq!(a.settings_shared::<Loose>().unwrap().max, 10.0);
        let bad = Request::new().with_settings(serde_json::json!({"max": "ten"}));
        assert_eq!(
            bad.settings_shared::<Limits>().unwrap_err(),
            bad.settings::<Limits>().unwrap_err()
        );
    }

    #[test]
    fn upstream_and_document() {
        let req = Request::new()
            .with_upstream("a", Decision::deny().output(&serde_json::json!({"x": 1})))
            .with_document(serde_json::json!({"k": [1, 2]}));
        let up = req.upstream("a").unwrap();
        assert_eq!(up.verdict(), crate::Verdict::Deny);
        assert_eq!(up.output_as::<serde_json::Value>().unwrap()["x"], 1);
        assert!(req.upstream("b").is_none());
        let doc: serde_json::Value = req.document().unwrap();
        assert_eq!(doc["k"][1], 2);
        assert!(Request::new().document::<serde_json::Value>().is_err());
    }

    #[test]
    fn decision_builder() {
        let d = Decision::review()
            .score(0.5)
            .reason("a")
            .reason("b")
            .output(&[1, 2]);
        assert_eq!(d.verdict(), crate::Verdict::Review);
        assert_eq!(d.get_score(), Some(0.5));
        assert_eq!(d.reasons(), ["a", "b"]);
        assert_eq!(d.output_json(), Some("[1,2]"));
    }
}
