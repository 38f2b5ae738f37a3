//! The unix-socket gRPC channel a container orchestrator opens to a CSI
//! plugin's `unix://` endpoint.

use std::path::PathBuf;

use tonic::transport::{Channel, Endpoint, Uri};

/// Connects to the gRPC server listening on the unix socket `sock` (the
/// URI given to tonic is a placeholder; every connection goes to `sock`).
pub async fn unix_channel(sock: impl Into<PathBuf>) -> Result<Channel, tonic::transport::Error> {
    let sock = sock.into();
    Endpoint::from_static("http://[::]:0")
        .connect_with_connector(tower::service_fn(move |_: Uri| {
            let sock = sock.clone();
            async move {
                Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(
                    tokio::net::UnixStream::connect(sock).await?,
                ))
            }
        }))
        .await
}
