//! Answer values as the apps see them, and their conversion to and from the JSON the store keeps.

use serde_json::{Number, Value};

use tejido_core::form::QuestionType;

use crate::TejidoError;

/// One answer. Dates are ISO 8601 calendar dates (`2026-11-28`); an attachment is named by the
/// SHA-256 that `attach_file` returned. A value the store holds but no variant describes (an
/// object written by a newer app, say) reads back as `Json`.
#[derive(Debug, Clone, PartialEq, uniffi::Enum)]
pub enum AnswerValue {
    Null,
    Text {
        value: String,
    },
    Integer {
        value: i64,
    },
    Decimal {
        value: f64,
    },
    Bool {
        value: bool,
    },
    Date {
        value: String,
    },
    Attachment {
        sha256: String,
    },
    /// The choices picked in a select_multiple question, by choice name.
    Choices {
        names: Vec<String>,
    },
    /// A GPS point; altitude and accuracy in metres when known.
    Geopoint {
        latitude: f64,
        longitude: f64,
        altitude: Option<f64>,
        accuracy: Option<f64>,
    },
    Json {
        json: String,
    },
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
            AnswerValue::Choices { names } => Value::Array(names.into_iter().map(Value::String).collect()),
            AnswerValue::Geopoint { latitude, longitude, altitude, accuracy } => {
                let parts = [Some(latitude), Some(longitude), altitude, accuracy];
                if parts.iter().flatten().any(|f| !f.is_finite())
                    || !(-90.0..=90.0).contains(&latitude)
                    || !(-180.0..=180.0).contains(&longitude)
                {
                    return Err(TejidoError::InvalidAnswer(
                        "a point needs a latitude within ±90 and a longitude within ±180".into(),
                    ));
                }
                let text: Vec<String> =
                    [Some(latitude), Some(longitude), altitude.or(accuracy.map(|_| 0.0)), accuracy]
                        .iter()
                        .flatten()
                        .map(|f| f.to_string())
                        .collect();
                Value::String(text.join(" "))
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
            // The shape `Choices` is written in: the choices picked, by name.
            Value::Array(items) if items.iter().all(Value::is_string) => AnswerValue::Choices {
                names: items.iter().filter_map(|v| v.as_str().map(str::to_owned)).collect(),
            },
            Value::Array(_) | Value::Object(_) => AnswerValue::Json { json: value.to_string() },
        }
    }
}

/// How a stored value reads back for a question of a known type.
pub(crate) fn typed_value(kind: QuestionType, value: &Value) -> AnswerValue {
    use QuestionType as Q;
    let text = value.as_str().map(str::trim);
    match (kind, text) {
        (_, Some("")) => AnswerValue::Null,
        (Q::Integer, Some(t)) => t
            .parse()
            .map(|value| AnswerValue::Integer { value })
            .unwrap_or_else(|_| AnswerValue::from_json(value)),
        (Q::Decimal | Q::Range, Some(t)) => t
            .parse()
            .map(|value| AnswerValue::Decimal { value })
            .unwrap_or_else(|_| AnswerValue::from_json(value)),
        (Q::Decimal | Q::Range, None) => match value.as_f64() {
            Some(value) => AnswerValue::Decimal { value },
            None => AnswerValue::from_json(value),
        },
        (Q::Date | Q::Today, Some(t)) => AnswerValue::Date { value: t.to_owned() },
        (Q::SelectMultiple | Q::Rank, Some(t)) => {
            AnswerValue::Choices { names: t.split_whitespace().map(str::to_owned).collect() }
        }
        (Q::SelectMultiple | Q::Rank, None) if value.is_array() => AnswerValue::Choices {
            names: value
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|v| v.as_str().map(str::to_owned))
                .collect(),
        },
        (Q::Geopoint | Q::StartGeopoint, Some(t)) => {
            let nums: Vec<f64> = t.split_whitespace().filter_map(|p| p.parse().ok()).collect();
            match nums[..] {
                [latitude, longitude, ref rest @ ..] if rest.len() <= 2 => AnswerValue::Geopoint {
                    latitude,
                    longitude,
                    altitude: rest.first().copied(),
                    accuracy: rest.get(1).copied(),
                },
                _ => AnswerValue::from_json(value),
            }
        }
        _ => AnswerValue::from_json(value),
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
            AnswerValue::Choices { names: vec!["gender".into(), "human_rights".into()] },
            AnswerValue::Choices { names: vec![] },
        ] {
            let json = v.clone().into_json().unwrap();
            assert_eq!(AnswerValue::from_json(&json), v);
        }
        // Dates are text once stored; a form session knows they are dates.
        let date = AnswerValue::Date { value: "2026-11-28".into() }.into_json().unwrap();
        assert_eq!(AnswerValue::from_json(&date), AnswerValue::Text { value: "2026-11-28".into() });
        assert_eq!(typed_value(QuestionType::Date, &date), AnswerValue::Date { value: "2026-11-28".into() });
        let point =
            AnswerValue::Geopoint { latitude: 8.98, longitude: -79.52, altitude: None, accuracy: Some(5.0) };
        let stored = point.into_json().unwrap();
        assert_eq!(stored, Value::String("8.98 -79.52 0 5".into()));
        assert_eq!(
            typed_value(QuestionType::Geopoint, &stored),
            AnswerValue::Geopoint {
                latitude: 8.98,
                longitude: -79.52,
                altitude: Some(0.0),
                accuracy: Some(5.0)
            }
        );
        let picks = Value::String("gender human_rights".into());
        assert_eq!(
            typed_value(QuestionType::SelectMultiple, &picks),
            AnswerValue::Choices { names: vec!["gender".into(), "human_rights".into()] }
        );
        assert_eq!(
            typed_value(QuestionType::Integer, &Value::String("12".into())),
            AnswerValue::Integer { value: 12 }
        );
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
