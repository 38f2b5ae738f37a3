//! The unix-socket gRPC channel a container orchestrator opens to a CSI
//! plugin's `unix://` endpoint.

use std::path::PathBuf;

use tonic::transport::{Channel, Endpoint, Uri};

/// Every connection of the channel goes to `sock` (the URI given to tonic
/// is a placeholder).
fn to_socket(
    sock: PathBuf,
) -> impl tower::Service<
    Uri,
    Response = hyper_util::rt::TokioIo<tokio::net::UnixStream>,
    Error = std::io::Error,
    Future = impl Send,
> + Clone {
    tower::service_fn(move |_: Uri| {
        let sock = sock.clone();
        async move {
            Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(
                tokio::net::UnixStream::connect(sock).await?,
            ))
        }
    })
}

/// Connects to the gRPC server listening on the unix socket `sock`.
pub async fn unix_channel(sock: impl Into<PathBuf>) -> Result<Channel, tonic::transport::Error> {
    Endpoint::from_static("http://[::]:0")
        .connect_with_connector(to_socket(sock.into()))
        .await
}

/// A channel to the unix socket `sock` that connects on first use (the
/// server may not be listening yet).
pub fn unix_channel_lazy(sock: impl Into<PathBuf>) -> Channel {
    Endpoint::from_static("http://[::]:0").connect_with_connector_lazy(to_socket(sock.into()))
}
