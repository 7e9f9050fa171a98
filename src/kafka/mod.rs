pub mod admin;
pub mod topics;
