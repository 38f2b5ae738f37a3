//! Several named backends behind one controller: the Controller service
//! that picks, for every RPC, the backend's own [`ControllerService`].
//!
//! Where a request goes:
//! - CreateVolume and GetCapacity: the StorageClass parameter `backend`
//!   (none: the default backend). The parameter is taken out before the
//!   backend's service sees the request.
//! - Everything else: the volume or snapshot ID. The default backend's IDs
//!   are the Go driver's (`pvc-<uuid>`, `snap-<uuid>`); another backend's
//!   start with its name and `-` (`lab2-pvc-<uuid>`), so an ID alone says
//!   where its volume lives, after a restart and on the node too.
//! - ListVolumes and ListSnapshots without a filter: every backend in
//!   turn; their page tokens name the backend they stopped in.
//!
//! [`Backends::new`] refuses ID prefixes that overlap (one backend's
//! prefix a prefix of another's), so no ID can belong to two backends.
//! With one backend, requests and answers pass through unchanged.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use tonic::{Request, Response, Status};

use crate::backend::Backend;
use crate::controller::ControllerService;
use crate::metrics::RpcMetrics;
use crate::proto::{self, controller_server::Controller};
use crate::snapshot::SNAPSHOT_PREFIX;

/// The StorageClass parameter that names the backend.
pub const P_BACKEND: &str = "backend";

/// Longest backend name: its topology key (`backend-<name>`) must stay a
/// valid label name, and its IDs short.
pub const MAX_NAME_LEN: usize = 32;

/// A backend name: lowercase letters, digits and `-`, alphanumeric at both
/// ends, at most [`MAX_NAME_LEN`] characters.
pub fn valid_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= MAX_NAME_LEN
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && !name.starts_with('-')
        && !name.ends_with('-');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "backend name {name:?} must be 1 to {MAX_NAME_LEN} lowercase letters, digits and '-', \
             alphanumeric at both ends"
        ))
    }
}

/// What the IDs of backend `name` start with before the volume prefix or
/// `snap-`: empty for the default backend.
pub fn qualifier(name: &str, default: bool) -> String {
    if default {
        String::new()
    } else {
        format!("{name}-")
    }
}

/// One backend: its name and the Controller service over it.
pub struct Member<B> {
    pub name: String,
    pub service: Arc<ControllerService<B>>,
}

impl<B: Backend> Member<B> {
    /// The ID prefixes this backend's volumes and snapshots start with.
    fn prefixes(&self) -> [String; 2] {
        let c = self.service.config();
        [
            c.volume_id_prefix.to_string(),
            format!("{}{SNAPSHOT_PREFIX}", c.qualifier),
        ]
    }
}

/// The Controller service of a controller with one or more backends.
pub struct Backends<B> {
    /// The default backend first.
    members: Vec<Member<B>>,
    /// Counts the requests refused here, before any backend saw them.
    metrics: RpcMetrics,
}

/// Why a set of backends cannot serve together.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("no backend configured")]
    Empty,
    #[error("{0}")]
    Name(String),
    #[error("two backends are named {0:?}")]
    Duplicate(String),
    #[error(
        "backend {a:?}'s IDs ({pa:?}) and backend {b:?}'s IDs ({pb:?}) overlap, so an ID \
         would not say which backend it is on; give the default backend a non-empty volume ID \
         prefix that no other backend's name starts (see --volume-id-prefix)"
    )]
    Overlap {
        a: String,
        pa: String,
        b: String,
        pb: String,
    },
}

impl<B: Backend> Backends<B> {
    /// `members`: the default backend first, then the others.
    pub fn new(members: Vec<Member<B>>, metrics: RpcMetrics) -> Result<Self, ConfigError> {
        if members.is_empty() {
            return Err(ConfigError::Empty);
        }
        let mut names = BTreeSet::new();
        for m in &members {
            valid_name(&m.name).map_err(ConfigError::Name)?;
            if !names.insert(m.name.as_str()) {
                return Err(ConfigError::Duplicate(m.name.clone()));
            }
        }
        for (i, a) in members.iter().enumerate() {
            for b in &members[i + 1..] {
                for pa in a.prefixes() {
                    for pb in b.prefixes() {
                        if pa.starts_with(&pb) || pb.starts_with(&pa) {
                            return Err(ConfigError::Overlap {
                                a: a.name.clone(),
                                pa,
                                b: b.name.clone(),
                                pb,
                            });
                        }
                    }
                }
            }
        }
        Ok(Backends { members, metrics })
    }

    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.members.iter().map(|m| m.name.as_str())
    }

    /// The backend volume or snapshot `id` is on: the one whose prefix
    /// it starts with, else the default (whose service then answers for an
    /// ID it does not manage as it always has).
    pub fn of_id(&self, id: &str) -> &Member<B> {
        self.members
            .iter()
            .skip(1)
            .find(|m| m.prefixes().iter().any(|p| id.starts_with(p.as_str())))
            .unwrap_or(&self.members[0])
    }

    /// The backend StorageClass parameters name, with the parameter taken
    /// out.
    fn of_params(&self, params: &mut HashMap<String, String>) -> Result<&Member<B>, Status> {
        match params.remove(P_BACKEND) {
            None => Ok(&self.members[0]),
            Some(name) => self.named(&name).ok_or_else(|| {
                let known: Vec<&str> = self.names().collect();
                Status::invalid_argument(format!(
                    "parameter {P_BACKEND}: no backend is named {:?}; this controller serves {}",
                    name.chars().take(64).collect::<String>(),
                    known.join(", ")
                ))
            }),
        }
    }

    fn named(&self, name: &str) -> Option<&Member<B>> {
        self.members.iter().find(|m| m.name == name)
    }

    /// Counts and logs a request refused here.
    async fn refuse<T>(&self, rpc: &'static str, status: Status) -> Result<Response<T>, Status> {
        crate::rpc::run(&self.metrics, rpc, crate::rpc::Log::default(), async {
            Err::<T, Status>(status)
        })
        .await
    }

    /// A page token of a listing over several backends:
    /// `<backend>/<that backend's token>`; empty: the first page.
    fn page_start(&self, token: &str, max_entries: i32) -> Result<(usize, String), Status> {
        if max_entries < 0 {
            return Err(Status::invalid_argument(
                "max_entries: must not be negative",
            ));
        }
        if token.is_empty() {
            return Ok((0, String::new()));
        }
        token
            .split_once('/')
            .and_then(|(name, rest)| {
                let i = self.members.iter().position(|m| m.name == name)?;
                Some((i, rest.to_string()))
            })
            .ok_or_else(|| {
                Status::aborted(format!(
                    "starting_token {:?} was not issued by this controller",
                    token.chars().take(80).collect::<String>()
                ))
            })
    }
}

/// One page of a listing over every backend in turn, from backend `i`
/// and its token: `list(member, token, max)` lists one backend's page;
/// the answer's token names where to go on. A backend's failure is its
/// own answer (counted there).
async fn page_over<B, T, F, Fut>(
    backends: &Backends<B>,
    (mut i, mut token): (usize, String),
    max_entries: i32,
    mut list: F,
) -> Result<(Vec<T>, String), Status>
where
    B: Backend,
    F: FnMut(Arc<ControllerService<B>>, String, i32) -> Fut,
    Fut: std::future::Future<Output = Result<(Vec<T>, String), Status>>,
{
    let mut out = Vec::new();
    loop {
        let left = match max_entries {
            0 => 0,
            n => n - out.len() as i32,
        };
        let member = &backends.members[i];
        let (entries, next) = list(member.service.clone(), token, left).await?;
        out.extend(entries);
        if !next.is_empty() {
            return Ok((out, format!("{}/{next}", member.name)));
        }
        i += 1;
        token = String::new();
        if i == backends.members.len() {
            return Ok((out, String::new()));
        }
        if max_entries > 0 && out.len() as i32 >= max_entries {
            return Ok((out, format!("{}/", backends.members[i].name)));
        }
    }
}

/// Which source a CreateVolume copies, if any.
fn source_id(req: &proto::CreateVolumeRequest) -> Option<&str> {
    use proto::volume_content_source::Type;
    match req.volume_content_source.as_ref()?.r#type.as_ref()? {
        Type::Snapshot(s) => Some(&s.snapshot_id),
        Type::Volume(v) => Some(&v.volume_id),
    }
}

#[tonic::async_trait]
impl<B: Backend> Controller for Backends<B> {
    async fn create_volume(
        &self,
        request: Request<proto::CreateVolumeRequest>,
    ) -> Result<Response<proto::CreateVolumeResponse>, Status> {
        let mut req = request.into_inner();
        let member = match self.of_params(&mut req.parameters) {
            Ok(m) => m,
            Err(s) => return self.refuse("CreateVolume", s).await,
        };
        if let Some(source) = source_id(&req).filter(|s| !s.is_empty()) {
            let from = self.of_id(source);
            if from.name != member.name {
                let status = Status::invalid_argument(format!(
                    "volume_content_source {source} is on backend {}; this volume would be made on \
                     backend {}: copies between backends are not offered",
                    from.name, member.name
                ));
                return self.refuse("CreateVolume", status).await;
            }
        }
        member.service.create_volume(Request::new(req)).await
    }

    async fn delete_volume(
        &self,
        request: Request<proto::DeleteVolumeRequest>,
    ) -> Result<Response<proto::DeleteVolumeResponse>, Status> {
        let m = self.of_id(&request.get_ref().volume_id);
        m.service.delete_volume(request).await
    }

    async fn controller_publish_volume(
        &self,
        request: Request<proto::ControllerPublishVolumeRequest>,
    ) -> Result<Response<proto::ControllerPublishVolumeResponse>, Status> {
        let m = self.of_id(&request.get_ref().volume_id);
        m.service.controller_publish_volume(request).await
    }

    async fn controller_unpublish_volume(
        &self,
        request: Request<proto::ControllerUnpublishVolumeRequest>,
    ) -> Result<Response<proto::ControllerUnpublishVolumeResponse>, Status> {
        let m = self.of_id(&request.get_ref().volume_id);
        m.service.controller_unpublish_volume(request).await
    }

    async fn validate_volume_capabilities(
        &self,
        request: Request<proto::ValidateVolumeCapabilitiesRequest>,
    ) -> Result<Response<proto::ValidateVolumeCapabilitiesResponse>, Status> {
        let mut req = request.into_inner();
        let m = self.of_id(&req.volume_id);
        // The class's backend is where the ID says; the parameter is not
        // one the backend's own service knows.
        req.parameters.remove(P_BACKEND);
        m.service
            .validate_volume_capabilities(Request::new(req))
            .await
    }

    async fn list_volumes(
        &self,
        request: Request<proto::ListVolumesRequest>,
    ) -> Result<Response<proto::ListVolumesResponse>, Status> {
        if self.members.len() == 1 {
            return self.members[0].service.list_volumes(request).await;
        }
        let req = request.into_inner();
        let start = match self.page_start(&req.starting_token, req.max_entries) {
            Ok(start) => start,
            Err(s) => return self.refuse("ListVolumes", s).await,
        };
        let (entries, next_token) = page_over(
            self,
            start,
            req.max_entries,
            |svc, starting_token, max_entries| async move {
                let r = svc
                    .list_volumes(Request::new(proto::ListVolumesRequest {
                        max_entries,
                        starting_token,
                    }))
                    .await?
                    .into_inner();
                Ok((r.entries, r.next_token))
            },
        )
        .await?;
        Ok(Response::new(proto::ListVolumesResponse {
            entries,
            next_token,
        }))
    }

    async fn get_capacity(
        &self,
        request: Request<proto::GetCapacityRequest>,
    ) -> Result<Response<proto::GetCapacityResponse>, Status> {
        let mut req = request.into_inner();
        match self.of_params(&mut req.parameters) {
            Ok(m) => m.service.get_capacity(Request::new(req)).await,
            Err(s) => self.refuse("GetCapacity", s).await,
        }
    }

    /// What any backend offers: an RPC a backend does not offer answers
    /// UNIMPLEMENTED for that backend's volumes.
    async fn controller_get_capabilities(
        &self,
        request: Request<proto::ControllerGetCapabilitiesRequest>,
    ) -> Result<Response<proto::ControllerGetCapabilitiesResponse>, Status> {
        let mut all: Vec<proto::ControllerServiceCapability> = Vec::new();
        for m in &self.members {
            let caps = m
                .service
                .controller_get_capabilities(Request::new(*request.get_ref()))
                .await?
                .into_inner()
                .capabilities;
            for c in caps {
                if !all.contains(&c) {
                    all.push(c);
                }
            }
        }
        Ok(Response::new(proto::ControllerGetCapabilitiesResponse {
            capabilities: all,
        }))
    }

    async fn create_snapshot(
        &self,
        request: Request<proto::CreateSnapshotRequest>,
    ) -> Result<Response<proto::CreateSnapshotResponse>, Status> {
        let m = self.of_id(&request.get_ref().source_volume_id);
        m.service.create_snapshot(request).await
    }

    async fn delete_snapshot(
        &self,
        request: Request<proto::DeleteSnapshotRequest>,
    ) -> Result<Response<proto::DeleteSnapshotResponse>, Status> {
        let m = self.of_id(&request.get_ref().snapshot_id);
        m.service.delete_snapshot(request).await
    }

    async fn list_snapshots(
        &self,
        request: Request<proto::ListSnapshotsRequest>,
    ) -> Result<Response<proto::ListSnapshotsResponse>, Status> {
        let req = request.get_ref();
        // A filter names one backend's snapshot or volume.
        let filter = [&req.snapshot_id, &req.source_volume_id]
            .into_iter()
            .find(|s| !s.is_empty());
        if self.members.len() == 1 || filter.is_some() {
            let m = filter.map_or(&self.members[0], |id| self.of_id(id));
            return m.service.list_snapshots(request).await;
        }
        let req = request.into_inner();
        let start = match self.page_start(&req.starting_token, req.max_entries) {
            Ok(start) => start,
            Err(s) => return self.refuse("ListSnapshots", s).await,
        };
        let (entries, next_token) = page_over(
            self,
            start,
            req.max_entries,
            |svc, starting_token, max_entries| async move {
                let r = svc
                    .list_snapshots(Request::new(proto::ListSnapshotsRequest {
                        max_entries,
                        starting_token,
                        ..Default::default()
                    }))
                    .await?
                    .into_inner();
                Ok((r.entries, r.next_token))
            },
        )
        .await?;
        Ok(Response::new(proto::ListSnapshotsResponse {
            entries,
            next_token,
        }))
    }

    async fn controller_expand_volume(
        &self,
        request: Request<proto::ControllerExpandVolumeRequest>,
    ) -> Result<Response<proto::ControllerExpandVolumeResponse>, Status> {
        let m = self.of_id(&request.get_ref().volume_id);
        m.service.controller_expand_volume(request).await
    }

    async fn controller_get_volume(
        &self,
        request: Request<proto::ControllerGetVolumeRequest>,
    ) -> Result<Response<proto::ControllerGetVolumeResponse>, Status> {
        let m = self.of_id(&request.get_ref().volume_id);
        m.service.controller_get_volume(request).await
    }

    async fn get_snapshot(
        &self,
        request: Request<proto::GetSnapshotRequest>,
    ) -> Result<Response<proto::GetSnapshotResponse>, Status> {
        self.members[0].service.get_snapshot(request).await
    }

    async fn controller_modify_volume(
        &self,
        request: Request<proto::ControllerModifyVolumeRequest>,
    ) -> Result<Response<proto::ControllerModifyVolumeResponse>, Status> {
        self.members[0]
            .service
            .controller_modify_volume(request)
            .await
    }
}

#[cfg(test)]
#[path = "backends_tests.rs"]
mod tests;
