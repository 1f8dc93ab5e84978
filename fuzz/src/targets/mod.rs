//! One module per fuzz target.

pub mod hosts;
pub mod manifest;
pub mod reference;
pub mod request;
pub mod tar_apply;
