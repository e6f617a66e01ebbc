//! DingTalk open-platform client: scan-login URL, token exchange, profile and enterprise look-ups.

pub mod api;
mod budget;
pub(crate) mod client;
mod error;
mod fleet;
#[cfg(test)]
mod mock_tests;
mod token;
mod transport;
mod types;

pub use client::{ClientSettings, DingTalkClient, Endpoints, RetryPolicy, Sharing};
pub use error::{reported_address, DingTalkError};
pub(crate) use fleet::Source;
pub use types::{AppToken, ContactUser, DeptLeader, InAppUser, Role, UserDetail, UserToken};
