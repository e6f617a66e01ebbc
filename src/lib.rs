//! dinggate: an authentication gateway that puts internal web apps behind DingTalk login.
#![forbid(unsafe_code)]

pub mod identity;
pub mod login;
pub mod proxy;
pub mod server;
pub mod session;
