//! The server's rules, written once for every storage backend and every caller (HTTP handlers,
//! admin commands, the demo): who may write which fields ([`rules`]), how the server stamps
//! its own writes ([`clock`]), which blobs are served how ([`blobs`]), which enrollment codes
//! still work ([`enroll`]), and the bounds every request is held to ([`limits`]).
//!
//! [`Service`] ([`ops`]) is every operation the server offers: it opens a storage transaction,
//! reads and writes through the backend's primitives, and takes every decision itself; a
//! backend never decides who may do what.

pub mod accounts;
pub mod blobs;
pub mod clock;
pub mod enroll;
pub mod exports;
pub mod limits;
pub mod ops;
pub mod read_model;
pub mod rules;
pub mod settings;
pub mod snapshot;

pub use ops::Service;
