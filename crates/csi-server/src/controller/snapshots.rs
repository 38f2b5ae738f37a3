//! CreateSnapshot, DeleteSnapshot, ListSnapshots, and CreateVolume from a
//! snapshot or a volume. Which copy method each uses and what it
//! guarantees is `docs/snapshots.md`; the snapshot IDs, lineage and pages
//! are the pure functions of [`crate::snapshot`].
//!
//! Every request is validated before the RDS is asked anything, and every
//! call is idempotent: a snapshot ID follows from the request name, so a
//! retry finds what its first attempt made (also half made: the backend
//! completes a subvolume snapshot whose disk was not yet added).

use super::*;
use crate::backend::SnapshotSpec;
use crate::params::{parse_copy_method, P_COPY_METHOD};
use crate::snapshot;
use routeros::RosPath;
use storage::ErrorKind;

/// The content source of a CreateVolume.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Source {
    Snapshot(VolumeId),
    Volume(VolumeId),
}

impl Source {
    /// The validated source of a request, if it has one.
    pub(super) fn of(
        source: Option<&proto::VolumeContentSource>,
    ) -> ControllerResult<Option<Source>> {
        use proto::volume_content_source::Type;
        let Some(source) = source else {
            return Ok(None);
        };
        let (field, id, make): (_, _, fn(VolumeId) -> Source) = match &source.r#type {
            Some(Type::Snapshot(s)) => (
                "volume_content_source.snapshot",
                &s.snapshot_id,
                Source::Snapshot,
            ),
            Some(Type::Volume(v)) => ("volume_content_source.volume", &v.volume_id, Source::Volume),
            None => {
                return Err(ControllerError::invalid(
                    "volume_content_source",
                    "names neither a snapshot nor a volume",
                ))
            }
        };
        ControllerError::require(field, id)?;
        let slot = VolumeId::new(id).map_err(|e| ControllerError::invalid(field, e.to_string()))?;
        Ok(Some(make(slot)))
    }

    /// A source volume must be one this driver manages (and no snapshot
    /// passed off as a volume); checked before the RDS is asked anything.
    pub(super) fn check<B: Backend>(&self, ctl: &ControllerService<B>) -> ControllerResult<()> {
        ctl.offers(match self {
            Source::Snapshot(_) => Offer::Snapshots,
            Source::Volume(_) => Offer::Clones,
        })?;
        if let Source::Volume(id) = self {
            ctl.slot("volume_content_source.volume", id.as_str())?;
            if ctl.config.is_snapshot_id(id.as_str()) {
                return Err(ControllerError::invalid(
                    "volume_content_source.volume",
                    format!("{id} is a snapshot ID; name it as a snapshot source"),
                ));
            }
        }
        Ok(())
    }

    fn slot(&self) -> &VolumeId {
        match self {
            Source::Snapshot(s) | Source::Volume(s) => s,
        }
    }

    fn kind(&self) -> &'static str {
        match self {
            Source::Snapshot(_) => "snapshot",
            Source::Volume(_) => "volume",
        }
    }
}

/// What a restore or clone makes: the new volume's ID, place and export.
pub(super) struct Made<'a> {
    pub slot: &'a VolumeId,
    pub place: &'a Place,
    pub nqn: &'a Nqn,
    pub port: u16,
}

/// Now in whole seconds, as the comment records a creation time: every
/// answer about a snapshot gives the same time.
fn whole_seconds_now() -> jiff::Timestamp {
    jiff::Timestamp::from_second(jiff::Timestamp::now().as_second()).expect("now is a valid time")
}

fn timestamp(at: jiff::Timestamp) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: at.as_second(),
        nanos: at.subsec_nanosecond(),
    }
}

fn snapshot_of(info: &SnapshotInfo) -> proto::Snapshot {
    proto::Snapshot {
        size_bytes: info.size_bytes as i64,
        snapshot_id: info.id.clone(),
        source_volume_id: info.source.clone(),
        creation_time: info.created.map(timestamp),
        ready_to_use: info.ready,
        group_snapshot_id: String::new(),
    }
}

/// The copy method a VolumeSnapshotClass asks for, if it does; other keys
/// are refused except the ones Kubernetes reserves.
fn requested_method(params: &HashMap<String, String>) -> ControllerResult<Option<CopyMethod>> {
    let mut method = None;
    for (k, v) in params {
        match k.as_str() {
            P_COPY_METHOD => method = Some(parse_copy_method(v)?),
            k if k.starts_with("csi.storage.k8s.io/") => {}
            k => {
                return Err(ControllerError::Param(params::ParamError {
                    name: k.chars().take(64).collect(),
                    reason: "unknown VolumeSnapshotClass parameter; known: copyMethod".into(),
                }))
            }
        }
    }
    Ok(method)
}

/// The method copying `source` (in `from` layout) into a target in `to`
/// layout: a subvolume snapshot when both are subvolumes, else what was
/// asked for or `copy-from`.
fn choose_method(
    from: VolumeLayout,
    to: VolumeLayout,
    asked: Option<CopyMethod>,
) -> ControllerResult<CopyMethod> {
    use CopyMethod as M;
    use VolumeLayout as L;
    let unavailable = |method, reason: &str| {
        Err(ControllerError::MethodUnavailable {
            method,
            reason: reason.into(),
        })
    };
    match (from, to, asked) {
        (L::Subvolume, L::Subvolume, None | Some(M::Subvolume)) => Ok(M::Subvolume),
        (_, _, Some(M::Subvolume)) => unavailable(
            M::Subvolume,
            "both the source and the new disk must be in the subvolume layout",
        ),
        (_, _, Some(M::ByteCopy)) => Ok(M::ByteCopy),
        (_, _, None | Some(M::CopyFrom)) => Ok(M::CopyFrom),
    }
}

/// What the controller remembers to save RouterOS commands.
#[derive(Debug, Default)]
pub(super) struct Known {
    layouts: HashMap<String, VolumeLayout>,
    not_ready: std::collections::HashSet<String>,
}

/// How far a byte copy into `disk` is, while it is not known complete.
pub(super) fn still_copying(disk: &Volume) -> Option<String> {
    match (&disk.busy, &disk.meta.copy_of) {
        (Some(status), _) => Some(status.clone()),
        (None, Some(_)) => Some("starting".into()),
        (None, None) => None,
    }
}

impl<B: Backend> ControllerService<B> {
    /// The disk a byte copy from `volume` is running into, if one is.
    pub(super) fn copying_from(&self, volume: &VolumeId) -> Option<String> {
        let copies = self.copies.lock().unwrap_or_else(|e| e.into_inner());
        copies
            .iter()
            .find(|(_, from)| from.as_str() == volume.as_str())
            .map(|(into, _)| into.clone())
    }

    /// A copy target being deleted: its copy no longer holds its source.
    pub(super) fn forget_copy(&self, into: &VolumeId) {
        self.copies
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(into.as_str());
    }

    fn known(&self) -> std::sync::MutexGuard<'_, Known> {
        self.known.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Forgets a deleted volume or snapshot.
    pub(super) fn forget(&self, id: &VolumeId) {
        let mut known = self.known();
        known.layouts.remove(id.as_str());
        known.not_ready.remove(id.as_str());
    }

    /// A volume's layout, which never changes once it is made.
    pub(super) fn remember_layout(&self, volume: &VolumeId, layout: VolumeLayout) {
        self.known().layouts.insert(volume.to_string(), layout);
    }

    fn note_copy(&self, into: &VolumeId, from: &VolumeId) {
        self.copies
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(into.to_string(), from.to_string());
    }

    /// Refuses a byte copy of a volume some node holds: the copy would not
    /// be point in time.
    fn check_detached(&self, volume: &VolumeId) -> ControllerResult<()> {
        let nodes = self.manager.holders(volume.as_str());
        if nodes.is_empty() {
            Ok(())
        } else {
            Err(ControllerError::SourceAttached {
                volume: volume.clone(),
                nodes,
            })
        }
    }

    /// At start: the byte copies still running on the RDS, so their
    /// sources stay unpublished until they finish.
    pub(super) async fn find_running_copies(&self) -> ControllerResult<()> {
        let all = IdPrefix::new("").expect("the empty prefix");
        let disks = self
            .backend
            .list_volumes(&all)
            .await
            .map_err(Step::ListSnapshots.failed())?;
        for d in disks {
            if let (Some(from), Some(_)) = (&d.meta.copy_of, &d.busy) {
                if let Ok(into) = VolumeId::new(&d.id) {
                    self.note_copy(&into, from);
                }
            }
        }
        Ok(())
    }

    /// Brings a byte copy into `disk` forward and returns the disk as it
    /// now stands. A copy this process started that shows no status any
    /// more is complete: its mark is cleared. A mark with no copy known to
    /// have run (the controller restarted, or failed between adding the
    /// disk and starting the copy) starts the copy again: the source has
    /// not changed since (it stays unpublished meanwhile), so copying it
    /// again is safe.
    pub(super) async fn settle_copy(&self, mut disk: Volume) -> ControllerResult<Volume> {
        let Some(from) = disk.meta.copy_of.clone() else {
            return Ok(disk);
        };
        if disk.busy.is_some() {
            return Ok(disk);
        }
        let into =
            VolumeId::new(&disk.id).map_err(|e| ControllerError::invalid("name", e.to_string()))?;
        let started_here = self
            .copies
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(into.as_str())
            .is_some();
        if started_here {
            let comment = VolumeMeta {
                copy_of: None,
                ..disk.meta.clone()
            };
            self.backend
                .set_meta(&into, &comment)
                .await
                .map_err(Step::MarkCopied(into.clone()).failed())?;
            info!(disk = %into, from = %from, "byte copy complete");
            disk.meta = comment;
        } else {
            self.check_detached(&from)?;
            let step = Step::Copy {
                from: from.to_string(),
                to: into.clone(),
                method: CopyMethod::ByteCopy,
            };
            self.backend
                .start_copy(&from, &into)
                .await
                .map_err(step.failed())?;
            self.note_copy(&into, &from);
            info!(disk = %into, from = %from, "byte copy started again");
            disk.busy = Some("starting".into());
        }
        Ok(disk)
    }

    pub(super) async fn create_snapshot(
        &self,
        req: proto::CreateSnapshotRequest,
    ) -> ControllerResult<proto::CreateSnapshotResponse> {
        self.offers(Offer::Snapshots)?;
        ControllerError::require("name", &req.name)?;
        let source = self.slot("source_volume_id", &req.source_volume_id)?;
        // With an empty volume ID prefix every snapshot ID is also a
        // managed ID: refuse it here as CreateVolume's clone path does.
        if self.config.is_snapshot_id(source.as_str()) {
            return Err(ControllerError::invalid(
                "source_volume_id",
                format!("{source} is a snapshot ID, not a volume"),
            ));
        }
        let asked = requested_method(&req.parameters)?;
        let id = self.config.snapshot_id(&req.name);
        let _guard = self.lock(&id)?;
        // Asked again after a not-ready answer: look at the snapshot first.
        if self.known().not_ready.contains(id.as_str()) {
            if let Some(disk) = self.lookup(&id).await? {
                return self.existing_snapshot(disk, &source).await;
            }
        }
        // A volume in the subvolume layout needs no lookup first: two
        // commands while the guest may be frozen. A volume known to be flat
        // does not try.
        let subvolumes = self
            .pool_info
            .get()
            .is_some_and(|p| p.allows(VolumeLayout::Subvolume));
        let flat = self.known().layouts.get(source.as_str()) == Some(&VolumeLayout::Flat);
        if subvolumes && !flat && matches!(asked, None | Some(CopyMethod::Subvolume)) {
            if let Some(made) = self.snapshot_subvolume_directly(&id, &source).await? {
                self.known().not_ready.insert(id.to_string());
                return Ok(made);
            }
        }

        let Some(volume) = self.lookup(&source).await? else {
            // Gone since its snapshot was taken? A retry still succeeds.
            return match self.lookup(&id).await? {
                Some(disk) => self.existing_snapshot(disk, &source).await,
                None => Err(ControllerError::VolumeNotFound { volume: source }),
            };
        };
        let layout = volume.layout;
        self.remember_layout(&source, layout);
        let method = choose_method(layout, layout, asked)?;
        if method == CopyMethod::ByteCopy {
            self.check_detached(&source)?;
        }
        // A copy-from snapshot of a subvolume volume must not sit inside
        // the volume's subvolume (it would go with the volume).
        let dir = match (layout, volume.location.as_deref().map(RosPath::new)) {
            (VolumeLayout::Flat, Some(Ok(file))) => file.parent(),
            _ => self.config.defaults.volume_path.clone(),
        };
        let target_layout = match method {
            CopyMethod::Subvolume => VolumeLayout::Subvolume,
            _ => VolumeLayout::Flat,
        };
        let (_, place) = self.place(&id, target_layout, &dir).await?;
        let (created, comment) = self.snapshot_comment(&source, Some(volume.size_bytes), method)?;
        let spec = CopySpec {
            source: volume,
            target: id.clone(),
            method,
            place,
            export: None,
            meta: comment,
        };
        let step = Step::Copy {
            from: source.to_string(),
            to: id.clone(),
            method,
        };
        match self.backend.copy(&spec).await {
            Ok(()) => {}
            // The name's snapshot exists already (a retry, or a name reused
            // for another volume): what it is decides.
            Err(e) if e.kind() == ErrorKind::AlreadyExists => {
                if let Some(disk) = self.lookup(&id).await? {
                    return self.existing_snapshot(disk, &source).await;
                }
                return Err(step.failed()(e));
            }
            Err(e) => return Err(step.failed()(e)),
        }
        let copying = method == CopyMethod::ByteCopy;
        if copying {
            self.note_copy(&id, &source);
            self.known().not_ready.insert(id.to_string());
        }
        info!(snapshot = %id, volume = %source, %method, "snapshot created");
        let info = SnapshotInfo {
            id: id.to_string(),
            source: source.to_string(),
            size_bytes: spec.source.size_bytes,
            created: Some(created),
            method,
            ready: !copying,
        };
        Ok(proto::CreateSnapshotResponse {
            snapshot: Some(snapshot_of(&info)),
        })
    }

    /// The comment of a snapshot of `source` taken now, and that time: its
    /// lineage, the cluster, and for a byte copy the mark that it is not
    /// known complete.
    fn snapshot_comment(
        &self,
        source: &VolumeId,
        size_bytes: Option<u64>,
        method: CopyMethod,
    ) -> ControllerResult<(jiff::Timestamp, VolumeMeta)> {
        let created = whole_seconds_now();
        let comment = VolumeMeta {
            created: Some(created),
            cluster: self.cluster()?,
            snapshot: Some(storage::Lineage {
                source: source.clone(),
                size_bytes,
                method,
            }),
            copy_of: (method == CopyMethod::ByteCopy).then(|| source.clone()),
            ..VolumeMeta::default()
        };
        Ok((created, comment))
    }

    /// A subvolume snapshot of `source` without looking it up: `None` when
    /// the volume has no subvolume (flat, or absent: the caller looks).
    /// Its size is the snapshot disk's own, read on the next CreateSnapshot,
    /// so it answers not ready yet, with its creation time: a guest frozen
    /// for the snapshot waits for the creation time only.
    async fn snapshot_subvolume_directly(
        &self,
        id: &VolumeId,
        source: &VolumeId,
    ) -> ControllerResult<Option<proto::CreateSnapshotResponse>> {
        let (created, comment) = self.snapshot_comment(source, None, CopyMethod::Subvolume)?;
        let step = Step::Copy {
            from: source.to_string(),
            to: id.clone(),
            method: CopyMethod::Subvolume,
        };
        let snap = SnapshotSpec {
            pool: self.config.pool(),
            source: source.clone(),
            target: id.clone(),
            meta: comment,
        };
        match self.backend.snapshot_volume(&snap).await {
            Ok(false) => Ok(None),
            Ok(true) => {
                info!(snapshot = %id, volume = %source, method = %CopyMethod::Subvolume, "snapshot created");
                Ok(Some(proto::CreateSnapshotResponse {
                    snapshot: Some(proto::Snapshot {
                        size_bytes: 0,
                        snapshot_id: id.to_string(),
                        source_volume_id: source.to_string(),
                        creation_time: Some(timestamp(created)),
                        ready_to_use: false,
                        group_snapshot_id: String::new(),
                    }),
                }))
            }
            Err(e) if e.kind() == ErrorKind::AlreadyExists => match self.lookup(id).await? {
                Some(disk) => self.existing_snapshot(disk, source).await.map(Some),
                None => Err(step.failed()(e)),
            },
            Err(e) => Err(step.failed()(e)),
        }
    }

    /// The answer to a CreateSnapshot whose snapshot disk exists (a byte
    /// copy into it brought forward: the snapshotter asks again until the
    /// snapshot is ready).
    async fn existing_snapshot(
        &self,
        disk: Volume,
        source: &VolumeId,
    ) -> ControllerResult<proto::CreateSnapshotResponse> {
        let id =
            VolumeId::new(&disk.id).map_err(|e| ControllerError::invalid("name", e.to_string()))?;
        let info = SnapshotInfo::from_volume(&disk)
            .ok_or(ControllerError::NotASnapshot { id: id.clone() })?;
        if info.source != source.as_str() {
            return Err(ControllerError::SnapshotOfOtherVolume {
                snapshot: id,
                source_volume: info.source,
                asked: source.clone(),
            });
        }
        let disk = self.settle_copy(disk).await?;
        let info = SnapshotInfo::from_volume(&disk).ok_or(ControllerError::NotASnapshot { id })?;
        if info.ready {
            self.known().not_ready.remove(&info.id);
        }
        Ok(proto::CreateSnapshotResponse {
            snapshot: Some(snapshot_of(&info)),
        })
    }

    pub(super) async fn delete_snapshot(
        &self,
        req: proto::DeleteSnapshotRequest,
    ) -> ControllerResult<proto::DeleteSnapshotResponse> {
        self.offers(Offer::Snapshots)?;
        ControllerError::require("snapshot_id", &req.snapshot_id)?;
        // An ID this driver cannot have issued names nothing to delete.
        let id = match VolumeId::new(&req.snapshot_id) {
            Ok(id) if self.config.is_snapshot_id(id.as_str()) => id,
            _ => return Ok(proto::DeleteSnapshotResponse {}),
        };
        let _guard = self.lock(&id)?;
        let known = self.lookup(&id).await?;
        if let Some(disk) = &known {
            if SnapshotInfo::from_volume(disk).is_none() {
                return Err(ControllerError::NotASnapshot { id });
            }
        }
        self.remove(&id, known.as_ref(), Step::DeleteSnapshot(id.clone()))
            .await?;
        info!(snapshot = %id, existed = known.is_some(), "snapshot deleted");
        Ok(proto::DeleteSnapshotResponse {})
    }

    pub(super) async fn list_snapshots(
        &self,
        req: proto::ListSnapshotsRequest,
    ) -> ControllerResult<proto::ListSnapshotsResponse> {
        self.offers(Offer::Snapshots)?;
        let max = usize::try_from(req.max_entries)
            .map_err(|_| ControllerError::invalid("max_entries", "must not be negative"))?;
        let disks = if req.snapshot_id.is_empty() {
            self.backend
                .list_volumes(&self.config.snapshot_prefix())
                .await
                .map_err(Step::ListSnapshots.failed())?
        } else {
            // One snapshot asked for: one lookup. An ID this driver could
            // not have issued lists nothing.
            match VolumeId::new(&req.snapshot_id) {
                Ok(id) => self.lookup(&id).await?.into_iter().collect(),
                Err(_) => Vec::new(),
            }
        };
        let infos = disks.iter().filter_map(SnapshotInfo::from_volume).collect();
        let (page, next_token) = snapshot::page(
            infos,
            &req.snapshot_id,
            &req.source_volume_id,
            &req.starting_token,
            max,
        )
        .map_err(|_| ControllerError::ForeignToken {
            token: req.starting_token.clone(),
        })?;
        Ok(proto::ListSnapshotsResponse {
            entries: page
                .iter()
                .map(|s| proto::list_snapshots_response::Entry {
                    snapshot: Some(snapshot_of(s)),
                })
                .collect(),
            next_token,
        })
    }

    /// Makes volume `made.slot` from `source` (CreateVolume with a content
    /// source), of `size` bytes unless the source holds more and the
    /// request left room for it.
    pub(super) async fn restore(
        &self,
        source: &Source,
        made: &Made<'_>,
        range: &proto::CapacityRange,
        size: u64,
        vp: &VolumeParams,
    ) -> ControllerResult<Volume> {
        let from = source.slot();
        let not_found = || ControllerError::SourceNotFound {
            kind: source.kind(),
            id: from.to_string(),
        };
        let disk = self
            .backend
            .get_volume(from)
            .await
            .map_err(Step::LookupSource(from.clone()).failed())?
            .ok_or_else(not_found)?;
        match source {
            Source::Snapshot(id) => {
                let info = SnapshotInfo::from_volume(&disk).ok_or_else(not_found)?;
                if !info.ready {
                    return Err(ControllerError::SnapshotNotReady {
                        snapshot: id.clone(),
                    });
                }
            }
            Source::Volume(_) => {}
        }
        let needed = disk.size_bytes;
        let size = if size >= needed {
            size
        } else if range.required_bytes <= 0
            && (range.limit_bytes <= 0 || range.limit_bytes as u64 >= needed)
        {
            // No size asked for: the source's.
            needed
        } else {
            return Err(ControllerError::TooSmallForSource {
                source_id: from.to_string(),
                needed,
                requested: size,
            });
        };
        let method = choose_method(disk.layout, vp.layout, vp.copy_method)?;
        let byte_copy = method == CopyMethod::ByteCopy;
        if byte_copy {
            self.check_detached(from)?;
        }
        let spec = CopySpec {
            source: disk,
            target: made.slot.clone(),
            method,
            place: made.place.clone(),
            export: Some((
                size,
                Export {
                    nqn: made.nqn.clone(),
                    port: made.port,
                },
            )),
            meta: VolumeMeta {
                copy_of: byte_copy.then(|| from.clone()),
                ..VolumeMeta::created(jiff::Timestamp::now(), self.cluster()?)
            },
        };
        self.backend.copy(&spec).await.map_err(
            Step::Copy {
                from: from.to_string(),
                to: made.slot.clone(),
                method,
            }
            .failed(),
        )?;
        info!(volume = %made.slot, from = %from, kind = source.kind(), %method, bytes = size, "volume made from a source");
        if byte_copy {
            // Usable once the copy is done: CreateVolume answers UNAVAILABLE
            // until then, and the provisioner asks again.
            self.note_copy(made.slot, from);
            return Err(ControllerError::CopyRunning {
                volume: made.slot.clone(),
                from: from.to_string(),
                progress: "started".into(),
            });
        }
        let location = self
            .backend
            .location(made.slot, made.place)
            .map_err(|e| ControllerError::invalid("volumePath", e.to_string()))?;
        Ok(Volume {
            id: made.slot.to_string(),
            size_bytes: size,
            location: Some(location),
            layout: made.place.layout,
            nqn: Some(made.nqn.to_string()),
            port: Some(made.port),
            exported: true,
            meta: spec.meta,
            busy: None,
            allowed_hosts: self.fencing().then(Vec::new),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_method_follows_the_layouts_and_what_the_class_asks() {
        use CopyMethod as M;
        use VolumeLayout as L;
        let ok = |from, to, asked| choose_method(from, to, asked).unwrap();
        assert_eq!(ok(L::Subvolume, L::Subvolume, None), M::Subvolume);
        assert_eq!(ok(L::Flat, L::Flat, None), M::CopyFrom);
        assert_eq!(ok(L::Flat, L::Flat, Some(M::ByteCopy)), M::ByteCopy);
        assert_eq!(
            ok(L::Subvolume, L::Subvolume, Some(M::ByteCopy)),
            M::ByteCopy
        );
        assert_eq!(ok(L::Flat, L::Subvolume, None), M::CopyFrom);
        assert_eq!(ok(L::Subvolume, L::Flat, None), M::CopyFrom);
        assert_eq!(
            ok(L::Subvolume, L::Subvolume, Some(M::CopyFrom)),
            M::CopyFrom
        );
        for (from, to, asked) in [
            (L::Flat, L::Subvolume, Some(M::Subvolume)),
            (L::Subvolume, L::Flat, Some(M::Subvolume)),
        ] {
            let e = choose_method(from, to, asked).unwrap_err();
            assert_eq!(e.code(), tonic::Code::InvalidArgument, "{e}");
        }
    }

    #[test]
    fn a_snapshot_class_may_ask_for_a_copy_method_and_nothing_else() {
        let params = |pairs: &[(&str, &str)]| {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect::<HashMap<_, _>>()
        };
        assert_eq!(requested_method(&params(&[])).unwrap(), None);
        assert_eq!(
            requested_method(&params(&[
                ("copyMethod", "copy-from"),
                ("csi.storage.k8s.io/volumesnapshot/name", "s")
            ]))
            .unwrap(),
            Some(CopyMethod::CopyFrom)
        );
        for bad in [&[("copyMethod", "rsync")][..], &[("method", "copy")][..]] {
            let e = requested_method(&params(bad)).unwrap_err();
            assert_eq!(e.code(), tonic::Code::InvalidArgument, "{e}");
        }
    }
}
