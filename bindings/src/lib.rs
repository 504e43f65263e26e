//! uniffi bindings over `tejido-core`, namespace `tejido`: the device API for the Android and
//! iOS apps (and Python). This crate only converts types and errors; the work is in the core.

mod error;
mod forms;
mod store;
mod sync;
mod values;

pub use error::TejidoError;
pub use forms::{FormIssue, IssueKind, Question, QuestionChoice, TejidoForm, TejidoFormSession};
pub use store::{
    Answer, DocumentConflicts, FieldConflict, ReviewComment, ReviewEvent, ReviewHistory, Submission,
    SubmissionFilter, SubmissionStatus, SubmissionSummary, TejidoStore,
};
pub use sync::{Enrollment, SyncCancellation, SyncListener, SyncPhase, SyncProgress, SyncSummary};
pub use values::AnswerValue;

uniffi::setup_scaffolding!("tejido");

/// The version of the Tejido library.
#[uniffi::export]
pub fn tejido_version() -> String {
    env!("CARGO_PKG_VERSION").to_owned()
}
