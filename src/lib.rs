//! dinggate: an authentication gateway that puts internal web apps behind DingTalk login.
#![forbid(unsafe_code)]

pub mod identity;
pub mod mock;
pub mod server;
