//! uniffi bindings over `tejido-core`, namespace `tejido`: the device API for the Android and
//! iOS apps (and Python). This crate only converts types and errors; the work is in the core.

mod error;
mod store;
mod values;

pub use error::TejidoError;
pub use store::{
    Answer, DocumentConflicts, FieldConflict, Submission, SubmissionFilter, SubmissionStatus,
    SubmissionSummary, TejidoStore,
};
pub use values::AnswerValue;

uniffi::setup_scaffolding!("tejido");

/// The version of the Tejido library.
#[uniffi::export]
pub fn tejido_version() -> String {
    env!("CARGO_PKG_VERSION").to_owned()
}
