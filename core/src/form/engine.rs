//! A pure form engine: answers in memory, recomputed along the form's dependency graph.
//!
//! Every question exists once per row of each repeat around it; an *instance* is a question
//! with the rows that place it (`Key`). Setting an answer marks the instances whose relevance
//! or calculation reads it, and only those are recomputed, in the dependency order computed
//! once per form; a change propagates only while it changes something. Constraints and
//! required are checked when errors are asked for, not on every answer.

use std::collections::{BTreeSet, HashMap};

use serde_json::Value as Json;
use uuid::Uuid;

use super::expr::{self, Context, Expr, Item, Value};
use super::media::MediaRow;
use super::model::{language_code, translate, Form, QuestionType};
use super::session::{ChoiceView, FormError, QuestionView, ValidationError, ValidationKind};

/// A question (or group, or repeat row) in one row of each repeat around it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Key {
    pub node: usize,
    /// One row id for each repeat in the node's scope (enclosing repeats, and itself if a repeat).
    pub rows: Vec<Uuid>,
}

#[derive(Debug, Clone)]
struct CNode {
    kind: QuestionType,
    /// Segments of the schema path.
    segments: Vec<String>,
    parent: Option<usize>,
    /// The repeats whose rows place an instance: enclosing repeats, outermost first, and the
    /// node itself when it is a repeat.
    scope: Vec<usize>,
    relevant: Option<Expr>,
    calculate: Option<Expr>,
    constraint: Option<Expr>,
    required: Option<Expr>,
    choice_filter: Option<Expr>,
    repeat_count: Option<Expr>,
    default: Option<String>,
    /// Nodes whose relevance or calculation reads this one, and its children.
    dependents: Vec<usize>,
    topo: usize,
    /// Reads its row's position (`position()`, `indexed-repeat()`): recomputed when rows change.
    row_sensitive: bool,
}

/// A changed field for the store: its path and new value (`null` to clear).
pub type FieldChange = (String, Json);

/// The engine over one form's answers.
#[derive(Debug, Clone)]
pub struct Engine {
    form: Form,
    nodes: Vec<CNode>,
    by_name: HashMap<String, usize>,
    by_path: HashMap<String, usize>,
    /// Rows of each repeat, keyed by the repeat and the rows of its enclosing repeats.
    rows: HashMap<(usize, Vec<Uuid>), Vec<Uuid>>,
    values: HashMap<Key, String>,
    /// Instances whose own relevance is false.
    self_irrelevant: BTreeSet<Key>,
    /// Instances that are not relevant, counting their ancestors.
    irrelevant: BTreeSet<Key>,
    /// The language labels and choice names are read in (for `jr:choice-name`, instances).
    lang: String,
    /// Children of each node, in document order; index 0 holds the top-level nodes.
    children: Vec<Vec<usize>>,
    /// The form version's media files that have been read, by file name (`places.csv`).
    media: HashMap<String, Vec<MediaRow>>,
}

/// A row to add or remove so a repeat has as many rows as its `repeat_count` says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RowAction {
    /// Add a row to the repeat at this field path.
    Add(String),
    /// Remove this row of the repeat at this field path.
    Remove(String, Uuid),
}

fn default_required_message(lang: &str) -> &'static str {
    match language_code(lang).unwrap_or(lang).to_ascii_lowercase().as_str() {
        "es" | "español" | "spanish" => "Esta pregunta es obligatoria.",
        "fr" => "Cette question est obligatoire.",
        "pt" => "Esta pergunta é obrigatória.",
        _ => "This question is required.",
    }
}

fn default_constraint_message(lang: &str) -> &'static str {
    match language_code(lang).unwrap_or(lang).to_ascii_lowercase().as_str() {
        "es" | "español" | "spanish" => "Esta respuesta no es válida.",
        "fr" => "Cette réponse n'est pas valide.",
        "pt" => "Esta resposta não é válida.",
        _ => "This answer is not valid.",
    }
}

fn parse_opt(src: Option<&str>, what: &str, name: &str) -> Result<Option<Expr>, FormError> {
    match src {
        None => Ok(None),
        Some(s) => {
            expr::parse(s).map(Some).map_err(|e| FormError::InvalidForm(format!("{what} of {name}: {e}")))
        }
    }
}

impl Engine {
    /// Compiles a form: parses its expressions and orders its dependency graph.
    /// Refuses a form that does not pass [`Form::validate`].
    pub fn new(form: &Form) -> Result<Engine, FormError> {
        form.validate().map_err(|e| FormError::InvalidForm(e.to_string()))?;
        let mut by_name = HashMap::new();
        let mut by_path = HashMap::new();
        let mut nodes: Vec<CNode> = Vec::with_capacity(form.nodes.len());
        // A name used in several groups is ambiguous: reached only by its path (the importer
        // refuses expressions that name it, as pyxform does).
        let mut ambiguous = std::collections::HashSet::new();
        for (i, n) in form.nodes.iter().enumerate() {
            if by_name.insert(n.name.clone(), i).is_some() {
                ambiguous.insert(n.name.clone());
            }
            by_path.insert(n.path.clone(), i);
            let mut scope = match n.parent {
                Some(p) if p < i => nodes[p].scope.clone(),
                Some(_) => return Err(FormError::InvalidForm(format!("{} comes before its group", n.name))),
                None => Vec::new(),
            };
            if n.kind == QuestionType::Repeat {
                scope.push(i);
            }
            nodes.push(CNode {
                kind: n.kind,
                segments: n.path.split('/').map(str::to_owned).collect(),
                parent: n.parent,
                scope,
                relevant: parse_opt(n.relevant.as_deref(), "relevant", &n.name)?,
                calculate: parse_opt(n.calculation.as_deref(), "calculation", &n.name)?,
                constraint: parse_opt(n.constraint.as_deref(), "constraint", &n.name)?,
                required: parse_opt(n.required.as_deref(), "required", &n.name)?,
                choice_filter: parse_opt(n.choice_filter.as_deref(), "choice_filter", &n.name)?,
                repeat_count: parse_opt(n.repeat_count.as_deref(), "repeat_count", &n.name)?,
                default: n.default.clone(),
                dependents: Vec::new(),
                topo: 0,
                row_sensitive: false,
            });
            let last = nodes.len() - 1;
            let sensitive = [&nodes[last].relevant, &nodes[last].calculate]
                .into_iter()
                .flatten()
                .any(|e| e.functions().iter().any(|f| f == "position" || f == "indexed-repeat"));
            nodes[last].row_sensitive = sensitive;
        }
        for name in &ambiguous {
            by_name.remove(name);
        }
        // Edges: a node's relevance and calculation depend on what they reference, and on its
        // parent's relevance.
        let mut deps: Vec<Vec<usize>> = vec![Vec::new(); nodes.len()];
        for (i, n) in nodes.iter().enumerate() {
            if let Some(p) = n.parent {
                deps[i].push(p);
            }
            for e in [&n.relevant, &n.calculate].into_iter().flatten() {
                for r in e.references() {
                    if let Some(&t) = by_name.get(&r) {
                        if !deps[i].contains(&t) {
                            deps[i].push(t);
                        }
                    }
                }
            }
        }
        for (i, ds) in deps.iter().enumerate() {
            for &t in ds {
                nodes[t].dependents.push(i);
            }
        }
        // Kahn's algorithm, preferring document order.
        let mut indegree: Vec<usize> = deps.iter().map(Vec::len).collect();
        let mut ready: BTreeSet<usize> = (0..nodes.len()).filter(|&i| indegree[i] == 0).collect();
        let mut order = 0;
        while let Some(&i) = ready.iter().next() {
            ready.remove(&i);
            nodes[i].topo = order;
            order += 1;
            for d in nodes[i].dependents.clone() {
                indegree[d] -= 1;
                if indegree[d] == 0 {
                    ready.insert(d);
                }
            }
        }
        if order < nodes.len() {
            return Err(FormError::InvalidForm(
                "the form's calculations or relevance depend on themselves".into(),
            ));
        }
        let lang = form.language(None);
        let mut children = vec![Vec::new(); nodes.len() + 1];
        for (i, n) in nodes.iter().enumerate() {
            children[n.parent.map_or(0, |p| p + 1)].push(i);
        }
        Ok(Engine {
            children,
            form: form.clone(),
            nodes,
            by_name,
            by_path,
            rows: HashMap::new(),
            values: HashMap::new(),
            self_irrelevant: BTreeSet::new(),
            irrelevant: BTreeSet::new(),
            media: HashMap::new(),
            lang,
        })
    }

    pub fn form(&self) -> &Form {
        &self.form
    }

    /// Chooses the language for choice labels read by expressions (`jr:choice-name`).
    pub fn set_language(&mut self, lang: Option<&str>) {
        self.lang = self.form.language(lang);
    }

    // ----- addressing -----

    /// The field path of an instance: `group/q`, `rep/<row>/q`.
    pub fn path_of(&self, key: &Key) -> String {
        self.path_with(key, "", |_, _, row, out| {
            out.push('/');
            out.push_str(&row.to_string());
        })
    }

    /// The instance's node as ODK's audit log names it: `/data/household/members[2]/age`,
    /// each repeat row by its position (from 1). A row no longer in its repeat is `[0]`.
    pub fn xpath_of(&self, key: &Key) -> String {
        self.path_with(key, "/data", |repeat, scope, row, out| {
            let position = self
                .rows
                .get(&(repeat, scope.to_vec()))
                .and_then(|rows| rows.iter().position(|x| *x == row))
                .map_or(0, |p| p + 1);
            out.push_str(&format!("[{position}]"));
        })
    }

    /// The instance's node path after `prefix`, segment by segment; `row` writes each repeat's
    /// row (given the repeat, the rows of the repeats around it, and the row).
    fn path_with(&self, key: &Key, prefix: &str, row: impl Fn(usize, &[Uuid], Uuid, &mut String)) -> String {
        let n = &self.nodes[key.node];
        let mut out = String::from(prefix);
        let mut rows_used = 0;
        let mut node_path = String::new();
        for seg in &n.segments {
            if !out.is_empty() {
                out.push('/');
            }
            out.push_str(seg);
            if !node_path.is_empty() {
                node_path.push('/');
            }
            node_path.push_str(seg);
            if let Some(&i) = self.by_path.get(&node_path) {
                if self.nodes[i].kind == QuestionType::Repeat {
                    if let Some(&r) = key.rows.get(rows_used) {
                        row(i, &key.rows[..rows_used], r, &mut out);
                        rows_used += 1;
                    }
                }
            }
        }
        out
    }

    /// [`xpath_of`](Self::xpath_of) a question given by name or field path.
    pub fn xpath_of_path(&self, name_or_path: &str) -> Result<String, FormError> {
        Ok(self.xpath_of(&self.key_of(name_or_path)?))
    }

    /// [`xpath_of`](Self::xpath_of) a row of a repeat given by name or path.
    pub fn row_xpath(&self, repeat: &str, row: Uuid) -> Result<String, FormError> {
        let (r, mut rows) = self.repeat_of(repeat)?;
        rows.push(row);
        Ok(self.xpath_of(&Key { node: r, rows }))
    }

    /// Reads a field path (or, outside repeats, a bare question name) as an instance.
    pub fn key_of(&self, name_or_path: &str) -> Result<Key, FormError> {
        let unknown = || FormError::UnknownQuestion(name_or_path.to_owned());
        if !name_or_path.contains('/') {
            let &node = self.by_name.get(name_or_path).ok_or_else(unknown)?;
            let scope = &self.nodes[node].scope;
            if let Some(&r) = scope.first() {
                return Err(FormError::InRepeat {
                    question: name_or_path.to_owned(),
                    repeat: self.form.nodes[r].path.clone(),
                });
            }
            return Ok(Key { node, rows: Vec::new() });
        }
        let mut schema = String::new();
        let mut rows = Vec::new();
        let mut node = None;
        let mut expect_row = false;
        for seg in name_or_path.split('/') {
            if expect_row {
                let row = Uuid::parse_str(seg).map_err(|_| unknown())?;
                rows.push(row);
                expect_row = false;
                continue;
            }
            if !schema.is_empty() {
                schema.push('/');
            }
            schema.push_str(seg);
            let &i = self.by_path.get(&schema).ok_or_else(unknown)?;
            node = Some(i);
            expect_row = self.nodes[i].kind == QuestionType::Repeat;
        }
        let node = node.ok_or_else(unknown)?;
        let key = Key { node, rows };
        if key.rows.len() != self.nodes[node].scope.len() {
            return Err(unknown());
        }
        if !self.instance_exists(&key) {
            let repeat =
                self.nodes[node].scope.last().map(|&r| self.form.nodes[r].path.clone()).unwrap_or_default();
            let row = key.rows.last().copied().unwrap_or_default();
            return Err(FormError::UnknownRow { repeat, row });
        }
        Ok(key)
    }

    /// Whether every row an instance names exists.
    fn instance_exists(&self, key: &Key) -> bool {
        let scope = &self.nodes[key.node].scope;
        for (i, &r) in scope.iter().enumerate() {
            let parent_rows = key.rows[..i].to_vec();
            match self.rows.get(&(r, parent_rows)) {
                Some(list) if list.contains(&key.rows[i]) => {}
                _ => return false,
            }
        }
        true
    }

    /// The instance of the parent group of `key`.
    fn parent_key(&self, key: &Key) -> Option<Key> {
        let p = self.nodes[key.node].parent?;
        let len = self.nodes[p].scope.len();
        Some(Key { node: p, rows: key.rows[..len].to_vec() })
    }

    /// Every instance of `node` whose first rows are `prefix`.
    fn instances(&self, node: usize, prefix: &[Uuid]) -> Vec<Key> {
        let scope = &self.nodes[node].scope;
        let mut out = vec![prefix.to_vec()];
        for (depth, &r) in scope.iter().enumerate().skip(prefix.len()) {
            let mut next = Vec::new();
            for rows in out {
                debug_assert_eq!(rows.len(), depth);
                if let Some(list) = self.rows.get(&(r, rows.clone())) {
                    for row in list {
                        let mut extended = rows.clone();
                        extended.push(*row);
                        next.push(extended);
                    }
                }
            }
            out = next;
        }
        out.into_iter().map(|rows| Key { node, rows }).collect()
    }

    /// How many leading repeats the scopes of two nodes share.
    fn common_scope(&self, a: usize, b: usize) -> usize {
        self.nodes[a].scope.iter().zip(&self.nodes[b].scope).take_while(|(x, y)| x == y).count()
    }

    // ----- reading -----

    pub fn is_relevant(&self, key: &Key) -> bool {
        !self.irrelevant.contains(key)
    }

    /// The stored answer of an instance ("" when unanswered), relevant or not.
    pub fn raw_value(&self, key: &Key) -> &str {
        self.values.get(key).map(String::as_str).unwrap_or("")
    }

    /// The value expressions see: empty when not relevant.
    fn seen_value(&self, key: &Key) -> String {
        if self.is_relevant(key) {
            self.raw_value(key).to_owned()
        } else {
            String::new()
        }
    }

    /// The value of an instance as JSON, typed by its question.
    pub fn json_value(&self, key: &Key) -> Json {
        to_json(self.nodes[key.node].kind, self.raw_value(key))
    }

    /// Whether a field path holds an answer that belongs in the finalized submission: a known,
    /// existing, relevant instance (or an unknown path, which is kept as it is).
    pub fn keeps_field(&self, path: &str) -> bool {
        if path.starts_with('_') {
            return true;
        }
        let (path, marker) = match path.strip_suffix("/_row") {
            Some(p) => (p, true),
            None => (path, false),
        };
        match self.key_of(path) {
            Ok(key) => {
                self.is_relevant(&key) && (!marker || self.nodes[key.node].kind == QuestionType::Repeat)
            }
            Err(FormError::UnknownRow { .. }) => false,
            Err(_) => true,
        }
    }

    // ----- writing -----

    /// Loads stored answers and rows (as `Store::read_document` gives them), then recomputes
    /// everything. Returns the calculated fields that differ from what was stored.
    pub fn load(
        &mut self,
        answers: &[(String, Json)],
        rows_of: &dyn Fn(&str) -> Vec<Uuid>,
    ) -> Vec<FieldChange> {
        self.rows.clear();
        self.values.clear();
        // Rows, outermost repeats first (document order puts a repeat before nested ones).
        for i in 0..self.nodes.len() {
            if self.nodes[i].kind != QuestionType::Repeat {
                continue;
            }
            let depth = self.nodes[i].scope.len() - 1;
            let parents: Vec<Vec<Uuid>> = if depth == 0 {
                vec![Vec::new()]
            } else {
                let outer = self.nodes[i].scope[depth - 1];
                self.instances(outer, &[]).into_iter().map(|k| k.rows).collect()
            };
            for prefix in parents {
                let probe = Key { node: i, rows: prefix.clone() };
                let path = self.repeat_path(&probe);
                let list = rows_of(&path);
                self.rows.insert((i, prefix), list);
            }
        }
        for (path, value) in answers {
            let Ok(key) = self.key_of(path) else { continue };
            if self.nodes[key.node].kind.is_container() {
                continue;
            }
            let text = json_text(value);
            if !text.is_empty() {
                self.values.insert(key, text);
            }
        }
        self.recompute_all()
    }

    /// The field path of a repeat (without a row) for the rows in `key.rows`: `a/<r>/b`.
    fn repeat_path(&self, key: &Key) -> String {
        self.path_of(key)
    }

    /// The canonical field path of a repeat given by name or path (`rep`, `outer/<row>/inner`).
    pub fn repeat_field_path(&self, repeat: &str) -> Result<String, FormError> {
        let (r, rows) = self.repeat_of(repeat)?;
        Ok(self.path_of(&Key { node: r, rows }))
    }

    /// The rows of a repeat given by name or path, in order.
    pub fn rows(&self, repeat: &str) -> Result<Vec<Uuid>, FormError> {
        let (r, rows) = self.repeat_of(repeat)?;
        Ok(self.rows.get(&(r, rows)).cloned().unwrap_or_default())
    }

    /// The current value of a question (by name or path) as JSON.
    pub fn value(&self, name_or_path: &str) -> Result<Json, FormError> {
        let key = self.key_of(name_or_path)?;
        Ok(self.json_value(&key))
    }

    /// Sets an answer from JSON, checking its type; returns every field to write (the answer
    /// and the calculations that changed).
    pub fn set_answer(&mut self, name_or_path: &str, value: &Json) -> Result<Vec<FieldChange>, FormError> {
        let key = self.key_of(name_or_path)?;
        let node = &self.form.nodes[key.node];
        let name = node.name.clone();
        if node.kind.is_container() {
            return Err(FormError::UnknownQuestion(name_or_path.to_owned()));
        }
        if node.read_only
            || node.calculation.is_some()
            || node.kind.is_metadata()
            || matches!(node.kind, QuestionType::Note | QuestionType::Calculate | QuestionType::Hidden)
        {
            return Err(FormError::ReadOnly(name));
        }
        let text = self.check_value(key.node, value)?;
        Ok(self.set_raw(key, text))
    }

    /// Sets a value without checks (metadata, defaults); returns the fields to write.
    pub fn set_raw(&mut self, key: Key, text: String) -> Vec<FieldChange> {
        let path = self.path_of(&key);
        let kind = self.nodes[key.node].kind;
        let mut changes = vec![(path, to_json(kind, &text))];
        let old = self.seen_value(&key);
        if text.is_empty() {
            self.values.remove(&key);
        } else {
            self.values.insert(key.clone(), text);
        }
        if self.seen_value(&key) != old {
            let mut dirty = BTreeSet::new();
            self.mark_dependents(&key, &mut dirty);
            changes.extend(self.propagate(dirty));
        }
        changes
    }

    /// Adds a row to the repeat at `repeat_path` (`rep`, or `outer/<row>/inner`); returns the
    /// fields to write (defaults and calculations of the new row).
    pub fn add_row(&mut self, repeat: &str, row: Uuid) -> Result<Vec<FieldChange>, FormError> {
        let (r, prefix) = self.repeat_of(repeat)?;
        self.rows.entry((r, prefix.clone())).or_default().push(row);
        let mut rows = prefix;
        rows.push(row);
        let mut changes = Vec::new();
        // Defaults of the new row's questions.
        for i in 0..self.nodes.len() {
            if self.nodes[i].scope.len() < rows.len()
                || self.nodes[i].scope[..rows.len()] != self.nodes[r].scope[..]
            {
                continue;
            }
            for key in self.instances(i, &rows) {
                if let Some(d) = self.default_value(&key) {
                    self.values.insert(key.clone(), d.clone());
                    changes.push((self.path_of(&key), to_json(self.nodes[i].kind, &d)));
                }
            }
        }
        changes.extend(self.rows_changed(r, &rows));
        Ok(changes)
    }

    /// Removes a row; its answers stay in memory but no longer count.
    pub fn remove_row(&mut self, repeat: &str, row: Uuid) -> Result<Vec<FieldChange>, FormError> {
        let (r, prefix) = self.repeat_of(repeat)?;
        let list = self.rows.entry((r, prefix.clone())).or_default();
        let Some(pos) = list.iter().position(|x| *x == row) else {
            return Err(FormError::UnknownRow { repeat: repeat.to_owned(), row });
        };
        list.remove(pos);
        let mut rows = prefix;
        rows.push(row);
        Ok(self.rows_changed(r, &rows))
    }

    /// The repeat node and enclosing rows a repeat path names.
    fn repeat_of(&self, repeat: &str) -> Result<(usize, Vec<Uuid>), FormError> {
        let not_repeat = || FormError::NotARepeat(repeat.to_owned());
        // A bare name of a top-level repeat, or a path ending in the repeat's name.
        if !repeat.contains('/') {
            let &i = self.by_name.get(repeat).ok_or_else(not_repeat)?;
            if self.nodes[i].kind != QuestionType::Repeat || self.nodes[i].scope.len() != 1 {
                return Err(not_repeat());
            }
            return Ok((i, Vec::new()));
        }
        let (parent, last) = repeat.rsplit_once('/').ok_or_else(not_repeat)?;
        let pkey = self.key_of(parent).map_err(|_| not_repeat())?;
        let schema = format!("{}/{}", self.form.nodes[pkey.node].path, last);
        let &i = self.by_path.get(&schema).ok_or_else(not_repeat)?;
        if self.nodes[i].kind != QuestionType::Repeat || self.nodes[i].scope.len() != pkey.rows.len() + 1 {
            return Err(not_repeat());
        }
        Ok((i, pkey.rows))
    }

    /// After rows of repeat `r` changed (a row `rows` added or removed): recompute the new
    /// row's instances and everything that reads the repeat or its questions.
    fn rows_changed(&mut self, r: usize, rows: &[Uuid]) -> Vec<FieldChange> {
        let mut dirty = BTreeSet::new();
        let inside: Vec<usize> = (0..self.nodes.len())
            .filter(|&i| {
                self.nodes[i].scope.len() >= rows.len()
                    && self.nodes[i].scope[..rows.len()] == self.nodes[r].scope[..]
            })
            .collect();
        for &i in &inside {
            for key in self.instances(i, rows) {
                dirty.insert((self.nodes[i].topo, key.clone()));
                self.mark_dependents(&key, &mut dirty);
            }
            // Aggregates over the repeat (`count`, `sum`) see one row more or fewer.
            let key = Key { node: i, rows: rows.to_vec() };
            self.mark_dependents(&key, &mut dirty);
        }
        // Rows after the changed one moved: positions read inside the repeat change.
        let siblings = &rows[..rows.len() - 1];
        for &i in &inside {
            if self.nodes[i].row_sensitive {
                for key in self.instances(i, siblings) {
                    dirty.insert((self.nodes[i].topo, key));
                }
            }
        }
        // Removed rows' instances no longer exist: drop them from the queue and relevance.
        dirty.retain(|(_, k)| self.instance_exists(k));
        let gone: Vec<Key> = self.irrelevant.iter().filter(|k| !self.instance_exists(k)).cloned().collect();
        for k in gone {
            self.irrelevant.remove(&k);
            self.self_irrelevant.remove(&k);
        }
        self.propagate(dirty)
    }

    /// Queues the instances whose relevance or calculation reads `key`.
    fn mark_dependents(&self, key: &Key, dirty: &mut BTreeSet<(usize, Key)>) {
        for &d in &self.nodes[key.node].dependents {
            let common = self.common_scope(key.node, d).min(key.rows.len());
            for k in self.instances(d, &key.rows[..common]) {
                dirty.insert((self.nodes[d].topo, k));
            }
        }
    }

    /// Recomputes queued instances in dependency order, queueing further ones only where
    /// something changed. Returns the calculated fields that changed.
    fn propagate(&mut self, mut dirty: BTreeSet<(usize, Key)>) -> Vec<FieldChange> {
        let mut changes = Vec::new();
        while let Some((_, key)) = dirty.pop_first() {
            if !self.instance_exists(&key) {
                continue;
            }
            let before = (self.is_relevant(&key), self.seen_value(&key));
            self.recompute(&key, &mut changes);
            let after = (self.is_relevant(&key), self.seen_value(&key));
            if before != after {
                self.mark_dependents(&key, &mut dirty);
            }
        }
        changes
    }

    /// Recomputes one instance's relevance and calculation.
    fn recompute(&mut self, key: &Key, changes: &mut Vec<FieldChange>) {
        let n = &self.nodes[key.node];
        let own = match &n.relevant {
            Some(e) => expr::evaluate(e, &self.ctx(key)).to_bool(),
            None => true,
        };
        let parent_ok = self.parent_key(key).map(|p| self.is_relevant(&p)).unwrap_or(true);
        if own {
            self.self_irrelevant.remove(key);
        } else {
            self.self_irrelevant.insert(key.clone());
        }
        if own && parent_ok {
            self.irrelevant.remove(key);
        } else {
            self.irrelevant.insert(key.clone());
        }
        if let Some(e) = &self.nodes[key.node].calculate {
            let v = expr::evaluate(e, &self.ctx(key));
            let text = calculated_text(&v);
            if self.raw_value(key) != text {
                let kind = self.nodes[key.node].kind;
                changes.push((self.path_of(key), to_json(kind, &text)));
                if text.is_empty() {
                    self.values.remove(key);
                } else {
                    self.values.insert(key.clone(), text);
                }
            }
        }
    }

    /// Recomputes every instance, in dependency order. Returns the calculated fields that
    /// changed.
    pub fn recompute_all(&mut self) -> Vec<FieldChange> {
        let mut order: Vec<usize> = (0..self.nodes.len()).collect();
        order.sort_by_key(|&i| self.nodes[i].topo);
        self.irrelevant.clear();
        self.self_irrelevant.clear();
        let mut changes = Vec::new();
        for i in order {
            for key in self.instances(i, &[]) {
                self.recompute(&key, &mut changes);
            }
        }
        changes
    }

    /// Defaults for questions still unanswered outside repeats; returns the fields to write.
    pub fn apply_defaults(&mut self, present: &dyn Fn(&str) -> bool) -> Vec<FieldChange> {
        let mut changes = Vec::new();
        for i in 0..self.nodes.len() {
            if !self.nodes[i].scope.is_empty() {
                continue;
            }
            let key = Key { node: i, rows: Vec::new() };
            let path = self.path_of(&key);
            if present(&path) {
                continue;
            }
            if let Some(d) = self.default_value(&key) {
                changes.extend(self.set_raw(key, d));
            }
        }
        changes
    }

    fn default_value(&self, key: &Key) -> Option<String> {
        let d = self.nodes[key.node].default.as_deref()?;
        // A default that reads answers or calls a function (`today()`) is computed when the
        // question comes into being; anything else is literal text.
        if let Ok(e) = expr::parse(d) {
            let mut calls = Vec::new();
            e.walk(&mut |x| {
                if let Expr::Call(name, args) = x {
                    calls.push(expr::is_known_function(name, args.len()) == Some(true));
                }
            });
            let known = calls.iter().all(|&k| k);
            if known && (!e.references().is_empty() || !calls.is_empty()) {
                let v = calculated_text(&expr::evaluate(&e, &self.ctx(key)));
                return (!v.is_empty()).then_some(v);
            }
        }
        Some(d.to_owned())
    }

    /// Sets each metadata question of a kind (outside repeats) to `value`.
    pub fn set_metadata(&mut self, kind: QuestionType, value: &str, only_if_empty: bool) -> Vec<FieldChange> {
        let mut changes = Vec::new();
        for i in 0..self.nodes.len() {
            if self.nodes[i].kind != kind || !self.nodes[i].scope.is_empty() {
                continue;
            }
            let key = Key { node: i, rows: Vec::new() };
            if only_if_empty && !self.raw_value(&key).is_empty() {
                continue;
            }
            let value = if self.form.nodes[i].uri { metadata_uri(kind, value) } else { value.to_owned() };
            changes.extend(self.set_raw(key, value));
        }
        changes
    }

    // ----- checking and showing -----

    fn ctx<'a>(&'a self, key: &'a Key) -> Ctx<'a> {
        Ctx { engine: self, key }
    }

    /// Every instance of every node, in document order (rows in order).
    fn all_instances(&self) -> Vec<Key> {
        let mut out = Vec::new();
        self.collect(None, &[], &mut out);
        out
    }

    fn collect(&self, parent: Option<usize>, rows: &[Uuid], out: &mut Vec<Key>) {
        for &i in &self.children[parent.map_or(0, |p| p + 1)] {
            if self.nodes[i].kind == QuestionType::Repeat {
                let list = self.rows.get(&(i, rows.to_vec())).cloned().unwrap_or_default();
                for row in list {
                    let mut r = rows.to_vec();
                    r.push(row);
                    out.push(Key { node: i, rows: r.clone() });
                    self.collect(Some(i), &r, out);
                }
            } else {
                out.push(Key { node: i, rows: rows.to_vec() });
                if self.nodes[i].kind == QuestionType::Group {
                    self.collect(Some(i), rows, out);
                }
            }
        }
    }

    /// The failed check of one instance, if any.
    fn check(&self, key: &Key, lang: &str) -> Option<(ValidationKind, String)> {
        if !self.is_relevant(key) {
            return None;
        }
        let n = &self.nodes[key.node];
        let node = &self.form.nodes[key.node];
        let value = self.raw_value(key);
        if value.is_empty() {
            let required = n.required.as_ref().is_some_and(|e| expr::evaluate(e, &self.ctx(key)).to_bool());
            if required {
                let msg = translate(&node.required_message, lang)
                    .map(|m| self.render(m, key))
                    .unwrap_or_else(|| default_required_message(lang).to_owned());
                return Some((ValidationKind::Required, msg));
            }
            return None;
        }
        if let Some(c) = &n.constraint {
            if !expr::evaluate(c, &self.ctx(key)).to_bool() {
                let msg = translate(&node.constraint_message, lang)
                    .map(|m| self.render(m, key))
                    .unwrap_or_else(|| default_constraint_message(lang).to_owned());
                return Some((ValidationKind::Constraint, msg));
            }
        }
        None
    }

    /// Every failed check among relevant questions, in document order.
    pub fn errors(&self, lang: Option<&str>) -> Vec<ValidationError> {
        let lang = self.form.language(lang);
        self.all_instances()
            .into_iter()
            .filter(|k| !self.nodes[k.node].kind.is_container())
            .filter_map(|k| {
                let (kind, message) = self.check(&k, &lang)?;
                Some(ValidationError {
                    path: self.path_of(&k),
                    name: self.form.nodes[k.node].name.clone(),
                    kind,
                    message,
                })
            })
            .collect()
    }

    /// The questions to show, in order, with values and errors in `lang`.
    pub fn visible_questions(&self, lang: Option<&str>) -> Vec<QuestionView> {
        let lang = self.form.language(lang);
        let mut out = Vec::new();
        for key in self.all_instances() {
            let n = &self.form.nodes[key.node];
            if n.kind.is_container() || !n.kind.is_shown() || !self.is_relevant(&key) {
                continue;
            }
            let label = self.render(translate(&n.label, &lang).unwrap_or(""), &key);
            let hint = translate(&n.hint, &lang).map(|h| self.render(h, &key));
            let required = self.nodes[key.node]
                .required
                .as_ref()
                .is_some_and(|e| expr::evaluate(e, &self.ctx(&key)).to_bool());
            out.push(QuestionView {
                path: self.path_of(&key),
                name: n.name.clone(),
                kind: n.kind,
                label,
                hint,
                value: self.json_value(&key),
                required,
                read_only: n.read_only || n.calculation.is_some() || n.kind == QuestionType::Note,
                choices: self.choices(&key, &lang),
                error: self.check(&key, &lang).map(|(_, m)| m),
            });
        }
        out
    }

    /// Whether a repeat (by name or path) takes its rows from a `repeat_count`.
    pub fn is_counted(&self, repeat: &str) -> bool {
        self.repeat_of(repeat).is_ok_and(|(r, _)| self.nodes[r].repeat_count.is_some())
    }

    /// The rows to add or remove so that every relevant repeat with a `repeat_count` has that
    /// many rows (rows are removed from the end).
    pub fn repeat_count_actions(&self) -> Vec<RowAction> {
        let mut out = Vec::new();
        for (r, n) in self.nodes.iter().enumerate() {
            let Some(count) = &n.repeat_count else { continue };
            let depth = n.scope.len() - 1;
            let prefixes: Vec<Vec<Uuid>> = if depth == 0 {
                vec![Vec::new()]
            } else {
                self.instances(n.scope[depth - 1], &[]).into_iter().map(|k| k.rows).collect()
            };
            for prefix in prefixes {
                let probe = Key { node: r, rows: prefix.clone() };
                if let Some(parent) = self.parent_key(&probe) {
                    if !self.is_relevant(&parent) {
                        continue;
                    }
                }
                let wanted = expr::evaluate(count, &self.ctx(&probe)).to_num();
                let wanted = if wanted.is_finite() && wanted > 0.0 {
                    wanted.min(MAX_COUNTED_ROWS) as usize
                } else {
                    0
                };
                let rows = self.rows.get(&(r, prefix)).cloned().unwrap_or_default();
                let path = self.path_of(&probe);
                for _ in rows.len()..wanted {
                    out.push(RowAction::Add(path.clone()));
                }
                for row in rows.iter().skip(wanted) {
                    out.push(RowAction::Remove(path.clone(), *row));
                }
            }
        }
        out
    }

    /// Calculated values (calculate questions and calculated fields) that are relevant.
    pub fn calculated_values(&self) -> Vec<(String, Json)> {
        self.all_instances()
            .into_iter()
            .filter(|k| self.nodes[k.node].calculate.is_some() && self.is_relevant(k))
            .map(|k| (self.path_of(&k), self.json_value(&k)))
            .collect()
    }

    /// Gives the engine a media file of the form version, read with
    /// [`parse_media`](super::media::parse_media): the choices of the questions that name it,
    /// the table of `pulldata()`, and `instance('name')` of its name without the extension.
    /// Call it before [`load`](Self::load), so that calculations see it.
    pub fn set_media(&mut self, file: &str, rows: Vec<MediaRow>) {
        self.media.insert(file.to_owned(), rows);
    }

    /// The rows of a media file given by its name without the extension (`places`), as
    /// `pulldata('places', …)` and `instance('places')` name it.
    fn media_by_stem(&self, stem: &str) -> Option<&Vec<MediaRow>> {
        self.media.get(&format!("{stem}.csv")).or_else(|| {
            self.media
                .iter()
                .find(|(f, _)| f.rsplit_once('.').is_some_and(|(s, _)| s == stem))
                .map(|(_, r)| r)
        })
    }

    /// The choices a select question offers now (its choice filter applied).
    fn choices(&self, key: &Key, lang: &str) -> Vec<ChoiceView> {
        let n = &self.form.nodes[key.node];
        if let Some(file) = &n.file {
            let Some(rows) = self.media.get(file) else { return Vec::new() };
            let filter = self.nodes[key.node].choice_filter.as_ref();
            let ctx = self.ctx(key);
            return rows
                .iter()
                .filter(|r| r.get("name").is_some_and(|n| !n.is_empty()))
                .map(|r| media_item(r, lang))
                .filter(|item| filter.is_none_or(|f| expr::evaluate_with_item(f, &ctx, item).to_bool()))
                .map(|item| ChoiceView {
                    name: item.get("name").cloned().unwrap_or_default(),
                    label: item.get("label").cloned().unwrap_or_default(),
                })
                .collect();
        }
        let Some(list) = n.list.as_ref().and_then(|l| self.form.choice_lists.get(l)) else {
            return Vec::new();
        };
        let filter = self.nodes[key.node].choice_filter.as_ref();
        let ctx = self.ctx(key);
        list.iter()
            .filter(|c| {
                filter.is_none_or(|f| expr::evaluate_with_item(f, &ctx, &choice_item(c, lang)).to_bool())
            })
            .map(|c| ChoiceView {
                name: c.name.clone(),
                label: translate(&c.label, lang).unwrap_or(&c.name).to_owned(),
            })
            .collect()
    }

    /// Label text with `${name}` replaced by values.
    fn render(&self, text: &str, key: &Key) -> String {
        if !text.contains("${") {
            return text.to_owned();
        }
        let mut out = String::new();
        let mut rest = text;
        while let Some(i) = rest.find("${") {
            out.push_str(&rest[..i]);
            let after = &rest[i + 2..];
            let Some(end) = after.find('}') else {
                out.push_str(&rest[i..]);
                rest = "";
                break;
            };
            out.push_str(&self.ctx(key).reference(after[..end].trim()).to_str());
            rest = &after[end + 1..];
        }
        out.push_str(rest);
        out
    }

    /// Checks a JSON answer against the question's type; returns its text form.
    fn check_value(&self, node: usize, value: &Json) -> Result<String, FormError> {
        let n = &self.form.nodes[node];
        let wrong =
            |expected: &str| FormError::WrongType { question: n.name.clone(), expected: expected.to_owned() };
        if value.is_null() {
            return Ok(String::new());
        }
        use QuestionType as Q;
        let text = match n.kind {
            Q::Integer => match value {
                Json::Number(x) if x.is_i64() || x.is_u64() => x.to_string(),
                Json::Number(x) if x.as_f64().is_some_and(|f| f.fract() == 0.0 && f.abs() < 9.0e15) => {
                    format!("{}", x.as_f64().unwrap_or(0.0) as i64)
                }
                Json::String(s) if s.trim().parse::<i64>().is_ok() => {
                    s.trim().parse::<i64>().map(|i| i.to_string()).unwrap_or_default()
                }
                _ => return Err(wrong("a whole number")),
            },
            Q::Decimal | Q::Range => {
                let f = match value {
                    Json::Number(x) => x.as_f64(),
                    Json::String(s) => s.trim().parse::<f64>().ok(),
                    _ => None,
                };
                match f {
                    Some(f) if f.is_finite() => expr::format_number(f),
                    _ => return Err(wrong("a number")),
                }
            }
            Q::SelectOne | Q::SelectMultiple | Q::SelectOneFromFile | Q::SelectMultipleFromFile | Q::Rank => {
                let picks: Vec<String> = match value {
                    Json::String(s) => s.split_whitespace().map(str::to_owned).collect(),
                    Json::Number(x) => vec![x.to_string()],
                    Json::Array(a) => {
                        let mut v = Vec::new();
                        for x in a {
                            match x {
                                Json::String(s) => v.push(s.trim().to_owned()),
                                Json::Number(x) => v.push(x.to_string()),
                                _ => return Err(wrong("choice names")),
                            }
                        }
                        v
                    }
                    _ => return Err(wrong("choice names")),
                };
                if matches!(n.kind, Q::SelectOne | Q::SelectOneFromFile) && picks.len() > 1 {
                    return Err(wrong("one choice name"));
                }
                if let Some(rows) = n.file.as_ref().and_then(|f| self.media.get(f)) {
                    let known = |p: &str| rows.iter().any(|r| r.get("name").is_some_and(|n| n == p));
                    let unknown = picks.iter().filter(|p| !known(p)).count();
                    if unknown > 0 {
                        return Err(FormError::NotAChoice {
                            question: n.name.clone(),
                            list: n.file.clone().unwrap_or_default(),
                            choice_count: unknown,
                        });
                    }
                }
                if let Some(list) = n.list.as_ref().and_then(|l| self.form.choice_lists.get(l)) {
                    let unknown = picks.iter().filter(|p| !list.iter().any(|c| &c.name == *p)).count();
                    if unknown > 0 {
                        return Err(FormError::NotAChoice {
                            question: n.name.clone(),
                            list: n.list.clone().unwrap_or_default(),
                            choice_count: unknown,
                        });
                    }
                }
                picks.join(" ")
            }
            Q::Date => match value {
                Json::String(s) if s.trim().len() == 10 && expr::parse_date_days(s).is_some() => {
                    s.trim().to_owned()
                }
                _ => return Err(wrong("a date (YYYY-MM-DD)")),
            },
            Q::DateTime => match value {
                Json::String(s) if expr::parse_date_days(s).is_some() => s.trim().to_owned(),
                _ => return Err(wrong("a date and time (YYYY-MM-DDTHH:MM:SS)")),
            },
            Q::Time => match value {
                Json::String(s) if expr::parse_time_seconds(s).is_some() => s.trim().to_owned(),
                _ => return Err(wrong("a time (HH:MM:SS)")),
            },
            Q::Geopoint => {
                let text = match value {
                    Json::String(s) => s.trim().to_owned(),
                    Json::Array(a) => a.iter().map(|x| x.to_string()).collect::<Vec<_>>().join(" "),
                    _ => return Err(wrong("a point: latitude longitude [altitude accuracy]")),
                };
                if !valid_point(&text) {
                    return Err(wrong("a point: latitude longitude [altitude accuracy]"));
                }
                text
            }
            Q::Geotrace | Q::Geoshape => match value {
                Json::String(s) if s.split(';').filter(|p| !p.trim().is_empty()).all(valid_point) => {
                    s.trim().to_owned()
                }
                _ => return Err(wrong("points separated by ';'")),
            },
            Q::Acknowledge | Q::Trigger => match value {
                Json::Bool(true) => "OK".to_owned(),
                Json::Bool(false) => String::new(),
                Json::String(s) if s == "OK" => s.clone(),
                _ => return Err(wrong("true or \"OK\"")),
            },
            _ => match value {
                Json::String(s) => s.clone(),
                _ => return Err(wrong("text")),
            },
        };
        Ok(text)
    }
}

/// A `repeat_count` never creates more rows than this.
const MAX_COUNTED_ROWS: f64 = 500.0;

fn valid_point(s: &str) -> bool {
    let parts: Vec<f64> = s.split_whitespace().filter_map(|p| p.parse().ok()).collect();
    let count = s.split_whitespace().count();
    count == parts.len()
        && (2..=4).contains(&count)
        && parts.iter().all(|x| x.is_finite())
        && (-90.0..=90.0).contains(&parts[0])
        && (-180.0..=180.0).contains(&parts[1])
}

/// A media file's row as a choice filter sees it, with `label` in the session's language
/// (`label::English (en)`, `label::en`, or `label`).
fn media_item(row: &MediaRow, lang: &str) -> Item {
    let mut item = row.clone();
    let label = row
        .get(&format!("label::{lang}"))
        .or_else(|| language_code(lang).and_then(|code| row.get(&format!("label::{code}"))))
        .or_else(|| row.get("label"))
        .or_else(|| row.iter().find(|(k, _)| k.starts_with("label::")).map(|(_, v)| v))
        .or_else(|| row.get("name"))
        .cloned()
        .unwrap_or_default();
    item.insert("label".to_owned(), label);
    item
}

fn choice_item(c: &super::model::Choice, lang: &str) -> Item {
    let mut item: Item = c.extra.clone();
    item.insert("name".to_owned(), c.name.clone());
    item.insert("label".to_owned(), translate(&c.label, lang).unwrap_or(&c.name).to_owned());
    item
}

/// A calculation's result as an answer: NaN is empty, as ODK stores it.
fn calculated_text(v: &Value) -> String {
    match v {
        Value::Num(n) if n.is_nan() => String::new(),
        other => other.to_str(),
    }
}

/// A stored JSON value as the text expressions see.
fn json_text(v: &Json) -> String {
    match v {
        Json::Null => String::new(),
        Json::String(s) => s.clone(),
        Json::Bool(b) => b.to_string(),
        Json::Number(n) => n.as_f64().map(expr::format_number).unwrap_or_else(|| n.to_string()),
        Json::Array(a) => a.iter().map(json_text).collect::<Vec<_>>().join(" "),
        Json::Object(_) => String::new(),
    }
}

/// An answer's text as the JSON value stored: numbers for numeric questions.
fn to_json(kind: QuestionType, text: &str) -> Json {
    if text.is_empty() {
        return Json::Null;
    }
    match kind {
        QuestionType::Integer => text.parse::<i64>().map(Json::from).unwrap_or_else(|_| Json::from(text)),
        QuestionType::Decimal | QuestionType::Range => text
            .parse::<f64>()
            .ok()
            .and_then(serde_json::Number::from_f64)
            .map(Json::Number)
            .unwrap_or_else(|| Json::from(text)),
        _ => Json::from(text),
    }
}

/// Expressions see the form from one instance.
struct Ctx<'a> {
    engine: &'a Engine,
    key: &'a Key,
}

impl Context for Ctx<'_> {
    fn form_version(&self) -> String {
        self.engine.form.settings.version.clone()
    }

    fn reference(&self, name: &str) -> Value {
        let e = self.engine;
        let Some(&t) = e.by_name.get(name) else { return Value::Nodes(Vec::new()) };
        let common = e.common_scope(self.key.node, t).min(self.key.rows.len());
        let keys = e.instances(t, &self.key.rows[..common]);
        Value::Nodes(keys.iter().map(|k| e.seen_value(k)).collect())
    }

    fn current(&self) -> Value {
        Value::Nodes(vec![self.engine.seen_value(self.key)])
    }

    fn position(&self) -> f64 {
        let e = self.engine;
        let scope = &e.nodes[self.key.node].scope;
        let Some((&r, depth)) = scope.last().zip(scope.len().checked_sub(1)) else { return f64::NAN };
        let (Some(row), Some(prefix)) = (self.key.rows.get(depth), self.key.rows.get(..depth)) else {
            return f64::NAN;
        };
        e.rows
            .get(&(r, prefix.to_vec()))
            .and_then(|l| l.iter().position(|x| x == row))
            .map(|p| (p + 1) as f64)
            .unwrap_or(f64::NAN)
    }

    fn indexed_repeat(&self, question: &str, indices: &[(String, f64)]) -> Value {
        let e = self.engine;
        let Some(&q) = e.by_name.get(question) else { return Value::Nodes(Vec::new()) };
        let mut rows: Vec<Uuid> = Vec::new();
        for &r in &e.nodes[q].scope {
            let wanted = e.form.nodes[r].name.as_str();
            let list = e.rows.get(&(r, rows.clone())).cloned().unwrap_or_default();
            let row = match indices.iter().find(|(n, _)| n == wanted) {
                Some((_, i)) if *i >= 1.0 && i.is_finite() => list.get(*i as usize - 1).copied(),
                Some(_) => None,
                // A repeat not named keeps the current row, as ODK does.
                None => self.key.rows.get(rows.len()).copied().filter(|x| list.contains(x)),
            };
            match row {
                Some(x) => rows.push(x),
                None => return Value::Nodes(Vec::new()),
            }
        }
        Value::Nodes(vec![e.seen_value(&Key { node: q, rows })])
    }

    fn choice_label(&self, question: &str, choice: &str) -> Option<String> {
        let e = self.engine;
        let n = e.form.node(question)?;
        if let Some(file) = &n.file {
            let row = e.media.get(file)?.iter().find(|r| r.get("name").is_some_and(|x| x == choice))?;
            return media_item(row, &e.lang).remove("label");
        }
        let list = e.form.choice_lists.get(n.list.as_ref()?)?;
        let c = list.iter().find(|c| c.name == choice)?;
        Some(translate(&c.label, &e.lang).unwrap_or(&c.name).to_owned())
    }

    fn instance(&self, list: &str) -> Option<Vec<Item>> {
        let e = self.engine;
        match e.form.choice_lists.get(list) {
            Some(choices) => Some(choices.iter().map(|c| choice_item(c, &e.lang)).collect()),
            None => Some(e.media_by_stem(list)?.iter().map(|r| media_item(r, &e.lang)).collect()),
        }
    }

    fn pulldata(&self, file: &str, column: &str, key_column: &str, key: &str) -> String {
        let Some(rows) = self.engine.media_by_stem(file) else { return String::new() };
        rows.iter()
            .find(|r| r.get(key_column).is_some_and(|v| v == key))
            .and_then(|r| r.get(column))
            .cloned()
            .unwrap_or_default()
    }
}

/// A metadata value in its `uri:` form, with the scheme ODK Collect gives it.
fn metadata_uri(kind: QuestionType, value: &str) -> String {
    let scheme = match kind {
        QuestionType::DeviceId => "uuid",
        QuestionType::Username => "username",
        QuestionType::Email => "mailto",
        QuestionType::PhoneNumber => "tel",
        QuestionType::SimSerial => "simserial",
        QuestionType::SubscriberId => "imsi",
        _ => return value.to_owned(),
    };
    if value.is_empty() || value.starts_with(&format!("{scheme}:")) {
        value.to_owned()
    } else {
        format!("{scheme}:{value}")
    }
}
