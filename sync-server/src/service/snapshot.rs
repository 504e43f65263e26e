//! A document's current state as snapshot changes, in wire JSON: its open values grouped by op
//! id, with the winner of each field naming every op of the field that is not a leaf, so a
//! device that gets only the snapshot still knows which late ops have already been replaced.
//! Values are spliced in as stored (valid JSON), not parsed and re-encoded.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use tejido_core::{Collection, OpId};
use uuid::Uuid;

use crate::storage::{Result, StorageError, StoredOp};

/// One field's ops as a snapshot needs them.
#[derive(Default)]
struct FieldHistory<'a> {
    /// Open values (their JSON text), greatest first: the winner first.
    leaves: Vec<(OpId, &'a str)>,
    /// Every op (known or a placeholder) that some op has seen.
    seen: Vec<OpId>,
}

/// The snapshot of one document from its stored ops (by field, then greatest op first).
pub fn changes(doc: Uuid, collection: Collection, ops: &[StoredOp]) -> Result<Vec<String>> {
    let mut fields: Vec<(&str, FieldHistory<'_>)> = Vec::new();
    for op in ops {
        if fields.last().is_none_or(|(f, _)| *f != op.field) {
            fields.push((&op.field, FieldHistory::default()));
        }
        if let Some((_, entry)) = fields.last_mut() {
            match &op.value {
                Some(v) if op.leaf => entry.leaves.push((op.id, v)),
                _ => entry.seen.push(op.id),
            }
        }
    }
    // op id -> the ops' JSON objects
    let mut by_op: BTreeMap<OpId, Vec<String>> = BTreeMap::new();
    for (field, history) in &fields {
        let field_json = serde_json::to_string(field)
            .map_err(|e| StorageError::Other(format!("cannot encode a field path: {e}")))?;
        for (i, (id, value)) in history.leaves.iter().enumerate() {
            let mut op = String::with_capacity(field_json.len() + value.len() + 24);
            op.push_str("{\"field\":");
            op.push_str(&field_json);
            op.push_str(",\"value\":");
            op.push_str(value);
            if i == 0 && !history.seen.is_empty() {
                op.push_str(",\"seen\":[");
                for (j, s) in history.seen.iter().enumerate() {
                    if j > 0 {
                        op.push(',');
                    }
                    let _ = write!(op, "\"{s}\"");
                }
                op.push(']');
            }
            op.push('}');
            by_op.entry(*id).or_default().push(op);
        }
    }
    Ok(by_op
        .into_iter()
        .map(|(id, ops)| {
            let mut c = String::with_capacity(ops.iter().map(|o| o.len() + 1).sum::<usize>() + 160);
            let _ = write!(
                c,
                "{{\"doc\":\"{doc}\",\"collection\":\"{}\",\"replica\":\"{}\",\"hlc\":\"{:016x}\",\"ops\":[",
                collection.as_str(),
                id.replica,
                id.hlc.0
            );
            for (i, o) in ops.iter().enumerate() {
                if i > 0 {
                    c.push(',');
                }
                c.push_str(o);
            }
            c.push_str("]}");
            c
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use tejido_core::{Change, Hlc, ReplicaId};

    use super::*;

    #[test]
    fn the_winner_names_every_replaced_op_and_values_are_spliced_as_stored() {
        let (a, b) = (ReplicaId(Uuid::from_u128(1)), ReplicaId(Uuid::from_u128(2)));
        let old = OpId { hlc: Hlc(5), replica: a };
        let new = OpId { hlc: Hlc(9), replica: b };
        let other = OpId { hlc: Hlc(7), replica: a };
        let ops = vec![
            StoredOp { field: "f".into(), id: new, value: Some("\"new\"".into()), leaf: true },
            StoredOp { field: "f".into(), id: old, value: None, leaf: false },
            StoredOp { field: "g".into(), id: other, value: Some("{\"x\":[1,2]}".into()), leaf: true },
        ];
        let doc = Uuid::from_u128(3);
        let out = changes(doc, Collection::Entity, &ops).unwrap();
        assert_eq!(out.len(), 2, "one change per op id");
        let parsed: Vec<Change> = out.iter().map(|c| serde_json::from_str(c).unwrap()).collect();
        let f = parsed.iter().find(|c| c.op_id() == new).unwrap();
        assert_eq!(f.ops[0].seen, vec![old]);
        let g = parsed.iter().find(|c| c.op_id() == other).unwrap();
        assert_eq!(g.ops[0].value, serde_json::json!({"x": [1, 2]}));
    }
}
