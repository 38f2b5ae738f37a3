//! Stamps the version and git commit into the binary, so `rds-csi --version`
//! and GetPluginInfo say exactly what is running.
use std::process::Command;

fn main() {
    // An image build has no .git: it passes the commit in the environment.
    let from_env = std::env::var("RDS_CSI_GIT_COMMIT")
        .ok()
        .filter(|s| !s.is_empty());
    let commit = from_env.unwrap_or_else(git_commit);
    println!("cargo:rustc-env=RDS_CSI_GIT_COMMIT={commit}");
    println!("cargo:rerun-if-changed=.git/HEAD");
    println!("cargo:rerun-if-changed=.git/refs/heads");
    println!("cargo:rerun-if-env-changed=RDS_CSI_GIT_COMMIT");
}

fn git_commit() -> String {
    Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "unknown".to_string())
}
