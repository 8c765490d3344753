//! portcullis: a programmable HTTP gateway on Cloudflare's Pingora.
pub mod balance;
pub mod config;
