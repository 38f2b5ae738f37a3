//! The kube-apiserver the benchmark runs against (given, or started and
//! stopped here), plain GETs on it, and the deletion of a run's objects.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;

use k8s_openapi::api::core::v1::{Node, PersistentVolume};
use k8s_openapi::api::storage::v1::VolumeAttachment;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams};
use serde_json::json;

use crate::support::{par, BoxResult};
use crate::world::World;
use crate::{IN_FLIGHT, LABEL};

/// The API server used: given, or started here (and stopped on drop).
pub struct ApiServer {
    pub kubeconfig: PathBuf,
    /// Set when this process started it.
    pub owned: Option<PathBuf>,
}

pub fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("hack/kube-apiserver.sh")
}

impl ApiServer {
    pub fn get(dir: &Path) -> BoxResult<ApiServer> {
        if let Some(p) = std::env::var_os("RDS_CSI_TEST_KUBECONFIG") {
            return Ok(ApiServer {
                kubeconfig: PathBuf::from(p),
                owned: None,
            });
        }
        let dir = dir.join("apiserver");
        eprintln!(
            "RDS_CSI_TEST_KUBECONFIG not set: starting etcd + kube-apiserver in {}",
            dir.display()
        );
        let out = Command::new("bash")
            .arg(script())
            .arg("up")
            .arg(&dir)
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("run {}: {e}", script().display()))?;
        let stderr = String::from_utf8_lossy(&out.stderr);
        match out.status.code() {
            Some(0) => {}
            Some(3) => {
                return Err(format!(
                    "it needs a Kubernetes API server, and hack/kube-apiserver.sh says: {}. \
                     Put kube-apiserver and etcd on PATH (or set KUBE_APISERVER and ETCD), \
                     or set RDS_CSI_TEST_KUBECONFIG to the kubeconfig of a running API server.",
                    stderr.trim()
                )
                .into())
            }
            _ => {
                return Err(format!(
                    "hack/kube-apiserver.sh up failed ({}): {stderr}",
                    out.status
                )
                .into())
            }
        }
        let kubeconfig = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
        Ok(ApiServer {
            kubeconfig,
            owned: Some(dir),
        })
    }

    /// The pid of a process this benchmark started ("apiserver", "etcd").
    pub fn pid(&self, which: &str) -> Option<u32> {
        let dir = self.owned.as_ref()?;
        std::fs::read_to_string(dir.join(format!("{which}.pid")))
            .ok()?
            .trim()
            .parse()
            .ok()
    }
}

impl Drop for ApiServer {
    fn drop(&mut self) {
        if let Some(dir) = self.owned.take() {
            eprintln!("stopping the API server");
            let _ = Command::new("bash")
                .arg(script())
                .arg("down")
                .arg(&dir)
                .stdin(Stdio::null())
                .status();
        }
    }
}

pub async fn kube_client(kubeconfig: &Path) -> BoxResult<kube::Client> {
    let kc = kube::config::Kubeconfig::read_from(kubeconfig)?;
    let cfg = kube::Config::from_custom_kubeconfig(kc, &Default::default()).await?;
    Ok(kube::Client::try_from(cfg)?)
}

/// Deletes this run's objects from a shared API server. PVs carry the
/// kubernetes.io/pv-protection finalizer, which only kube-controller-manager
/// removes; the benchmark's own PVs are never in use, so it is dropped here.
pub async fn cleanup(w: &Arc<World>) -> BoxResult<()> {
    let lp = ListParams::default().labels(&format!("{LABEL}={}", w.run));
    let dp = DeleteParams::default();
    Api::<VolumeAttachment>::all(w.client.clone())
        .delete_collection(&dp, &lp)
        .await?;
    let pvs: Api<PersistentVolume> = Api::all(w.client.clone());
    pvs.delete_collection(&dp, &lp).await?;
    let names: Arc<Vec<String>> = Arc::new(
        pvs.list_metadata(&lp)
            .await?
            .into_iter()
            .filter_map(|m| m.metadata.name)
            .collect(),
    );
    par(names.len(), IN_FLIGHT, {
        let (pvs, names) = (pvs.clone(), names.clone());
        move |i| {
            let (pvs, names) = (pvs.clone(), names.clone());
            async move {
                let unfinalize = json!({"metadata": {"finalizers": null}});
                match pvs
                    .patch(
                        &names[i],
                        &PatchParams::default(),
                        &Patch::Merge(&unfinalize),
                    )
                    .await
                {
                    Ok(_) => Ok(()),
                    Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
                    Err(e) => Err(e.into()),
                }
            }
        }
    })
    .await?;
    Api::<Node>::all(w.client.clone())
        .delete_collection(&dp, &lp)
        .await?;
    Ok(())
}

/// GET `path` from the API server as text ("" on failure).
pub async fn api_get(w: &World, path: &str) -> String {
    match kube::core::Request::new(path).list(&ListParams::default()) {
        Ok(req) => w.client.request_text(req).await.unwrap_or_default(),
        Err(_) => String::new(),
    }
}

/// The port of `--listen-client-urls http://127.0.0.1:PORT` of etcd.
pub fn etcd_client_port(pid: u32) -> Option<u16> {
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    let args: Vec<String> = cmdline
        .split(|b| *b == 0)
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect();
    let i = args.iter().position(|a| a == "--listen-client-urls")?;
    args.get(i + 1)?.rsplit(':').next()?.parse().ok()
}
