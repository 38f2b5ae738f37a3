//! The CSI gRPC services of rds-csi: identity, controller and node, with
//! the error-to-status mapping, StorageClass parameter rules, metrics and
//! health endpoints.
//!
//! Its job is the CSI surface: validate every request, hold the volume's
//! guard, ask the right layer, and answer with the code the sidecars
//! expect (each service has one error type with one exhaustive mapping to
//! gRPC codes, and [`rpc::run`] finishes every RPC the same way). Its
//! boundary: it runs no host command or syscall itself (the `nvme` crate
//! does, behind its traits), parses no RouterOS output (`routeros` does,
//! behind [`backend::Backend`]), and does not decide who may attach a
//! volume (the attachment rules do, through `attachment-manager`).
//!
//! The controller is generic over a [`backend::Backend`] (the RDS in
//! production, an in-memory fake in unit tests) and a
//! `attachment_manager::NodeView`, so it never reaches for a global client.
//! The node service is generic over the `nvme` crate's host traits
//! ([`nvme::Exec`] for commands, [`nvme::Sys`] for syscalls), whose
//! recording fake runs every node decision in unit tests. The node's
//! stage, publish and unstage decisions themselves (staged elsewhere?
//! format or share? what to unmount, what to remove?) are pure functions
//! in [`node::decide`], tested by table; the RPCs gather the facts and
//! carry the decisions out.
#![forbid(unsafe_code)]

pub mod backend;
pub mod backends;
pub mod controller;
pub mod error;
pub mod health;
pub mod identity;
pub mod metrics;
/// The mount table parser lives with the rest of the data path.
pub use nvme::mountinfo;
pub mod node;
pub mod params;
pub mod rpc;
pub mod server;
pub mod snapshot;

/// Generated from `proto/csi.proto` (CSI spec v1.12).
pub mod proto {
    #![allow(clippy::all, missing_docs)]
    tonic::include_proto!("csi.v1");
}
