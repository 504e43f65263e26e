//! Identities, operations and changes: what replicas write, store and exchange.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use uuid::Uuid;

use super::Hlc;

/// A device store or the server: every writer has its own UUID.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ReplicaId(pub Uuid);

impl ReplicaId {
    pub fn random() -> ReplicaId {
        ReplicaId(Uuid::new_v4())
    }
}

impl fmt::Display for ReplicaId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// A document: a submission, a shared-list entity or a comment.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct DocId(pub Uuid);

impl DocId {
    /// A new, time-ordered document id.
    pub fn new() -> DocId {
        DocId(Uuid::now_v7())
    }
}

impl Default for DocId {
    fn default() -> Self {
        DocId::new()
    }
}

impl fmt::Display for DocId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl FromStr for DocId {
    type Err = uuid::Error;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Uuid::parse_str(s).map(DocId)
    }
}

/// Which kind of document a change belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Collection {
    Submission,
    Entity,
    Comment,
    /// A published form definition, distributed to devices.
    Form,
}

impl Collection {
    pub fn as_str(self) -> &'static str {
        match self {
            Collection::Submission => "submission",
            Collection::Entity => "entity",
            Collection::Comment => "comment",
            Collection::Form => "form",
        }
    }

    pub fn parse(s: &str) -> Option<Collection> {
        Some(match s {
            "submission" => Collection::Submission,
            "entity" => Collection::Entity,
            "comment" => Collection::Comment,
            "form" => Collection::Form,
            _ => return None,
        })
    }
}

/// The path of an answer inside a document: `household/size`, or for a repeat row, addressed by
/// the row's UUID, `members/0190a3…/age`. Paths starting with `_` hold metadata.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(transparent)]
pub struct FieldPath(String);

/// Why a string is not a field path. Never contains the string itself beyond its length.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FieldPathError {
    #[error("a field path must not be empty")]
    Empty,
    #[error("a field path may be at most {max} bytes long (got {len})")]
    TooLong { len: usize, max: usize },
    #[error("a field path may have at most {max} segments")]
    TooDeep { max: usize },
    #[error("segment {index} of the field path is empty")]
    EmptySegment { index: usize },
    #[error("segment {index} of the field path contains a character other than letters, digits, '_', '-', '.' or ':'")]
    BadCharacter { index: usize },
}

impl FieldPath {
    pub const MAX_LEN: usize = 512;
    pub const MAX_DEPTH: usize = 16;

    pub fn parse(s: &str) -> Result<FieldPath, FieldPathError> {
        if s.is_empty() {
            return Err(FieldPathError::Empty);
        }
        if s.len() > Self::MAX_LEN {
            return Err(FieldPathError::TooLong { len: s.len(), max: Self::MAX_LEN });
        }
        let mut depth = 0;
        for (index, seg) in s.split('/').enumerate() {
            depth += 1;
            if depth > Self::MAX_DEPTH {
                return Err(FieldPathError::TooDeep { max: Self::MAX_DEPTH });
            }
            if seg.is_empty() {
                return Err(FieldPathError::EmptySegment { index });
            }
            if !seg.chars().all(|c| c.is_alphanumeric() || matches!(c, '_' | '-' | '.' | ':')) {
                return Err(FieldPathError::BadCharacter { index });
            }
        }
        Ok(FieldPath(s.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Metadata (`_status`, `_review/state`, …) rather than an answer.
    pub fn is_meta(&self) -> bool {
        self.0.starts_with('_')
    }

    /// The path of a field inside a repeat row.
    pub fn in_row(repeat: &FieldPath, row: Uuid, field: &str) -> Result<FieldPath, FieldPathError> {
        FieldPath::parse(&format!("{}/{}/{}", repeat.0, row, field))
    }
}

impl fmt::Display for FieldPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for FieldPath {
    type Err = FieldPathError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        FieldPath::parse(s)
    }
}

impl<'de> Deserialize<'de> for FieldPath {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        FieldPath::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// The identity of an op: who wrote it, when. Within one field of one document it is unique.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct OpId {
    pub hlc: Hlc,
    pub replica: ReplicaId,
}

impl fmt::Display for OpId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}@{}", self.hlc.0, self.replica)
    }
}

impl FromStr for OpId {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (hlc, replica) = s.split_once('@').ok_or("an op id looks like <16 hex digits>@<uuid>")?;
        if hlc.len() != 16 {
            return Err("an op id's clock part has 16 hex digits".into());
        }
        let hlc = u64::from_str_radix(hlc, 16).map_err(|_| "an op id's clock part is hexadecimal")?;
        let replica = Uuid::parse_str(replica).map_err(|_| "an op id's replica part is a UUID")?;
        Ok(OpId { hlc: Hlc(hlc), replica: ReplicaId(replica) })
    }
}

// On the wire an op id is one string, `<hlc as 16 hex digits>@<replica>`: compact, and safe for
// JSON readers whose numbers are doubles (an HLC does not fit in 53 bits).
impl Serialize for OpId {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for OpId {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// One field's write inside a [`Change`]: the new value and what the writer had on screen.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FieldOp {
    pub field: FieldPath,
    pub value: serde_json::Value,
    /// The values of this field the writer saw and replaces (by op id); empty for a first answer.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub seen: Vec<OpId>,
}

/// The ops one local transaction wrote to one document, all stamped with the same
/// `(hlc, replica)`. The unit that logs store and the wire carries; the merge still decides
/// field by field.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Change {
    pub doc: DocId,
    pub collection: Collection,
    pub replica: ReplicaId,
    #[serde(with = "hlc_hex")]
    pub hlc: Hlc,
    pub ops: Vec<FieldOp>,
}

/// Why a change received from elsewhere is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChangeError {
    #[error("a change must write at least one field")]
    Empty,
    #[error("a change may write each field once; field {0} appears twice")]
    DuplicateField(String),
    #[error("op on field {field} claims to have seen an op that is not older than itself")]
    SeenNotOlder { field: String },
    #[error("a change may write at most {max} fields")]
    TooManyOps { max: usize },
}

impl Change {
    pub const MAX_OPS: usize = 10_000;

    /// The identity every op of this change carries.
    pub fn op_id(&self) -> OpId {
        OpId { hlc: self.hlc, replica: self.replica }
    }

    /// Structural checks for a change received from another replica: each field once, and no op
    /// claiming to have seen something from its own future (which would also allow cycles).
    pub fn validate(&self) -> Result<(), ChangeError> {
        if self.ops.is_empty() {
            return Err(ChangeError::Empty);
        }
        if self.ops.len() > Self::MAX_OPS {
            return Err(ChangeError::TooManyOps { max: Self::MAX_OPS });
        }
        let mut fields = std::collections::HashSet::with_capacity(self.ops.len());
        for op in &self.ops {
            if !fields.insert(op.field.as_str()) {
                return Err(ChangeError::DuplicateField(op.field.to_string()));
            }
            if op.seen.iter().any(|s| s.hlc >= self.hlc) {
                return Err(ChangeError::SeenNotOlder { field: op.field.to_string() });
            }
        }
        Ok(())
    }
}

pub(crate) mod hlc_hex {
    use super::Hlc;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(h: &Hlc, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&format_args!("{:016x}", h.0))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Hlc, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        if s.len() != 16 {
            return Err(serde::de::Error::custom("an hlc is 16 hex digits"));
        }
        u64::from_str_radix(&s, 16).map(Hlc).map_err(|_| serde::de::Error::custom("an hlc is 16 hex digits"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn field_paths_accept_names_and_row_ids_and_refuse_junk() {
        assert!(FieldPath::parse("household/size").is_ok());
        assert!(FieldPath::parse("members/0190a3b4-0000-7000-8000-000000000000/age").is_ok());
        assert!(FieldPath::parse("_review/state").unwrap().is_meta());
        assert_eq!(FieldPath::parse(""), Err(FieldPathError::Empty));
        assert_eq!(FieldPath::parse("a//b"), Err(FieldPathError::EmptySegment { index: 1 }));
        assert_eq!(FieldPath::parse("a b"), Err(FieldPathError::BadCharacter { index: 0 }));
        assert!(FieldPath::parse(&"x/".repeat(40)).is_err());
    }

    #[test]
    fn changes_round_trip_through_json_with_string_clocks() {
        let r = ReplicaId::random();
        let c = Change {
            doc: DocId::new(),
            collection: Collection::Submission,
            replica: r,
            hlc: Hlc(u64::MAX - 3),
            ops: vec![FieldOp {
                field: FieldPath::parse("a").unwrap(),
                value: serde_json::json!(3),
                seen: vec![OpId { hlc: Hlc(5), replica: r }],
            }],
        };
        let json = serde_json::to_string(&c).unwrap();
        assert!(json.contains("\"hlc\":\"fffffffffffffffc\""));
        assert_eq!(serde_json::from_str::<Change>(&json).unwrap(), c);
        assert!(serde_json::from_str::<Change>(&json.replace("\"a\"", "\"a//b\"")).is_err());
    }

    #[test]
    fn validation_refuses_self_seen_and_duplicates() {
        let r = ReplicaId::random();
        let f = FieldPath::parse("a").unwrap();
        let mut c = Change {
            doc: DocId::new(),
            collection: Collection::Submission,
            replica: r,
            hlc: Hlc(10),
            ops: vec![FieldOp {
                field: f.clone(),
                value: 1.into(),
                seen: vec![OpId { hlc: Hlc(10), replica: r }],
            }],
        };
        assert!(matches!(c.validate(), Err(ChangeError::SeenNotOlder { .. })));
        c.ops[0].seen.clear();
        c.ops.push(c.ops[0].clone());
        assert!(matches!(c.validate(), Err(ChangeError::DuplicateField(_))));
        c.ops.clear();
        assert_eq!(c.validate(), Err(ChangeError::Empty));
    }
}
