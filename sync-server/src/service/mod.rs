//! The server's rules, written once for every storage backend and every caller (HTTP handlers,
//! admin commands, the demo): who may write which fields ([`rules`]), how the server stamps
//! its own writes ([`clock`]), which blobs are served how ([`blobs`]), which enrollment codes
//! still work ([`enroll`]), and the bounds every request is held to ([`limits`]).
//!
//! Storage backends call these functions inside their transactions, handing them what they
//! looked up through [`rules::DocLookup`]; a backend never decides who may do what itself.

pub mod blobs;
pub mod clock;
pub mod enroll;
pub mod limits;
pub mod rules;
