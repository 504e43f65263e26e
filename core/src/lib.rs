//! Tejido's core: the form model and expression language, the conflict-free merge, the device
//! store and the sync client. Nothing here knows about HTTP servers or FFI; `tejido-server`
//! and `tejido-ffi` build on this crate.

pub mod crdt;
pub mod doc;
pub mod form;
pub mod store;
pub mod sync;

pub use crdt::{Change, Collection, DocId, FieldOp, FieldPath, Hlc, HybridClock, OpId, ReplicaId, WallClock};
pub use store::{Store, StoreError};
