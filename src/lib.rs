//! lakemount: an Azure Data Lake / Blob container as a POSIX tree, for training jobs and people.
//!
//! Data flows one way: [`fuse`] (kernel edge) -> [`fs`] (POSIX core) -> [`reader`] / [`cache`]
//! -> [`store`] (Azure, local directory, in-memory).

pub mod cache;
pub mod cli;
pub mod config;
pub mod fs;
pub mod fuse;
pub mod lake_url;
pub mod metrics;
pub mod mount;
pub mod prefetch;
pub mod reader;
pub mod store;
pub mod transfer;
