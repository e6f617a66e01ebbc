//! Sessions: the signed session JWT and the cookie that carries it.

pub mod cache;
pub mod cookie;
pub mod jwt;
pub mod lookup;
pub mod revocation;
