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

/// What the indicators were computed from (the log's end, the definition, the review gate)
/// and the tables, by (project, form).
pub(crate) type IndicatorCache =
    std::collections::HashMap<(Uuid, String), ((i64, Option<String>, Option<String>), Vec<IndicatorTable>)>;

/// Forms whose indicators are kept computed at most.
const MAX_CACHED_INDICATORS: usize = 64;

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
        // Every change to a submission, a review or a form version goes through the log, whose
        // end moves with each commit (writers commit one at a time on either backend): the
        // same end, definition and review gate give the same figures, so a page view between
        // two changes computes nothing.
        let key = {
            let mut tx = self.read().await?;
            let definition = tx.project_setting(project, &indicators_key(form_id)).await?;
            let gate = tx.project_setting(project, REVIEW_GATE).await?;
            (tx.log_end().await?, definition, gate)
        };
        if let Some(tables) = self.lock_indicators().get(&(project, form_id.to_owned())) {
            if tables.0 == key {
                return Ok(Some(tables.1.clone()));
            }
        }
        let tables = self.compute_indicators_now(project, form_id).await?;
        if let Some(t) = &tables {
            let mut cache = self.lock_indicators();
            if cache.len() >= MAX_CACHED_INDICATORS {
                cache.clear();
            }
            cache.insert((project, form_id.to_owned()), (key, t.clone()));
        }
        Ok(tables)
    }

    fn lock_indicators(&self) -> std::sync::MutexGuard<'_, IndicatorCache> {
        self.indicators.lock().unwrap_or_else(|e| e.into_inner())
    }

    async fn compute_indicators_now(
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
