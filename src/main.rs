//! The `plip` binary: parse flags, run, turn the result into an exit code.

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    // candle's errors capture a backtrace when RUST_BACKTRACE is set, and print
    // it in their message; a user sees one line. Panics keep their backtraces.
    if std::env::var_os("RUST_LIB_BACKTRACE").is_none() {
        std::env::set_var("RUST_LIB_BACKTRACE", "0");
    }
    plip::tune_allocator();
    let cli = plip::Cli::parse();
    match plip::run(cli) {
        Ok(code) => ExitCode::from(code as u8),
        Err(err) => {
            // A closed pipe (`plip search … | head`) is not an error.
            if let Some(io) = err.root_cause().downcast_ref::<std::io::Error>() {
                if io.kind() == std::io::ErrorKind::BrokenPipe {
                    return ExitCode::SUCCESS;
                }
            }
            eprintln!("plip: error: {err:#}");
            ExitCode::from(2)
        }
    }
}
