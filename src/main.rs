//! The `olive` binary: parses the command line and hands over to the library.
#![forbid(unsafe_code)]

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = olive::cli::Cli::parse();
    match olive::cli::run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("olive: {e:#}");
            ExitCode::FAILURE
        }
    }
}
