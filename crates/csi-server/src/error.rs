//! What both services' errors share.
//!
//! Each service has its own error type, named after what failed, with the
//! one mapping of its failures to gRPC codes: [`crate::controller::ControllerError`]
//! and [`crate::node::NodeError`]. Both put the whole cause chain in the
//! status message, with [`chain`]; [`crate::rpc::run`] finishes every RPC.

/// The message with every cause appended ("a: b: c"): the one
/// implementation, kept in the data-path crate both services build on.
pub use nvme::chain;
