//! A submission's answers, flattened for the export: every field path and every scalar value in
//! one string, and one sorted index of entries into it. A row of 40 answers is two allocations
//! instead of the 80 or so of a `BTreeMap<String, Value>`, which the export would otherwise
//! spend freeing again for every submission; it is read straight from the read model's JSON text
//! ([`Answers::from_json`]) without building a `Value` for any scalar.

use std::fmt;

use serde::de::{DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;
use serde_json::Value;

/// What kind of value an entry holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Null,
    True,
    False,
    /// The number as JSON writes it.
    Number,
    String,
    /// An array or an object, as compact JSON text.
    Json,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Entry {
    key: (usize, usize),
    kind: Kind,
    value: (usize, usize),
}

/// One answer, borrowed from [`Answers`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer<'a> {
    Null,
    Bool(bool),
    /// A number, as JSON text (`12`, `-3.5`, `1e21`).
    Number(&'a str),
    String(&'a str),
    /// An array or an object, as compact JSON text.
    Json(&'a str),
}

impl Answer<'_> {
    /// The answer as a `serde_json::Value` (for the rare cells that need one).
    pub fn to_value(self) -> Value {
        match self {
            Answer::Null => Value::Null,
            Answer::Bool(b) => Value::Bool(b),
            Answer::Number(t) => serde_json::from_str(t).unwrap_or_else(|_| Value::String(t.to_owned())),
            Answer::String(s) => Value::String(s.to_owned()),
            Answer::Json(t) => serde_json::from_str(t).unwrap_or_else(|_| Value::String(t.to_owned())),
        }
    }
}

/// Field path to value, sorted by path, each path once (a later value replaces an earlier one).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Answers {
    text: String,
    entries: Vec<Entry>,
}

impl Answers {
    pub fn new() -> Answers {
        Answers::default()
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    fn append(&mut self, s: &str) -> (usize, usize) {
        let start = self.text.len();
        self.text.push_str(s);
        (start, self.text.len())
    }

    fn slice(&self, (start, end): (usize, usize)) -> &str {
        self.text.get(start..end).unwrap_or_default()
    }

    fn key_of(&self, e: &Entry) -> &str {
        self.slice(e.key)
    }

    fn answer_of(&self, e: &Entry) -> Answer<'_> {
        match e.kind {
            Kind::Null => Answer::Null,
            Kind::True => Answer::Bool(true),
            Kind::False => Answer::Bool(false),
            Kind::Number => Answer::Number(self.slice(e.value)),
            Kind::String => Answer::String(self.slice(e.value)),
            Kind::Json => Answer::Json(self.slice(e.value)),
        }
    }

    /// Places an entry whose key was appended last: at the end when the keys come sorted (the
    /// usual case: the read model writes them sorted), else where it sorts, replacing an entry
    /// of the same key.
    fn place(&mut self, entry: Entry) {
        let key = self.key_of(&entry);
        match self.entries.last() {
            Some(last) if self.key_of(last) >= key => {
                match self.entries.binary_search_by(|e| self.key_of(e).cmp(key)) {
                    Ok(i) => self.entries[i] = entry,
                    Err(i) => self.entries.insert(i, entry),
                }
            }
            _ => self.entries.push(entry),
        }
    }

    fn push_scalar(&mut self, key: &str, kind: Kind, value: &str) {
        let key = self.append(key);
        let value = self.append(value);
        self.place(Entry { key, kind, value });
    }

    /// Sets `key` to `value`.
    pub fn insert(&mut self, key: &str, value: &Value) {
        match value {
            Value::Null => self.push_scalar(key, Kind::Null, ""),
            Value::Bool(b) => self.push_scalar(key, if *b { Kind::True } else { Kind::False }, ""),
            Value::Number(n) => self.push_scalar(key, Kind::Number, &n.to_string()),
            Value::String(s) => self.push_scalar(key, Kind::String, s),
            other => self.push_scalar(key, Kind::Json, &other.to_string()),
        }
    }

    /// Sets `key` to the text `value` (the bench's and tests' shortcut for `insert` of a string).
    pub fn insert_str(&mut self, key: &str, value: &str) {
        self.push_scalar(key, Kind::String, value);
    }

    /// The answers of a JSON object of field path to value. Anything but an object is an error.
    pub fn from_json(text: &str) -> Result<Answers, serde_json::Error> {
        let mut answers = Answers::new();
        let mut de = serde_json::Deserializer::from_str(text);
        de.deserialize_map(ObjectVisitor(&mut answers))?;
        de.end()?;
        Ok(answers)
    }

    /// The answer to `key`.
    pub fn get(&self, key: &str) -> Option<Answer<'_>> {
        let i = self.entries.binary_search_by(|e| self.key_of(e).cmp(key)).ok()?;
        self.entries.get(i).map(|e| self.answer_of(e))
    }

    /// The key of the `i`th answer in key order (empty past the end).
    pub(crate) fn key_at(&self, i: usize) -> &str {
        self.entries.get(i).map(|e| self.key_of(e)).unwrap_or_default()
    }

    /// The `i`th answer in key order.
    pub(crate) fn answer_at(&self, i: usize) -> Option<Answer<'_>> {
        self.entries.get(i).map(|e| self.answer_of(e))
    }

    /// The index of the first answer whose key sorts at or after `start`, among the answers
    /// from `lo` to `hi` (exclusive).
    pub(crate) fn position_in(&self, lo: usize, hi: usize, start: &str) -> usize {
        let hi = hi.min(self.entries.len());
        let lo = lo.min(hi);
        lo + self
            .entries
            .get(lo..hi)
            .unwrap_or_default()
            .partition_point(|e| compare(self.key_of(e).as_bytes(), start.as_bytes()).is_lt())
    }

    /// Every answer, sorted by key.
    pub fn iter(&self) -> impl Iterator<Item = (&str, Answer<'_>)> + '_ {
        self.entries.iter().map(|e| (self.key_of(e), self.answer_of(e)))
    }

    /// The answers whose key sorts at or after `start`, in order.
    pub fn from_key<'s>(&'s self, start: &str) -> impl Iterator<Item = (&'s str, Answer<'s>)> + 's {
        let i = self.entries.partition_point(|e| self.key_of(e) < start);
        self.entries.get(i..).unwrap_or_default().iter().map(|e| (self.key_of(e), self.answer_of(e)))
    }
}

/// `a.cmp(b)`, eight bytes at a time, inline: the export compares field paths tens of times per
/// submission, and paths share long prefixes, where a call to `memcmp` costs more than the
/// comparison (`tests::compare_is_the_order_of_bytes`).
#[inline]
pub(crate) fn compare(a: &[u8], b: &[u8]) -> std::cmp::Ordering {
    let n = a.len().min(b.len());
    let (a8, b8) = (a.get(..n).unwrap_or_default(), b.get(..n).unwrap_or_default());
    let mut i = 0;
    while i + 8 <= n {
        let (x, y) = (word(a8, i), word(b8, i));
        if x != y {
            return x.cmp(&y);
        }
        i += 8;
    }
    while i < n {
        let (x, y) = (a8.get(i), b8.get(i));
        if x != y {
            return x.cmp(&y);
        }
        i += 1;
    }
    a.len().cmp(&b.len())
}

/// The eight bytes of `s` from `i`, big-endian (so that words order as their bytes do).
#[inline(always)]
fn word(s: &[u8], i: usize) -> u64 {
    let mut w = [0u8; 8];
    if let Some(bytes) = s.get(i..i + 8) {
        w.copy_from_slice(bytes);
    }
    u64::from_be_bytes(w)
}

/// `a == b`, as [`compare`] does it.
#[inline]
pub(crate) fn equal(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && compare(a, b).is_eq()
}

impl<K: AsRef<str>> FromIterator<(K, Value)> for Answers {
    fn from_iter<T: IntoIterator<Item = (K, Value)>>(iter: T) -> Answers {
        let mut answers = Answers::new();
        for (k, v) in iter {
            answers.insert(k.as_ref(), &v);
        }
        answers
    }
}

/// Reads the top-level object straight into [`Answers`].
struct ObjectVisitor<'a>(&'a mut Answers);

impl<'de> Visitor<'de> for ObjectVisitor<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an object of field path to value")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        while let Some(key) = map.next_key_seed(KeySeed(self.0))? {
            map.next_value_seed(ValueSeed { answers: self.0, key })?;
        }
        Ok(())
    }
}

/// Appends a key to the text, returning where it is.
struct KeySeed<'a>(&'a mut Answers);

impl<'de> DeserializeSeed<'de> for KeySeed<'_> {
    type Value = (usize, usize);

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(usize, usize), D::Error> {
        d.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for KeySeed<'_> {
    type Value = (usize, usize);

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a field path")
    }

    fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<(usize, usize), E> {
        Ok(self.0.append(s))
    }
}

/// Appends a value to the text and places its entry.
struct ValueSeed<'a> {
    answers: &'a mut Answers,
    key: (usize, usize),
}

impl ValueSeed<'_> {
    fn put(self, kind: Kind, value: &str) {
        let value = self.answers.append(value);
        self.answers.place(Entry { key: self.key, kind, value });
    }
}

impl<'de> DeserializeSeed<'de> for ValueSeed<'_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for ValueSeed<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an answer")
    }

    fn visit_unit<E>(self) -> Result<(), E> {
        self.put(Kind::Null, "");
        Ok(())
    }

    fn visit_bool<E>(self, b: bool) -> Result<(), E> {
        self.put(if b { Kind::True } else { Kind::False }, "");
        Ok(())
    }

    fn visit_i64<E>(self, n: i64) -> Result<(), E> {
        self.put(Kind::Number, &serde_json::Number::from(n).to_string());
        Ok(())
    }

    fn visit_u64<E>(self, n: u64) -> Result<(), E> {
        self.put(Kind::Number, &serde_json::Number::from(n).to_string());
        Ok(())
    }

    fn visit_f64<E>(self, n: f64) -> Result<(), E> {
        match serde_json::Number::from_f64(n) {
            Some(n) => self.put(Kind::Number, &n.to_string()),
            None => self.put(Kind::Null, ""),
        }
        Ok(())
    }

    fn visit_str<E>(self, s: &str) -> Result<(), E> {
        self.put(Kind::String, s);
        Ok(())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<(), A::Error> {
        let v = Value::deserialize(serde::de::value::SeqAccessDeserializer::new(seq))?;
        self.put(Kind::Json, &v.to_string());
        Ok(())
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<(), A::Error> {
        let v = Value::deserialize(serde::de::value::MapAccessDeserializer::new(map))?;
        self.put(Kind::Json, &v.to_string());
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::collections::BTreeMap;

    use proptest::prelude::*;
    use serde_json::Value;

    use super::{Answer, Answers};

    fn value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::from),
            any::<u64>().prop_map(Value::from),
            (-1e12f64..1e12).prop_map(Value::from),
            ".{0,12}".prop_map(Value::String),
        ];
        leaf.prop_recursive(2, 8, 3, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..3).prop_map(Value::Array),
                prop::collection::btree_map("[a-z]{1,3}", inner, 0..3)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    proptest! {
        /// From JSON text or inserted one by one in any order, the answers read back as the map
        /// a `BTreeMap<String, Value>` would hold: sorted, each key once, the last value winning.
        #[test]
        fn answers_read_back_as_the_map_they_were_made_from(
            pairs in prop::collection::vec(("[a-c/]{0,4}", value()), 0..20)
        ) {
            let map: BTreeMap<String, Value> = pairs.iter().cloned().collect();
            let inserted: Answers = pairs.iter().cloned().collect();
            let parsed = Answers::from_json(&serde_json::to_string(&map).unwrap()).unwrap();
            for answers in [&inserted, &parsed] {
                let back: BTreeMap<String, Value> =
                    answers.iter().map(|(k, a)| (k.to_owned(), a.to_value())).collect();
                prop_assert_eq!(&back, &map);
                let keys: Vec<&str> = answers.iter().map(|(k, _)| k).collect();
                let sorted: Vec<&str> = map.keys().map(String::as_str).collect();
                prop_assert_eq!(keys, sorted);
                for (k, v) in &map {
                    prop_assert_eq!(answers.get(k).map(|a| a.to_value()), Some(v.clone()));
                }
            }
        }
    }

    proptest! {
        /// The word-at-a-time comparison is the byte order `[u8]::cmp` gives, at every length
        /// and at every position of the first difference.
        #[test]
        fn compare_is_the_order_of_bytes(
            common in prop::collection::vec(any::<u8>(), 0..30),
            a in prop::collection::vec(prop_oneof![Just(b'a'), Just(b'b'), any::<u8>()], 0..20),
            b in prop::collection::vec(prop_oneof![Just(b'a'), Just(b'b'), any::<u8>()], 0..20),
        ) {
            let a = [common.as_slice(), &a].concat();
            let b = [common.as_slice(), &b].concat();
            prop_assert_eq!(super::compare(&a, &b), a.cmp(&b));
            prop_assert_eq!(super::compare(&b, &a), b.cmp(&a));
            prop_assert_eq!(super::equal(&a, &b), a == b);
            prop_assert!(super::equal(&a, &a));
        }
    }

    #[test]
    fn scalars_keep_their_json_text_and_strings_are_unescaped() {
        let a = Answers::from_json(r#"{"b":"x\"y\u00e9","a":-3.5,"c":[1,"two"],"d":true,"e":null,"f":12}"#)
            .unwrap();
        assert_eq!(a.get("a"), Some(Answer::Number("-3.5")));
        assert_eq!(a.get("b"), Some(Answer::String("x\"yé")));
        assert_eq!(a.get("c"), Some(Answer::Json(r#"[1,"two"]"#)));
        assert_eq!(a.get("d"), Some(Answer::Bool(true)));
        assert_eq!(a.get("e"), Some(Answer::Null));
        assert_eq!(a.get("f"), Some(Answer::Number("12")));
        assert_eq!(a.get("g"), None);
        let after: Vec<&str> = a.from_key("c").map(|(k, _)| k).collect();
        assert_eq!(after, ["c", "d", "e", "f"]);
    }

    #[test]
    fn anything_but_an_object_is_refused() {
        for bad in ["[]", "3", "\"x\"", "{", "{\"a\":}", "{} {}", ""] {
            assert!(Answers::from_json(bad).is_err(), "{bad}");
        }
        assert_eq!(Answers::from_json("{}").unwrap(), Answers::new());
    }
}
