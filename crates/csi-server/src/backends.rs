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

/// Which source a CreateVolume copies, if any.
fn source_id(req: &proto::CreateVolumeRequest) -> Option<&str> {
    use proto::volume_content_source::Type;
    match req.volume_content_source.as_ref()?.r#type.as_ref()? {
        Type::Snapshot(s) => Some(&s.snapshot_id),
        Type::Volume(v) => Some(&v.volume_id),
    }
}

/// A listing RPC whose pages go through every backend in turn.
trait Listing: Send + Sized + 'static {
    const RPC: &'static str;
    type Response: Send;
    type Entry: Send;
    fn page(&self) -> (&str, i32);
    /// The same listing from `token`, at most `max` entries (0: all).
    fn at(token: String, max: i32) -> Self;
    fn answer(entries: Vec<Self::Entry>, next_token: String) -> Self::Response;
    fn split(r: Self::Response) -> (Vec<Self::Entry>, String);
    fn list<B: Backend>(
        svc: &ControllerService<B>,
        req: Self,
    ) -> impl std::future::Future<Output = Result<Response<Self::Response>, Status>> + Send;
}

/// Each listing's fields and call.
macro_rules! listing {
    ($($req:ident -> $resp:ident = $rpc:literal by $method:ident;)*) => {$(
        impl Listing for proto::$req {
            const RPC: &'static str = $rpc;
            type Response = proto::$resp;
            type Entry = <proto::$resp as ListingAnswer>::Entry;
            fn page(&self) -> (&str, i32) {
                (&self.starting_token, self.max_entries)
            }
            fn at(starting_token: String, max_entries: i32) -> Self {
                #[allow(clippy::needless_update)] // ListSnapshots has filters
                proto::$req {
                    starting_token,
                    max_entries,
                    ..Default::default()
                }
            }
            fn answer(entries: Vec<Self::Entry>, next_token: String) -> proto::$resp {
                proto::$resp {
                    entries,
                    next_token,
                }
            }
            fn split(r: proto::$resp) -> (Vec<Self::Entry>, String) {
                (r.entries, r.next_token)
            }
            async fn list<B: Backend>(
                svc: &ControllerService<B>,
                req: Self,
            ) -> Result<Response<proto::$resp>, Status> {
                svc.$method(Request::new(req)).await
            }
        }
    )*};
}

/// The entry type of a listing's answer.
trait ListingAnswer {
    type Entry;
}
impl ListingAnswer for proto::ListVolumesResponse {
    type Entry = proto::list_volumes_response::Entry;
}
impl ListingAnswer for proto::ListSnapshotsResponse {
    type Entry = proto::list_snapshots_response::Entry;
}

listing! {
    ListVolumesRequest -> ListVolumesResponse = "ListVolumes" by list_volumes;
    ListSnapshotsRequest -> ListSnapshotsResponse = "ListSnapshots" by list_snapshots;
}

impl<B: Backend> Backends<B> {
    /// One page of a listing over every backend in turn; the answer's
    /// token names the backend to go on in. A backend's failure is its
    /// own answer (counted there).
    async fn list_all<L: Listing>(&self, req: L) -> Result<Response<L::Response>, Status> {
        let (token, max) = req.page();
        let (mut i, mut token) = match self.page_start(token, max) {
            Ok(start) => start,
            Err(s) => return self.refuse(L::RPC, s).await,
        };
        let mut out = Vec::new();
        loop {
            let left = if max == 0 { 0 } else { max - out.len() as i32 };
            let member = &self.members[i];
            let page = L::list(&member.service, L::at(token, left)).await?;
            let (entries, next) = L::split(page.into_inner());
            out.extend(entries);
            if !next.is_empty() {
                return Ok(Response::new(L::answer(
                    out,
                    format!("{}/{next}", member.name),
                )));
            }
            i += 1;
            token = String::new();
            if i == self.members.len() {
                return Ok(Response::new(L::answer(out, String::new())));
            }
            if max > 0 && out.len() as i32 >= max {
                let next = format!("{}/", self.members[i].name);
                return Ok(Response::new(L::answer(out, next)));
            }
        }
    }

    async fn create(
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

    async fn validate(
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

    async fn list_volumes_all(
        &self,
        request: Request<proto::ListVolumesRequest>,
    ) -> Result<Response<proto::ListVolumesResponse>, Status> {
        if self.members.len() == 1 {
            return self.members[0].service.list_volumes(request).await;
        }
        self.list_all(request.into_inner()).await
    }

    async fn capacity(
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
    async fn capabilities(
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

    async fn list_snapshots_all(
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
        self.list_all(request.into_inner()).await
    }
}

/// The Controller service, one row per RPC: `by id(field)` goes to the
/// backend the request's ID field names, `by default` to the default
/// backend, `by method` to the router's own method.
macro_rules! router {
    ($($method:ident($req:ident) -> $resp:ident by $how:ident $(($field:ident))?;)*) => {
        #[tonic::async_trait]
        impl<B: Backend> Controller for Backends<B> {
            $(
                async fn $method(
                    &self,
                    request: Request<proto::$req>,
                ) -> Result<Response<proto::$resp>, Status> {
                    router!(@route self, request, $method, $how $(($field))?)
                }
            )*
        }
    };
    (@route $self:ident, $request:ident, $method:ident, id($field:ident)) => {{
        let m = $self.of_id(&$request.get_ref().$field);
        m.service.$method($request).await
    }};
    (@route $self:ident, $request:ident, $method:ident, default) => {
        $self.members[0].service.$method($request).await
    };
    (@route $self:ident, $request:ident, $method:ident, $own:ident) => {
        $self.$own($request).await
    };
}

router! {
    create_volume(CreateVolumeRequest) -> CreateVolumeResponse by create;
    delete_volume(DeleteVolumeRequest) -> DeleteVolumeResponse by id(volume_id);
    controller_publish_volume(ControllerPublishVolumeRequest) -> ControllerPublishVolumeResponse by id(volume_id);
    controller_unpublish_volume(ControllerUnpublishVolumeRequest) -> ControllerUnpublishVolumeResponse by id(volume_id);
    validate_volume_capabilities(ValidateVolumeCapabilitiesRequest) -> ValidateVolumeCapabilitiesResponse by validate;
    list_volumes(ListVolumesRequest) -> ListVolumesResponse by list_volumes_all;
    get_capacity(GetCapacityRequest) -> GetCapacityResponse by capacity;
    controller_get_capabilities(ControllerGetCapabilitiesRequest) -> ControllerGetCapabilitiesResponse by capabilities;
    create_snapshot(CreateSnapshotRequest) -> CreateSnapshotResponse by id(source_volume_id);
    delete_snapshot(DeleteSnapshotRequest) -> DeleteSnapshotResponse by id(snapshot_id);
    list_snapshots(ListSnapshotsRequest) -> ListSnapshotsResponse by list_snapshots_all;
    controller_expand_volume(ControllerExpandVolumeRequest) -> ControllerExpandVolumeResponse by id(volume_id);
    controller_get_volume(ControllerGetVolumeRequest) -> ControllerGetVolumeResponse by id(volume_id);
    get_snapshot(GetSnapshotRequest) -> GetSnapshotResponse by default;
    controller_modify_volume(ControllerModifyVolumeRequest) -> ControllerModifyVolumeResponse by default;
}

#[cfg(test)]
#[path = "backends_tests.rs"]
mod tests;
