pub mod admin;
pub mod client;
pub mod codec;
pub mod produce;
pub mod read;
pub mod records;
pub mod registry;
pub mod topics;
