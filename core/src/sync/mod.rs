//! Sync: the wire types shared with the server and, with the `client` feature, the HTTP client.

#[cfg(feature = "client")]
pub mod client;
pub mod wire;
