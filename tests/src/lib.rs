//! Shared helpers for Tejido's end-to-end tests and benchmarks.
