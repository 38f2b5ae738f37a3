//! ListVolumes and ControllerGetVolume: volumes as the backend reports
//! them, with the nodes they are published to.

use super::*;

impl<B: Backend> ControllerService<B> {
    /// The context a volume reports when only the backend record is known
    /// (ListVolumes, ControllerGetVolume).
    pub(super) fn context_from_disk(&self, disk: &Volume) -> HashMap<String, String> {
        let mut c = HashMap::new();
        c.insert(
            params::ctx::NVME_ADDRESS.into(),
            self.config.defaults.nvme_address.clone(),
        );
        if let Some(p) = disk.port {
            c.insert(params::ctx::NVME_PORT.into(), p.to_string());
        }
        if let Some(n) = &disk.nqn {
            c.insert(params::ctx::NQN.into(), n.clone());
        }
        c
    }

    pub(super) async fn list(
        &self,
        req: proto::ListVolumesRequest,
    ) -> ControllerResult<proto::ListVolumesResponse> {
        if req.max_entries < 0 {
            return Err(ControllerError::invalid(
                "max_entries",
                "must not be negative",
            ));
        }
        // The published nodes are only known once the state is rebuilt:
        // an empty list before then would tell the CO nothing is attached.
        self.ready()?;
        // Tokens name the last volume of the previous page, so volumes added
        // or deleted between pages neither repeat nor shift the rest.
        let after = match req.starting_token.as_str() {
            "" => None,
            t => Some(
                t.strip_prefix(TOKEN_PREFIX)
                    .filter(|s| VolumeId::new(s).is_ok())
                    .ok_or_else(|| ControllerError::ForeignToken {
                        token: t.to_string(),
                    })?
                    .to_string(),
            ),
        };
        let mut disks = self
            .backend
            .list_volumes(&self.config.volume_id_prefix)
            .await
            .map_err(Step::List.failed())?;
        // With an empty volume prefix the listing holds snapshots too.
        disks.retain(|d| !d.is_snapshot());
        disks.sort_by(|a, b| a.id.cmp(&b.id));
        let limit = match req.max_entries {
            0 => self.config.max_list_entries,
            n => (n as usize).min(self.config.max_list_entries),
        };
        let page: Vec<Volume> = disks
            .into_iter()
            .filter(|d| after.as_deref().is_none_or(|a| d.id.as_str() > a))
            .take(limit + 1)
            .collect();
        let next_token = if page.len() > limit {
            format!("{TOKEN_PREFIX}{}", page[limit - 1].id)
        } else {
            String::new()
        };
        let entries = page
            .into_iter()
            .take(limit)
            .map(|d| proto::list_volumes_response::Entry {
                status: Some(proto::list_volumes_response::VolumeStatus {
                    published_node_ids: self.manager.holders(&d.id),
                    volume_condition: None,
                }),
                volume: Some(self.volume_of(&d, self.context_from_disk(&d))),
            })
            .collect();
        Ok(proto::ListVolumesResponse {
            entries,
            next_token,
        })
    }

    pub(super) async fn get_volume(
        &self,
        req: proto::ControllerGetVolumeRequest,
    ) -> ControllerResult<proto::ControllerGetVolumeResponse> {
        let slot = self.volume_id(&req.volume_id)?;
        self.ready()?;
        let disk = self.existing(&slot).await?;
        Ok(proto::ControllerGetVolumeResponse {
            volume: Some(self.volume_of(&disk, self.context_from_disk(&disk))),
            status: Some(proto::controller_get_volume_response::VolumeStatus {
                published_node_ids: self.manager.holders(slot.as_str()),
                volume_condition: None,
            }),
        })
    }
}

const TOKEN_PREFIX: &str = "after:";
