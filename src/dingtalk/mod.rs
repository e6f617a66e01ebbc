//! DingTalk open-platform client: scan-login URL, token exchange, profile and enterprise look-ups.

pub mod api;
pub(crate) mod client;
mod error;
#[cfg(test)]
mod mock_tests;
mod token;
mod transport;
mod types;

pub use client::{ClientSettings, DingTalkClient, Endpoints, RetryPolicy};
pub use error::{reported_address, DingTalkError};
pub use types::{AppToken, ContactUser, DeptLeader, InAppUser, Role, UserDetail, UserToken};
