//! `rds-csi`: the CSI driver for MikroTik ROSE Data Server NVMe/TCP storage.
//! Subcommands: `controller`, `node`, `sim`, `demo`, `csi`.
#![forbid(unsafe_code)]

mod backends;
mod cli;
mod client;
mod demo;
mod nvmet;
mod run;

fn main() -> std::process::ExitCode {
    cli::main()
}
