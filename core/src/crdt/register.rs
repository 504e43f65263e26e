//! The reference semantics of a field: a multi-value register over a small history tree.
//!
//! Every op ever applied is kept. An op is a *leaf* when no known op names it in `seen`; the
//! winner is the greatest leaf by `(hlc, replica)` and every other leaf is an open conflict. The
//! leaf set depends only on which ops are known, so applying ops in any order, any number of
//! times, gives the same state.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value;

use super::{Change, DocId, FieldPath, OpId};

/// One field's ops and the set of op ids that some known op has seen.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Register {
    ops: BTreeMap<OpId, Value>,
    seen: BTreeSet<OpId>,
}

impl Register {
    /// Applies one op; returns `false` when it was already known (and nothing changed).
    pub fn apply(&mut self, id: OpId, value: Value, seen: &[OpId]) -> bool {
        if self.ops.contains_key(&id) {
            return false;
        }
        self.ops.insert(id, value);
        self.seen.extend(seen.iter().copied());
        true
    }

    /// The values nobody has seen and replaced, greatest first.
    pub fn leaves(&self) -> Vec<(OpId, &Value)> {
        self.ops.iter().rev().filter(|(id, _)| !self.seen.contains(id)).map(|(id, v)| (*id, v)).collect()
    }

    /// The current value: the greatest leaf.
    pub fn winner(&self) -> Option<(OpId, &Value)> {
        self.ops.iter().rev().find(|(id, _)| !self.seen.contains(id)).map(|(id, v)| (*id, v))
    }

    /// Leaves other than the winner: concurrent values waiting for review.
    pub fn conflicts(&self) -> Vec<(OpId, &Value)> {
        let mut leaves = self.leaves();
        if !leaves.is_empty() {
            leaves.remove(0);
        }
        leaves
    }

    pub fn op_count(&self) -> usize {
        self.ops.len()
    }
}

/// Documents as maps of registers: the whole state of a replica, in memory.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Replica {
    pub docs: BTreeMap<DocId, BTreeMap<FieldPath, Register>>,
}

impl Replica {
    /// Applies every op of a change; returns how many were new.
    pub fn apply(&mut self, change: &Change) -> usize {
        let id = change.op_id();
        let doc = self.docs.entry(change.doc).or_default();
        change
            .ops
            .iter()
            .filter(|op| doc.entry(op.field.clone()).or_default().apply(id, op.value.clone(), &op.seen))
            .count()
    }

    pub fn register(&self, doc: DocId, field: &FieldPath) -> Option<&Register> {
        self.docs.get(&doc)?.get(field)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crdt::{Hlc, ReplicaId};
    use serde_json::json;

    fn id(hlc: u64, r: ReplicaId) -> OpId {
        OpId { hlc: Hlc(hlc), replica: r }
    }

    #[test]
    fn an_edit_that_saw_the_value_replaces_it_without_conflict() {
        let (a, b) = (ReplicaId::random(), ReplicaId::random());
        let mut reg = Register::default();
        reg.apply(id(1, a), json!("x"), &[]);
        reg.apply(id(2, b), json!("y"), &[id(1, a)]);
        assert_eq!(reg.winner().unwrap().1, &json!("y"));
        assert!(reg.conflicts().is_empty());
    }

    #[test]
    fn concurrent_edits_keep_the_loser_as_a_conflict_in_any_order() {
        let (a, b) = (ReplicaId::random(), ReplicaId::random());
        let ops = [
            (id(1, a), json!(1), vec![]),
            (id(5, a), json!(2), vec![id(1, a)]),
            (id(3, b), json!(3), vec![id(1, a)]),
        ];
        let mut forward = Register::default();
        let mut backward = Register::default();
        for (i, v, s) in &ops {
            forward.apply(*i, v.clone(), s);
        }
        for (i, v, s) in ops.iter().rev() {
            backward.apply(*i, v.clone(), s);
            backward.apply(*i, v.clone(), s);
        }
        assert_eq!(forward, backward);
        assert_eq!(forward.winner().unwrap().1, &json!(2));
        assert_eq!(forward.conflicts(), vec![(id(3, b), &json!(3))]);
    }

    #[test]
    fn a_value_seen_before_it_arrives_never_becomes_a_leaf() {
        let (a, b) = (ReplicaId::random(), ReplicaId::random());
        let mut reg = Register::default();
        reg.apply(id(9, b), json!("new"), &[id(4, a)]);
        reg.apply(id(4, a), json!("old"), &[]);
        assert_eq!(reg.leaves().len(), 1);
        assert_eq!(reg.winner().unwrap().1, &json!("new"));
    }
}
