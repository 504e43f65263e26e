//! Evaluating expressions against the answers a [`Context`] supplies.

use std::collections::BTreeMap;

use super::functions::call;
use super::value::Value;
use super::{BinOp, Expr, PathExpr, PathStart};

/// One entry of a choice list as `instance('list')/root/item` sees it: `name`, `label` (in the
/// session's language) and any other columns.
pub type Item = BTreeMap<String, String>;

/// What an expression can read: the form's answers, from the point of view of one question.
pub trait Context {
    /// `${name}`: the named question's value, or its values in every row of a repeat the
    /// current question is not inside.
    fn reference(&self, name: &str) -> Value;
    /// `.`: the current question's value.
    fn current(&self) -> Value;
    /// Another location path; by default read as a reference to its last step.
    fn path(&self, path: &PathExpr) -> Value {
        match path.steps.last() {
            Some(s) if s.name == "." => self.current(),
            Some(s) if !s.name.starts_with('.') && !s.name.starts_with('@') && s.name != "*" => {
                self.reference(&s.name)
            }
            _ => Value::Nodes(Vec::new()),
        }
    }
    /// `position(..)`: the 1-based index of the current repeat row.
    fn position(&self) -> f64 {
        f64::NAN
    }
    /// `indexed-repeat(${question}, ${repeat}, n, …)`.
    fn indexed_repeat(&self, _question: &str, _indices: &[(String, f64)]) -> Value {
        Value::Nodes(Vec::new())
    }
    /// The label of choice `choice` of a select question, in the session's language.
    fn choice_label(&self, _question: &str, _choice: &str) -> Option<String> {
        None
    }
    /// The entries of a choice list, for `instance('list')/root/item[…]`.
    fn instance(&self, _list: &str) -> Option<Vec<Item>> {
        None
    }
    /// `pulldata('file', 'column', 'key_column', key)`: the `column` of the first row of the
    /// form's media file `file.csv` whose `key_column` is `key`, or empty.
    fn pulldata(&self, _file: &str, _column: &str, _key_column: &str, _key: &str) -> String {
        String::new()
    }
    /// The current time.
    fn now(&self) -> chrono::DateTime<chrono::Local> {
        chrono::Local::now()
    }
    /// `version()`: the form's version.
    fn form_version(&self) -> String {
        String::new()
    }
}

/// Evaluation state: the context and, inside a choice filter or instance predicate, the item.
pub(super) struct Env<'a> {
    pub ctx: &'a dyn Context,
    pub item: Option<&'a Item>,
}

/// Evaluates `expr`. Never fails: a wrong type gives NaN or the empty string, as ODK does.
pub fn evaluate(expr: &Expr, ctx: &dyn Context) -> Value {
    Env { ctx, item: None }.eval(expr)
}

/// Evaluates a choice filter (or any expression) with a choice as its context item.
pub fn evaluate_with_item(expr: &Expr, ctx: &dyn Context, item: &Item) -> Value {
    Env { ctx, item: Some(item) }.eval(expr)
}

impl Env<'_> {
    pub fn eval(&self, expr: &Expr) -> Value {
        match expr {
            Expr::Number(n) => Value::Num(*n),
            Expr::Str(s) => Value::Str(s.clone()),
            Expr::Ref(n) => self.ctx.reference(n),
            Expr::Current => match self.item {
                Some(item) => Value::Nodes(vec![item.get("name").cloned().unwrap_or_default()]),
                None => self.ctx.current(),
            },
            Expr::Path(p) => self.path(p),
            Expr::Neg(e) => Value::Num(-self.eval(e).to_num()),
            Expr::Binary(op, a, b) => self.binary(*op, a, b),
            Expr::Call(name, args) => call(name, args, self),
        }
    }

    fn binary(&self, op: BinOp, a: &Expr, b: &Expr) -> Value {
        match op {
            BinOp::Or => Value::Bool(self.eval(a).to_bool() || self.eval(b).to_bool()),
            BinOp::And => Value::Bool(self.eval(a).to_bool() && self.eval(b).to_bool()),
            BinOp::Eq => Value::Bool(equals(&self.eval(a), &self.eval(b), false)),
            BinOp::Ne => Value::Bool(equals(&self.eval(a), &self.eval(b), true)),
            BinOp::Lt | BinOp::Le | BinOp::Gt | BinOp::Ge => {
                let (x, y) = (self.eval(a), self.eval(b));
                let cmp = |p: f64, q: f64| match op {
                    BinOp::Lt => p < q,
                    BinOp::Le => p <= q,
                    BinOp::Gt => p > q,
                    _ => p >= q,
                };
                let xs = numbers(&x);
                let ys = numbers(&y);
                Value::Bool(xs.iter().any(|p| ys.iter().any(|q| cmp(*p, *q))))
            }
            BinOp::Add => Value::Num(self.eval(a).to_num() + self.eval(b).to_num()),
            BinOp::Sub => Value::Num(self.eval(a).to_num() - self.eval(b).to_num()),
            BinOp::Mul => Value::Num(self.eval(a).to_num() * self.eval(b).to_num()),
            BinOp::Div => Value::Num(self.eval(a).to_num() / self.eval(b).to_num()),
            BinOp::Mod => Value::Num(self.eval(a).to_num() % self.eval(b).to_num()),
            BinOp::Union => {
                let mut out = nodes(self.eval(a));
                out.extend(nodes(self.eval(b)));
                Value::Nodes(out)
            }
        }
    }

    fn path(&self, p: &PathExpr) -> Value {
        if let PathStart::Expr(Expr::Call(f, args)) = &p.start {
            if f == "instance" {
                let list = args.first().map(|a| self.eval(a).to_str()).unwrap_or_default();
                return self.instance_path(&list, p);
            }
        }
        // Inside a choice filter, a bare name is a column of the choice.
        if let (Some(item), PathStart::Relative, [step]) = (self.item, &p.start, p.steps.as_slice()) {
            if step.predicates.is_empty() && !step.name.starts_with('.') {
                return Value::Nodes(item.get(&step.name).cloned().into_iter().collect());
            }
        }
        self.ctx.path(p)
    }

    /// `instance('list')/root/item[pred]/field`.
    fn instance_path(&self, list: &str, p: &PathExpr) -> Value {
        let Some(items) = self.ctx.instance(list) else { return Value::Nodes(Vec::new()) };
        let names: Vec<&str> = p.steps.iter().map(|s| s.name.as_str()).collect();
        if names.len() < 2 || names[0] != "root" || names[1] != "item" || names.len() > 3 {
            return Value::Nodes(Vec::new());
        }
        if !p.steps[0].predicates.is_empty() {
            return Value::Nodes(Vec::new());
        }
        let mut selected: Vec<&Item> = items.iter().collect();
        for pred in &p.steps[1].predicates {
            let mut kept = Vec::new();
            for (i, item) in selected.iter().enumerate() {
                let v = Env { ctx: self.ctx, item: Some(item) }.eval(pred);
                let keep = match v {
                    Value::Num(n) => (i + 1) as f64 == n,
                    other => other.to_bool(),
                };
                if keep {
                    kept.push(*item);
                }
            }
            selected = kept;
        }
        let field = match p.steps.get(2) {
            Some(s) if !s.predicates.is_empty() => return Value::Nodes(Vec::new()),
            Some(s) => s.name.as_str(),
            None => "name",
        };
        // Labels travel as `label`; pyxform's translated lists read them through `itextId`.
        let field = if field == "itextId" { "label" } else { field };
        Value::Nodes(selected.iter().map(|i| i.get(field).cloned().unwrap_or_default()).collect())
    }
}

fn nodes(v: Value) -> Vec<String> {
    match v {
        Value::Nodes(n) => n,
        other => vec![other.to_str()],
    }
}

fn numbers(v: &Value) -> Vec<f64> {
    match v {
        Value::Nodes(n) => n.iter().map(|s| Value::Str(s.clone()).to_num()).collect(),
        other => vec![other.to_num()],
    }
}

/// Numbers within JavaRosa's tolerance are equal (`6.1 - 7.8 = -1.7`).
fn numbers_equal(x: f64, y: f64) -> bool {
    x == y || (x - y).abs() < 1e-12
}

/// XPath equality (or inequality when `negate`), existential over node-sets.
fn equals(a: &Value, b: &Value, negate: bool) -> bool {
    if matches!(a, Value::Bool(_)) || matches!(b, Value::Bool(_)) {
        return (a.to_bool() == b.to_bool()) != negate;
    }
    let xs = a.items();
    let ys = b.items();
    xs.iter().any(|x| ys.iter().any(|y| atomic_equals(x, y) != negate))
}

fn atomic_equals(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Date { .. }, _) | (_, Value::Date { .. }) => {
            let (x, y) = (a.to_days(), b.to_days());
            x == y
        }
        (Value::Num(_), _) | (_, Value::Num(_)) => numbers_equal(a.to_num(), b.to_num()),
        _ => a.to_str() == b.to_str(),
    }
}
