//! `stallscope`: parses the command line and hands it to the library.

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = stallscope::cli::Cli::parse();
    match stallscope::cli::run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("stallscope: {}", stallscope::cli::error_text(&e));
            ExitCode::FAILURE
        }
    }
}
