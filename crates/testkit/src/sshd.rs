//! An OpenSSH server for the Linux target's tests: started for the current
//! user on a free loopback port with a throwaway host key (its fingerprint
//! is what a client pins), admitting one public key, with an environment
//! set in every session (a `PATH` with stand-in tools first).

use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// Where the tests expect OpenSSH's server.
pub const SSHD: &str = "/usr/sbin/sshd";

/// A running sshd, killed when dropped.
pub struct Sshd {
    child: Child,
    /// `127.0.0.1:<port>`.
    pub addr: String,
    /// The host key's `SHA256:...` fingerprint.
    pub fingerprint: String,
}

impl Drop for Sshd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Makes an ed25519 key pair at `path` (and `path.pub`) with no passphrase;
/// returns its fingerprint.
pub fn keygen(path: &Path) -> String {
    let st = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-f"])
        .arg(path)
        .status()
        .expect("run ssh-keygen");
    assert!(st.success());
    let fp = Command::new("ssh-keygen")
        .arg("-lf")
        .arg(path.with_extension("pub"))
        .output()
        .expect("run ssh-keygen -lf");
    let text = String::from_utf8(fp.stdout).expect("a fingerprint");
    text.split(' ').nth(1).expect("a fingerprint").to_string()
}

/// Starts sshd (its files in `dir`), admitting `authorized_key` (an
/// OpenSSH public key line) for the current user, with `env` set in every
/// session.
pub fn start(dir: &Path, authorized_key: &str, env: &[(String, String)]) -> Sshd {
    let host_key = dir.join("host_key");
    let fingerprint = keygen(&host_key);
    std::fs::write(dir.join("authorized_keys"), authorized_key).unwrap();
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let set_env: Vec<String> = env.iter().map(|(k, v)| format!("{k}={v}")).collect();
    let config = format!(
        "Port {port}\nListenAddress 127.0.0.1\nHostKey {hk}\nAuthorizedKeysFile {ak}\n\
         PasswordAuthentication no\nKbdInteractiveAuthentication no\nUsePAM no\nStrictModes no\n\
         PermitRootLogin prohibit-password\nPidFile {pid}\n{set_env}",
        hk = host_key.display(),
        ak = dir.join("authorized_keys").display(),
        pid = dir.join("sshd.pid").display(),
        set_env = if set_env.is_empty() {
            String::new()
        } else {
            format!("SetEnv {}\n", set_env.join(" "))
        },
    );
    std::fs::write(dir.join("sshd_config"), config).unwrap();
    // Privilege separation wants this directory when run as root.
    let _ = std::fs::create_dir_all("/run/sshd");
    let child = Command::new(SSHD)
        .args(["-D", "-e", "-f"])
        .arg(dir.join("sshd_config"))
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.join("sshd.log")).unwrap())
        .spawn()
        .expect("start sshd");
    let addr = format!("127.0.0.1:{port}");
    crate::wait_for(
        &format!("sshd listening on {addr}"),
        Duration::from_secs(10),
        || std::net::TcpStream::connect(&addr).ok(),
    );
    Sshd {
        child,
        addr,
        fingerprint,
    }
}

/// The current user's name, whom the server admits.
pub fn user() -> String {
    let out = Command::new("id").arg("-un").output().expect("run id -un");
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}
