//! `tejido-server`: the sync server and admin CLI. (Filled by the sync work.)

fn main() {
    eprintln!("tejido-server: the sync server is not built yet");
    std::process::exit(2);
}
