//! One request object (`{"listener": {...}}`), read field by field with precise 400s: unknown
//! attributes, wrong types and out-of-range values name the field and the value.

use serde_json::{Map, Value};

use super::OErr;

pub struct Input {
    obj: Map<String, Value>,
}

fn invalid(field: &str, value: &Value, why: &str) -> OErr {
    OErr::bad_request(format!("Invalid input for field/attribute {field}. Value: '{}'. {why}", display(value)))
}

fn display(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

impl Input {
    /// Parses `{"<key>": {...}}` from `body`, refusing attributes not in `allowed`.
    pub fn parse(body: &[u8], key: &str, allowed: &[&str]) -> Result<Self, OErr> {
        let v: Value = serde_json::from_slice(body).map_err(|e| OErr::bad_request(format!("Invalid JSON body: {e}")))?;
        let obj = v.get(key).cloned().ok_or_else(|| OErr::bad_request(format!("Missing mandatory field: {key}")))?;
        Self::from_value(obj, key, allowed)
    }

    pub fn from_value(obj: Value, key: &str, allowed: &[&str]) -> Result<Self, OErr> {
        let Value::Object(obj) = obj else { return Err(invalid(key, &obj, "Expected an object.")) };
        if let Some(k) = obj.keys().find(|k| !allowed.contains(&k.as_str())) {
            return Err(OErr::bad_request(format!("Invalid input for field/attribute {k}. Unknown attribute for argument {key}.")));
        }
        Ok(Input { obj })
    }

    pub fn has(&self, k: &str) -> bool {
        self.obj.contains_key(k)
    }

    pub fn raw(&self, k: &str) -> Option<&Value> {
        self.obj.get(k)
    }

    /// A string field; `null` counts as absent.
    pub fn str(&self, k: &str) -> Result<Option<String>, OErr> {
        Ok(self.nullable_str(k)?.flatten())
    }

    /// `None` = absent, `Some(None)` = explicitly null (to clear), `Some(Some(s))` = set.
    pub fn nullable_str(&self, k: &str) -> Result<Option<Option<String>>, OErr> {
        match self.obj.get(k) {
            None => Ok(None),
            Some(Value::Null) => Ok(Some(None)),
            Some(Value::String(s)) => Ok(Some(Some(s.clone()))),
            Some(v) => Err(invalid(k, v, "Expected a string.")),
        }
    }

    pub fn required_str(&self, k: &str) -> Result<String, OErr> {
        self.str(k)?.ok_or_else(|| OErr::bad_request(format!("Invalid input for field/attribute {k}. Mandatory field missing.")))
    }

    pub fn bool(&self, k: &str) -> Result<Option<bool>, OErr> {
        match self.obj.get(k) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(*b)),
            Some(Value::String(s)) if s.eq_ignore_ascii_case("true") => Ok(Some(true)),
            Some(Value::String(s)) if s.eq_ignore_ascii_case("false") => Ok(Some(false)),
            Some(v) => Err(invalid(k, v, "Expected a boolean.")),
        }
    }

    /// An integer in `min..=max`, given as a JSON number or a numeric string (the CLI sends
    /// `connection_limit` as a string).
    pub fn int(&self, k: &str, min: i64, max: i64) -> Result<Option<i64>, OErr> {
        let v = match self.obj.get(k) {
            None | Some(Value::Null) => return Ok(None),
            Some(v) => v,
        };
        let n = match v {
            Value::Number(n) => n.as_i64(),
            Value::String(s) => s.trim().parse::<i64>().ok(),
            _ => None,
        }
        .ok_or_else(|| invalid(k, v, "Expected an integer."))?;
        if n < min || n > max {
            return Err(invalid(k, v, &format!("Value must be between {min} and {max}.")));
        }
        Ok(Some(n))
    }

    pub fn required_int(&self, k: &str, min: i64, max: i64) -> Result<i64, OErr> {
        self.int(k, min, max)?.ok_or_else(|| OErr::bad_request(format!("Invalid input for field/attribute {k}. Mandatory field missing.")))
    }

    pub fn strs(&self, k: &str) -> Result<Option<Vec<String>>, OErr> {
        match self.obj.get(k) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Array(a)) => a
                .iter()
                .map(|x| x.as_str().map(str::to_string).ok_or_else(|| invalid(k, x, "Expected a list of strings.")))
                .collect::<Result<Vec<_>, _>>()
                .map(Some),
            Some(v) => Err(invalid(k, v, "Expected a list of strings.")),
        }
    }

    /// A string field that must be one of `choices`.
    pub fn choice(&self, k: &str, choices: &[&str]) -> Result<Option<String>, OErr> {
        match self.str(k)? {
            Some(s) if !choices.contains(&s.as_str()) => {
                Err(invalid(k, &Value::from(s.clone()), &format!("Value should be one of: {}.", choices.join(", "))))
            }
            other => Ok(other),
        }
    }

    pub fn objects(&self, k: &str) -> Result<Vec<Value>, OErr> {
        match self.obj.get(k) {
            None | Some(Value::Null) => Ok(vec![]),
            Some(Value::Array(a)) => Ok(a.clone()),
            Some(v) => Err(invalid(k, v, "Expected a list of objects.")),
        }
    }
}
