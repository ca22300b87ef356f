//! Caches between the filesystem core and the store.

pub mod meta;
