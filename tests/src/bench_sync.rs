//! `tejido-bench sync` (not built yet).

pub fn run(_args: &[String]) -> Result<(), String> {
    Err("the sync benchmark is not built yet".into())
}
