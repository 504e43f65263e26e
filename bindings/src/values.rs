//! Answer values as the apps see them, and their conversion to and from the JSON the store keeps.

use serde_json::{Number, Value};

use crate::TejidoError;

/// One answer. Dates are ISO 8601 calendar dates (`2026-11-28`); an attachment is named by the
/// SHA-256 that `attach_file` returned. A value the store holds but no variant describes (an
/// object written by a newer app, say) reads back as `Json`.
#[derive(Debug, Clone, PartialEq, uniffi::Enum)]
pub enum AnswerValue {
    Null,
    Text { value: String },
    Integer { value: i64 },
    Decimal { value: f64 },
    Bool { value: bool },
    Date { value: String },
    Attachment { sha256: String },
    Json { json: String },
}

impl AnswerValue {
    /// The JSON the store keeps. Refuses malformed values without repeating them.
    pub(crate) fn into_json(self) -> Result<Value, TejidoError> {
        Ok(match self {
            AnswerValue::Null => Value::Null,
            AnswerValue::Text { value } => Value::String(value),
            AnswerValue::Integer { value } => Value::Number(value.into()),
            AnswerValue::Decimal { value } => Value::Number(Number::from_f64(value).ok_or_else(|| {
                TejidoError::InvalidAnswer("a decimal answer must be a finite number".into())
            })?),
            AnswerValue::Bool { value } => Value::Bool(value),
            AnswerValue::Date { value } => {
                if chrono::NaiveDate::parse_from_str(&value, "%Y-%m-%d").is_err() {
                    return Err(TejidoError::InvalidAnswer(
                        "a date answer must be a calendar date written YYYY-MM-DD".into(),
                    ));
                }
                Value::String(value)
            }
            AnswerValue::Attachment { sha256 } => {
                let reference = tejido_core::store::attachment_ref(&sha256);
                let value = Value::String(reference);
                if tejido_core::store::parse_attachment_ref(&value).is_none() {
                    return Err(TejidoError::InvalidAnswer(
                        "an attachment answer must be the 64 lowercase hex digits of a SHA-256".into(),
                    ));
                }
                value
            }
            AnswerValue::Json { json } => serde_json::from_str(&json)
                .map_err(|_| TejidoError::InvalidAnswer("a JSON answer must be valid JSON".into()))?,
        })
    }

    /// How a stored value reads back when nothing says which question type it answers.
    pub(crate) fn from_json(value: &Value) -> AnswerValue {
        match value {
            Value::Null => AnswerValue::Null,
            Value::Bool(b) => AnswerValue::Bool { value: *b },
            Value::Number(n) => match n.as_i64() {
                Some(i) => AnswerValue::Integer { value: i },
                None => match n.as_f64() {
                    Some(f) if n.is_f64() => AnswerValue::Decimal { value: f },
                    _ => AnswerValue::Json { json: n.to_string() },
                },
            },
            Value::String(s) => match tejido_core::store::parse_attachment_ref(value) {
                Some(sha) => AnswerValue::Attachment { sha256: sha.to_owned() },
                None => AnswerValue::Text { value: s.clone() },
            },
            Value::Array(_) | Value::Object(_) => AnswerValue::Json { json: value.to_string() },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_round_trip_through_json() {
        let sha = "a".repeat(64);
        for v in [
            AnswerValue::Null,
            AnswerValue::Text { value: "hola".into() },
            AnswerValue::Integer { value: -42 },
            AnswerValue::Decimal { value: 2.5 },
            AnswerValue::Bool { value: true },
            AnswerValue::Attachment { sha256: sha },
            AnswerValue::Json { json: "[1,2]".into() },
        ] {
            let json = v.clone().into_json().unwrap();
            assert_eq!(AnswerValue::from_json(&json), v);
        }
        // Dates are text once stored; a form session knows they are dates.
        let date = AnswerValue::Date { value: "2026-11-28".into() }.into_json().unwrap();
        assert_eq!(AnswerValue::from_json(&date), AnswerValue::Text { value: "2026-11-28".into() });
    }

    #[test]
    fn malformed_values_are_refused_without_echoing_them() {
        for v in [
            AnswerValue::Decimal { value: f64::NAN },
            AnswerValue::Date { value: "secret-2026-13-45".into() },
            AnswerValue::Attachment { sha256: "secret".into() },
            AnswerValue::Json { json: "{secret".into() },
        ] {
            let err = v.into_json().unwrap_err();
            assert!(matches!(err, TejidoError::InvalidAnswer(_)));
            assert!(!err.to_string().contains("secret"));
        }
    }
}
