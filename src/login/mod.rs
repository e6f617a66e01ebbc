//! The login flow: return-URL validation, login-state cookies, and the DingTalk round trip.

pub mod flow;
pub mod redirect;
pub mod sign_out;
pub mod state;
