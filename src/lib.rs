pub mod domain;
pub mod store;
pub mod train;
