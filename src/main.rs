//! The `flint` command line (native only; in the browser the library's `wasm` module is the
//! surface).

#[cfg(not(target_arch = "wasm32"))]
fn main() -> std::process::ExitCode {
    flint::cli::main()
}

#[cfg(target_arch = "wasm32")]
fn main() {}
