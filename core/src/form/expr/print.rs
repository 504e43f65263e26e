//! Printing expressions back as text that parses to the same tree.

use std::fmt;

use super::{BinOp, Expr, PathExpr, PathStart};

impl fmt::Display for Expr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_expr(f, self, 0)
    }
}

fn write_str_literal(f: &mut fmt::Formatter<'_>, s: &str) -> fmt::Result {
    if s.contains('\'') {
        write!(f, "\"{s}\"")
    } else {
        write!(f, "'{s}'")
    }
}

/// Writes `e`, parenthesised when it binds looser than `min` requires.
fn write_expr(f: &mut fmt::Formatter<'_>, e: &Expr, min: u8) -> fmt::Result {
    match e {
        Expr::Number(n) => write!(f, "{n}"),
        Expr::Str(s) => write_str_literal(f, s),
        Expr::Ref(n) => write!(f, "${{{n}}}"),
        Expr::Current => f.write_str("."),
        Expr::Path(p) => write_path(f, p),
        Expr::Neg(inner) => {
            // Unary minus binds tighter than `*` but looser than `|`.
            let paren = min > 7;
            if paren {
                f.write_str("(")?;
            }
            f.write_str("-")?;
            write_expr(f, inner, 7)?;
            if paren {
                f.write_str(")")?;
            }
            Ok(())
        }
        Expr::Binary(op, a, b) => {
            let p = op.precedence();
            let paren = p < min;
            if paren {
                f.write_str("(")?;
            }
            write_expr(f, a, p)?;
            if *op == BinOp::Union {
                f.write_str(" | ")?;
            } else {
                write!(f, " {} ", op.symbol())?;
            }
            // Left-associative: a right operand of the same strength needs parentheses.
            write_expr(f, b, p + 1)?;
            if paren {
                f.write_str(")")?;
            }
            Ok(())
        }
        Expr::Call(name, args) => {
            write!(f, "{name}(")?;
            for (i, a) in args.iter().enumerate() {
                if i > 0 {
                    f.write_str(", ")?;
                }
                write_expr(f, a, 0)?;
            }
            f.write_str(")")
        }
    }
}

fn write_path(f: &mut fmt::Formatter<'_>, p: &PathExpr) -> fmt::Result {
    match &p.start {
        PathStart::Root => f.write_str("/")?,
        PathStart::Relative => {}
        PathStart::Expr(e) => {
            let simple = matches!(e, Expr::Call(..) | Expr::Ref(_));
            if !simple {
                f.write_str("(")?;
            }
            write_expr(f, e, 0)?;
            if !simple {
                f.write_str(")")?;
            }
            if !p.steps.is_empty() {
                f.write_str("/")?;
            }
        }
    }
    for (i, s) in p.steps.iter().enumerate() {
        if i > 0 {
            f.write_str("/")?;
        }
        f.write_str(&s.name)?;
        for pr in &s.predicates {
            f.write_str("[")?;
            write_expr(f, pr, 0)?;
            f.write_str("]")?;
        }
    }
    Ok(())
}
