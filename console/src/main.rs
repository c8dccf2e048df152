//! `kdfed-console`: the end users' web console.

use std::process::ExitCode;

use clap::Parser;

#[derive(Parser)]
#[command(
    name = "kdfed-console",
    version,
    about = "kdfed console: the end users' web console (catalog, launch, watch, change)"
)]
struct Cli {
    #[command(flatten)]
    args: kdfed_console::Args,
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    match kdfed_console::run(cli.args).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("kdfed-console: {e:#}");
            ExitCode::FAILURE
        }
    }
}
