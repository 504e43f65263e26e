//! A project's settings: the review gate (exports and the read API hold to approved
//! submissions, as SurveyCTO's review workflow does) and each form's indicator definitions,
//! checked against the form before they are kept; and the indicators computed over the read
//! model in one streaming pass.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde_json::Value;
use tejido_core::form::Form;
use uuid::Uuid;

use super::Service;
use crate::indicators::{IndicatorSet, IndicatorTable};
use crate::storage::{Result, StorageError, SubmissionFilter};

const REVIEW_GATE: &str = "review_gate";
const APPROVED_ONLY: &str = "approved_only";
/// The longest indicator definition kept.
pub const MAX_INDICATORS_BYTES: usize = 256 * 1024;
/// Cells built from fewer submissions are suppressed.
pub const MIN_CELL: u64 = 5;

fn indicators_key(form_id: &str) -> String {
    format!("indicators/{form_id}")
}

impl Service {
    /// Whether exports and the read API hold to approved submissions only.
    pub async fn approved_only(&self, project: Uuid) -> Result<bool> {
        Ok(self.read().await?.project_setting(project, REVIEW_GATE).await?.as_deref() == Some(APPROVED_ONLY))
    }

    pub async fn set_approved_only(&self, project: Uuid, on: bool) -> Result<()> {
        let mut tx = self.write().await?;
        if tx.project(project).await?.is_none() {
            return Err(StorageError::NotFound(format!("project {project}")));
        }
        tx.set_project_setting(project, REVIEW_GATE, on.then_some(APPROVED_ONLY)).await?;
        tx.commit().await
    }

    /// A web app user's change of the review gate: only the project's admins may make it.
    pub async fn set_approved_only_as(
        &self,
        account: &super::accounts::Account,
        project: Uuid,
        on: bool,
    ) -> Result<()> {
        match account.role_in(project) {
            Some(crate::storage::UserRole::Admin) => self.set_approved_only(project, on).await,
            Some(_) => {
                Err(StorageError::Forbidden("only the project's admins may change its settings".into()))
            }
            None => Err(StorageError::NotFound(format!("project {project}"))),
        }
    }

    /// The newest published version of a form.
    /// Reads forms' media files from `blobs`, so that the choices of `…_from_file` questions
    /// show their labels on the pages and in exports.
    pub fn read_media_from(&self, blobs: std::sync::Arc<dyn crate::blobs::BlobBytes>) {
        self.forms.read_media_from(blobs);
    }

    pub async fn latest_form(&self, project: Uuid, form_id: &str) -> Result<Option<Arc<Form>>> {
        let mut tx = self.read().await?;
        let versions = tx.form_versions(project).await?;
        let Some((_, version)) = versions.into_iter().find(|(f, _)| f == form_id) else { return Ok(None) };
        self.forms.get(tx.as_mut(), project, form_id, &version).await
    }

    /// Keeps a form's indicator definitions, once they check against its newest version.
    pub async fn set_indicators(&self, project: Uuid, form_id: &str, definition: &str) -> Result<()> {
        if definition.len() > MAX_INDICATORS_BYTES {
            return Err(StorageError::TooLarge(format!(
                "an indicator definition has at most {MAX_INDICATORS_BYTES} bytes"
            )));
        }
        let Some(form) = self.latest_form(project, form_id).await? else {
            return Err(StorageError::NotFound(format!("form {form_id} in this project")));
        };
        IndicatorSet::from_json(definition, &form).map_err(|e| StorageError::Invalid(e.to_string()))?;
        let mut tx = self.write().await?;
        tx.set_project_setting(project, &indicators_key(form_id), Some(definition)).await?;
        tx.commit().await
    }

    /// A form's indicator definitions, checked against its newest version (`None` when it has
    /// none).
    pub async fn indicators(&self, project: Uuid, form_id: &str) -> Result<Option<IndicatorSet>> {
        let text = self.read().await?.project_setting(project, &indicators_key(form_id)).await?;
        let Some(text) = text else { return Ok(None) };
        let Some(form) = self.latest_form(project, form_id).await? else { return Ok(None) };
        IndicatorSet::from_json(&text, &form).map(Some).map_err(|e| StorageError::Invalid(e.to_string()))
    }

    /// Computes a form's indicators over its submissions (deleted ones left out; approved ones
    /// only under the review gate), reading the read model a page at a time on this task while
    /// a blocking thread computes: memory holds a page or two, whatever the count.
    pub async fn compute_indicators(
        &self,
        project: Uuid,
        form_id: &str,
    ) -> Result<Option<Vec<IndicatorTable>>> {
        let Some(set) = self.indicators(project, form_id).await? else { return Ok(None) };
        let mut filter = SubmissionFilter {
            project,
            form_id: Some(form_id.to_owned()),
            hide_deleted: true,
            ..SubmissionFilter::default()
        };
        if self.approved_only(project).await? {
            filter.review_state = Some("approved".into());
        }
        let (tx, mut rx) = tokio::sync::mpsc::channel::<BTreeMap<String, Value>>(1_000);
        let computing = tokio::task::spawn_blocking(move || {
            set.compute(std::iter::from_fn(|| rx.blocking_recv()), MIN_CELL)
        });
        loop {
            let page = self.list_submissions(&filter, super::read_model::MAX_LIST_LIMIT).await?;
            for row in &page.rows {
                let mut answers: BTreeMap<String, Value> =
                    serde_json::from_str(&row.answers).unwrap_or_default();
                answers.insert(tejido_core::doc::meta::FORM.to_owned(), Value::String(row.form_id.clone()));
                if tx.send(answers).await.is_err() {
                    break;
                }
            }
            match page.next.as_deref().and_then(super::read_model::parse_cursor) {
                Some(after) => filter.after = Some(after),
                None => break,
            }
        }
        drop(tx);
        computing.await.map(Some).map_err(|e| StorageError::Other(format!("the indicators failed: {e}")))
    }
}
