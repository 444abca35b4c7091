//! A small client of the node's container runtime over CRI (`runtime.v1`, the API kubelet
//! speaks): enough to list the pod sandboxes already running when the installer starts.
//!
//! The generated API is re-exported as [`api`], so a caller (the e2e tests) can drive any
//! other RPC through [`Cri::runtime`] and [`Cri::block_on`].
//!
//! [`Cri`] is blocking: it owns a single-threaded tokio runtime. Call it from a plain thread
//! (or `spawn_blocking`), never from inside another async runtime.
use std::collections::BTreeMap;
use std::path::PathBuf;

use serde_json::Value;

/// containerd's CRI socket (CRI-O: `/var/run/crio/crio.sock`).
pub const DEFAULT_SOCKET: &str = "/run/containerd/containerd.sock";

/// What adoption needs to know about one pod sandbox.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Sandbox {
    /// The sandbox id, which is what the runtime passes as `CNI_CONTAINERID`.
    pub id: String,
    pub uid: String,
    pub namespace: String,
    pub name: String,
    /// `SANDBOX_READY`: its network is set up and it has not been stopped.
    pub ready: bool,
    pub annotations: BTreeMap<String, String>,
    /// `hostNetwork: true` pods have no CNI attachment.
    pub host_network: bool,
    /// From the runtime's verbose status, when it reports one.
    pub netns: Option<PathBuf>,
    /// The cgroup parent kubelet asked for (`linux.cgroup_parent`), when reported.
    pub cgroup_parent: Option<String>,
}

impl Sandbox {
    /// `namespace/name`, for logs.
    pub fn pod(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }
}

/// Reads the fields only the verbose status carries. containerd puts a JSON document under
/// `info["info"]` holding the sandbox's OCI runtime spec; other runtimes may not.
#[cfg_attr(not(feature = "cri"), allow(dead_code))]
fn verbose_details(info: &BTreeMap<String, String>) -> (Option<PathBuf>, Option<String>) {
    let Some(doc) = info.get("info").and_then(|s| serde_json::from_str::<Value>(s).ok()) else {
        return (None, None);
    };
    let netns = doc
        .pointer("/runtimeSpec/linux/namespaces")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .find(|ns| ns["type"] == "network")
        .and_then(|ns| ns["path"].as_str())
        .filter(|p| !p.is_empty())
        .map(PathBuf::from);
    let cgroup_parent = doc
        .pointer("/config/linux/cgroup_parent")
        .and_then(Value::as_str)
        .filter(|p| !p.is_empty())
        .map(str::to_string);
    (netns, cgroup_parent)
}

#[cfg(feature = "cri")]
pub use client::Cri;
/// The generated CRI `runtime.v1` types and clients.
#[cfg(feature = "cri")]
pub use k8s_cri::v1 as api;

#[cfg(feature = "cri")]
mod client {
    use std::future::Future;
    use std::path::{Path, PathBuf};
    use std::time::Duration;

    use anyhow::{Context, Result};
    use api::image_service_client::ImageServiceClient;
    use api::runtime_service_client::RuntimeServiceClient;
    use hyper_util::rt::TokioIo;
    use k8s_cri::v1 as api;
    use tokio::net::UnixStream;
    use tonic::transport::{Channel, Endpoint, Uri};

    use super::{verbose_details, Sandbox};

    /// Every call must finish within this; a hung runtime must not hang the installer.
    const CALL_TIMEOUT: Duration = Duration::from_secs(60);

    pub struct Cri {
        rt: tokio::runtime::Runtime,
        channel: Channel,
    }

    impl Cri {
        /// Connects to a CRI unix socket and checks it answers `Version`.
        pub fn connect(socket: &Path) -> Result<Self> {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .context("start the CRI client's runtime")?;
            let path: PathBuf = socket.to_path_buf();
            // The URI is a placeholder: the connector ignores it and dials the socket.
            let endpoint =
                Endpoint::from_static("http://[::]:0").connect_timeout(Duration::from_secs(5)).timeout(CALL_TIMEOUT);
            let channel = rt
                .block_on(endpoint.connect_with_connector(tower::service_fn(move |_: Uri| {
                    let path = path.clone();
                    async move { Ok::<_, std::io::Error>(TokioIo::new(UnixStream::connect(path).await?)) }
                })))
                .with_context(|| format!("connect to CRI socket {}", socket.display()))?;
            let mut cri = Self { rt, channel };
            let v = cri.version().with_context(|| format!("CRI Version on {}", socket.display()))?;
            anyhow::ensure!(
                v.runtime_api_version == "v1",
                "{} speaks CRI {} (runtime.v1 needed)",
                socket.display(),
                v.runtime_api_version
            );
            Ok(cri)
        }

        /// Runs one request on the client's runtime.
        pub fn block_on<F: Future>(&self, f: F) -> F::Output {
            self.rt.block_on(f)
        }

        /// A RuntimeService client sharing this connection (cheap to clone).
        pub fn runtime(&self) -> RuntimeServiceClient<Channel> {
            RuntimeServiceClient::new(self.channel.clone())
        }

        pub fn images(&self) -> ImageServiceClient<Channel> {
            ImageServiceClient::new(self.channel.clone())
        }

        pub fn version(&mut self) -> Result<api::VersionResponse> {
            let mut rs = self.runtime();
            let req = api::VersionRequest { version: "v1".into() };
            Ok(self.block_on(rs.version(req))?.into_inner())
        }

        /// Every pod sandbox the runtime knows, with its status. A sandbox removed between
        /// the list and its status is left out.
        pub fn sandboxes(&mut self) -> Result<Vec<Sandbox>> {
            let mut rs = self.runtime();
            let list = self
                .block_on(rs.list_pod_sandbox(api::ListPodSandboxRequest { filter: None }))
                .context("ListPodSandbox")?
                .into_inner();
            let mut out = Vec::with_capacity(list.items.len());
            for item in list.items {
                out.extend(self.sandbox_status(&item.id)?);
            }
            out.sort_by(|a, b| a.id.cmp(&b.id));
            Ok(out)
        }

        /// One sandbox's verbose status; `None` when it no longer exists.
        pub fn sandbox_status(&mut self, id: &str) -> Result<Option<Sandbox>> {
            let mut rs = self.runtime();
            let req = api::PodSandboxStatusRequest { pod_sandbox_id: id.to_string(), verbose: true };
            let resp = match self.block_on(rs.pod_sandbox_status(req)) {
                Ok(r) => r.into_inner(),
                Err(s) if s.code() == tonic::Code::NotFound => return Ok(None),
                Err(s) => return Err(s).with_context(|| format!("PodSandboxStatus {id}")),
            };
            let status = resp.status.with_context(|| format!("PodSandboxStatus {id}: no status"))?;
            let meta = status.metadata.unwrap_or_default();
            let host_network = status
                .linux
                .and_then(|l| l.namespaces)
                .and_then(|n| n.options)
                .is_some_and(|o| o.network == api::NamespaceMode::Node as i32);
            let (netns, cgroup_parent) = verbose_details(&resp.info.into_iter().collect());
            Ok(Some(Sandbox {
                id: status.id,
                uid: meta.uid,
                namespace: meta.namespace,
                name: meta.name,
                ready: status.state == api::PodSandboxState::SandboxReady as i32,
                annotations: status.annotations.into_iter().collect(),
                host_network,
                netns,
                cgroup_parent,
            }))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_netns_and_cgroup_parent_from_containerd_verbose_info() {
        // Shape of containerd 1.6's PodSandboxStatus verbose info (trimmed).
        let doc = serde_json::json!({
            "pid": 4242,
            "config": {"metadata": {"name": "p"}, "linux": {"cgroup_parent": "/kubepods/besteffort/podabc"}},
            "runtimeSpec": {"linux": {"namespaces": [
                {"type": "pid"},
                {"type": "network", "path": "/var/run/netns/cni-1234"}
            ]}}
        });
        let info = BTreeMap::from([("info".to_string(), doc.to_string())]);
        let (netns, parent) = verbose_details(&info);
        assert_eq!(netns, Some(PathBuf::from("/var/run/netns/cni-1234")));
        assert_eq!(parent.as_deref(), Some("/kubepods/besteffort/podabc"));
        assert_eq!(verbose_details(&BTreeMap::new()), (None, None));
        let garbage = BTreeMap::from([("info".to_string(), "not json".to_string())]);
        assert_eq!(verbose_details(&garbage), (None, None));
    }
}
