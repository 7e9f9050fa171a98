pub mod admin;
pub mod codec;
pub mod records;
pub mod registry;
pub mod topics;
