//! Fact values as the host hands them over.

/// A JSON value: scalars directly, arrays and objects as JSON text (as in the WIT).
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    /// `null`.
    Null,
    /// `true` / `false`.
    Bool(bool),
    /// A number that fits an `i64`.
    Integer(i64),
    /// Any other number.
    Float(f64),
    /// A string.
    Text(String),
    /// An array or object, as JSON text.
    Json(String),
}

impl Value {
    /// As a `serde_json::Value`; `Json` text that does not parse becomes an error message.
    pub fn to_json(&self) -> Result<serde_json::Value, String> {
        Ok(match self {
            Value::Null => serde_json::Value::Null,
            Value::Bool(b) => (*b).into(),
            Value::Integer(i) => (*i).into(),
            Value::Float(f) => serde_json::Number::from_f64(*f)
                .map(serde_json::Value::Number)
                .unwrap_or(serde_json::Value::Null),
            Value::Text(s) => s.clone().into(),
            Value::Json(s) => serde_json::from_str(s).map_err(|e| e.to_string())?,
        })
    }

    /// From a `serde_json::Value`, the way the host projects input fields.
    pub fn from_json(v: serde_json::Value) -> Value {
        match v {
            serde_json::Value::Null => Value::Null,
            serde_json::Value::Bool(b) => Value::Bool(b),
            serde_json::Value::Number(n) => match n.as_i64() {
                Some(i) => Value::Integer(i),
                None => Value::Float(n.as_f64().unwrap_or(f64::NAN)),
            },
            serde_json::Value::String(s) => Value::Text(s),
            other => Value::Json(other.to_string()),
        }
    }
}

macro_rules! from_scalar {
    ($($t:ty => $v:ident),*) => { $(impl From<$t> for Value { fn from(x: $t) -> Value { Value::$v(x.into()) } })* };
}
from_scalar!(bool => Bool, i32 => Integer, i64 => Integer, u32 => Integer, f64 => Float, f32 => Float, String => Text, &str => Text);

impl From<serde_json::Value> for Value {
    fn from(v: serde_json::Value) -> Value {
        Value::from_json(v)
    }
}
