//! The exports of [`LinuxTarget`]: a volume's subsystem, the hosts it
//! admits, cutting its sessions, and reading what configfs shows.

use super::*;

impl LinuxTarget {
    /// Reads the export of `nqn` back from the output of a script that
    /// ended with a read of it.
    fn read_export(&self, out: &str, nqn: &Nqn) -> Result<Option<Export>> {
        let dump = parse_dump(out).map_err(|s| Error(E::Protocol(s)))?;
        Ok(dump
            .subsystems
            .into_iter()
            .find(|s| s.nqn == nqn.as_str())
            .map(|s| Export::from_state(s, &self.config.port)))
    }

    /// Runs `act` then reads the export back, in one round trip.
    async fn act_and_read(
        &self,
        name: &'static str,
        act: String,
        nqn: &Nqn,
    ) -> Result<Option<Export>> {
        let read = self.nvmet.read(Select::One(nqn));
        let out = self.run(name, &format!("{act}{read}")).await?;
        self.read_export(&out, nqn)
    }

    /// Exports a volume on the port with no host but `hosts` allowed
    /// (hosts already allowed stay; see [`LinuxTarget::revoke`]), and
    /// checks what configfs then shows.
    pub async fn export(&self, lv: &VolumeName, hosts: &[Nqn]) -> Result<Export> {
        self.export_as(lv, hosts, false).await
    }

    /// Exports a volume (again: what configfs lost in a reboot of the
    /// host is made anew) admitting exactly `hosts` (empty: none): every
    /// other host allowed before is removed before the subsystem is linked
    /// to the port. Sessions already open stay open.
    pub async fn export_exactly(&self, lv: &VolumeName, hosts: &[Nqn]) -> Result<Export> {
        let e = self.export_as(lv, hosts, true).await?;
        let asked: std::collections::BTreeSet<&str> = hosts.iter().map(Nqn::as_str).collect();
        if !e.allowed_hosts.iter().all(|h| asked.contains(h.as_str())) {
            return Err(Error(E::Failed(format!(
                "the export of {lv} admits {:?}, not exactly the hosts asked",
                e.allowed_hosts
            ))));
        }
        Ok(e)
    }

    async fn export_as(&self, lv: &VolumeName, hosts: &[Nqn], exact: bool) -> Result<Export> {
        let nqn = self.nqn(lv);
        let device = self.device(lv);
        let path = format!("{}/{}", self.config.vg, self.lv(lv));
        let act = self.nvmet.export(&nqn, &device, &path, hosts, exact);
        let e = self
            .act_and_read("nvmet_export", act, &nqn)
            .await?
            .ok_or_else(|| Error(E::Protocol(format!("{nqn} is not listed after its export"))))?;
        let missing: Vec<&Nqn> = hosts
            .iter()
            .filter(|h| !e.allowed_hosts.iter().any(|a| a == h.as_str()))
            .collect();
        if e.any_host
            || e.device_path.as_deref() != Some(device.as_str())
            || !e.on_port
            || !missing.is_empty()
        {
            return Err(Error(E::Failed(format!(
                "the export of {lv} did not take as asked: {e:?}, hosts missing: {missing:?}"
            ))));
        }
        Ok(e)
    }

    /// Admits one more host to an exported volume.
    pub async fn allow_host(&self, lv: &VolumeName, host: &Nqn) -> Result<Export> {
        let nqn = self.nqn(lv);
        let act = self.nvmet.allow(&nqn, std::slice::from_ref(host));
        self.act_and_read("nvmet_allow", act, &nqn)
            .await?
            .ok_or_else(|| Error(E::NotFound(format!("{lv} is not exported"))))
    }

    /// Removes `hosts` from a volume's allowed hosts, so they cannot
    /// connect again, and when `cut`, ends every live connection to the
    /// volume (the hosts still allowed reconnect by themselves). Without
    /// `cut` a removed host keeps a connection it already has. A volume
    /// not exported is success: nothing can connect to it.
    pub async fn revoke(
        &self,
        lv: &VolumeName,
        hosts: &[Nqn],
        cut: bool,
    ) -> Result<Option<Export>> {
        let nqn = self.nqn(lv);
        let act = self.nvmet.revoke(&nqn, hosts, cut);
        self.act_and_read(
            if cut { "nvmet_fence" } else { "nvmet_disallow" },
            act,
            &nqn,
        )
        .await
    }

    /// A volume's export; `None` when it is not exported.
    pub async fn export_state(&self, lv: &VolumeName) -> Result<Option<Export>> {
        let nqn = self.nqn(lv);
        let out = self
            .run("nvmet_read", &self.nvmet.read(Select::One(&nqn)))
            .await?;
        self.read_export(&out, &nqn)
    }

    /// Every export under the driver's NQN prefix.
    pub async fn list_exports(&self) -> Result<Vec<Export>> {
        let select = Select::Prefix(self.config.nqn_prefix.as_str());
        let out = self.run("nvmet_list", &self.nvmet.read(select)).await?;
        let dump = parse_dump(&out).map_err(|s| Error(E::Protocol(s)))?;
        Ok(dump
            .subsystems
            .into_iter()
            .map(|s| Export::from_state(s, &self.config.port))
            .collect())
    }

    /// Removes a volume's export (its connections end). Not exported is
    /// success.
    pub async fn unexport(&self, lv: &VolumeName) -> Result<()> {
        self.run("nvmet_unexport", &self.nvmet.unexport(&self.nqn(lv)))
            .await
            .map(drop)
    }
}
