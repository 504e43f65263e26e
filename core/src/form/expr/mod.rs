//! The expression language: the ODK XPath subset XLSForms use (`${name}` references, `.`,
//! arithmetic, comparisons, `and`/`or`, functions, and `instance('list')/root/item[...]`
//! lookups), with ODK's type rules. [`parse`] builds an [`Expr`], `Display` prints it back, and
//! [`evaluate`] runs it against a [`Context`] that supplies answers.

mod eval;
mod functions;
mod parse;
mod print;
mod value;

pub use eval::{evaluate, evaluate_with_item, Context, Item};
pub use functions::{is_known_function, FUNCTIONS};
pub use parse::{parse, ParseError};
pub use value::{
    format_date, format_number, parse_date_days, parse_time_seconds, parse_time_seconds_local,
    string_to_number, Value,
};

/// A parsed expression.
#[derive(Debug, Clone, PartialEq)]
pub enum Expr {
    Number(f64),
    Str(String),
    /// `${name}`.
    Ref(String),
    /// `.`: the question the expression belongs to.
    Current,
    /// A location path: `/data/a/b`, `../x`, `instance('l')/root/item[name = 'a']/label`.
    Path(Box<PathExpr>),
    Neg(Box<Expr>),
    Binary(BinOp, Box<Expr>, Box<Expr>),
    /// A function call; the name as written (`jr:choice-name`).
    Call(String, Vec<Expr>),
}

/// Where a location path starts.
#[derive(Debug, Clone, PartialEq)]
pub enum PathStart {
    /// `/…`
    Root,
    /// `name/…`, `../…`
    Relative,
    /// `instance('x')/…`, `${name}/…`, `(…)/…`
    Expr(Expr),
}

/// A location path.
#[derive(Debug, Clone, PartialEq)]
pub struct PathExpr {
    pub start: PathStart,
    pub steps: Vec<Step>,
}

/// One step of a path: a name, `.`, `..`, `*` or `@name`, with predicates.
#[derive(Debug, Clone, PartialEq)]
pub struct Step {
    pub name: String,
    pub predicates: Vec<Expr>,
}

/// Binary operators, loosest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BinOp {
    Or,
    And,
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
    Add,
    Sub,
    Mul,
    Div,
    Mod,
    Union,
}

impl BinOp {
    pub fn symbol(self) -> &'static str {
        match self {
            BinOp::Or => "or",
            BinOp::And => "and",
            BinOp::Eq => "=",
            BinOp::Ne => "!=",
            BinOp::Lt => "<",
            BinOp::Le => "<=",
            BinOp::Gt => ">",
            BinOp::Ge => ">=",
            BinOp::Add => "+",
            BinOp::Sub => "-",
            BinOp::Mul => "*",
            BinOp::Div => "div",
            BinOp::Mod => "mod",
            BinOp::Union => "|",
        }
    }

    /// Binding strength: higher binds tighter.
    pub fn precedence(self) -> u8 {
        match self {
            BinOp::Or => 1,
            BinOp::And => 2,
            BinOp::Eq | BinOp::Ne => 3,
            BinOp::Lt | BinOp::Le | BinOp::Gt | BinOp::Ge => 4,
            BinOp::Add | BinOp::Sub => 5,
            BinOp::Mul | BinOp::Div | BinOp::Mod => 6,
            BinOp::Union => 8,
        }
    }
}

impl Expr {
    /// Calls `f` on this expression and every expression inside it.
    pub fn walk(&self, f: &mut dyn FnMut(&Expr)) {
        f(self);
        match self {
            Expr::Number(_) | Expr::Str(_) | Expr::Ref(_) | Expr::Current => {}
            Expr::Path(p) => {
                if let PathStart::Expr(e) = &p.start {
                    e.walk(f);
                }
                for s in &p.steps {
                    for pr in &s.predicates {
                        pr.walk(f);
                    }
                }
            }
            Expr::Neg(e) => e.walk(f),
            Expr::Binary(_, a, b) => {
                a.walk(f);
                b.walk(f);
            }
            Expr::Call(_, args) => {
                for a in args {
                    a.walk(f);
                }
            }
        }
    }

    /// The `${names}` this expression reads, each once, in order of appearance.
    pub fn references(&self) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        self.walk(&mut |e| {
            if let Expr::Ref(n) = e {
                if !out.contains(n) {
                    out.push(n.clone());
                }
            }
        });
        out
    }

    /// The names of the functions this expression calls, each once.
    pub fn functions(&self) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        self.walk(&mut |e| {
            if let Expr::Call(n, _) = e {
                if !out.contains(n) {
                    out.push(n.clone());
                }
            }
        });
        out
    }
}
