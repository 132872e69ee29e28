//! Workflow and signal inputs as received: read, or why they could not be read.
//!
//! The SDK turns an input it cannot deserialize into a failed workflow *task*, which Temporal
//! retries forever ("Failed to create workflow execution", naming nothing). A workflow that
//! takes [`Received<T>`] always starts: it reads the JSON itself and, when the input is
//! unusable, fails the *workflow* with the field and the rule, non-retryable, like any other
//! refused request. Clients still send plain `T`; both serialize to the same JSON.

use std::fmt;

use serde::de::DeserializeOwned;
use serde::{Serialize, Serializer};
use temporalio_common::data_converters::{PayloadConversionError, SerializationContext, TemporalDeserializable};
use temporalio_common::protos::temporal::api::common::v1::Payload;

/// An input as it arrived.
#[derive(Debug, Clone, PartialEq)]
pub enum Received<T> {
    /// It read as a `T`.
    Read(T),
    /// It did not; the field and the rule say why.
    Unreadable(Unreadable),
}

/// Why an input could not be read: the field (a dotted path such as `artifact.digest`, or
/// `input` for the whole of it) and the rule it breaks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unreadable {
    /// Path of the offending field.
    pub field: String,
    /// What is wrong with it.
    pub rule: String,
}

impl fmt::Display for Unreadable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.rule)
    }
}

impl std::error::Error for Unreadable {}

impl<T> Received<T> {
    /// The input, or why it could not be read.
    pub fn into_result(self) -> Result<T, Unreadable> {
        match self {
            Self::Read(t) => Ok(t),
            Self::Unreadable(why) => Err(why),
        }
    }
}

impl<T> From<T> for Received<T> {
    fn from(t: T) -> Self {
        Self::Read(t)
    }
}

impl<T: DeserializeOwned> Received<T> {
    /// Reads `json` as a `T`, naming the field of the first problem.
    pub fn from_json(json: &[u8]) -> Self {
        let value: serde_json::Value = match serde_json::from_slice(json) {
            Ok(v) => v,
            Err(e) => return Self::unreadable("input", format!("is not JSON: {e}")),
        };
        Self::from_value(value)
    }

    /// Reads `value` as a `T`, naming the field of the first problem.
    pub fn from_value(value: serde_json::Value) -> Self {
        match serde_path_to_error::deserialize::<_, T>(value) {
            Ok(t) => Self::Read(t),
            Err(e) => {
                let path = e.path().to_string();
                let rule = e.inner().to_string();
                // serde says "missing field `x`" of the object that lacks it; name `x` itself.
                if let Some(name) = rule.strip_prefix("missing field `").and_then(|r| r.strip_suffix('`')) {
                    let field = if path == "." { name.to_owned() } else { format!("{path}.{name}") };
                    return Self::unreadable(field, "is required");
                }
                Self::unreadable(if path == "." { "input".to_owned() } else { path }, rule)
            }
        }
    }

    fn unreadable(field: impl Into<String>, rule: impl Into<String>) -> Self {
        Self::Unreadable(Unreadable { field: field.into(), rule: rule.into() })
    }
}

/// The SDK's JSON payload encoding, and its encoding of "no value".
const JSON: &[u8] = b"json/plain";
const NULL: &[u8] = b"binary/null";

impl<T: DeserializeOwned> TemporalDeserializable for Received<T> {
    fn from_payload(_: &SerializationContext<'_>, payload: Payload) -> Result<Self, PayloadConversionError> {
        Ok(match payload.metadata.get("encoding").map(Vec::as_slice) {
            Some(JSON) => Self::from_json(&payload.data),
            Some(NULL) | None if payload.data.is_empty() => Self::unreadable("input", "is required: pass the request as JSON"),
            Some(other) => Self::unreadable("input", format!("must be JSON (json/plain), not {}", String::from_utf8_lossy(other))),
            None => Self::unreadable("input", "must be JSON (json/plain); it carries no encoding"),
        })
    }

    fn from_payloads(ctx: &SerializationContext<'_>, payloads: Vec<Payload>) -> Result<Self, PayloadConversionError> {
        match payloads.len() {
            0 => Ok(Self::unreadable("input", "is required: pass the request as JSON")),
            1 => Self::from_payload(ctx, payloads.into_iter().next().expect("one payload")),
            n => Ok(Self::unreadable("input", format!("must be one JSON value, not {n} arguments"))),
        }
    }
}

/// Serializes as the `T` it holds, so a `Received<T>` goes over the wire exactly like a `T`.
impl<T: Serialize> Serialize for Received<T> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Self::Read(t) => t.serialize(s),
            Self::Unreadable(why) => Err(serde::ser::Error::custom(format!("an unreadable input is not sent again ({why})"))),
        }
    }
}

#[cfg(test)]
mod tests {
    use serde::Deserialize;

    use super::*;

    #[derive(Debug, PartialEq, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Req {
        service: String,
        inner: Inner,
        #[serde(default)]
        steps: Vec<u32>,
    }

    #[derive(Debug, PartialEq, Deserialize)]
    struct Inner {
        digest: String,
    }

    fn read(json: &str) -> Result<Req, String> {
        Received::<Req>::from_json(json.as_bytes()).into_result().map_err(|e| e.to_string())
    }

    #[test]
    fn a_good_input_reads() {
        let req = read(r#"{"service": "s", "inner": {"digest": "d"}}"#).unwrap();
        assert_eq!(req, Req { service: "s".into(), inner: Inner { digest: "d".into() }, steps: vec![] });
    }

    #[test]
    fn what_cannot_be_read_names_its_field() {
        assert_eq!(read(r#"{"inner": {"digest": "d"}}"#).unwrap_err(), "service: is required");
        assert_eq!(read(r#"{"service": "s", "inner": {}}"#).unwrap_err(), "inner.digest: is required");
        let wrong = read(r#"{"service": "s", "inner": {"digest": 7}}"#).unwrap_err();
        assert!(wrong.starts_with("inner.digest: invalid type: integer `7`"), "{wrong}");
        let step = read(r#"{"service": "s", "inner": {"digest": "d"}, "steps": [1, "x"]}"#).unwrap_err();
        assert!(step.starts_with("steps[1]: invalid type"), "{step}");
        assert!(read(r#"{"service": "s", "inner": {"digest": "d"}, "servce": 1}"#).unwrap_err().starts_with("servce: unknown field `servce`"));
        assert!(read("{not json").unwrap_err().starts_with("input: is not JSON"));
        assert!(read(r#""just a string""#).unwrap_err().starts_with("input: invalid type"));
    }

    #[test]
    fn payloads_that_are_not_one_json_value_are_named_as_the_input() {
        let none = Received::<Req>::from_payloads(&ctx(), vec![]).unwrap();
        assert_eq!(none.into_result().unwrap_err().to_string(), "input: is required: pass the request as JSON");
        let null = Payload { metadata: [("encoding".to_owned(), NULL.to_vec())].into(), data: vec![], ..Default::default() };
        assert_eq!(Received::<Req>::from_payloads(&ctx(), vec![null]).unwrap().into_result().unwrap_err().field, "input");
        let json = Payload { metadata: [("encoding".to_owned(), JSON.to_vec())].into(), data: br#"{"service":"s","inner":{"digest":"d"}}"#.to_vec(), ..Default::default() };
        assert!(Received::<Req>::from_payloads(&ctx(), vec![json]).unwrap().into_result().is_ok());
    }

    fn ctx() -> SerializationContext<'static> {
        static DATA: temporalio_common::data_converters::SerializationContextData = temporalio_common::data_converters::SerializationContextData::None;
        static CONVERTER: std::sync::LazyLock<temporalio_common::data_converters::PayloadConverter> = std::sync::LazyLock::new(Default::default);
        SerializationContext::new(&DATA, &CONVERTER)
    }
}
