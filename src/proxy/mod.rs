//! Reverse-proxy plumbing: pure header operations and request forwarding.

pub mod fold;
pub mod forward;
pub mod headers;
pub mod names;
pub mod path;
pub mod pool;
pub mod tls;
pub mod uri;
