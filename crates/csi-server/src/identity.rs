//! The CSI Identity service.

use std::collections::HashMap;

use tonic::{Request, Response, Status};

use crate::health::Health;
use crate::proto::{self, identity_server::Identity};

pub struct IdentityService {
    name: String,
    version: String,
    controller: bool,
    health: Health,
}

impl IdentityService {
    pub fn new(
        name: impl Into<String>,
        version: impl Into<String>,
        controller: bool,
        health: Health,
    ) -> Self {
        IdentityService {
            name: name.into(),
            version: version.into(),
            controller,
            health,
        }
    }
}

/// Checks a driver name against the CSI rule: at most 63 characters,
/// alphanumerics at both ends, with dashes, dots and alphanumerics between.
pub fn valid_driver_name(name: &str) -> bool {
    let b = name.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && b[0].is_ascii_alphanumeric()
        && b[b.len() - 1].is_ascii_alphanumeric()
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || *c == b'-' || *c == b'.')
}

#[tonic::async_trait]
impl Identity for IdentityService {
    async fn get_plugin_info(
        &self,
        _r: Request<proto::GetPluginInfoRequest>,
    ) -> Result<Response<proto::GetPluginInfoResponse>, Status> {
        Ok(Response::new(proto::GetPluginInfoResponse {
            name: self.name.clone(),
            vendor_version: self.version.clone(),
            manifest: HashMap::new(),
        }))
    }

    async fn get_plugin_capabilities(
        &self,
        _r: Request<proto::GetPluginCapabilitiesRequest>,
    ) -> Result<Response<proto::GetPluginCapabilitiesResponse>, Status> {
        use proto::plugin_capability::service::Type;
        let mut types = vec![Type::VolumeAccessibilityConstraints];
        if self.controller {
            types.insert(0, Type::ControllerService);
        }
        Ok(Response::new(proto::GetPluginCapabilitiesResponse {
            capabilities: types
                .into_iter()
                .map(|t| proto::PluginCapability {
                    r#type: Some(proto::plugin_capability::Type::Service(
                        proto::plugin_capability::Service { r#type: t as i32 },
                    )),
                })
                .collect(),
        }))
    }

    async fn probe(
        &self,
        _r: Request<proto::ProbeRequest>,
    ) -> Result<Response<proto::ProbeResponse>, Status> {
        Ok(Response::new(proto::ProbeResponse {
            ready: Some(self.health.is_ready()),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn driver_names_follow_the_csi_rule() {
        assert!(valid_driver_name("rds.csi.srvlab.io"));
        assert!(!valid_driver_name(""));
        assert!(!valid_driver_name("-a"));
        assert!(!valid_driver_name("a_b"));
        assert!(!valid_driver_name(&"a".repeat(64)));
    }
}
