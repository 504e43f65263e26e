//! The pages, as maud templates: everything interpolated is escaped by maud (answers, labels
//! and names are untrusted).

use std::collections::BTreeMap;

use maud::{html, Markup, PreEscaped, DOCTYPE};
use tejido_core::form::model::translate;
use tejido_core::form::{Form, Node, QuestionType};
use uuid::Uuid;

use super::i18n::{Key, Lang};
use super::{ListQuery, WebUser};
use crate::service::read_model::{Flag, SubmissionDetail, SubmissionPage};
use crate::storage::{Device, Project, UserRole, PENDING_REVIEW};

const STYLE: &str = "
body{font-family:system-ui,sans-serif;margin:0;color:#1d2327;background:#f6f7f7}
header{background:#264653;color:#fff;padding:.6rem 1rem;display:flex;gap:1rem;align-items:center;flex-wrap:wrap}
header a{color:#fff}header form{margin-left:auto}main{padding:1rem;max-width:80rem}
table{border-collapse:collapse;background:#fff;width:100%;font-size:.92rem}
th,td{border:1px solid #dcdcde;padding:.35rem .5rem;text-align:left;vertical-align:top}
th{background:#f0f0f1}form.filters{display:flex;flex-wrap:wrap;gap:.5rem;align-items:end;margin-bottom:1rem}
label{display:flex;flex-direction:column;font-size:.85rem}input,select,textarea,button{font:inherit;padding:.3rem}
button{background:#2a9d8f;color:#fff;border:0;border-radius:3px;padding:.35rem .8rem;cursor:pointer}
.flag{background:#e76f51;color:#fff;border-radius:3px;padding:0 .3rem;margin-right:.2rem;font-size:.8rem}
.state-approved{color:#1a7f37}.state-has_issues{color:#b42318}.state-pending{color:#6b6b6b}
.conflict{background:#fff4e5}.muted{color:#6b6b6b;font-size:.85rem}section{margin-bottom:1.5rem}
.error{background:#fde7e9;padding:.5rem;border-left:4px solid #b42318}
";

fn layout(lang: Lang, title: &str, user: Option<&WebUser>, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang=(lang.code()) {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · Tejido" }
                style { (PreEscaped(STYLE)) }
            }
            body {
                header {
                    strong { a href="/projects" { (lang.t(Key::AppName)) } }
                    a href={ "?lang=" (lang.other().code()) } { (lang.t(Key::Language)) }
                    @if let Some(user) = user {
                        form method="post" action="/logout" {
                            input type="hidden" name="csrf" value=(user.session.csrf);
                            span { (user.account.user.email) " " }
                            button type="submit" id="logout" { (lang.t(Key::SignOut)) }
                        }
                    }
                }
                main { (body) }
            }
        }
    }
}

/// A page with one message (errors).
pub fn message(lang: Lang, text: &str) -> String {
    layout(
        lang,
        text,
        None,
        html! { p.error { (text) } p { a href="/projects" { (lang.t(Key::Projects)) } } },
    )
    .into_string()
}

pub fn login(lang: Lang, csrf: &str, error: Option<&str>) -> Markup {
    layout(
        lang,
        lang.t(Key::SignIn),
        None,
        html! {
            h1 { (lang.t(Key::SignIn)) }
            @if let Some(e) = error { p.error role="alert" { (e) } }
            form method="post" action="/login" {
                input type="hidden" name="csrf" value=(csrf);
                label { (lang.t(Key::Email)) input type="email" name="email" required autocomplete="username"; }
                label { (lang.t(Key::Password)) input type="password" name="password" required autocomplete="current-password"; }
                p { button type="submit" id="sign-in" { (lang.t(Key::SignIn)) } }
            }
        },
    )
}

pub fn projects(user: &WebUser, projects: &[(Project, UserRole, bool)]) -> Markup {
    let lang = user.lang;
    layout(
        lang,
        lang.t(Key::Projects),
        Some(user),
        html! {
            h1 { (lang.t(Key::Projects)) }
            @if projects.is_empty() { p { (lang.t(Key::NoProjects)) } }
            ul {
                @for (p, role, gate) in projects {
                    li {
                        a href={ "/projects/" (p.id) "/submissions" } { (p.name) }
                        " · " a href={ "/projects/" (p.id) "/submissions?review=pending" } { (lang.t(Key::ReviewQueue)) }
                        " · " a href={ "/projects/" (p.id) "/indicators" } { (lang.t(Key::Indicators)) }
                        span.muted { " (" (role.as_str()) ")" }
                        @if *gate { " " span.flag { (lang.t(Key::ApprovedOnlyOn)) } }
                        @if *role == UserRole::Admin {
                            form.settings method="post" action={ "/projects/" (p.id) "/settings" } {
                                input type="hidden" name="csrf" value=(user.session.csrf);
                                label style="flex-direction:row;gap:.4rem" {
                                    input type="checkbox" name="approved_only" checked[*gate];
                                    (lang.t(Key::ApprovedOnly))
                                }
                                button type="submit" { (lang.t(Key::Save)) }
                            }
                        }
                    }
                }
            }
        },
    )
}

fn state_label(lang: Lang, state: &str) -> &'static str {
    match state {
        "approved" => lang.t(Key::Approved),
        "has_issues" => lang.t(Key::HasIssues),
        _ => lang.t(Key::Pending),
    }
}

fn flag_label(lang: Lang, flag: Flag) -> &'static str {
    lang.t(match flag {
        Flag::Conflicts => Key::FlagConflicts,
        Flag::EditedAfterDelete => Key::FlagEditedAfterDelete,
        Flag::ClockFarOff => Key::FlagClockFarOff,
        Flag::ShortInterview => Key::FlagShortInterview,
        Flag::RequiredMissing => Key::FlagRequiredMissing,
    })
}

fn when(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map_or_else(String::new, |t| t.format("%Y-%m-%d %H:%M UTC").to_string())
}

fn device_label(d: &Device) -> String {
    d.name.clone().unwrap_or_else(|| format!("{} {}", d.role.as_str(), &d.id.simple().to_string()[..8]))
}

/// The query string of a list page with another cursor.
fn list_link(project: Uuid, q: &ListQuery, cursor: &str) -> String {
    let mut pairs: Vec<(&str, &str)> = Vec::new();
    for (k, v) in [
        ("form", &q.form),
        ("review", &q.review),
        ("author", &q.author),
        ("from", &q.from),
        ("to", &q.to),
        ("flag", &q.flag),
        ("field", &q.field),
        ("value", &q.value),
    ] {
        if let Some(v) = v.as_deref().filter(|v| !v.is_empty()) {
            pairs.push((k, v));
        }
    }
    pairs.push(("cursor", cursor));
    let query: Vec<String> = pairs.iter().map(|(k, v)| format!("{k}={}", urlencode(v))).collect();
    format!("/projects/{project}/submissions?{}", query.join("&"))
}

fn urlencode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => out.push(b as char),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

pub fn submissions(
    user: &WebUser,
    project: &Project,
    q: &ListQuery,
    list: &SubmissionPage,
    devices: &[Device],
    forms: &[(String, String, std::sync::Arc<Form>)],
) -> Markup {
    let lang = user.lang;
    let sel = |v: &Option<String>, x: &str| v.as_deref() == Some(x);
    let mut form_ids: Vec<&str> = forms.iter().map(|f| f.0.as_str()).collect();
    form_ids.dedup();
    let form_title = |id: &str| {
        forms.iter().find(|f| f.0 == id).map_or_else(|| id.to_owned(), |f| f.2.settings.title.clone())
    };
    let device_name = |id: Option<Uuid>| {
        id.and_then(|id| devices.iter().find(|d| d.id == id)).map_or_else(String::new, device_label)
    };
    layout(
        lang,
        lang.t(Key::Submissions),
        Some(user),
        html! {
            h1 { (project.name) " · " (lang.t(Key::Submissions)) }
            form.filters method="get" {
                label { (lang.t(Key::Form))
                    select name="form" {
                        option value="" { (lang.t(Key::Any)) }
                        @for id in &form_ids { option value=(id) selected[sel(&q.form, id)] { (form_title(id)) } }
                    }
                }
                label { (lang.t(Key::ReviewState))
                    select name="review" {
                        option value="" { (lang.t(Key::Any)) }
                        @for s in [PENDING_REVIEW, "approved", "has_issues"] {
                            option value=(s) selected[sel(&q.review, s)] { (state_label(lang, s)) }
                        }
                    }
                }
                label { (lang.t(Key::Author))
                    select name="author" {
                        option value="" { (lang.t(Key::Any)) }
                        @for d in devices { option value=(d.id) selected[sel(&q.author, &d.id.to_string())] { (device_label(d)) } }
                    }
                }
                label { (lang.t(Key::From)) input type="date" name="from" value=[q.from.as_deref()]; }
                label { (lang.t(Key::To)) input type="date" name="to" value=[q.to.as_deref()]; }
                label { (lang.t(Key::Flag))
                    select name="flag" {
                        option value="" { (lang.t(Key::Any)) }
                        @for f in Flag::ALL { option value=(f.name()) selected[sel(&q.flag, f.name())] { (flag_label(lang, f)) } }
                    }
                }
                label { (lang.t(Key::Question)) input type="text" name="field" size="12" value=[q.field.as_deref()]; }
                label { (lang.t(Key::Value)) input type="text" name="value" size="12" value=[q.value.as_deref()]; }
                button type="submit" id="filter" { (lang.t(Key::Filter)) }
            }
            @if !form_ids.is_empty() {
                details id="exports" {
                    summary { (lang.t(Key::Export)) }
                    @for id in &form_ids {
                        p {
                            (form_title(id)) ": "
                            @for (format, name) in [("csv", "CSV (zip)"), ("xlsx", "XLSX"), ("geojson", "GeoJSON")] {
                                a.export data-form=(id) data-format=(format)
                                    href={ "/projects/" (project.id) "/export?form=" (urlencode(id)) "&format=" (format) } { (name) }
                                " "
                            }
                            "· " (lang.t(Key::WithLabels)) ": "
                            @for (format, name) in [("csv", "CSV (zip)"), ("xlsx", "XLSX")] {
                                a.export-labels data-form=(id) data-format=(format)
                                    href={ "/projects/" (project.id) "/export?form=" (urlencode(id)) "&format=" (format) "&headers=labels&lang=" (lang.code()) } { (name) }
                                " "
                            }
                        }
                    }
                }
            }
            @if list.rows.is_empty() {
                p { (lang.t(Key::NoSubmissions)) }
            } @else {
                table id="submissions" {
                    thead { tr {
                        th { (lang.t(Key::Received)) } th { (lang.t(Key::Form)) } th { (lang.t(Key::Author)) }
                        th { (lang.t(Key::ReviewState)) } th { (lang.t(Key::Conflicts)) } th { (lang.t(Key::Flags)) }
                    } }
                    tbody {
                        @for r in &list.rows {
                            tr data-doc=(r.doc) {
                                td { a href={ "/submissions/" (r.doc) } { (when(r.received_ms)) } }
                                td { (form_title(&r.form_id)) " " span.muted { (r.form_version) } }
                                td { (device_name(r.author_device)) }
                                td class={ "state-" (r.review_state) } {
                                    (state_label(lang, &r.review_state))
                                    @if r.deleted { " · " (lang.t(Key::Deleted)) }
                                    @if !r.finalized { " · " (lang.t(Key::Draft)) }
                                }
                                td { @if r.conflicts > 0 { (r.conflicts) } }
                                td { @for f in Flag::of(r.flags) { span.flag { (flag_label(lang, f)) } } }
                            }
                        }
                    }
                }
                @if let Some(next) = &list.next {
                    p { a id="next" href=(list_link(project.id, q, next)) { (lang.t(Key::Next)) " →" } }
                }
            }
        },
    )
}

/// A value as a coordinator reads it: choice labels for selects, plain text for the rest.
fn show_value(form: Option<&Form>, node: Option<&Node>, language: &str, value: &serde_json::Value) -> String {
    let text = match value {
        serde_json::Value::String(s) => s.clone(),
        serde_json::Value::Null => String::new(),
        other => other.to_string(),
    };
    let (Some(form), Some(node)) = (form, node) else { return text };
    if !node.kind.is_select() {
        return text;
    }
    let Some(list) = form.choices_of(node) else { return text };
    let label = |name: &str| {
        list.iter()
            .find(|c| c.name == name)
            .and_then(|c| translate(&c.label, language))
            .map_or_else(|| name.to_owned(), str::to_owned)
    };
    if node.kind.is_multiple() {
        text.split_whitespace().map(label).collect::<Vec<_>>().join(", ")
    } else {
        label(&text)
    }
}

/// An answer as an edit box shows it.
fn edit_text(v: &serde_json::Value) -> String {
    match v {
        serde_json::Value::String(s) => s.clone(),
        serde_json::Value::Null => String::new(),
        other => other.to_string(),
    }
}

/// A point on a small map drawn without tiles: a graticule around the point, the point, and
/// its coordinates.
fn point_map(value: &serde_json::Value) -> Option<Markup> {
    let text = value.as_str()?;
    let mut parts = text.split_whitespace().map(|p| p.parse::<f64>());
    let (lat, lon) = (parts.next()?.ok()?, parts.next()?.ok()?);
    if !(-90.0..=90.0).contains(&lat) || !(-180.0..=180.0).contains(&lon) {
        return None;
    }
    Some(html! {
        svg.map width="160" height="120" viewBox="0 0 160 120" role="img" aria-label={ (format!("{lat:.5}, {lon:.5}")) } {
            rect width="160" height="120" fill="#e9f5f2" stroke="#9bbdb6" {}
            @for i in 1..4 {
                line x1=(i * 40) y1="0" x2=(i * 40) y2="120" stroke="#cfe3de" {}
                line x1="0" y1=(i * 30) x2="160" y2=(i * 30) stroke="#cfe3de" {}
            }
            circle cx="80" cy="60" r="5" fill="#e76f51" stroke="#fff" {}
            text x="4" y="114" font-size="10" fill="#264653" { (format!("{lat:.5}, {lon:.5}")) }
        }
    })
}

pub fn submission(user: &WebUser, d: &SubmissionDetail) -> Markup {
    let lang = user.lang;
    let s = &d.state;
    let form = d.form.as_deref();
    let language = form.map_or_else(String::new, |f| f.language(Some(lang.code())));
    let answers: BTreeMap<String, serde_json::Value> = serde_json::from_str(&s.answers).unwrap_or_default();
    let label = |n: &Node| translate(&n.label, &language).map_or_else(|| n.name.clone(), str::to_owned);
    let conflicts: Vec<&(String, Vec<crate::service::read_model::FieldValue>)> =
        d.fields.iter().filter(|(_, v)| v.iter().filter(|x| x.open).count() > 1).collect();
    // A field's node: strip repeat row ids from the path.
    let node_of = |field: &str| {
        let schema: Vec<&str> = field.split('/').filter(|p| Uuid::try_parse(p).is_err()).collect();
        form.and_then(|f| f.node_at(&schema.join("/")))
    };
    let in_repeat = |n: &Node| form.is_some_and(|f| enclosing_repeat(f, n).is_some());
    let title = form.map_or_else(|| s.form_id.clone(), |f| f.settings.title.clone());
    layout(
        lang,
        &title,
        Some(user),
        html! {
            p { a href={ "/projects/" (s.project) "/submissions" } { "← " (lang.t(Key::Submissions)) } }
            h1 { (title) " " span.muted { (s.form_version) } }
            p {
                span class={ "state-" (s.review_state) } id="review-state" { (state_label(lang, &s.review_state)) }
                " · " (lang.t(Key::Received)) " " (when(s.received_ms))
                @if let Some(a) = &d.author_name { " · " (a) }
                @if let Some(secs) = s.duration_s { " · " (lang.t(Key::Duration)) " " (secs) (lang.t(Key::Seconds)) }
                @if s.deleted { " · " strong { (lang.t(Key::Deleted)) } }
                " " @for f in Flag::of(s.flags) { span.flag { (flag_label(lang, f)) } }
            }
            @if !conflicts.is_empty() {
                section id="conflicts" {
                    h2 { (lang.t(Key::Conflicts)) }
                    @for (field, values) in &conflicts {
                        h3 { (node_of(field).map_or_else(|| field.clone(), label)) " " span.muted { (field) } }
                        table { tbody {
                            @for v in values.iter().filter(|v| v.open) {
                                tr.conflict {
                                    td { (v.value.as_ref().map_or_else(String::new, |x| show_value(form, node_of(field), &language, x))) }
                                    td { (v.writer) } td { (when(v.written_ms as i64)) }
                                    td {
                                        form method="post" action={ "/submissions/" (s.doc) "/resolve" } {
                                            input type="hidden" name="csrf" value=(user.session.csrf);
                                            input type="hidden" name="field" value=(field);
                                            input type="hidden" name="op" value=(v.op);
                                            button type="submit" class="keep" { (lang.t(Key::KeepThis)) }
                                        }
                                    }
                                }
                            }
                        } }
                    }
                }
            }
            section id="answers" {
                h2 { (lang.t(Key::Answers)) }
                table { tbody {
                    @for n in form.map_or(&[][..], |f| &f.nodes[..]) {
                        @if !n.kind.is_container() && !in_repeat(n) && n.kind != QuestionType::Note {
                            @if let Some(v) = answers.get(&n.path) {
                                tr data-field=(n.path) {
                                    th { (label(n)) }
                                    td {
                                        @if n.kind == QuestionType::Geopoint { @if let Some(m) = point_map(v) { (m) } }
                                        (answer_cell(form, s.doc, n, v, &language, &label))
                                        @if n.kind.is_shown() && !matches!(n.kind, QuestionType::Image | QuestionType::Geopoint) {
                                            details.edit {
                                                summary { (lang.t(Key::Edit)) }
                                                form method="post" action={ "/submissions/" (s.doc) "/edit" } {
                                                    input type="hidden" name="csrf" value=(user.session.csrf);
                                                    input type="hidden" name="field" value=(n.path);
                                                    input type="text" name="value" value=(edit_text(v));
                                                    button type="submit" { (lang.t(Key::Save)) }
                                                }
                                            }
                                        }
                                    }
                                }
                            }
                        }
                    }
                    @if form.is_none() {
                        @for (k, v) in &answers { tr { th { (k) } td { (show_value(None, None, "", v)) } } }
                    }
                } }
                @for r in form.map_or(&[][..], |f| &f.nodes[..]).iter().filter(|n| n.kind == QuestionType::Repeat) {
                    (repeat_table(form, s.doc, r, &answers, &language, &label))
                }
            }
            section id="review" {
                h2 { (lang.t(Key::Review)) }
                form method="post" action={ "/submissions/" (s.doc) "/review" } {
                    input type="hidden" name="csrf" value=(user.session.csrf);
                    label { (lang.t(Key::ReviewState))
                        select name="state" id="state" {
                            option value="approved" { (lang.t(Key::Approved)) }
                            option value="has_issues" selected[s.review_state == "has_issues"] { (lang.t(Key::HasIssues)) }
                        }
                    }
                    label { (lang.t(Key::Comment)) textarea name="comment" id="comment" rows="3" cols="60" {} }
                    p { button type="submit" id="save-review" { (lang.t(Key::Save)) } }
                }
            }
            section id="comments" {
                h2 { (lang.t(Key::Comments)) }
                @if d.comments.is_empty() { p { (lang.t(Key::NoComments)) } }
                @for c in &d.comments {
                    div.comment {
                        p { strong { (c.author.as_deref().unwrap_or("")) } " " span.muted { (when(c.written_ms as i64)) }
                            @if let Some(st) = &c.review_state { " · " (state_label(lang, st)) } }
                        p { (c.text) }
                    }
                }
            }
            section id="history" {
                h2 { (lang.t(Key::History)) }
                table { tbody {
                    @for (field, values) in &d.fields {
                        @for (i, v) in values.iter().enumerate() {
                            tr {
                                @if i == 0 { th rowspan=(values.len()) { (field) } }
                                td { (v.value.as_ref().map_or_else(String::new, |x| show_value(form, node_of(field), &language, x))) }
                                td { (v.writer) } td { (when(v.written_ms as i64)) }
                                td { @if v.open { (lang.t(Key::Open)) } @else { (lang.t(Key::Replaced)) } }
                            }
                        }
                    }
                } }
            }
        },
    )
}

/// One answer as the page shows it: a photo (image questions) or a link (other attachments),
/// else its text.
fn answer_cell(
    form: Option<&Form>,
    doc: Uuid,
    n: &Node,
    v: &serde_json::Value,
    language: &str,
    label: &dyn Fn(&Node) -> String,
) -> Markup {
    match tejido_core::store::parse_attachment_ref(v) {
        Some(sha) => {
            let src = format!("/submissions/{doc}/attachments/{sha}");
            html! {
                @if matches!(n.kind, QuestionType::Image) {
                    a href=(src) { img.photo src=(src) alt=(label(n)) height="160"; }
                } @else {
                    a href=(src) { (label(n)) }
                }
            }
        }
        None => html! { (show_value(form, Some(n), language, v)) },
    }
}

/// A repeat's rows as a table: one column per question of the repeat (those in groups inside it
/// included; a repeat nested in it gets its own table), photos and attachments as in the main
/// table. A nested repeat's rows start with the position of the row they belong to ("2": the
/// second row of the repeat around it; "2.1" for a repeat two levels down).
fn repeat_table(
    form: Option<&Form>,
    doc: Uuid,
    repeat: &Node,
    answers: &BTreeMap<String, serde_json::Value>,
    language: &str,
    label: &dyn Fn(&Node) -> String,
) -> Markup {
    let Some(form) = form else { return html! {} };
    let prefix = format!("{}/", repeat.path);
    let chain = repeat_chain(form, repeat);
    let rows = repeat_rows(&chain, answers);
    let nearest_repeat = |n: &Node| enclosing_repeat(form, n).map(|r| r.path.as_str());
    // A question belongs to this repeat's table when the nearest repeat around it is this one.
    let columns: Vec<(&Node, &str)> = form
        .nodes
        .iter()
        .filter(|n| !n.kind.is_container() && n.kind != QuestionType::Note)
        .filter(|n| nearest_repeat(n) == Some(repeat.path.as_str()))
        .filter_map(|n| n.path.strip_prefix(&prefix).map(|rel| (n, rel)))
        .collect();
    let outer = chain.len().checked_sub(2).and_then(|i| chain.get(i));
    html! {
        h3 { (label(repeat)) }
        table.repeat data-repeat=(repeat.path) {
            thead { tr {
                @if let Some(o) = outer { th.position { (label(o)) } }
                @for (c, _) in &columns { th { (label(c)) } }
            } }
            tbody {
                @for (position, row) in &rows {
                    tr {
                        @if outer.is_some() { td.position { (position.rsplit_once('.').map_or("", |(above, _)| above)) } }
                        @for (c, rel) in &columns {
                            @let key = format!("{row}{rel}");
                            td data-field=(key) { @if let Some(v) = answers.get(&key) { (answer_cell(Some(form), doc, c, v, language, label)) } }
                        }
                    }
                }
            }
        }
    }
}

/// The nearest repeat around a node, if any.
fn enclosing_repeat<'f>(form: &'f Form, n: &Node) -> Option<&'f Node> {
    let mut at = n.parent;
    while let Some(i) = at {
        let p = form.nodes.get(i)?;
        if p.kind == QuestionType::Repeat {
            return Some(p);
        }
        at = p.parent;
    }
    None
}

/// The repeats from the outermost one around `repeat` down to `repeat` itself.
fn repeat_chain<'f>(form: &'f Form, repeat: &'f Node) -> Vec<&'f Node> {
    let mut chain = vec![repeat];
    while let Some(r) = chain.last().and_then(|r| enclosing_repeat(form, r)) {
        if chain.len() > form.nodes.len() {
            break; // a parent cycle in a corrupt form
        }
        chain.push(r);
    }
    chain.reverse();
    chain
}

/// Every existing row of the last repeat of `chain`, in every existing row of the repeats around
/// it: (its position, "2.1" for the first row in the second row around it, and the key prefix
/// of its fields, `…/<row>/`).
fn repeat_rows(chain: &[&Node], answers: &BTreeMap<String, serde_json::Value>) -> Vec<(String, String)> {
    // (position, key prefix) of each row of the repeat above; one empty row above the outermost.
    let mut rows = vec![(String::new(), String::new())];
    let mut above: Option<&str> = None;
    for r in chain {
        // The repeat's path below the row of the repeat around it.
        let rel = match above {
            Some(a) => r.path.strip_prefix(a).and_then(|s| s.strip_prefix('/')).unwrap_or(&r.path),
            None => r.path.as_str(),
        };
        let mut next = Vec::new();
        for (position, base) in &rows {
            let prefix = format!("{base}{rel}/");
            for (i, row) in rows_under(answers, &prefix).into_iter().enumerate() {
                let at =
                    if position.is_empty() { (i + 1).to_string() } else { format!("{position}.{}", i + 1) };
                next.push((at, format!("{prefix}{row}/")));
            }
        }
        rows = next;
        above = Some(&r.path);
    }
    rows
}

/// The ids of the rows under `prefix` (`<repeat>/`) whose marker says they exist (a removed row
/// keeps its fields). A row's keys are contiguous in the sorted answers, so this is one pass.
fn rows_under<'a>(answers: &'a BTreeMap<String, serde_json::Value>, prefix: &str) -> Vec<&'a str> {
    use std::ops::Bound;
    let mut rows = Vec::new();
    let mut last: Option<&str> = None;
    for k in answers.range::<str, _>((Bound::Included(prefix), Bound::Unbounded)).map(|(k, _)| k) {
        let Some(rest) = k.strip_prefix(prefix) else { break };
        let Some((row, _)) = rest.split_once('/') else { continue };
        if last == Some(row) {
            continue;
        }
        last = Some(row);
        let marker = format!("{prefix}{row}/{}", tejido_core::doc::meta::ROW_MARKER);
        if Uuid::try_parse(row).is_ok() && answers.get(&marker) == Some(&serde_json::Value::Bool(true)) {
            rows.push(row);
        }
    }
    rows
}

pub fn indicators(
    user: &WebUser,
    project: &Project,
    forms: &[(String, String)],
    chosen: Option<&str>,
    tables: &[crate::indicators::IndicatorTable],
    approved_only: bool,
) -> Markup {
    use crate::indicators::Kind;
    let lang = user.lang;
    let code = lang.code();
    let show = |kind: &Kind, v: f64| match kind {
        Kind::Proportion => format!("{:.1} %", v * 100.0),
        Kind::Rate { .. } => format!("{v:.1}"),
        Kind::Count | Kind::Sum => format!("{v:.0}"),
    };
    layout(
        lang,
        lang.t(Key::Indicators),
        Some(user),
        html! {
            p { a href={ "/projects/" (project.id) "/submissions" } { "← " (lang.t(Key::Submissions)) } }
            h1 { (project.name) " · " (lang.t(Key::Indicators)) }
            @if approved_only { p { span.flag { (lang.t(Key::ApprovedOnlyOn)) } } }
            @if forms.is_empty() { p { (lang.t(Key::NoIndicators)) } }
            @if forms.len() > 1 {
                form.filters method="get" {
                    label { (lang.t(Key::Form))
                        select name="form" {
                            @for (id, title) in forms { option value=(id) selected[chosen == Some(id.as_str())] { (title) } }
                        }
                    }
                    button type="submit" { (lang.t(Key::Filter)) }
                }
            }
            @for t in tables {
                section.indicator data-table=(t.id) {
                    h2 { (t.title.get(code)) " · " (t.dimension_label.get(code)) }
                    @if let Some(d) = &t.description { p.muted { (d.get(code)) } }
                    (PreEscaped(crate::indicators::svg::bar_chart(t, code)))
                    table {
                        thead { tr {
                            th { (lang.t(Key::Category)) } th { (lang.t(Key::Numerator)) } th { (lang.t(Key::Denominator)) }
                            th { (lang.t(Key::Estimate)) } th { (lang.t(Key::Interval)) }
                        } }
                        tbody {
                            @for r in &t.rows {
                                tr data-key=(r.key) {
                                    td { (r.label.get(code)) }
                                    @if r.suppressed {
                                        td colspan="4" { em { (lang.t(Key::Suppressed)) } }
                                    } @else {
                                        td { (r.numerator.map_or_else(String::new, |n| format!("{n:.0}"))) }
                                        td { (r.denominator.map_or_else(String::new, |d| d.to_string())) }
                                        td { (r.estimate.map_or_else(String::new, |e| show(&t.kind, e))) }
                                        td { (r.ci.as_ref().map_or_else(String::new, |ci| format!("{} – {}", show(&t.kind, ci.low), show(&t.kind, ci.high)))) }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        },
    )
}
