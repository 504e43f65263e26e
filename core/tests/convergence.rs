//! Convergence of the merge over real stores: random writes on 2–5 replicas whose clocks are
//! wrong in every direction, random partial deliveries with reordering and duplicates, then a
//! full exchange. Every replica (and a fresh one) must hold identical state, equal to the
//! in-memory reference register, and every value that no writer saw and replaced must still be
//! visible as the winner or an open conflict.
#![allow(clippy::unwrap_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use proptest::prelude::*;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use serde_json::json;
use tejido_core::crdt::register::Replica as Model;
use tejido_core::store::{FieldState, StoreOptions};
use tejido_core::{Change, Collection, DocId, FieldPath, OpId, Store, WallClock};

const YEAR_MS: i64 = 365 * 24 * 3600 * 1000;
const FIELDS: [&str; 2] = ["household/size", "visit/outcome"];

#[derive(Debug)]
struct SkewedClock {
    base: Arc<AtomicU64>,
    skew_ms: i64,
}

impl WallClock for SkewedClock {
    fn now_ms(&self) -> u64 {
        (self.base.load(Ordering::SeqCst) as i64 + self.skew_ms).max(0) as u64
    }
}

#[derive(Debug, Clone)]
enum Action {
    Create { replica: usize },
    Write { replica: usize, doc: usize, field: usize, value: u8 },
    Resolve { replica: usize, doc: usize, field: usize },
    Deliver { to: usize, picks: Vec<usize> },
    Tick { ms: u16 },
}

fn action(replicas: usize) -> impl Strategy<Value = Action> {
    prop_oneof![
        1 => (0..replicas).prop_map(|replica| Action::Create { replica }),
        6 => (0..replicas, 0..2usize, 0..FIELDS.len(), any::<u8>())
            .prop_map(|(replica, doc, field, value)| Action::Write { replica, doc, field, value }),
        1 => (0..replicas, 0..2usize, 0..FIELDS.len()).prop_map(|(replica, doc, field)| Action::Resolve { replica, doc, field }),
        3 => (0..replicas, prop::collection::vec(any::<usize>(), 0..12)).prop_map(|(to, picks)| Action::Deliver { to, picks }),
        1 => any::<u16>().prop_map(|ms| Action::Tick { ms }),
    ]
}

fn scenario() -> impl Strategy<Value = (Vec<i64>, Vec<Action>, u64)> {
    (2usize..=5).prop_flat_map(|n| {
        let skews = prop::collection::vec(
            prop_oneof![
                Just(0i64),
                Just(-YEAR_MS),
                Just(YEAR_MS),
                -5_000i64..5_000,
                Just(3 * 24 * 3600 * 1000)
            ],
            n,
        );
        (skews, prop::collection::vec(action(n), 1..80), any::<u64>())
    })
}

/// A field's visible state, comparable across replicas.
fn visible(state: &FieldState) -> (OpId, serde_json::Value, Vec<(OpId, serde_json::Value)>) {
    let mut conflicts: Vec<_> = state.conflicts.iter().map(|c| (c.op, c.value.clone())).collect();
    conflicts.sort_by_key(|c| std::cmp::Reverse(c.0));
    (state.op, state.value.clone(), conflicts)
}

type Snapshot =
    BTreeMap<DocId, BTreeMap<FieldPath, (OpId, serde_json::Value, Vec<(OpId, serde_json::Value)>)>>;

fn snapshot(store: &Store, docs: &[DocId]) -> Snapshot {
    docs.iter()
        .map(|d| {
            let doc = store.read_document(*d).unwrap();
            (*d, doc.fields.iter().map(|(f, s)| (f.clone(), visible(s))).collect())
        })
        .collect()
}

fn run((skews, actions, seed): (Vec<i64>, Vec<Action>, u64)) -> Result<(), TestCaseError> {
    let mut rng = StdRng::seed_from_u64(seed);
    let base = Arc::new(AtomicU64::new(1_750_000_000_000));
    let stores: Vec<Store> = skews
        .iter()
        .map(|&skew_ms| {
            let wall_clock = Arc::new(SkewedClock { base: base.clone(), skew_ms });
            Store::open_in_memory_with(StoreOptions { wall_clock, create: true }).unwrap()
        })
        .collect();
    let mut log: Vec<Change> = Vec::new();
    let mut docs: Vec<DocId> = Vec::new();
    // Ops some writer had on screen when it replaced them, by (doc, field).
    let mut replaced: BTreeSet<(DocId, String, OpId)> = BTreeSet::new();

    let drain = |store: &Store, log: &mut Vec<Change>| {
        let pending = store.pending_changes(1000).unwrap();
        let seqs: Vec<i64> = pending.iter().map(|p| p.seq).collect();
        log.extend(pending.into_iter().map(|p| p.change));
        store.acknowledge(&seqs).unwrap();
    };

    for action in actions {
        match action {
            Action::Create { replica } => {
                let doc =
                    stores[replica].create_document(Collection::Entity, &[("name", json!("site"))]).unwrap();
                docs.push(doc);
                drain(&stores[replica], &mut log);
            }
            Action::Write { replica, doc, field, .. } | Action::Resolve { replica, doc, field }
                if docs.get(doc).is_some() =>
            {
                let value = if let Action::Write { value, .. } = action { Some(value) } else { None };
                let store = &stores[replica];
                let doc = docs[doc];
                let Ok(current) = store.read_document(doc) else { continue };
                let field = FIELDS[field];
                let state = current.fields.iter().find(|(f, _)| f.as_str() == field).map(|(_, s)| s.clone());
                let resolving = value.is_none();
                if resolving && state.as_ref().map(|s| s.conflicts.is_empty()).unwrap_or(true) {
                    continue;
                }
                if let Some(state) = state {
                    replaced.insert((doc, field.to_owned(), state.op));
                    for c in &state.conflicts {
                        if resolving || c.op.replica == store.replica_id() {
                            replaced.insert((doc, field.to_owned(), c.op));
                        }
                    }
                }
                if resolving {
                    store.resolve_conflict(doc, field, json!("resolved")).unwrap();
                } else {
                    store.set_answer(doc, field, json!(value)).unwrap();
                }
                drain(store, &mut log);
            }
            Action::Write { .. } | Action::Resolve { .. } => {}
            Action::Deliver { to, picks } => {
                if log.is_empty() {
                    continue;
                }
                let batch: Vec<Change> = picks.iter().map(|p| log[p % log.len()].clone()).collect();
                stores[to].apply_remote(&batch).unwrap();
            }
            Action::Tick { ms } => {
                base.fetch_add(u64::from(ms), Ordering::SeqCst);
            }
        }
    }

    // Full exchange: every replica and a fresh one receive everything, shuffled, with
    // duplicates, in several batches.
    let fresh = Store::open_in_memory().unwrap();
    let mut model = Model::default();
    for change in &log {
        model.apply(change);
    }
    for store in stores.iter().chain(std::iter::once(&fresh)) {
        let mut all: Vec<Change> = log.iter().chain(log.iter().take(log.len() / 3)).cloned().collect();
        all.shuffle(&mut rng);
        let split = if all.is_empty() { 0 } else { rng.random_range(0..=all.len()) };
        store.apply_remote(&all[..split]).unwrap();
        store.apply_remote(&all[split..]).unwrap();
    }

    let expected = snapshot(&fresh, &docs);
    for (i, store) in stores.iter().enumerate() {
        prop_assert_eq!(&snapshot(store, &docs), &expected, "replica {} diverged", i);
        prop_assert!(store.check_integrity().unwrap().is_empty());
    }
    // The store agrees with the reference register, field by field.
    for (doc, fields) in &expected {
        for (field, (op, value, conflicts)) in fields {
            let reg = model.register(*doc, field).unwrap();
            let (w_op, w_value) = reg.winner().unwrap();
            prop_assert_eq!((w_op, w_value), (*op, value));
            let model_conflicts: Vec<_> = reg.conflicts().into_iter().map(|(o, v)| (o, v.clone())).collect();
            prop_assert_eq!(&model_conflicts, conflicts);
        }
    }
    // Nothing is lost: every op that no writer saw and replaced is visible.
    for change in &log {
        for op in &change.ops {
            let key = (change.doc, op.field.to_string(), change.op_id());
            let (w, _, conflicts) = &expected[&change.doc][&op.field];
            let shown = *w == change.op_id() || conflicts.iter().any(|(o, _)| *o == change.op_id());
            prop_assert_eq!(shown, !replaced.contains(&key), "op {} of field {}", change.op_id(), op.field);
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]
    #[test]
    fn replicas_converge_and_keep_every_concurrent_value(s in scenario()) {
        run(s)?;
    }
}
