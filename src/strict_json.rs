//! The one JSON parser for untrusted evidence: one text, one meaning.
//!
//! Why it exists: a verifier that parses two pieces of evidence with different rules can be
//! shown two different things. serde_json keeps the last of duplicate object keys, other
//! parsers keep the first; integers beyond 64 bits become floats in serde_json (so
//! `18446744073709551617` equals `18446744073709551616`) while Python keeps them exact. Every
//! JSON input the verifier reads (signed documents, `task.json`, `status.json`,
//! `task-graph.json`, `bundle.json`) goes through [`from_slice`], which refuses duplicate keys
//! anywhere and any integral number of magnitude 2^53 or more that is not an exact 64-bit
//! integer (beyond that range two different literals can parse to the same value).

use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

/// Largest magnitude a float holds every integer up to (2^53).
const EXACT_FLOAT_INTEGERS: f64 = 9_007_199_254_740_992.0;

/// Parses `bytes` as one JSON value, refusing duplicate keys and inexact large numbers.
pub fn from_slice(bytes: &[u8]) -> Result<Value, serde_json::Error> {
    let StrictValue(v) = serde_json::from_slice(bytes)?;
    Ok(v)
}

/// [`from_slice`], then into `T`.
pub fn from_slice_to<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, serde_json::Error> {
    serde_json::from_value(from_slice(bytes)?)
}

/// A JSON value whose objects are checked for duplicate keys while parsing.
struct StrictValue(Value);

impl<'de> Deserialize<'de> for StrictValue {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(StrictVisitor).map(StrictValue)
    }
}

struct StrictVisitor;

impl<'de> serde::de::Visitor<'de> for StrictVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::from(v))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::from(v))
    }
    fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<Value, E> {
        // Integers that fit 64 bits arrive as visit_i64/visit_u64; an integral float this
        // large is a literal two parsers may read differently.
        if v.fract() == 0.0 && v.abs() >= EXACT_FLOAT_INTEGERS {
            return Err(E::custom(format!(
                "number {v:e} is outside the exactly representable range"
            )));
        }
        serde_json::Number::from_f64(v)
            .map(Value::Number)
            .ok_or_else(|| E::custom("non-finite number"))
    }
    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_owned()))
    }
    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }
    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::new();
        while let Some(StrictValue(v)) = seq.next_element()? {
            items.push(v);
        }
        Ok(Value::Array(items))
    }
    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut out = Map::new();
        while let Some(key) = map.next_key::<String>()? {
            let StrictValue(v) = map.next_value()?;
            if out.contains_key(&key) {
                return Err(serde::de::Error::custom(format!(
                    "duplicate object key {:?}",
                    key.chars().take(64).collect::<String>()
                )));
            }
            out.insert(key, v);
        }
        Ok(Value::Object(out))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_text_one_meaning() {
        assert!(from_slice(br#"{"a": 1, "b": {"c": [1, 2.5, "x", null, true]}}"#).is_ok());
        for bad in [
            &br#"{"scopes": ["evil"], "scopes": ["genuine"]}"#[..],
            br#"{"a": {"b": 1, "b": 1}}"#,
            br#"[{"k": 1, "k": 2}]"#,
            br#"{"n": 18446744073709551617}"#,
            br#"{"n": -9223372036854775809}"#,
            br#"{"n": 1e300}"#,
            br#"{"n": 9007199254740992.0}"#,
        ] {
            assert!(from_slice(bad).is_err(), "{}", String::from_utf8_lossy(bad));
        }
        // Exact 64-bit integers and ordinary fractions are kept.
        let v = from_slice(br#"{"u": 18446744073709551615, "i": -9223372036854775808, "f": 0.5}"#)
            .unwrap();
        assert_eq!(v["u"].as_u64(), Some(u64::MAX));
        assert_eq!(v["i"].as_i64(), Some(i64::MIN));
    }
}
