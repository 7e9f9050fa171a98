pub mod admin;
pub mod alter;
pub mod client;
pub mod codec;
pub mod records;
pub mod registry;
pub mod topics;
