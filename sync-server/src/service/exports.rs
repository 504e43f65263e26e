//! Exports of a form's submissions from the read model: the service reads a page at a time on
//! its task and hands the rows over a bounded channel to [`crate::export::export`], which runs
//! on a blocking thread and writes to any `Write` (a file for the CLI, a channel feeding the HTTP
//! body for the pages and the API). Memory holds a page or two, whatever the count.

use std::collections::BTreeMap;
use std::io::Write;

use uuid::Uuid;

use super::read_model::{parse_cursor, MAX_LIST_LIMIT};
use super::Service;
use crate::export::{ExportError, ExportMeta, ExportOptions, ExportRow, ExportSummary};
use crate::storage::{Result, StorageError, SubmissionFilter};

/// Rows waiting between the reader and the writer.
const QUEUE: usize = 1_000;

impl Service {
    /// Exports the form's submissions (deleted ones left out; approved ones only under the
    /// review gate) with the form's newest version's columns, into `out`.
    /// A place for one more export, held until the export ends; `Busy` when
    /// [`super::limits::MAX_CONCURRENT_EXPORTS`] are streaming already.
    pub fn export_permit(&self) -> Result<tokio::sync::OwnedSemaphorePermit> {
        self.exports.clone().try_acquire_owned().map_err(|_| {
            StorageError::Busy(format!(
                "{} exports are running; try again when one has finished",
                super::limits::MAX_CONCURRENT_EXPORTS
            ))
        })
    }

    pub async fn export<W: Write + Send + 'static>(
        &self,
        project: Uuid,
        form_id: &str,
        options: ExportOptions,
        out: W,
    ) -> Result<ExportSummary> {
        let Some(form) = self.latest_form(project, form_id).await? else {
            return Err(StorageError::NotFound(format!("form {form_id} in this project")));
        };
        let mut filter = SubmissionFilter {
            project,
            form_id: Some(form_id.to_owned()),
            hide_deleted: true,
            ..SubmissionFilter::default()
        };
        if self.approved_only(project).await? {
            filter.review_state = Some("approved".into());
        }
        let devices: BTreeMap<Uuid, String> = self
            .list_devices(project)
            .await?
            .into_iter()
            .map(|d| (d.id, d.name.clone().unwrap_or_else(|| format!("{} {}", d.role.as_str(), d.id))))
            .collect();
        let (tx, mut rx) = tokio::sync::mpsc::channel::<std::result::Result<ExportRow, StorageError>>(QUEUE);
        let writing = tokio::task::spawn_blocking(move || {
            crate::export::export(&form, std::iter::from_fn(|| rx.blocking_recv()), &options, out)
        });
        let reading = async {
            loop {
                let page = match self.list_submissions(&filter, MAX_LIST_LIMIT).await {
                    Ok(p) => p,
                    Err(e) => {
                        let _ = tx.send(Err(e)).await;
                        return;
                    }
                };
                for row in page.rows {
                    let answers = crate::export::Answers::from_json(&row.answers).unwrap_or_default();
                    let item = ExportRow {
                        doc: row.doc,
                        meta: ExportMeta {
                            author: row.author_device.and_then(|a| devices.get(&a).cloned()),
                            received_ms: row.received_ms,
                            review_state: Some(row.review_state),
                            form_version: Some(row.form_version),
                        },
                        answers,
                    };
                    if tx.send(Ok(item)).await.is_err() {
                        return; // The writer stopped (an error, or the client went away).
                    }
                }
                match page.next.as_deref().and_then(parse_cursor) {
                    Some(after) => filter.after = Some(after),
                    None => return,
                }
            }
        };
        reading.await;
        drop(tx);
        match writing.await {
            Ok(Ok(summary)) => Ok(summary),
            Ok(Err(ExportError::Source(e))) => Err(StorageError::Other(format!("the export stopped: {e}"))),
            Ok(Err(e)) => Err(StorageError::Other(format!("the export failed: {e}"))),
            Err(e) => Err(StorageError::Other(format!("the export task failed: {e}"))),
        }
    }
}

/// A `Write` that hands what it is given to an async receiver in chunks (for an HTTP body),
/// waiting when the receiver is behind: the export runs at the client's pace.
pub struct ChannelWriter {
    tx: tokio::sync::mpsc::Sender<std::io::Result<bytes::Bytes>>,
    buf: Vec<u8>,
}

const CHUNK: usize = 64 * 1024;

impl ChannelWriter {
    pub fn new(tx: tokio::sync::mpsc::Sender<std::io::Result<bytes::Bytes>>) -> ChannelWriter {
        ChannelWriter { tx, buf: Vec::with_capacity(CHUNK) }
    }

    fn send(&mut self) -> std::io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let chunk = bytes::Bytes::from(std::mem::replace(&mut self.buf, Vec::with_capacity(CHUNK)));
        self.tx
            .blocking_send(Ok(chunk))
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::BrokenPipe, "the client went away"))
    }
}

impl Write for ChannelWriter {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        self.buf.extend_from_slice(data);
        if self.buf.len() >= CHUNK {
            self.send()?;
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.send()
    }
}

impl Drop for ChannelWriter {
    fn drop(&mut self) {
        let _ = self.send();
    }
}
