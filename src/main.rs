fn main() {
    eprintln!("rnat: the gateway binary is not wired up yet");
    std::process::exit(2);
}
