//! The `plip` binary: parse, run, exit code (all in [`plip::main_with_args`],
//! which the Python package's `plip` command calls too).

use std::process::ExitCode;

fn main() -> ExitCode {
    ExitCode::from(plip::main_with_args(std::env::args_os()))
}
