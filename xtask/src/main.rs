//! Host orchestration for Janus: build, run, test, bench, iso, vhd.

mod vhd_cli;

use clap::{Parser, Subcommand};
use std::process::ExitCode;

#[derive(Parser)]
#[command(name = "cargo xtask", about = "Build, run and test the Janus hypervisor")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// The VHD host tool (create, info, check, convert, compare, bench).
    #[command(disable_help_flag = true)]
    Vhd {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.cmd {
        Cmd::Vhd { args } => vhd_cli::main(&args),
    }
}
