//! Reverse-proxy plumbing: pure header operations (and, later, request forwarding).

pub mod headers;
