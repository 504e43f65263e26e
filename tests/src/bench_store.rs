//! `tejido-bench store`.

pub fn run(_args: &[String]) -> Result<(), String> {
    Err("the store benchmark is not built yet".into())
}
