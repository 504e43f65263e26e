//! `tejido-bench forms` (not built yet).

pub fn run(_args: &[String]) -> Result<(), String> {
    Err("the forms benchmark is not built yet".into())
}
