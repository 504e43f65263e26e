//! uniffi bindings over `tejido-core`, namespace `tejido`. Converts types and errors; owns the
//! async runtime. (Filled by the bindings work.)

uniffi::setup_scaffolding!("tejido");

/// The version of the Tejido library.
#[uniffi::export]
pub fn tejido_version() -> String {
    env!("CARGO_PKG_VERSION").to_owned()
}
