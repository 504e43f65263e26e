//! The conflict-free data model: hybrid logical clocks, operations and changes, and the
//! per-field multi-value register whose leaves decide winners and open conflicts.
//!
//! The in-memory [`register::Register`] is the reference semantics; the device store
//! (`crate::store`) and the server implement the same rules in SQL and are tested against it.

mod hlc;
mod op;
pub mod register;

pub use hlc::{Hlc, HybridClock, SystemClock, WallClock, FAR_FUTURE_MS};
pub use op::{Change, ChangeError, Collection, DocId, FieldOp, FieldPath, FieldPathError, OpId, ReplicaId};
