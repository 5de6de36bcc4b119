//! The failure-behaviour lab: `cargo run --release -p seawall-bench --bin lab -- --help`.

fn main() {
    std::process::exit(seawall_bench::lab::cli::main(std::env::args().skip(1)));
}
