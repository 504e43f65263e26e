//! ODK's audit log on the device: the events of a draft's form sessions, kept in the store
//! (`audit_events`, never synced) until the draft is finalized: the form session writes them
//! into the draft's `audit` attachment as ODK's `audit.csv`, and finalizing deletes them.

use rusqlite::{params, OptionalExtension};

use super::{Result, Store};
use crate::crdt::DocId;

/// The most events one draft keeps. Answers to the same question in a row are one event
/// (its end moves), so only a very long session reaches this; later events are dropped.
pub const MAX_AUDIT_EVENTS: i64 = 10_000;

/// One event of a form session, as a row of `audit.csv`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditEvent {
    /// ODK's event name: `form start`, `form resume`, `question`, `add repeat`,
    /// `delete repeat`, `constraint error`, `form finalize`.
    pub event: String,
    /// The node (`/data/group/question`, repeat rows as `[n]`), or empty.
    pub node: String,
    /// Milliseconds since the Unix epoch.
    pub start_ms: i64,
    pub end_ms: Option<i64>,
    /// With the form's `track-changes=true`: the answer before and after.
    pub old_value: Option<String>,
    pub new_value: Option<String>,
    /// With `identify-user=true`: who filled the form (the device's username setting).
    pub user: Option<String>,
}

impl Store {
    /// Appends an event to a draft's audit log. A `question` event on the node of the event
    /// before it extends that event instead (its end and new value move), as one visit to a
    /// question is one event in ODK's log. Past [`MAX_AUDIT_EVENTS`] nothing is added.
    pub fn append_audit_event(&self, doc: DocId, e: &AuditEvent) -> Result<()> {
        let mut inner = self.lock();
        let tx = inner.conn.transaction()?;
        let key = doc.0.as_bytes().as_slice();
        let last: Option<(i64, String, String)> = tx
            .query_row(
                "SELECT seq, event, node FROM audit_events WHERE doc = ?1 ORDER BY seq DESC LIMIT 1",
                [key],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .optional()?;
        match last {
            Some((seq, event, node)) if e.event == "question" && event == "question" && node == e.node => {
                tx.execute(
                    "UPDATE audit_events SET end_ms = ?2, new_value = ?3 WHERE seq = ?1",
                    params![seq, e.end_ms, e.new_value],
                )?;
            }
            _ => {
                let count: i64 =
                    tx.query_row("SELECT count(*) FROM audit_events WHERE doc = ?1", [key], |r| r.get(0))?;
                if count < MAX_AUDIT_EVENTS {
                    tx.execute(
                        "INSERT INTO audit_events (doc, event, node, start_ms, end_ms, old_value, new_value, user)
                         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                        params![key, e.event, e.node, e.start_ms, e.end_ms, e.old_value, e.new_value, e.user],
                    )?;
                }
            }
        }
        tx.commit()?;
        Ok(())
    }

    /// A draft's audit events, oldest first.
    pub fn audit_events(&self, doc: DocId) -> Result<Vec<AuditEvent>> {
        let inner = self.lock();
        let mut stmt = inner.conn.prepare_cached(
            "SELECT event, node, start_ms, end_ms, old_value, new_value, user
             FROM audit_events WHERE doc = ?1 ORDER BY seq",
        )?;
        let rows = stmt.query_map([doc.0.as_bytes().as_slice()], |r| {
            Ok(AuditEvent {
                event: r.get(0)?,
                node: r.get(1)?,
                start_ms: r.get(2)?,
                end_ms: r.get(3)?,
                old_value: r.get(4)?,
                new_value: r.get(5)?,
                user: r.get(6)?,
            })
        })?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// Whether a draft has any audit event (a session opened it before).
    pub fn has_audit_events(&self, doc: DocId) -> Result<bool> {
        let inner = self.lock();
        let found: i64 = inner.conn.query_row(
            "SELECT EXISTS (SELECT 1 FROM audit_events WHERE doc = ?1)",
            [doc.0.as_bytes().as_slice()],
            |r| r.get(0),
        )?;
        Ok(found != 0)
    }
}

/// The events as ODK's `audit.csv`: `event,node,start,end`, then `old-value,new-value` when
/// changes are tracked and `user` when the user is identified (RFC 4180 quoting).
pub fn audit_csv(events: &[AuditEvent], track_changes: bool, identify_user: bool) -> String {
    let mut out = String::from("event,node,start,end");
    if track_changes {
        out.push_str(",old-value,new-value");
    }
    if identify_user {
        out.push_str(",user");
    }
    out.push('\n');
    for e in events {
        let mut cells: Vec<String> = vec![
            e.event.clone(),
            e.node.clone(),
            e.start_ms.to_string(),
            e.end_ms.map(|t| t.to_string()).unwrap_or_default(),
        ];
        if track_changes {
            cells.push(e.old_value.clone().unwrap_or_default());
            cells.push(e.new_value.clone().unwrap_or_default());
        }
        if identify_user {
            cells.push(e.user.clone().unwrap_or_default());
        }
        let line: Vec<String> = cells.iter().map(|c| csv_cell(c)).collect();
        out.push_str(&line.join(","));
        out.push('\n');
    }
    out
}

fn csv_cell(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_csv_quotes_what_needs_quoting() {
        let e = AuditEvent {
            event: "question".into(),
            node: "/data/name".into(),
            start_ms: 1,
            end_ms: Some(2),
            old_value: Some("a, \"b\"".into()),
            new_value: Some("line\nbreak".into()),
            user: Some("ana".into()),
        };
        assert_eq!(
            audit_csv(std::slice::from_ref(&e), true, true),
            "event,node,start,end,old-value,new-value,user\nquestion,/data/name,1,2,\"a, \"\"b\"\"\",\"line\nbreak\",ana\n"
        );
        assert_eq!(audit_csv(&[e], false, false), "event,node,start,end\nquestion,/data/name,1,2\n");
    }
}
