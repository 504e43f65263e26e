//! Conversions between the data model and SQLite columns.

use rusqlite::types::ValueRef;
use uuid::Uuid;

use crate::crdt::{DocId, Hlc, OpId, ReplicaId};

/// HLCs are u64; SQLite integers are i64. Flipping the top bit maps one onto the other while
/// keeping the order, so `ORDER BY hlc` stays right for every timestamp.
pub fn hlc_to_sql(h: Hlc) -> i64 {
    (h.0 ^ (1 << 63)) as i64
}

pub fn hlc_from_sql(v: i64) -> Hlc {
    Hlc((v as u64) ^ (1 << 63))
}

pub fn uuid_from_sql(v: ValueRef<'_>) -> rusqlite::Result<Uuid> {
    let bytes =
        v.as_blob().map_err(|e| rusqlite::Error::FromSqlConversionFailure(0, v.data_type(), Box::new(e)))?;
    Uuid::from_slice(bytes)
        .map_err(|e| rusqlite::Error::FromSqlConversionFailure(0, v.data_type(), Box::new(e)))
}

pub fn doc_from_row(row: &rusqlite::Row<'_>, idx: usize) -> rusqlite::Result<DocId> {
    uuid_from_sql(row.get_ref(idx)?).map(DocId)
}

pub fn op_id_from_row(row: &rusqlite::Row<'_>, hlc_idx: usize, replica_idx: usize) -> rusqlite::Result<OpId> {
    Ok(OpId {
        hlc: hlc_from_sql(row.get(hlc_idx)?),
        replica: ReplicaId(uuid_from_sql(row.get_ref(replica_idx)?)?),
    })
}

pub fn json_from_sql(text: &str) -> rusqlite::Result<serde_json::Value> {
    serde_json::from_str(text)
        .map_err(|e| rusqlite::Error::FromSqlConversionFailure(0, rusqlite::types::Type::Text, Box::new(e)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hlc_mapping_keeps_order_across_the_whole_range() {
        let values = [0u64, 1, 1 << 62, (1 << 63) - 1, 1 << 63, u64::MAX - 1, u64::MAX];
        for w in values.windows(2) {
            assert!(hlc_to_sql(Hlc(w[0])) < hlc_to_sql(Hlc(w[1])));
            assert_eq!(hlc_from_sql(hlc_to_sql(Hlc(w[0]))), Hlc(w[0]));
        }
    }
}
