//! The one check every form passes before anything uses it: XLSForm import, publishing a form
//! as JSON, and the engine's constructor all call [`Form::validate`]. A form that passes can be
//! compiled into a session that never panics, and whose cost is bounded by the limits below.
//!
//! Expressions are also bounded by the parser: at most 16 KiB of source and 64 levels of
//! nesting each.

use std::collections::HashSet;

use super::expr;
use super::model::{Form, QuestionType};

/// The limits a form must stay within. Real forms are far below them: the largest third-party
/// forms we know have a few thousand questions, a few levels of groups and two of repeats.
pub mod limits {
    /// Questions, groups, repeats and metadata together.
    pub const MAX_NODES: usize = 20_000;
    /// Groups and repeats inside one another.
    pub const MAX_DEPTH: usize = 32;
    /// Repeats inside one another (each level multiplies the rows a session walks).
    pub const MAX_REPEAT_DEPTH: usize = 8;
    /// Choices over every list of the form.
    pub const MAX_CHOICES: usize = 200_000;
    /// Choice lists.
    pub const MAX_CHOICE_LISTS: usize = 5_000;
}

/// Why a form cannot be used. Messages name questions and limits, never answers.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FormInvalid {
    #[error("the form has {found} {what}; the limit is {limit}")]
    TooLarge { what: &'static str, found: usize, limit: usize },
    #[error("{name} is nested {found} levels deep in {what}; the limit is {limit}")]
    TooDeep { name: String, what: &'static str, found: usize, limit: usize },
    #[error("{name}: {problem}")]
    Structure { name: String, problem: String },
    #[error("the {column} of {name} is not a valid expression: {error}")]
    Expression { name: String, column: &'static str, error: String },
}

impl FormInvalid {
    /// The name of the question, group or repeat the problem is about, if it is about one.
    pub fn node_name(&self) -> Option<&str> {
        match self {
            FormInvalid::TooLarge { .. } => None,
            FormInvalid::TooDeep { name, .. }
            | FormInvalid::Structure { name, .. }
            | FormInvalid::Expression { name, .. } => Some(name),
        }
    }

    fn structure(name: &str, problem: impl Into<String>) -> FormInvalid {
        FormInvalid::Structure { name: name.to_owned(), problem: problem.into() }
    }
}

impl Form {
    /// Checks that this form can be used: its structure is consistent (every parent is an
    /// earlier group or repeat, names and paths are unique and agree), `repeat_count` is only
    /// on repeats, select questions name lists the form has, every expression parses, and the
    /// form is within [`limits`]. Returns the first problem found.
    pub fn validate(&self) -> Result<(), FormInvalid> {
        use limits::*;
        let too_large = |what, found, limit| {
            if found > limit {
                Err(FormInvalid::TooLarge { what, found, limit })
            } else {
                Ok(())
            }
        };
        too_large("questions, groups and repeats", self.nodes.len(), MAX_NODES)?;
        too_large("choice lists", self.choice_lists.len(), MAX_CHOICE_LISTS)?;
        too_large("choices", self.choice_lists.values().map(Vec::len).sum(), MAX_CHOICES)?;

        // Names are unique among siblings (as pyxform requires), which unique paths say; a name
        // used in several groups is addressed by its path, and no expression may name it.
        let mut paths = HashSet::new();
        // (depth, repeat depth) of each node's container chain, itself included.
        let mut depth: Vec<(usize, usize)> = Vec::with_capacity(self.nodes.len());
        for (i, n) in self.nodes.iter().enumerate() {
            let name = n.name.as_str();
            if name.is_empty() || name.contains('/') {
                return Err(FormInvalid::structure(
                    &format!("question {}", i + 1),
                    "a name must be non-empty and cannot contain /",
                ));
            }
            let (expected_path, (d, rd)) = match n.parent {
                None => (name.to_owned(), (0, 0)),
                Some(p) if p < i => {
                    let parent = &self.nodes[p];
                    if !parent.kind.is_container() {
                        return Err(FormInvalid::structure(name, "its parent is not a group or repeat"));
                    }
                    (format!("{}/{}", parent.path, name), depth[p])
                }
                Some(_) => return Err(FormInvalid::structure(name, "it comes before its group")),
            };
            if n.path != expected_path {
                return Err(FormInvalid::structure(name, "its path does not match its groups"));
            }
            if !paths.insert(n.path.as_str()) {
                return Err(FormInvalid::structure(name, "the path is used twice"));
            }
            let here = match n.kind {
                QuestionType::Group => (d + 1, rd),
                QuestionType::Repeat => (d + 1, rd + 1),
                _ => (d, rd),
            };
            if here.0 > MAX_DEPTH {
                return Err(FormInvalid::TooDeep {
                    name: name.to_owned(),
                    what: "groups and repeats",
                    found: here.0,
                    limit: MAX_DEPTH,
                });
            }
            if here.1 > MAX_REPEAT_DEPTH {
                return Err(FormInvalid::TooDeep {
                    name: name.to_owned(),
                    what: "repeats",
                    found: here.1,
                    limit: MAX_REPEAT_DEPTH,
                });
            }
            depth.push(here);

            if n.repeat_count.is_some() && n.kind != QuestionType::Repeat {
                return Err(FormInvalid::structure(name, "only a repeat can have a repeat_count"));
            }
            if let Some(list) = &n.list {
                if !self.choice_lists.contains_key(list) {
                    return Err(FormInvalid::structure(name, format!("there is no choice list {list}")));
                }
            }
            let expressions = [
                ("relevant", &n.relevant),
                ("calculation", &n.calculation),
                ("constraint", &n.constraint),
                ("required", &n.required),
                ("choice_filter", &n.choice_filter),
                ("repeat_count", &n.repeat_count),
            ];
            for (column, src) in expressions {
                if let Some(src) = src {
                    expr::parse(src).map_err(|e| FormInvalid::Expression {
                        name: name.to_owned(),
                        column,
                        error: e.to_string(),
                    })?;
                }
            }
        }
        Ok(())
    }
}
