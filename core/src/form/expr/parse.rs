//! Tokenising and parsing expressions (XPath 1.0 grammar plus `${name}` references).

use super::{BinOp, Expr, PathExpr, PathStart, Step};

/// Why an expression does not parse. Positions count characters from 0.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("at character {position}: {message}")]
pub struct ParseError {
    pub position: usize,
    pub message: String,
}

/// Nesting deeper than this is refused rather than risking the stack.
const MAX_DEPTH: usize = 64;
/// Longer expressions are refused.
const MAX_LEN: usize = 16 * 1024;

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Num(f64),
    Str(String),
    Ref(String),
    Name(String),
    Op(&'static str),
    Dot,
    DotDot,
    Star,
    At,
}

fn is_name_start(c: char) -> bool {
    c.is_alphabetic() || c == '_'
}

fn is_name_char(c: char) -> bool {
    c.is_alphanumeric() || matches!(c, '_' | '-' | '.')
}

fn tokenize(src: &str) -> Result<Vec<(Tok, usize)>, ParseError> {
    let chars: Vec<char> = src.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    let err = |position: usize, message: &str| ParseError { position, message: message.to_owned() };
    while i < chars.len() {
        let c = chars[i];
        let start = i;
        if c.is_whitespace() {
            i += 1;
            continue;
        }
        if c.is_ascii_digit() || (c == '.' && chars.get(i + 1).is_some_and(|d| d.is_ascii_digit())) {
            while i < chars.len() && chars[i].is_ascii_digit() {
                i += 1;
            }
            if i < chars.len() && chars[i] == '.' {
                i += 1;
                while i < chars.len() && chars[i].is_ascii_digit() {
                    i += 1;
                }
            }
            let text: String = chars[start..i].iter().collect();
            let n: f64 = text.parse().map_err(|_| err(start, "malformed number"))?;
            if !n.is_finite() {
                return Err(err(start, "number too large"));
            }
            out.push((Tok::Num(n), start));
            continue;
        }
        match c {
            '\'' | '"' => {
                let close = chars[i + 1..].iter().position(|&d| d == c);
                let Some(len) = close else { return Err(err(start, "unterminated string")) };
                out.push((Tok::Str(chars[i + 1..i + 1 + len].iter().collect()), start));
                i += len + 2;
            }
            '$' => {
                if chars.get(i + 1) != Some(&'{') {
                    return Err(err(start, "'$' must start a ${name} reference"));
                }
                let close = chars[i + 2..].iter().position(|&d| d == '}');
                let Some(len) = close else { return Err(err(start, "unterminated ${name} reference")) };
                let name: String = chars[i + 2..i + 2 + len].iter().collect();
                let name = name.trim().to_owned();
                if name.is_empty()
                    || !name.chars().next().is_some_and(is_name_start)
                    || !name.chars().all(is_name_char)
                {
                    return Err(err(start, "a ${name} reference must hold a question name"));
                }
                out.push((Tok::Ref(name), start));
                i += len + 3;
            }
            '.' => {
                if chars.get(i + 1) == Some(&'.') {
                    out.push((Tok::DotDot, start));
                    i += 2;
                } else {
                    out.push((Tok::Dot, start));
                    i += 1;
                }
            }
            '*' => {
                out.push((Tok::Star, start));
                i += 1;
            }
            '@' => {
                out.push((Tok::At, start));
                i += 1;
            }
            '!' if chars.get(i + 1) == Some(&'=') => {
                out.push((Tok::Op("!="), start));
                i += 2;
            }
            '<' | '>' => {
                let eq = chars.get(i + 1) == Some(&'=');
                let op = match (c, eq) {
                    ('<', true) => "<=",
                    ('<', false) => "<",
                    ('>', true) => ">=",
                    _ => ">",
                };
                out.push((Tok::Op(op), start));
                i += if eq { 2 } else { 1 };
            }
            '/' => {
                if chars.get(i + 1) == Some(&'/') {
                    return Err(err(start, "'//' (descendant paths) is not supported"));
                }
                out.push((Tok::Op("/"), start));
                i += 1;
            }
            '=' | '+' | '-' | '(' | ')' | '[' | ']' | ',' | '|' => {
                let op = match c {
                    '=' => "=",
                    '+' => "+",
                    '-' => "-",
                    '(' => "(",
                    ')' => ")",
                    '[' => "[",
                    ']' => "]",
                    ',' => ",",
                    _ => "|",
                };
                out.push((Tok::Op(op), start));
                i += 1;
            }
            c if is_name_start(c) => {
                while i < chars.len() && is_name_char(chars[i]) {
                    i += 1;
                }
                // A QName: `jr:choice-name`.
                if i + 1 < chars.len() && chars[i] == ':' && is_name_start(chars[i + 1]) {
                    i += 1;
                    while i < chars.len() && is_name_char(chars[i]) {
                        i += 1;
                    }
                }
                out.push((Tok::Name(chars[start..i].iter().collect()), start));
            }
            _ => return Err(err(start, &format!("unexpected character {c:?}"))),
        }
    }
    Ok(out)
}

struct Parser {
    toks: Vec<(Tok, usize)>,
    pos: usize,
    end: usize,
    depth: usize,
}

/// Parses an expression.
pub fn parse(source: &str) -> Result<Expr, ParseError> {
    if source.len() > MAX_LEN {
        return Err(ParseError { position: 0, message: format!("expression longer than {MAX_LEN} bytes") });
    }
    let toks = tokenize(source)?;
    let end = source.chars().count();
    if toks.is_empty() {
        return Err(ParseError { position: 0, message: "empty expression".into() });
    }
    let mut p = Parser { toks, pos: 0, end, depth: 0 };
    let e = p.expr()?;
    if p.pos < p.toks.len() {
        return Err(p.error("unexpected text after the end of the expression"));
    }
    Ok(e)
}

impl Parser {
    fn peek(&self) -> Option<&Tok> {
        self.toks.get(self.pos).map(|(t, _)| t)
    }

    fn position(&self) -> usize {
        self.toks.get(self.pos).map(|(_, p)| *p).unwrap_or(self.end)
    }

    fn error(&self, message: &str) -> ParseError {
        ParseError { position: self.position(), message: message.to_owned() }
    }

    fn is_op(&self, op: &str) -> bool {
        matches!(self.peek(), Some(Tok::Op(o)) if *o == op)
    }

    fn expect(&mut self, op: &str) -> Result<(), ParseError> {
        if self.is_op(op) {
            self.pos += 1;
            Ok(())
        } else {
            Err(self.error(&format!("expected '{op}'")))
        }
    }

    fn enter(&mut self) -> Result<(), ParseError> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return Err(self.error("expression nested too deeply"));
        }
        Ok(())
    }

    fn expr(&mut self) -> Result<Expr, ParseError> {
        self.enter()?;
        let e = self.binary(1);
        self.depth -= 1;
        e
    }

    /// The operator at the cursor, if it is a binary operator (operator words count only here,
    /// after an operand, as XPath says).
    fn binop(&self) -> Option<BinOp> {
        Some(match self.peek()? {
            Tok::Name(n) => match n.as_str() {
                "or" => BinOp::Or,
                "and" => BinOp::And,
                "div" => BinOp::Div,
                "mod" => BinOp::Mod,
                _ => return None,
            },
            Tok::Op(o) => match *o {
                "=" => BinOp::Eq,
                "!=" => BinOp::Ne,
                "<" => BinOp::Lt,
                "<=" => BinOp::Le,
                ">" => BinOp::Gt,
                ">=" => BinOp::Ge,
                "+" => BinOp::Add,
                "-" => BinOp::Sub,
                "|" => BinOp::Union,
                _ => return None,
            },
            Tok::Star => BinOp::Mul,
            _ => return None,
        })
    }

    /// Precedence climbing over the binary operators of strength `min` and above (below `|`).
    fn binary(&mut self, min: u8) -> Result<Expr, ParseError> {
        let mut left = self.unary()?;
        while let Some(op) = self.binop() {
            let p = op.precedence();
            if p < min || op == BinOp::Union {
                break;
            }
            self.pos += 1;
            let right = self.binary(p + 1)?;
            left = Expr::Binary(op, Box::new(left), Box::new(right));
        }
        Ok(left)
    }

    fn unary(&mut self) -> Result<Expr, ParseError> {
        if self.is_op("-") {
            self.pos += 1;
            self.enter()?;
            let inner = self.unary();
            self.depth -= 1;
            return Ok(Expr::Neg(Box::new(inner?)));
        }
        self.union()
    }

    fn union(&mut self) -> Result<Expr, ParseError> {
        let mut left = self.path()?;
        while self.is_op("|") {
            self.pos += 1;
            let right = self.path()?;
            left = Expr::Binary(BinOp::Union, Box::new(left), Box::new(right));
        }
        Ok(left)
    }

    /// A path, or a primary expression optionally followed by `/steps`.
    fn path(&mut self) -> Result<Expr, ParseError> {
        match self.peek() {
            None => Err(self.error("expected a value")),
            Some(Tok::Op("/")) => {
                self.pos += 1;
                let steps = if self.starts_step() { self.steps()? } else { Vec::new() };
                Ok(Expr::Path(Box::new(PathExpr { start: PathStart::Root, steps })))
            }
            Some(Tok::Dot) if !matches!(self.toks.get(self.pos + 1), Some((Tok::Op("/"), _))) => {
                self.pos += 1;
                if self.is_op("[") {
                    return Err(self.error("predicates on '.' are not supported"));
                }
                Ok(Expr::Current)
            }
            Some(Tok::Name(_)) if matches!(self.toks.get(self.pos + 1), Some((Tok::Op("("), _))) => {
                let call = self.call()?;
                self.continue_path(call)
            }
            Some(Tok::Name(_) | Tok::Dot | Tok::DotDot | Tok::Star | Tok::At) => {
                let steps = self.steps()?;
                Ok(Expr::Path(Box::new(PathExpr { start: PathStart::Relative, steps })))
            }
            Some(_) => {
                let prim = self.primary()?;
                self.continue_path(prim)
            }
        }
    }

    fn continue_path(&mut self, base: Expr) -> Result<Expr, ParseError> {
        if self.is_op("[") {
            return Err(self.error("predicates are supported on path steps only"));
        }
        if !self.is_op("/") {
            return Ok(base);
        }
        self.pos += 1;
        let steps = self.steps()?;
        Ok(Expr::Path(Box::new(PathExpr { start: PathStart::Expr(base), steps })))
    }

    fn starts_step(&self) -> bool {
        matches!(self.peek(), Some(Tok::Name(_) | Tok::Dot | Tok::DotDot | Tok::Star | Tok::At))
    }

    fn steps(&mut self) -> Result<Vec<Step>, ParseError> {
        let mut steps = vec![self.step()?];
        while self.is_op("/") {
            self.pos += 1;
            steps.push(self.step()?);
        }
        Ok(steps)
    }

    fn step(&mut self) -> Result<Step, ParseError> {
        let name = match self.peek() {
            Some(Tok::Name(n)) => {
                if matches!(self.toks.get(self.pos + 1), Some((Tok::Op("("), _))) {
                    return Err(self.error("a function call cannot be a path step"));
                }
                n.clone()
            }
            Some(Tok::Dot) => ".".to_owned(),
            Some(Tok::DotDot) => "..".to_owned(),
            Some(Tok::Star) => "*".to_owned(),
            Some(Tok::At) => match self.toks.get(self.pos + 1) {
                Some((Tok::Name(n), _)) => {
                    self.pos += 1;
                    format!("@{n}")
                }
                _ => return Err(self.error("expected an attribute name after '@'")),
            },
            _ => return Err(self.error("expected a path step")),
        };
        self.pos += 1;
        let mut predicates = Vec::new();
        while self.is_op("[") {
            if name == "." || name == ".." {
                return Err(self.error("predicates on '.' and '..' are not supported"));
            }
            self.pos += 1;
            predicates.push(self.expr()?);
            self.expect("]")?;
        }
        Ok(Step { name, predicates })
    }

    fn call(&mut self) -> Result<Expr, ParseError> {
        let Some(Tok::Name(name)) = self.peek().cloned() else {
            return Err(self.error("expected a function"));
        };
        self.pos += 1;
        self.expect("(")?;
        let mut args = Vec::new();
        if !self.is_op(")") {
            loop {
                args.push(self.expr()?);
                if self.is_op(",") {
                    self.pos += 1;
                } else {
                    break;
                }
            }
        }
        self.expect(")")?;
        Ok(Expr::Call(name, args))
    }

    fn primary(&mut self) -> Result<Expr, ParseError> {
        let Some(tok) = self.peek().cloned() else { return Err(self.error("expected a value")) };
        match tok {
            Tok::Num(n) => {
                self.pos += 1;
                Ok(Expr::Number(n))
            }
            Tok::Str(s) => {
                self.pos += 1;
                Ok(Expr::Str(s))
            }
            Tok::Ref(n) => {
                self.pos += 1;
                Ok(Expr::Ref(n))
            }
            Tok::Op("(") => {
                self.pos += 1;
                let e = self.expr()?;
                self.expect(")")?;
                Ok(e)
            }
            _ => Err(self.error("expected a value")),
        }
    }
}
