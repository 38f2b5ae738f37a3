//! The RouterOS simulator with a client key it accepts.

use std::path::{Path, PathBuf};

use rds_sim::{SimConfig, SimHandle};
use russh::keys::ssh_key::LineEnding;
use russh::keys::{Algorithm, PrivateKey};

/// A fresh Ed25519 key, as an operator would generate for the driver.
pub fn client_key() -> PrivateKey {
    PrivateKey::random(&mut rand::rng(), Algorithm::Ed25519).expect("an Ed25519 key")
}

/// Writes `key` to `dir/id` in OpenSSH format with mode 0600, as the
/// driver's `--rds-key-file` expects it; returns the path.
pub fn write_client_key(key: &PrivateKey, dir: &Path) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let path = dir.join("id");
    let text = key.to_openssh(LineEnding::LF).expect("OpenSSH encoding");
    std::fs::write(&path, text.as_bytes()).expect("write the client key");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))
        .expect("chmod 0600 the client key");
    path
}

/// Starts the simulator in this process with `config`, `key` its one
/// authorized key.
pub async fn start_with_key(key: &PrivateKey, config: SimConfig) -> SimHandle {
    rds_sim::start(SimConfig {
        authorized_keys: vec![key.public_key().clone()],
        ..config
    })
    .await
    .expect("the simulator starts")
}

/// A simulator with a 1 TiB in-memory pool and a fresh client key written
/// to `dir/id`, for tests that start the `rds-csi` binary against it.
pub struct SimWithKeyFile {
    pub sim: SimHandle,
    pub key: PrivateKey,
    pub key_file: PathBuf,
}

/// See [`SimWithKeyFile`].
pub async fn start_with_key_file(dir: &Path) -> SimWithKeyFile {
    let key = client_key();
    let key_file = write_client_key(&key, dir);
    let sim = start_with_key(
        &key,
        SimConfig {
            pool_size: 1 << 40,
            ..Default::default()
        },
    )
    .await;
    SimWithKeyFile { sim, key, key_file }
}
