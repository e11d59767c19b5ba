//! The `flint` command line.

fn main() -> std::process::ExitCode {
    flint::cli::main()
}
