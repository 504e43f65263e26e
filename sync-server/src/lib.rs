//! `tejido-server`: the sync server (axum on tokio) and the storage it keeps.
//! The binary (`main.rs`) adds the admin CLI on top of this library.

pub mod api;
pub mod blobs;
pub mod export;
pub mod indicators;
pub mod secrets;
pub mod serve;
pub mod service;
pub mod storage;
pub mod testing;
pub mod web;

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}
