//! The `olive` binary: parses the command line and hands over to the library.
#![forbid(unsafe_code)]

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = match olive::cli::Cli::try_parse() {
        Ok(cli) => cli,
        // --help and --version exit 0; usage errors exit 1, not clap's 2,
        // which `tail` and `post` use for a failed connection.
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(u8::from(e.use_stderr()));
        }
    };
    match olive::cli::run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("olive: {e:#}");
            ExitCode::FAILURE
        }
    }
}
