//! The login flow: return-URL validation (and, later, state and the DingTalk round trip).

pub mod redirect;
