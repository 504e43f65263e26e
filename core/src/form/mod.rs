//! Forms: the form model, XLSForm import, the expression language and form sessions.
//! (Filled by the forms work; see issue "Forms".)
