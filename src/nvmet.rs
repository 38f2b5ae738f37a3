//! `--backend nvmet`: the controller's volumes on a Linux host, as LVM thin
//! volumes exported by the kernel NVMe target, managed over the same SSH
//! client (and --rds-* SSH flags) as an RDS.

use std::sync::Arc;

use anyhow::{bail, Context};
use linux_target::{
    LinuxTarget, NqnPrefix, NvmetBackend, PoolName, PortSpec, Privilege, SshShell, TargetConfig,
    VgName,
};

use crate::cli::{BackendKind, ControllerArgs};

/// Refuses flags that do not apply to the chosen backend, so a setting
/// never silently does nothing.
pub fn check_flags(args: &ControllerArgs) -> anyhow::Result<()> {
    let n = &args.nvmet;
    match args.backend {
        BackendKind::Rds => {
            let given = [
                ("--nvmet-volume-group", n.nvmet_volume_group.is_some()),
                ("--nvmet-thin-pool", n.nvmet_thin_pool.is_some()),
                ("--nvmet-listen-address", n.nvmet_listen_address.is_some()),
                ("--nvmet-sudo", n.nvmet_sudo),
            ];
            if let Some((flag, _)) = given.iter().find(|(_, set)| *set) {
                bail!("{flag} is for --backend nvmet; this controller serves an RDS");
            }
        }
        BackendKind::Nvmet => {
            if args.rds_fencing {
                bail!("--rds-fencing is for --backend rds; the nvmet backend always fences at the target");
            }
            config(args)?;
        }
    }
    Ok(())
}

/// The address and port nodes connect to: where the target listens.
pub fn listen(args: &ControllerArgs) -> anyhow::Result<(String, u16)> {
    let n = &args.nvmet;
    let addr = n
        .nvmet_listen_address
        .context("--nvmet-listen-address is required with --backend nvmet")?;
    Ok((addr.to_string(), n.nvmet_port))
}

/// Where volumes are made and exported, from the flags.
fn config(args: &ControllerArgs) -> anyhow::Result<TargetConfig> {
    let n = &args.nvmet;
    let vg = n
        .nvmet_volume_group
        .as_deref()
        .context("--nvmet-volume-group is required with --backend nvmet")?;
    let pool = n
        .nvmet_thin_pool
        .as_deref()
        .context("--nvmet-thin-pool is required with --backend nvmet")?;
    let (addr, port) = listen(args)?;
    let addr = addr.parse().context("--nvmet-listen-address")?;
    // The configfs port's ID is the TCP port: one port per listening
    // service, and a hand-made port 1 is left alone.
    let port = PortSpec::new(port, addr, port).context("--nvmet-listen-address/--nvmet-port")?;
    let mut config = TargetConfig::new(
        VgName::new(vg).context("--nvmet-volume-group")?,
        PoolName::new(pool).context("--nvmet-thin-pool")?,
        port,
    );
    config.nqn_prefix = NqnPrefix::new(&args.naming.nqn_prefix)
        .context("--nqn-prefix (the kernel target needs 'nqn.yyyy-mm.<authority>:')")?;
    Ok(config)
}

/// The backend over `client`, the SSH connection to the Linux host.
pub fn backend(args: &ControllerArgs, client: routeros::Client) -> anyhow::Result<NvmetBackend> {
    let privilege = if args.nvmet.nvmet_sudo {
        Privilege::Sudo
    } else {
        Privilege::Root
    };
    let shell = SshShell::new(client, privilege);
    Ok(NvmetBackend::new(LinuxTarget::new(
        Arc::new(shell),
        config(args)?,
    )))
}
