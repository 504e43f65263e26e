//! Forms: the form model, XLSForm import, the expression language and form sessions.
//!
//! - [`model`]: [`Form`] and its parts, serialisable as JSON.
//! - [`import`]: XLSForm (.xlsx, .xls, .ods) to [`Form`], reporting every error at once.
//! - [`expr`]: the ODK XPath subset: parser, printer and evaluator.
//! - [`engine`]: a pure form engine over answers in memory, recomputing along a dependency graph.
//! - [`validate`]: [`Form::validate`], the one check (and the limits) every form passes.
//! - [`media`]: a form version's media files (CSV, XML, GeoJSON) read into rows.
//! - [`session`]: a [`FormSession`] over a draft in the device store.

pub mod engine;
pub mod expr;
pub mod import;
pub mod media;
pub mod model;
pub mod report;
pub mod session;
pub mod synthetic;
pub mod validate;

pub use engine::{Engine, Key, RowAction};
pub use import::{import_xlsform, import_xlsform_bytes, ImportError, ImportErrors};
pub use model::{Choice, EntityDeclaration, Form, Node, QuestionType, Settings, Translations};
pub use session::{ChoiceView, FormError, FormSession, QuestionView, ValidationError, ValidationKind};
pub use validate::{limits, FormInvalid};
