//! The `runyard` binary: parse the command line, hand it to the library.

use clap::Parser;

fn main() -> std::process::ExitCode {
    let cli = runyard::cli::Cli::parse();
    match runyard::cli::run(cli) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("runyard: {e:#}");
            std::process::ExitCode::from(runyard::cli::exit_code(&e))
        }
    }
}
