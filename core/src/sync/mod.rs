//! Sync: the wire types shared with the server and, with the `client` feature, the HTTP client.

pub mod wire;
