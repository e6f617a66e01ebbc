//! Adversarial end-to-end suite: each attack class from the hardening review, run through the real
//! gateway, the mock DingTalk and the echo upstream. One module per class.

#[path = "../common/mod.rs"]
mod common;

mod cache;
mod cookies;
mod edges;
mod headers;
mod limits;
mod paths;
mod sessions;
